//! Step to dispatch: each plan step, with the kernel its `StepChoice` names, becomes the
//! dispatches recorded into the step's compute pass (built once, in `Executor::new`).

use super::*;

impl<'g> Executor<'g> {
    pub(super) fn t(&self, v: ValueId) -> &Tensor {
        &self.tensors[v.0]
    }

    /// A plan's max-pool route with its tensors.
    pub(super) fn route<'a>(&'a self, r: &'a PoolRoute) -> MaxPoolRoute<'a> {
        MaxPoolRoute { pool: &r.pool, argmax: self.t(r.argmax), relu: r.relu.map(|v| self.t(v)) }
    }

    /// The convolutions whose forward keeps its im2col columns for the weight gradient (the
    /// same geometry and input, both passes staged: `ConvChoice::kept_columns_len`), given
    /// each step's scratch bytes: in the scratch region where no step between the two uses it
    /// (nothing overwrites them: no extra memory), else in a buffer of their own if they
    /// take at most half the scratch region (memory traded for an im2col pass, bounded by
    /// what staging takes anyway: the MNIST CNN's conv1 at batch 64 keeps 5.6 MiB beside a
    /// 20 MiB region).
    pub(super) fn columns_to_keep(&self, scratch: &[u64]) -> Vec<KeptColumns> {
        let steps = &self.plan.steps;
        let region = scratch.iter().copied().max().unwrap_or(0);
        let mut keep = Vec::new();
        for (forward, step) in steps.iter().enumerate() {
            let Step::Conv2dForward { conv, x, .. } = step else { continue };
            let same = |s: &Step| matches!(s, Step::Conv2dBackwardWeight { conv: c, x: xw, .. } if c == conv && self.plan.root(*xw) == self.plan.root(*x));
            let Some(backward) = steps.iter().position(same) else { continue };
            let (StepChoice::Conv(f), StepChoice::Conv(b)) = (&self.choices[forward], &self.choices[backward]) else { continue };
            let Some(len) = f.kept_columns_len(b, conv) else { continue };
            let in_scratch = scratch[forward + 1..backward].iter().all(|&b| b == 0);
            if in_scratch || 8 * len as u64 <= region {
                keep.push(KeptColumns { forward, backward, len, in_scratch });
            }
        }
        keep
    }

    /// Every plan step's dispatches, in step order. Most of an executor's start-up is
    /// pipeline compilation (shader translation and the driver's compiler), so on native
    /// targets the steps are built by one thread per core taking the next unbuilt step (the
    /// pipeline cache is shared; error scopes are per thread); wasm32 builds them in order.
    pub(super) fn build_dispatches(&self) -> Result<Vec<Vec<Dispatch>>> {
        let steps = &self.plan.steps;
        let build = |i: usize| self.dispatch(&steps[i], &self.choices[i], self.kept_columns.get(&i));
        #[cfg(not(target_arch = "wasm32"))]
        {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(steps.len());
            if threads > 1 {
                let next = std::sync::atomic::AtomicUsize::new(0);
                let built: Vec<std::sync::Mutex<Option<Result<Vec<Dispatch>>>>> = steps.iter().map(|_| Default::default()).collect();
                std::thread::scope(|scope| {
                    for _ in 0..threads {
                        scope.spawn(|| loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= steps.len() {
                                break;
                            }
                            let d = build(i);
                            *built[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
                        });
                    }
                });
                return built.into_iter().map(|b| b.into_inner().unwrap_or_else(|e| e.into_inner()).expect("every step built")).collect();
            }
        }
        (0..steps.len()).map(build).collect()
    }

    /// A step's dispatches as `choice` says; `columns`: the im2col columns its convolution
    /// keeps (forward) or reads (weight gradient).
    pub(super) fn dispatch(&self, step: &Step, choice: &StepChoice, columns: Option<&Tensor>) -> Result<Vec<Dispatch>> {
        let gpu = self.gpu;
        let t = |v: ValueId| self.t(v);
        let grad = |g: &Option<(ValueId, bool)>| g.map(|(v, acc)| (t(v), acc));
        let mismatch = || Error::unsupported("Executor", format!("{choice:?} for {step:?}"));
        let conv_choice = || match choice {
            StepChoice::Conv(c) => Ok(c),
            _ => Err(mismatch()),
        };
        let linear_choice = || match choice {
            StepChoice::Linear(c) => Ok(c),
            _ => Err(mismatch()),
        };
        let gemm = |g: &Gemm, a, b, bias, c| match choice {
            StepChoice::Linear(LinearChoice::Gemm { cfg, split, .. }) => gemm_split(gpu, cfg, g, *split, a, b, bias, c),
            _ => Err(mismatch()),
        };
        Ok(match step {
            Step::Conv2dForward { conv, x, w, b, relu, y, pool } => {
                let pool = pool.as_ref().map(|p| MaxPoolOut { pool: &p.pool, y: t(p.y), argmax: t(p.argmax) });
                conv::forward(gpu, conv_choice()?, conv, t(*x), t(*w), b.map(t), *relu, t(*y), columns, pool.as_ref())?
            }
            Step::Conv2dBackwardInput { conv, w, dy, dx, pool } => {
                conv::backward_input(gpu, conv_choice()?, conv, t(*w), t(*dy), t(*dx), pool.as_ref().map(|r| self.route(r)).as_ref())?
            }
            Step::Conv2dBackwardWeight { conv, x, dy, dw, accumulate, db } => {
                let input = columns.map_or(WeightInput::X(t(*x)), WeightInput::Columns);
                conv::backward_weight(gpu, conv_choice()?, conv, input, t(*dy), t(*dw), *accumulate, grad(db))?
            }
            Step::LinearForward { x, w, b, relu, y } => match choice {
                StepChoice::Linear(LinearChoice::SmallForward) => {
                    let l = Linear { rows: t(*x).shape()[0], inp: t(*x).shape()[1], out: t(*w).shape()[0] };
                    vec![linear::linear_forward_small(gpu, &l, t(*x), t(*w), b.map(t), *relu, t(*y))?]
                }
                _ => {
                    let g = linear_gemm(step, &|v| t(v).shape().to_vec()).ok_or_else(mismatch)?;
                    gemm(&g, t(*x), t(*w), b.map(t), t(*y))?
                }
            },
            Step::LinearBackwardInput { dy, w, dx, pool } => {
                let g = linear_gemm(step, &|v| t(v).shape().to_vec()).ok_or_else(mismatch)?;
                match pool {
                    None => gemm(&g, t(*dy), t(*w), None, t(*dx))?,
                    Some(r) => {
                        let l = Linear { rows: g.m, inp: g.n, out: g.k };
                        linear::backward_input_routed(gpu, linear_choice()?, &l, t(*dy), t(*w), t(*dx), &self.route(r))?
                    }
                }
            }
            Step::LinearBackwardWeight { dy, x, dw, accumulate, db } => {
                let l = Linear { rows: t(*dy).shape()[0], inp: t(*x).shape()[1], out: t(*dy).shape()[1] };
                linear::backward_weight(gpu, linear_choice()?, &l, t(*dy), t(*x), t(*dw), *accumulate, grad(db))?
            }
            Step::LinearBackwardSmall { dy, w, x, dx, relu, dw, db } => {
                let (rows, out) = (t(*dy).shape()[0], t(*dy).shape()[1]);
                let l = Linear { rows, inp: t(*w).shape()[1], out };
                let x = (*relu || dw.is_some()).then(|| t(*x));
                vec![linear::linear_backward_small(gpu, &l, t(*dy), t(*w), x, dx.map(t), *relu, grad(dw), grad(db))?]
            }
            Step::BiasBackward { dy, db, accumulate } => vec![reduce::bias_backward(gpu, t(*dy), t(*db), *accumulate)?],
            Step::MaxPoolForward { pool, x, y, argmax } => vec![pool::max_pool2d_forward(gpu, pool, t(*x), t(*y), t(*argmax))?],
            Step::MaxPoolBackward { pool, argmax, relu: None, dy, dx } => vec![pool::max_pool2d_backward(gpu, pool, t(*argmax), t(*dy), t(*dx))?],
            Step::MaxPoolBackward { pool, argmax, relu: Some(x), dy, dx } => {
                vec![pool::max_pool2d_backward_relu(gpu, pool, t(*argmax), t(*x), t(*dy), t(*dx))?]
            }
            Step::AvgPoolForward { pool, x, y } => vec![pool::avg_pool2d_forward(gpu, pool, t(*x), t(*y))?],
            Step::AvgPoolBackward { pool, dy, dx } => vec![pool::avg_pool2d_backward(gpu, pool, t(*dy), t(*dx))?],
            Step::GlobalAvgPoolForward { pool, x, y } => vec![pool::global_avg_pool_forward(gpu, pool, t(*x), t(*y))?],
            Step::GlobalAvgPoolBackward { pool, dy, dx } => vec![pool::global_avg_pool_backward(gpu, pool, t(*dy), t(*dx))?],
            Step::BiasForward { x, b, y } => vec![elementwise::bias_forward(gpu, t(*x), t(*b), t(*y))?],
            Step::ReluForward { x, y } => vec![elementwise::relu_forward(gpu, t(*x), t(*y))?],
            Step::ReluBackward { x, dy, dx } => vec![elementwise::relu_backward(gpu, t(*x), t(*dy), t(*dx))?],
            Step::ActivationForward { act, x, y } => vec![activation::activation_forward(gpu, *act, t(*x), t(*y))?],
            Step::ActivationBackward { act, saved, dy, dx } => {
                vec![activation::activation_backward(gpu, *act, t(*saved), t(*dy), t(*dx))?]
            }
            Step::DropoutForward { p, seed, x, y } => vec![dropout::dropout_forward(gpu, *p, *seed, &self.step_buffer, t(*x), t(*y))?],
            Step::DropoutBackward { p, seed, dy, dx } => {
                vec![dropout::dropout_backward(gpu, *p, *seed, &self.step_buffer, t(*dy), t(*dx))?]
            }
            Step::Add { a, b, y } => vec![elementwise::scale_add_forward(gpu, 1.0, t(*a), 1.0, t(*b), t(*y))?],
            Step::BatchNormForwardTrain { bn, x, weight, bias, y, mean, invstd, running_mean, running_var, count } => {
                let (rm, rv, n) = (t(*running_mean), t(*running_var), t(*count));
                vec![batchnorm::batchnorm_forward_train(gpu, bn, t(*x), t(*weight), t(*bias), t(*y), t(*mean), t(*invstd), rm, rv, n)?]
            }
            Step::BatchNormForwardEval { bn, x, weight, bias, running_mean, running_var, y } => {
                vec![batchnorm::batchnorm_forward_eval(gpu, bn, t(*x), t(*weight), t(*bias), t(*running_mean), t(*running_var), t(*y))?]
            }
            Step::BatchNormBackward { bn, x, weight, mean, invstd, dy, dx, dweight, dbias, accumulate } => {
                let (dw, db) = (t(*dweight), t(*dbias));
                vec![batchnorm::batchnorm_backward(gpu, bn, t(*x), t(*weight), t(*mean), t(*invstd), t(*dy), t(*dx), dw, db, *accumulate)?]
            }
            Step::Softmax { logits, probs, temperature } => vec![softmax::softmax_forward(gpu, t(*logits), t(*probs), *temperature)?],
            Step::XentForward { logits, labels, smoothing, loss, pred, grad } => {
                let grad = grad.map(|(d, scale)| (t(d), scale));
                vec![softmax::softmax_xent_metrics(gpu, t(*logits), t(*labels), *smoothing, t(*loss), t(*pred), grad, &self.metrics)?]
            }
        })
    }
}

/// A convolution's im2col columns kept from its forward (step `forward`) for its weight
/// gradient (step `backward`): `len` f32s, at the start of the scratch region or in a buffer
/// of their own.
pub(super) struct KeptColumns {
    pub(super) forward: usize,
    pub(super) backward: usize,
    pub(super) len: usize,
    pub(super) in_scratch: bool,
}

/// The GEMM of a linear forward or input-gradient step (run as a GEMM where its choice
/// says); `None` for other steps.
pub(super) fn linear_gemm(step: &Step, shape: &dyn Fn(ValueId) -> Vec<usize>) -> Option<Gemm> {
    match step {
        Step::LinearForward { x, w, b, relu, .. } => {
            let (x, w) = (shape(*x), shape(*w));
            let bias = if b.is_some() { Bias::Col } else { Bias::None };
            Some(Gemm { trans_b: true, relu: *relu, bias, ..Gemm::new(x[0], w[0], x[1]) })
        }
        Step::LinearBackwardInput { dy, w, .. } => {
            let (dy, w) = (shape(*dy), shape(*w));
            Some(Gemm::new(dy[0], w[1], dy[1]))
        }
        _ => None,
    }
}
