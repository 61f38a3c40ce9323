//! The CPU interpreter of a [`Plan`]: the same steps as the executor, computed with the
//! `cpu` references. It is the spec the GPU executor is tested against (loss curves and
//! final weights after several training steps).

use std::collections::HashMap;

use super::init::init_params;
use super::lower::{lower, Mode, Plan, PoolRoute, Step, ValueId, ValueKind};
use super::Graph;
use crate::kernels::reference;
use crate::kernels::optim::Optimizer;
use crate::kernels::pool::Pool2d;
use crate::Result;

/// Interprets a [`Plan`] on the host with the [`crate::kernels::reference`] references: parameters start
/// with [`super::init::init_params`] (the same values as on the GPU) and the optimizer
/// applies the same update, so N steps here equal N GPU steps within `testing::TRAINING`.
pub struct CpuExecutor {
    /// The lowered program it interprets.
    pub plan: Plan,
    f: HashMap<ValueId, Vec<f32>>,
    u: HashMap<ValueId, Vec<u32>>,
    optimizer: Option<Optimizer>,
    state: Vec<(Vec<f32>, Vec<f32>)>,
    step: u32,
}

impl CpuExecutor {
    /// Lowers `graph` for `mode` and initialises parameters and state as the GPU executor
    /// does. In training without an optimizer, a step computes the gradients and leaves the
    /// parameters as they are (what gradient checks want).
    pub fn new(graph: &Graph, mode: Mode, optimizer: Option<Optimizer>) -> Result<CpuExecutor> {
        let plan = lower(graph, mode)?;
        let mut f = HashMap::new();
        for (p, values) in plan.params.iter().zip(init_params(&plan, graph.seed)) {
            f.insert(p.value, values);
        }
        for s in &plan.state {
            f.insert(s.value, vec![s.init; s.shape.iter().product()]);
        }
        let state = plan.params.iter().map(|p| {
            let n = p.shape.iter().product();
            (vec![0.0; n], vec![0.0; n])
        });
        Ok(CpuExecutor { state: state.collect(), plan, f, u: HashMap::new(), optimizer, step: 0 })
    }

    fn get(&self, v: ValueId) -> &[f32] {
        &self.f[&self.plan.root(v)]
    }

    fn get_u(&self, v: ValueId) -> &[u32] {
        &self.u[&self.plan.root(v)]
    }

    fn set(&mut self, v: ValueId, data: Vec<f32>) {
        self.f.insert(self.plan.root(v), data);
    }

    /// y, argmax = the max-pool of x.
    fn max_pool(&mut self, pool: &Pool2d, x: ValueId, y: ValueId, argmax: ValueId) {
        let (out, arg) = reference::pool::max_pool2d_forward(pool, self.get(x));
        self.set(y, out);
        self.u.insert(self.plan.root(argmax), arg);
    }

    /// Writes `data` (a max-pool's output gradient when `pool` routes it) to `v`: as it is, or
    /// through that pool's backward (and its ReLU's mask).
    fn set_routed(&mut self, v: ValueId, data: Vec<f32>, pool: Option<PoolRoute>) {
        let Some(r) = pool else {
            return self.set(v, data);
        };
        let mut routed = reference::pool::max_pool2d_backward_saved(&r.pool, self.get_u(r.argmax), &data);
        if let Some(x) = r.relu {
            relu_mask(&mut routed, self.get(x));
        }
        self.set(v, routed);
    }

    /// Writes `data` to `v`, or adds it to what is there when `accumulate`.
    fn set_acc(&mut self, v: ValueId, data: Vec<f32>, accumulate: bool) {
        let data = if accumulate { self.get(v).iter().zip(&data).map(|(a, b)| a + b).collect() } else { data };
        self.set(v, data);
    }

    /// db (+)= channel sums of `dy`, when given.
    fn bias_grad(&mut self, dy: ValueId, db: Option<(ValueId, bool)>) {
        if let Some((db, accumulate)) = db {
            let s = self.shape(dy).to_vec();
            let r = reference::elementwise::bias_backward(self.get(dy), s[1], s[2..].iter().product());
            self.set_acc(db, r, accumulate);
        }
    }

    /// One step on a host batch; returns the sum of the batch's row losses (if the graph
    /// has a loss) computed the way the GPU metrics do.
    pub fn run_step(&mut self, input: &[f32], labels: &[u32]) -> Result<Option<f64>> {
        let plan_input = self.plan.input;
        self.set(plan_input, input.to_vec());
        if let Some(l) = self.plan.labels {
            self.u.insert(l, labels.to_vec());
        }
        let mut loss_sum = None;
        let classes = self.plan.classes.unwrap_or(1);
        for step in self.plan.steps.clone() {
            match step {
                Step::Conv2dForward { conv, x, w, b, relu, y, pool } => {
                    let out = reference::conv2d::conv2d_forward(&conv, self.get(x), self.get(w), b.map(|b| self.get(b)));
                    self.set(y, relu_if(relu, out));
                    if let Some(p) = pool {
                        self.max_pool(&p.pool, y, p.y, p.argmax);
                    }
                }
                Step::Conv2dBackwardInput { conv, w, dy, dx, pool } => {
                    let zeros = vec![0.0; conv.x_len()];
                    let (g, _) = reference::conv2d::conv2d_backward(&conv, &zeros, self.get(w), self.get(dy));
                    self.set_routed(dx, g, pool);
                }
                Step::Conv2dBackwardWeight { conv, x, dy, dw, accumulate, db } => {
                    let zeros = vec![0.0; conv.w_len()];
                    let (_, g) = reference::conv2d::conv2d_backward(&conv, self.get(x), &zeros, self.get(dy));
                    self.set_acc(dw, g, accumulate);
                    self.bias_grad(dy, db);
                }
                Step::LinearForward { x, w, b, relu, y } => {
                    let (n, inp, out) = self.linear_dims(x, w);
                    let zeros = vec![0.0; out];
                    let bias = b.map_or(&zeros[..], |b| self.get(b));
                    let r = reference::gemm::linear_forward(self.get(x), self.get(w), bias, n, inp, out);
                    self.set(y, relu_if(relu, r));
                }
                Step::LinearBackwardInput { dy, w, dx, pool } => {
                    let (n, out, inp) = (self.shape(dy)[0], self.shape(dy)[1], self.shape(w)[1]);
                    let r = reference::gemm::gemm(n, inp, out, self.get(dy), false, self.get(w), false);
                    self.set_routed(dx, r, pool);
                }
                Step::LinearBackwardWeight { dy, x, dw, accumulate, db } => {
                    let (n, out, inp) = (self.shape(dy)[0], self.shape(dy)[1], self.shape(x)[1]);
                    let r = reference::gemm::gemm(out, inp, n, self.get(dy), true, self.get(x), false);
                    self.set_acc(dw, r, accumulate);
                    self.bias_grad(dy, db);
                }
                Step::LinearBackwardSmall { dy, w, x, dx, relu, dw, db } => {
                    let (n, out, inp) = (self.shape(dy)[0], self.shape(dy)[1], self.shape(w)[1]);
                    let (mut gx, gw, gb) = reference::gemm::linear_backward(self.get(x), self.get(w), self.get(dy), n, inp, out);
                    if let Some(dx) = dx {
                        if relu {
                            relu_mask(&mut gx, self.get(x));
                        }
                        self.set(dx, gx);
                    }
                    if let Some((dw, accumulate)) = dw {
                        self.set_acc(dw, gw, accumulate);
                    }
                    if let Some((db, accumulate)) = db {
                        self.set_acc(db, gb, accumulate);
                    }
                }
                Step::BiasBackward { dy, db, accumulate } => self.bias_grad(dy, Some((db, accumulate))),
                Step::MaxPoolForward { pool, x, y, argmax } => self.max_pool(&pool, x, y, argmax),
                Step::MaxPoolBackward { pool, argmax, relu, dy, dx } => {
                    let mut r = reference::pool::max_pool2d_backward_saved(&pool, self.get_u(argmax), self.get(dy));
                    if let Some(x) = relu {
                        relu_mask(&mut r, self.get(x));
                    }
                    self.set(dx, r);
                }
                Step::AvgPoolForward { pool, x, y } => {
                    let r = reference::pool::avg_pool2d_forward(&pool, self.get(x));
                    self.set(y, r);
                }
                Step::AvgPoolBackward { pool, dy, dx } => {
                    let r = reference::pool::avg_pool2d_backward(&pool, self.get(dy));
                    self.set(dx, r);
                }
                Step::GlobalAvgPoolForward { pool, x, y } => {
                    let r = reference::pool::global_avg_pool_forward(&pool, self.get(x));
                    self.set(y, r);
                }
                Step::GlobalAvgPoolBackward { pool, dy, dx } => {
                    let r = reference::pool::global_avg_pool_backward(&pool, self.get(dy));
                    self.set(dx, r);
                }
                Step::BiasForward { x, b, y } => {
                    let inner = self.shape(x)[2..].iter().product();
                    let r = reference::elementwise::bias_forward(self.get(x), self.get(b), inner);
                    self.set(y, r);
                }
                Step::ReluForward { x, y } => {
                    let r = reference::elementwise::relu_forward(self.get(x));
                    self.set(y, r);
                }
                Step::ReluBackward { x, dy, dx } => {
                    let r = reference::elementwise::relu_backward(self.get(x), self.get(dy));
                    self.set(dx, r);
                }
                Step::ActivationForward { act, x, y } => {
                    let r = reference::activation::activation_forward(act, self.get(x));
                    self.set(y, r);
                }
                Step::ActivationBackward { act, saved, dy, dx } => {
                    let r = reference::activation::activation_backward(act, self.get(saved), self.get(dy));
                    self.set(dx, r);
                }
                Step::DropoutForward { p, seed, x, y } => {
                    let r = reference::dropout::dropout_forward(self.get(x), p, seed, self.step);
                    self.set(y, r);
                }
                Step::DropoutBackward { p, seed, dy, dx } => {
                    let r = reference::dropout::dropout_backward(self.get(dy), p, seed, self.step);
                    self.set(dx, r);
                }
                Step::Add { a, b, y } => {
                    let r = reference::elementwise::scale_add_forward(1.0, self.get(a), 1.0, self.get(b));
                    self.set(y, r);
                }
                Step::BatchNormForwardTrain { bn, x, weight, bias, y, mean, invstd, running_mean, running_var, count } => {
                    let (w, b, rm, rv) = (self.get(weight), self.get(bias), self.get(running_mean), self.get(running_var));
                    let r = reference::batchnorm::batchnorm_forward_train(&bn, self.get(x), w, b, rm, rv);
                    let n = self.get(count)[0] + 1.0;
                    self.set(y, r.y);
                    self.set(mean, r.mean);
                    self.set(invstd, r.invstd);
                    self.set(running_mean, r.running_mean);
                    self.set(running_var, r.running_var);
                    self.set(count, vec![n]);
                }
                Step::BatchNormForwardEval { bn, x, weight, bias, running_mean, running_var, y } => {
                    let (w, b, rm, rv) = (self.get(weight), self.get(bias), self.get(running_mean), self.get(running_var));
                    let r = reference::batchnorm::batchnorm_forward_eval(&bn, self.get(x), w, b, rm, rv);
                    self.set(y, r);
                }
                Step::BatchNormBackward { bn, x, weight, mean, invstd, dy, dx, dweight, dbias, accumulate } => {
                    let (w, m, is) = (self.get(weight), self.get(mean), self.get(invstd));
                    let (gx, gw, gb) = reference::batchnorm::batchnorm_backward(&bn, self.get(x), w, m, is, self.get(dy));
                    self.set(dx, gx);
                    self.set_acc(dweight, gw, accumulate.0);
                    self.set_acc(dbias, gb, accumulate.1);
                }
                Step::Softmax { logits, probs, temperature } => {
                    let c = self.shape(logits)[1];
                    let r = reference::softmax::softmax_forward(self.get(logits), c, temperature);
                    self.set(probs, r);
                }
                Step::XentForward { logits, labels, smoothing, loss, pred, grad } => {
                    let (l, p) = reference::softmax::softmax_xent_forward(self.get(logits), self.get_u(labels), classes, smoothing);
                    let valid = self.get_u(labels).iter().map(|&l| (l as usize) <= classes);
                    loss_sum = Some(l.iter().zip(valid).filter(|(_, v)| *v).map(|(&l, _)| l as f64).sum());
                    self.set(loss, l);
                    self.u.insert(self.plan.root(pred), p);
                    if let Some((dlogits, scale)) = grad {
                        let r = reference::softmax::softmax_xent_backward(self.get(logits), self.get_u(labels), classes, smoothing, scale);
                        self.set(dlogits, r);
                    }
                }
            }
        }
        if let (Mode::Train, Some(opt)) = (self.plan.mode, self.optimizer) {
            for (i, p) in self.plan.params.clone().iter().enumerate() {
                let Some(g) = p.grad else { continue };
                let grad = self.f[&g].clone();
                let w = self.f.get_mut(&p.value).expect("parameter");
                let (m1, m2) = &mut self.state[i];
                reference::optim::optimizer_step(&opt, self.step, &grad, w, m1, m2);
            }
            self.step += 1;
        }
        Ok(loss_sum)
    }

    fn shape(&self, v: ValueId) -> &[usize] {
        &self.plan.values[v.0].shape
    }

    fn linear_dims(&self, x: ValueId, w: ValueId) -> (usize, usize, usize) {
        (self.shape(x)[0], self.shape(x)[1], self.shape(w)[0])
    }

    /// Parameters as (name, values), in graph order.
    pub fn params(&self) -> Vec<(String, Vec<f32>)> {
        self.plan.params.iter().map(|p| (p.name.clone(), self.f[&p.value].clone())).collect()
    }

    /// Replaces parameter `name` (finite-difference checks).
    pub fn set_param(&mut self, name: &str, values: Vec<f32>) {
        let p = self.plan.params.iter().find(|p| p.name == name).expect("parameter name");
        self.f.insert(p.value, values);
    }

    /// State tensors (running statistics) as (name, values), in graph order.
    pub fn state(&self) -> Vec<(String, Vec<f32>)> {
        self.plan.state.iter().map(|s| (s.name.clone(), self.f[&s.value].clone())).collect()
    }

    /// Replaces state tensor `name`.
    pub fn set_state(&mut self, name: &str, values: Vec<f32>) {
        let s = self.plan.state.iter().find(|s| s.name == name).expect("state name");
        self.f.insert(s.value, values);
    }

    /// Sets the gradient of the output node the backward of [`Mode::InputGradient`] starts
    /// from (see [`super::Executor::write_output_grad`]).
    pub fn write_output_grad(&mut self, data: Vec<f32>) {
        let (_, v) = self.plan.output_grad.expect("an InputGradient plan");
        assert_eq!(data.len(), self.plan.values[v.0].len(), "output gradient length");
        self.set(v, data);
    }

    /// The gradient node `node` received in the last step's backward, if computed.
    pub fn grad(&self, node: super::NodeId) -> Option<&[f32]> {
        self.plan.grads.get(&node).and_then(|&v| self.value(v))
    }

    /// The value of `v` after the last step, if it was computed.
    pub fn value(&self, v: ValueId) -> Option<&[f32]> {
        debug_assert!(!matches!(self.plan.values[v.0].kind, ValueKind::Labels));
        self.f.get(&self.plan.root(v)).map(|v| v.as_slice())
    }
}

/// A fused epilogue's ReLU (see `Step::Conv2dForward`).
fn relu_if(relu: bool, mut v: Vec<f32>) -> Vec<f32> {
    if relu {
        v.iter_mut().for_each(|x| *x = x.max(0.0));
    }
    v
}

/// A fused ReLU backward: zeroes the gradient `g` where the ReLU's output `y` is not positive.
fn relu_mask(g: &mut [f32], y: &[f32]) {
    g.iter_mut().zip(y).filter(|(_, &y)| y <= 0.0).for_each(|(g, _)| *g = 0.0);
}
