//! The executor: allocates what the plan needs once (the flat parameter, gradient and
//! optimizer-state buffers, the planned activation buffers, the step buffer, the metrics
//! buffer), builds every bind group once, and then records a whole step (batch gather,
//! forward, loss, metrics, backward, optimizer) into one compute pass and one submit.
//! Per-step values (the step number, the batch's offset into the shuffled dataset) travel
//! in the 32-byte step buffer, written with the submit; the host reads back only metrics,
//! and only when asked.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::lower::{lower, lower_keeping, Mode, Plan, PoolRoute, Step, ValueId, ValueKind};
use crate::kernels::pool::{MaxPoolOut, MaxPoolRoute};
use super::planner::{naive_bytes, plan_memory, MemoryPlan};
use super::profile::{self, Profile, Unit};
use super::{Graph, Init, NodeId};
use crate::kernels::data::ResidentDataset;
use crate::runtime::gpu::{Gpu, GpuBuffer};
use crate::graph::autotune::{TuneKey, Tuning};
use crate::graph::choice::StepChoice;
use super::NamedTensors;
use crate::kernels::gemm::{gemm_split, Bias, Gemm};
use crate::kernels::optim::{optimizer_step, step_words, Optimizer, STEP_WORDS};
use crate::kernels::softmax::{metrics_words, Metrics};
use crate::kernels::conv::{ConvSwitches, WeightInput};
use crate::kernels::linear::{self, Linear, LinearChoice};
use crate::kernels::{activation, batchnorm, conv, dropout, elementwise, pool, reduce, softmax, Dispatch};
use crate::base::rng::Rng;
use crate::runtime::tensor::{DType, Tensor};
use crate::{Error, Result};

/// Traffic and memory counters, so "no per-step readback" is checked, not claimed.
#[derive(Clone, Debug, Default)]
pub struct ExecStats {
    /// Training or evaluation steps recorded.
    pub steps: u64,
    /// Queue submits by this GPU so far (all executors on it).
    pub submits: u64,
    /// Host readbacks by this GPU so far.
    pub readbacks: u64,
    /// Compute dispatches one step records: the gather, each plan step's (a convolution may
    /// take several: im2col staging, split-K sums) and the optimizer's.
    pub dispatches_per_step: usize,
    /// Bytes of kiln's storage buffers alive on this GPU now, and the most alive at once
    /// (parameters, optimizer state, activations, datasets, staging; not the driver's own).
    pub gpu_bytes: u64,
    /// The most bytes alive at once so far (see `gpu_bytes`).
    pub gpu_peak_bytes: u64,
    /// Activation bytes the memory planner allocated, and what no reuse would take.
    pub planned_bytes: u64,
    /// Bytes the activations would take with a buffer each.
    pub naive_bytes: u64,
    /// Activation buffers the planner allocated.
    pub activation_buffers: usize,
}

impl ExecStats {
    /// bytes planned / bytes naive: below 1 when buffers are reused.
    pub fn reuse_factor(&self) -> f64 {
        self.planned_bytes as f64 / self.naive_bytes.max(1) as f64
    }
}

/// Initial parameter values (see [`Init`]), seeded per parameter: the same values on
/// every adapter, and on the CPU path.
pub fn init_params(plan: &Plan, seed: u64) -> Vec<Vec<f32>> {
    plan.params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let n = p.shape.iter().product();
            let bound = match p.init {
                Init::Constant(c) => return vec![c; n],
                Init::KaimingUniform { fan_in } => 1.0 / (fan_in.max(1) as f64).sqrt(),
                Init::GlorotUniform { fan_in, fan_out } => (6.0 / (fan_in + fan_out).max(1) as f64).sqrt(),
            };
            let mut rng = Rng::new(seed.wrapping_mul(0x1000_0000_01B3).wrapping_add(i as u64));
            (0..n).map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32).collect()
        })
        .collect()
}

/// The flat layout of the parameters (or of the state): offsets (in elements) aligned to
/// the adapter's storage-binding offset alignment, and the total length.
fn flat_layout<'a>(shapes: impl Iterator<Item = &'a Vec<usize>>, align_bytes: u32) -> (Vec<usize>, usize) {
    let align = (align_bytes as usize / 4).max(1);
    let mut offsets = Vec::new();
    let mut end = 0;
    for shape in shapes {
        offsets.push(end);
        end = (end + shape.iter().product::<usize>()).next_multiple_of(align);
    }
    (offsets, end.max(1))
}

/// Runs a lowered [`Graph`] on the GPU: a training step (batch gather, forward, loss and
/// metrics, backward, optimizer) or an evaluation step is one compute pass and one submit,
/// with nothing read back. Everything is allocated and every bind group built in
/// [`Executor::new`]; the host then writes a batch (or attaches a resident dataset), calls
/// [`Executor::run_step`] and reads the metrics when it wants them.
///
/// ```
/// use kiln::graph::{Executor, Graph, Init, Mode};
/// use kiln::ops::{gemm::GemmConfig, optim::Optimizer};
///
/// let gpu = kiln::testing::gpu();
/// // an MLP 4 -> 16 -> 2 on a batch of 8; the class is the sign of the first feature
/// let mut g = Graph::new(7);
/// let x = g.input("x", &[8, 4])?;
/// let w1 = g.param("fc1.weight", &[16, 4], Init::KaimingUniform { fan_in: 4 });
/// let b1 = g.param("fc1.bias", &[16], Init::KaimingUniform { fan_in: 4 });
/// let h = g.linear("fc1", x, w1, Some(b1))?;
/// let h = g.relu("relu", h);
/// let w2 = g.param("fc2.weight", &[2, 16], Init::KaimingUniform { fan_in: 16 });
/// let logits = g.linear("fc2", h, w2, None)?;
/// let labels = g.labels("labels", 8);
/// g.softmax_cross_entropy("loss", logits, labels)?;
///
/// let mut exec = Executor::new(gpu, &g, Mode::Train, Some(Optimizer::adam(1e-2)), &GemmConfig::default_for(gpu.info()), None)?;
/// let mut rng = kiln::rng::Rng::new(1);
/// let xs = rng.vec(8 * 4);
/// let ys: Vec<u32> = xs.chunks(4).map(|r| (r[0] > 0.0) as u32).collect();
/// exec.write_input(&xs)?;
/// exec.write_labels(&ys)?;
///
/// exec.run_step(0)?; // the metrics come from the forward, before the update
/// let first = exec.read_metrics()?.mean_loss();
/// for _ in 0..30 {
///     exec.run_step(0)?; // one submit each, no readback
/// }
/// exec.reset_metrics()?;
/// exec.run_step(0)?;
/// let m = exec.read_metrics()?;
/// assert_eq!(m.rows, 8);
/// assert!(m.mean_loss() < first, "loss {first} -> {}", m.mean_loss());
/// assert_eq!(exec.read_params()?[0].0, "fc1.weight");
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct Executor<'g> {
    gpu: &'g Gpu,
    /// The lowered program this executor runs.
    pub plan: Plan,
    memory: MemoryPlan,
    tensors: Vec<Tensor>,
    params: Tensor,
    offsets: Vec<usize>,
    /// The flat state buffer (BatchNorm running statistics; one f32 word when the model
    /// has none) and each state tensor's offset in it. Shared like the parameters.
    state: Tensor,
    state_offsets: Vec<usize>,
    step_buffer: Tensor,
    metrics: Tensor,
    dispatches: Vec<Dispatch>,
    /// The dispatches of each plan step (autotuning times steps one by one).
    step_ranges: Vec<std::ops::Range<usize>>,
    gather: Option<Dispatch>,
    optimizer: Option<Dispatch>,
    /// The optimizer's state, flat like the parameters: SGD's velocity, Adam's two moments.
    moments: Vec<Tensor>,
    /// Optimizer steps taken (Adam's t - 1, the dropout RNG counter).
    step: u32,
    /// The update rule and schedule, for the per-step scalars in the step buffer.
    update: Option<Optimizer>,
    steps_run: u64,
    /// im2col columns a convolution's forward keeps for its weight gradient, by the index
    /// of each of the two steps (`ConvChoice::kept_columns_len`).
    kept_columns: HashMap<usize, Tensor>,
    /// How each plan step runs (its kernel, GEMM variant, fused pools), resolved once in
    /// [`Executor::new`] from the step, its tuned variant and `KILN_DIRECT_CONV`.
    choices: Vec<StepChoice>,
}

/// An executor's parameter and state buffers, for another executor of the same model to
/// use ([`Executor::shared_params`], [`Executor::new_sharing`]): a handle that does not
/// borrow the executor, so the other can be built on another thread while this one runs.
#[derive(Clone)]
pub struct SharedParams {
    params: Tensor,
    offsets: Vec<usize>,
    state: Tensor,
    state_offsets: Vec<usize>,
}

impl<'g> Executor<'g> {
    /// Lowers `graph` for `mode`, plans memory and builds every dispatch. `optimizer` is
    /// required for training. `share_params` makes this executor use another's parameters
    /// and state (an evaluation executor beside a training one: it normalises with the
    /// running statistics the trainer updates).
    pub fn new(
        gpu: &'g Gpu,
        graph: &Graph,
        mode: Mode,
        optimizer: Option<Optimizer>,
        kernels: impl Into<Tuning>,
        share_params: Option<&Executor>,
    ) -> Result<Executor<'g>> {
        let shared = share_params.map(Executor::shared_params);
        Self::build(gpu, lower(graph, mode)?, graph.seed, optimizer, &kernels.into(), shared.as_ref(), false)
    }

    /// [`Executor::new`] without optimizer, on the parameters and state of `shared`.
    pub fn new_sharing(gpu: &'g Gpu, graph: &Graph, mode: Mode, kernels: impl Into<Tuning>, shared: &SharedParams) -> Result<Executor<'g>> {
        Self::build(gpu, lower(graph, mode)?, graph.seed, None, &kernels.into(), Some(shared), false)
    }

    /// This executor's parameter and state buffers, for [`Executor::new_sharing`].
    pub fn shared_params(&self) -> SharedParams {
        SharedParams {
            params: self.params.clone(),
            offsets: self.offsets.clone(),
            state: self.state.clone(),
            state_offsets: self.state_offsets.clone(),
        }
    }

    /// An executor without optimizer (eval or [`Mode::InputGradient`]) whose plan keeps the
    /// value and gradient of each node in `keep` readable after a step ([`lower_keeping`]):
    /// feature maps and their gradients for Grad-CAM.
    pub fn new_keeping(gpu: &'g Gpu, graph: &Graph, mode: Mode, kernels: impl Into<Tuning>, keep: &[NodeId]) -> Result<Executor<'g>> {
        Self::build(gpu, lower_keeping(graph, mode, keep)?, graph.seed, None, &kernels.into(), None, false)
    }

    /// As `new`, but every activation buffer is filled with NaN right after its last
    /// reader: if the planner ever let two live values share memory, results change.
    pub fn new_poisoning_freed(gpu: &'g Gpu, graph: &Graph, mode: Mode, optimizer: Option<Optimizer>, kernels: impl Into<Tuning>) -> Result<Executor<'g>> {
        Self::build(gpu, lower(graph, mode)?, graph.seed, optimizer, &kernels.into(), None, true)
    }

    fn build(
        gpu: &'g Gpu,
        plan: Plan,
        seed: u64,
        optimizer: Option<Optimizer>,
        tuning: &Tuning,
        share_params: Option<&SharedParams>,
        poison_freed: bool,
    ) -> Result<Executor<'g>> {
        let mode = plan.mode;
        if mode == Mode::Train && optimizer.is_none() {
            return Err(Error::unsupported("Executor", "training needs an optimizer"));
        }
        let limit = gpu.limits().max_storage_buffer_binding_size;
        if let Some(v) = plan.values.iter().max_by_key(|v| v.dtype.bytes(v.len())) {
            let bytes = v.dtype.bytes(v.len());
            if bytes > limit {
                return Err(Error::TooLargeToBind { value: v.name.clone(), shape: v.shape.clone(), bytes, limit });
            }
        }
        let memory = plan_memory(&plan);
        let align = gpu.limits().min_storage_buffer_offset_alignment;
        let (offsets, flat_len) = flat_layout(plan.params.iter().map(|p| &p.shape), align);
        let (state_offsets, state_len) = flat_layout(plan.state.iter().map(|s| &s.shape), align);
        let params = match share_params {
            Some(other) => {
                if other.offsets != offsets || other.state_offsets != state_offsets {
                    return Err(Error::shape("Executor", "shared parameters come from a different model"));
                }
                other.params.clone()
            }
            None => {
                let p = Tensor::empty(gpu, &[flat_len], DType::F32)?;
                let mut flat = vec![0f32; flat_len];
                for (v, &o) in init_params(&plan, seed).iter().zip(&offsets) {
                    flat[o..o + v.len()].copy_from_slice(v);
                }
                p.write_f32(gpu, &flat)?;
                p
            }
        };
        let state = match share_params {
            Some(other) => other.state.clone(),
            None => {
                let mut flat = vec![0f32; state_len];
                for (s, &o) in plan.state.iter().zip(&state_offsets) {
                    flat[o..o + s.shape.iter().product::<usize>()].fill(s.init);
                }
                Tensor::from_f32(gpu, &[state_len], &flat)?
            }
        };
        let zeros = |n: usize| Tensor::from_f32(gpu, &[n], &vec![0.0; n]);
        let grads = if mode == Mode::Train { Some(zeros(flat_len)?) } else { None };
        let slot_buffers: Vec<Arc<GpuBuffer>> =
            memory.slots.iter().map(|s| gpu.storage_buffer("kiln activation", s.bytes).map(Arc::new)).collect::<Result<_>>()?;
        let step_buffer = Tensor::from_u32(gpu, &[STEP_WORDS], &[0; STEP_WORDS])?;
        let classes = plan.classes.unwrap_or(1);
        let metrics = Tensor::from_u32(gpu, &[metrics_words(classes)], &vec![0; metrics_words(classes)])?;

        // A tensor for every value.
        let mut tensors: Vec<Tensor> = Vec::with_capacity(plan.values.len());
        for (i, v) in plan.values.iter().enumerate() {
            let root = plan.root(ValueId(i));
            let t = match plan.values[root.0].kind {
                ValueKind::Activation => {
                    let slot = memory.slot_of[i].expect("planned activation");
                    Tensor::from_buffer(slot_buffers[slot].clone(), 0, &v.shape, v.dtype)
                }
                ValueKind::Param(p) => view(&params, offsets[p], &v.shape),
                ValueKind::Grad(p) => view(grads.as_ref().expect("gradients in training"), offsets[p], &v.shape),
                ValueKind::State(s) => view(&state, state_offsets[s], &v.shape),
                ValueKind::Input | ValueKind::Labels | ValueKind::OutputGrad => {
                    if root.0 == i {
                        Tensor::empty(gpu, &v.shape, v.dtype)?
                    } else {
                        tensors[root.0].reshape(&v.shape)?
                    }
                }
                ValueKind::Alias(_) => unreachable!("root is not an alias"),
            };
            tensors.push(t);
        }

        let mut exec = Executor {
            gpu,
            plan,
            memory,
            tensors,
            params,
            offsets,
            state,
            state_offsets,
            step_buffer,
            metrics,
            dispatches: Vec::new(),
            step_ranges: Vec::new(),
            gather: None,
            optimizer: None,
            moments: Vec::new(),
            step: 0,
            update: optimizer,
            steps_run: 0,
            kept_columns: HashMap::new(),
            choices: Vec::new(),
        };
        // Each step's kernel, chosen once.
        let switches = ConvSwitches::from_env()?;
        let plan = &exec.plan;
        exec.choices = plan.steps.iter().map(|step| StepChoice::for_step(gpu, plan, step, &tuning.choose(plan.tune_key(step).as_ref()), switches)).collect();
        // One scratch region for every pass that stages data (Gpu::scratch), as large as
        // the largest of them, before any is recorded; then the columns kept in it.
        let mut scratch = exec.plan.steps.iter().zip(&exec.choices).map(|(step, choice)| {
            match (step, choice) {
                // a routed dX whose pool's backward runs apart stores its product in the scratch region
                (Step::Conv2dBackwardInput { conv, pool, .. }, StepChoice::Conv(c)) => c.scratch_bytes(conv, pool.as_ref().map(|r| r.pool.y_len())),
                (Step::Conv2dForward { conv, .. } | Step::Conv2dBackwardWeight { conv, .. }, StepChoice::Conv(c)) => c.scratch_bytes(conv, None),
                (Step::LinearBackwardInput { pool, .. }, StepChoice::Linear(c)) => c.scratch_bytes(pool.as_ref().map(|r| r.pool.y_len())),
                (_, StepChoice::Linear(c)) => c.scratch_bytes(None),
                _ => 0,
            }
        }).collect::<Vec<u64>>();
        let keep = exec.columns_to_keep(&scratch);
        for k in &keep {
            scratch[k.backward] = 0;
            if !k.in_scratch {
                scratch[k.forward] = 0;
            }
        }
        gpu.reserve_scratch(scratch.into_iter().max().unwrap_or(0))?;
        for k in keep {
            let bytes = 4 * k.len as u64;
            let columns = match k.in_scratch {
                true => Tensor::from_buffer(gpu.scratch(bytes)?, 0, &[k.len], DType::F32),
                false => Tensor::empty(gpu, &[k.len], DType::F32)?,
            };
            exec.kept_columns.insert(k.backward, columns.clone());
            exec.kept_columns.insert(k.forward, columns);
        }
        for (s, mut d) in exec.build_dispatches()?.into_iter().enumerate() {
            let start = exec.dispatches.len();
            exec.dispatches.append(&mut d);
            exec.step_ranges.push(start..exec.dispatches.len());
            if poison_freed {
                for v in 0..exec.plan.values.len() {
                    if exec.memory.interval[v].is_some_and(|(_, end)| end == s) {
                        let t = &exec.tensors[v];
                        let as_f32 = Tensor::from_buffer(t.buffer().clone(), 0, &[t.bytes() as usize / 4], DType::F32);
                        exec.dispatches.push(elementwise::fill(gpu, &as_f32, f32::NAN)?);
                    }
                }
            }
        }
        if let (Some(opt), Some(grads)) = (optimizer, grads) {
            let m1 = zeros(flat_len)?;
            let m2 = if opt.state_slots() == 2 { Some(zeros(flat_len)?) } else { None };
            exec.optimizer = Some(optimizer_step(gpu, &opt, &exec.step_buffer, &grads, &exec.params, &m1, m2.as_ref())?);
            exec.moments = std::iter::once(m1).chain(m2).collect();
        }
        Ok(exec)
    }

    /// Median seconds of each plan step whose tune key passes `which`, run alone (submit +
    /// wait) `reps` times after a warm-up; None for the other steps.
    pub fn time_steps(&self, reps: usize, which: &dyn Fn(&TuneKey) -> bool) -> Result<Vec<Option<f64>>> {
        let mut out = Vec::new();
        for (step, range) in self.plan.steps.iter().zip(&self.step_ranges) {
            if !self.plan.tune_key(step).is_some_and(|k| which(&k)) {
                out.push(None);
                continue;
            }
            let ds: Vec<&Dispatch> = self.dispatches[range.clone()].iter().collect();
            let mut times = Vec::new();
            for i in 0..=reps {
                let t0 = std::time::Instant::now();
                self.gpu.run(&ds)?;
                self.gpu.wait()?;
                if i > 0 {
                    times.push(t0.elapsed().as_secs_f64());
                }
            }
            times.sort_by(f64::total_cmp);
            out.push(Some(times[times.len() / 2]));
        }
        Ok(out)
    }

    /// A per-kernel profile of this executor's step over `reps` repetitions (see
    /// [`super::profile`]). The steps run for real: a training executor's parameters
    /// and optimizer state move as in `reps + 1` times as many training steps.
    pub fn profile(&mut self, reps: usize) -> Result<Profile> {
        let name = |s: &Step| {
            let (_, writes) = s.io();
            let kind = format!("{s:?}");
            let kind = kind.split([' ', '{']).next().unwrap_or_default().to_string();
            match writes.first() {
                Some(v) => format!("{kind} {}", self.plan.values[v.0].name),
                None => kind,
            }
        };
        let mut units = Vec::new();
        if let Some(g) = &self.gather {
            units.push(Unit { name: "gather".into(), step: None, dispatches: vec![g] });
        }
        for (step, range) in self.plan.steps.iter().zip(&self.step_ranges) {
            units.push(Unit { name: name(step), step: Some(step), dispatches: self.dispatches[range.clone()].iter().collect() });
        }
        if let Some(o) = &self.optimizer {
            units.push(Unit { name: "optimizer".into(), step: None, dispatches: vec![o] });
        }
        let (gpu, plan) = (self.gpu, &self.plan);
        // The whole step, as run_step records it (the copy keeps the borrow of the units).
        let all: Vec<&Dispatch> = units.iter().flat_map(|u| u.dispatches.iter().copied()).collect();
        profile::measure(gpu, plan, &units, reps, || {
            let t0 = std::time::Instant::now();
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("kiln step"), timestamp_writes: None });
                all.iter().for_each(|d| d.record(&mut pass));
            }
            gpu.submit(encoder.finish())?;
            gpu.wait()?;
            Ok(t0.elapsed().as_secs_f64())
        })
    }

    fn t(&self, v: ValueId) -> &Tensor {
        &self.tensors[v.0]
    }

    /// A plan's max-pool route with its tensors.
    fn route<'a>(&'a self, r: &'a PoolRoute) -> MaxPoolRoute<'a> {
        MaxPoolRoute { pool: &r.pool, argmax: self.t(r.argmax), relu: r.relu.map(|v| self.t(v)) }
    }

    /// The convolutions whose forward keeps its im2col columns for the weight gradient (the
    /// same geometry and input, both passes staged: `ConvChoice::kept_columns_len`), given
    /// each step's scratch bytes: in the scratch region where no step between the two uses it
    /// (nothing overwrites them: no extra memory), else in a buffer of their own if they
    /// take at most half the scratch region (memory traded for an im2col pass, bounded by
    /// what staging takes anyway: the MNIST CNN's conv1 at batch 64 keeps 5.6 MiB beside a
    /// 20 MiB region).
    fn columns_to_keep(&self, scratch: &[u64]) -> Vec<KeptColumns> {
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
    fn build_dispatches(&self) -> Result<Vec<Vec<Dispatch>>> {
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
    fn dispatch(&self, step: &Step, choice: &StepChoice, columns: Option<&Tensor>) -> Result<Vec<Dispatch>> {
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
            Step::Softmax { logits, probs } => vec![softmax::softmax_forward(gpu, t(*logits), t(*probs))?],
            Step::XentForward { logits, labels, smoothing, loss, pred, grad } => {
                let grad = grad.map(|(d, scale)| (t(d), scale));
                vec![softmax::softmax_xent_metrics(gpu, t(*logits), t(*labels), *smoothing, t(*loss), t(*pred), grad, &self.metrics)?]
            }
        })
    }

    /// Makes each step start with a gather of the batch from `data` (resident on the GPU).
    pub fn attach_dataset(&mut self, data: &ResidentDataset, augment: bool, seed: u32) -> Result<()> {
        let labels = self.plan.labels.ok_or_else(|| Error::unsupported("attach_dataset", "the graph has no labels node"))?;
        let (x, y) = (self.t(self.plan.input).clone(), self.t(labels).clone());
        self.gather = Some(data.gather(self.gpu, &self.step_buffer, &x, &y, augment, seed)?);
        Ok(())
    }

    /// Writes the input batch from the host (tests, prediction).
    pub fn write_input(&self, data: &[f32]) -> Result<()> {
        let t = self.t(self.plan.input);
        if data.len() != t.len() {
            return Err(Error::shape("input", format!("{} values for input {:?}", data.len(), t.shape())));
        }
        t.write_f32(self.gpu, data)
    }

    /// Writes the labels batch from the host (tests). `Error::Unsupported` without a labels
    /// node, `Error::Shape` unless there is one label per row.
    pub fn write_labels(&self, labels: &[u32]) -> Result<()> {
        let v = self.plan.labels.ok_or_else(|| Error::unsupported("write_labels", "the graph has no labels node"))?;
        let t = self.t(v);
        if labels.len() != t.len() {
            return Err(Error::shape("labels", format!("{} labels for a batch of {}", labels.len(), t.len())));
        }
        t.write_u32(self.gpu, labels)
    }

    /// Records and submits one step: the batch gather (with a dataset attached), forward,
    /// loss and metrics, and in training backward and the optimizer update, in one compute
    /// pass and one submit. `batch_start` is the batch's first row in the dataset's current
    /// permutation (ignored without a dataset). No host read.
    pub fn run_step(&mut self, batch_start: u32) -> Result<()> {
        self.step_buffer.write_u32(self.gpu, &step_words(self.update.as_ref(), self.step, batch_start))?;
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("kiln step"), timestamp_writes: None });
            for d in self.gather.iter().chain(&self.dispatches).chain(&self.optimizer) {
                d.record(&mut pass);
            }
        }
        self.gpu.submit(encoder.finish())?;
        if self.plan.mode == Mode::Train {
            self.step += 1;
        }
        self.steps_run += 1;
        Ok(())
    }

    /// Reads the metrics accumulated since the last reset (one readback).
    pub fn read_metrics(&self) -> Result<Metrics> {
        crate::runtime::gpu::block_on(self.read_metrics_async())
    }

    /// [`Executor::read_metrics`] without blocking (the browser's training loop awaits it).
    pub async fn read_metrics_async(&self) -> Result<Metrics> {
        let classes = self.plan.classes.ok_or_else(|| Error::unsupported("read_metrics", "the graph has no loss"))?;
        Ok(Metrics::from_words(&self.metrics.to_u32_async(self.gpu).await?, classes))
    }

    /// Zeroes the metrics buffer (loss sum, correct count, rows, confusion matrix); it
    /// accumulates over every step run since.
    pub fn reset_metrics(&self) -> Result<()> {
        self.metrics.write_u32(self.gpu, &vec![0; self.metrics.len()])
    }

    /// Reads the value a graph node computed in the last step (tests, prediction). An
    /// intermediate whose memory a later value reuses is an error: build the executor with
    /// [`Executor::new_keeping`] to read it.
    pub fn read_node(&self, node: NodeId) -> Result<Vec<f32>> {
        crate::runtime::gpu::block_on(self.read_node_async(node))
    }

    /// [`Executor::read_node`] without blocking.
    pub async fn read_node_async(&self, node: NodeId) -> Result<Vec<f32>> {
        let v = *self.plan.outputs.get(&node).ok_or_else(|| Error::shape("read_node", format!("no value for node {node:?}")))?;
        self.read_live("read_node", v).await
    }

    /// Writes the gradient of the output node (the logits) the backward of
    /// [`Mode::InputGradient`] starts from: a one-hot row per image gives the gradient of
    /// that class's logit.
    pub fn write_output_grad(&self, data: &[f32]) -> Result<()> {
        let (_, v) = self.plan.output_grad.ok_or_else(|| Error::unsupported("write_output_grad", "only an InputGradient executor has an output gradient"))?;
        let t = self.t(v);
        if data.len() != t.len() {
            return Err(Error::shape("output gradient", format!("{} values for the output {:?}", data.len(), t.shape())));
        }
        t.write_f32(self.gpu, data)
    }

    /// Reads the gradient node `node` received in the last step's backward
    /// ([`Mode::InputGradient`]: the input's node gives the input gradient).
    pub fn read_grad(&self, node: NodeId) -> Result<Vec<f32>> {
        crate::runtime::gpu::block_on(self.read_grad_async(node))
    }

    /// [`Executor::read_grad`] without blocking.
    pub async fn read_grad_async(&self, node: NodeId) -> Result<Vec<f32>> {
        let v = *self.plan.grads.get(&node).ok_or_else(|| Error::shape("read_grad", format!("the backward computes no gradient for node {node:?}")))?;
        self.read_live("read_grad", v).await
    }

    /// Reads `v` if the step left it intact: no value written after its last read shares
    /// its buffer.
    async fn read_live(&self, what: &str, v: ValueId) -> Result<Vec<f32>> {
        let root = self.plan.root(v);
        if let (Some(slot), Some((_, end))) = (self.memory.slot_of[root.0], self.memory.interval[root.0]) {
            let overwritten = self.memory.slots[slot].values.iter().any(|o| self.memory.interval[o.0].is_some_and(|(start, _)| start > end));
            if overwritten {
                let name = &self.plan.values[v.0].name;
                return Err(Error::unsupported(what, format!("'{name}' is an intermediate whose memory a later value reuses: keep it (Executor::new_keeping)")));
            }
        }
        self.t(v).to_f32_async(self.gpu).await
    }

    /// Every parameter as (name, shape, values): one readback of the flat buffer.
    pub fn read_params(&self) -> Result<NamedTensors> {
        let entries: Vec<_> = self.plan.params.iter().map(|p| (p.name.as_str(), p.shape.as_slice())).collect();
        crate::runtime::gpu::block_on(read_flat(self.gpu, &self.params, &entries, &self.offsets))
    }

    /// The optimizer's state: steps taken, and each moment buffer per parameter, named as
    /// PyTorch's optimizers name them (`exp_avg.conv1.weight`, `exp_avg_sq.…` for Adam,
    /// `momentum_buffer.…` for SGD). With the parameters, what resuming a run needs.
    pub fn read_optimizer_state(&self) -> Result<(u32, NamedTensors)> {
        let mut out = Vec::new();
        for (k, m) in self.moments.iter().enumerate() {
            let flat = m.to_f32(self.gpu)?;
            for (p, &o) in self.plan.params.iter().zip(&self.offsets) {
                let n = p.shape.iter().product::<usize>();
                out.push((format!("{}.{}", self.moment_name(k), p.name), p.shape.clone(), flat[o..o + n].to_vec()));
            }
        }
        Ok((self.step, out))
    }

    /// Restores what [`Executor::read_optimizer_state`] read (same model, same rule), the
    /// tensors found by name in any order.
    pub fn write_optimizer_state(&mut self, step: u32, state: &NamedTensors) -> Result<()> {
        let per = self.plan.params.len();
        if state.len() != per * self.moments.len() {
            return Err(Error::shape("write_optimizer_state", format!("{} tensors, the optimizer keeps {}", state.len(), per * self.moments.len())));
        }
        let by_name: HashMap<&str, (&Vec<usize>, &Vec<f32>)> = state.iter().map(|(n, s, d)| (n.as_str(), (s, d))).collect();
        for (k, m) in self.moments.iter().enumerate() {
            let mut flat = vec![0f32; m.len()];
            for (p, &o) in self.plan.params.iter().zip(&self.offsets) {
                let want = format!("{}.{}", self.moment_name(k), p.name);
                match by_name.get(want.as_str()) {
                    Some((shape, data)) if **shape == p.shape && data.len() == p.shape.iter().product::<usize>() => {
                        flat[o..o + data.len()].copy_from_slice(data)
                    }
                    Some((shape, _)) => {
                        return Err(Error::shape("write_optimizer_state", format!("{want} is {shape:?}, the parameter {:?}", p.shape)));
                    }
                    None => return Err(Error::shape("write_optimizer_state", format!("no {want} [{:?}] in the state", p.shape))),
                }
            }
            m.write_f32(self.gpu, &flat)?;
        }
        self.step = step;
        Ok(())
    }

    fn moment_name(&self, k: usize) -> &'static str {
        match (self.moments.len(), k) {
            (1, _) => "momentum_buffer",
            (_, 0) => "exp_avg",
            _ => "exp_avg_sq",
        }
    }

    /// Overwrites the parameters (loading a checkpoint); names and shapes must match.
    pub fn write_params(&self, values: &[Tensors]) -> Result<()> {
        let entries: Vec<_> = self.plan.params.iter().map(|p| (p.name.as_str(), p.shape.as_slice())).collect();
        write_flat(self.gpu, "write_params", &self.params, &entries, &self.offsets, values)
    }

    /// Everything a checkpoint holds: the parameters, then the state (BatchNorm's running
    /// statistics), in model order.
    pub fn read_model(&self) -> Result<NamedTensors> {
        crate::runtime::gpu::block_on(self.read_model_async())
    }

    /// [`Executor::read_model`] without blocking (the browser keeps what it trained).
    pub async fn read_model_async(&self) -> Result<NamedTensors> {
        let entries: Vec<_> = self.plan.params.iter().map(|p| (p.name.as_str(), p.shape.as_slice())).collect();
        let mut all = read_flat(self.gpu, &self.params, &entries, &self.offsets).await?;
        if !self.plan.state.is_empty() {
            let entries: Vec<_> = self.plan.state.iter().map(|s| (s.name.as_str(), s.shape.as_slice())).collect();
            all.extend(read_flat(self.gpu, &self.state, &entries, &self.state_offsets).await?);
        }
        Ok(all)
    }

    /// Writes what [`Executor::read_model`] read (or a checkpoint's tensors, same order).
    pub fn write_model(&self, all: &NamedTensors) -> Result<()> {
        let n = self.plan.params.len();
        if all.len() != n + self.plan.state.len() {
            return Err(Error::shape("write_model", format!("{} tensors for a model of {} parameters and {} state tensors", all.len(), n, self.plan.state.len())));
        }
        self.write_params(&all[..n])?;
        self.write_state(&all[n..])
    }

    /// Every state tensor (BatchNorm running statistics, num_batches_tracked as an f32
    /// count) as (name, shape, values): one readback of the flat state buffer; empty, with
    /// no readback, when the model has no state.
    pub fn read_state(&self) -> Result<NamedTensors> {
        if self.plan.state.is_empty() {
            return Ok(Vec::new());
        }
        let entries: Vec<_> = self.plan.state.iter().map(|s| (s.name.as_str(), s.shape.as_slice())).collect();
        crate::runtime::gpu::block_on(read_flat(self.gpu, &self.state, &entries, &self.state_offsets))
    }

    /// Overwrites the state (loading a checkpoint); names and shapes must match. Every
    /// executor sharing this one's state sees the new values.
    pub fn write_state(&self, values: &[Tensors]) -> Result<()> {
        let entries: Vec<_> = self.plan.state.iter().map(|s| (s.name.as_str(), s.shape.as_slice())).collect();
        write_flat(self.gpu, "write_state", &self.state, &entries, &self.state_offsets, values)
    }

    /// Waits for all submitted steps.
    pub fn finish(&self) -> Result<()> {
        self.gpu.wait()
    }

    /// Traffic and memory counters now (two atomic loads; no GPU work).
    pub fn stats(&self) -> ExecStats {
        let c = &self.gpu.counters;
        ExecStats {
            steps: self.steps_run,
            submits: c.submits.load(Ordering::Relaxed),
            readbacks: c.readbacks.load(Ordering::Relaxed),
            dispatches_per_step: self.dispatches.len() + self.gather.is_some() as usize + self.optimizer.is_some() as usize,
            gpu_bytes: c.bytes_live.load(Ordering::Relaxed),
            gpu_peak_bytes: c.bytes_peak.load(Ordering::Relaxed),
            planned_bytes: self.memory.planned_bytes(),
            naive_bytes: naive_bytes(&self.plan),
            activation_buffers: self.memory.slots.len(),
        }
    }

    /// Rows per step.
    pub fn batch(&self) -> usize {
        self.plan.batch
    }
}

/// One named tensor as a checkpoint holds it: (name, shape, values).
type Tensors = (String, Vec<usize>, Vec<f32>);

/// The tensors laid out in `flat` at `offsets` (the parameter or state buffer), named and
/// shaped by `entries`: one readback.
async fn read_flat(gpu: &Gpu, flat: &Tensor, entries: &[(&str, &[usize])], offsets: &[usize]) -> Result<NamedTensors> {
    let values = flat.to_f32_async(gpu).await?;
    Ok(entries
        .iter()
        .zip(offsets)
        .map(|(&(name, shape), &o)| (name.to_string(), shape.to_vec(), values[o..o + shape.iter().product::<usize>()].to_vec()))
        .collect())
}

/// Writes `values` into `flat` at `offsets` after checking them against `entries`, in
/// order (names, shapes, lengths); `op` names the caller in errors. One upload.
fn write_flat(gpu: &Gpu, op: &str, flat: &Tensor, entries: &[(&str, &[usize])], offsets: &[usize], values: &[Tensors]) -> Result<()> {
    if values.len() != entries.len() {
        return Err(Error::shape(op, format!("{} tensors for a model of {}", values.len(), entries.len())));
    }
    let mut buf = vec![0f32; flat.len()];
    for ((name, shape, data), (&(want, want_shape), &o)) in values.iter().zip(entries.iter().zip(offsets)) {
        if name != want || shape != want_shape || data.len() != shape.iter().product::<usize>() {
            return Err(Error::shape(op, format!("{name} {shape:?} where the model has {want} {want_shape:?}")));
        }
        buf[o..o + data.len()].copy_from_slice(data);
    }
    flat.write_f32(gpu, &buf)
}

fn view(flat: &Tensor, offset: usize, shape: &[usize]) -> Tensor {
    Tensor::from_buffer(flat.buffer().clone(), flat.offset() + 4 * offset as u64, shape, DType::F32)
}

/// The GEMM of a plain linear step (forward: y = x W^T (+ b) (ReLU); input gradient:
/// dx = dy W), from its tensors' shapes; `None` for other steps.
/// A convolution's im2col columns kept from its forward (step `forward`) for its weight
/// gradient (step `backward`): `len` f32s, at the start of the scratch region or in a buffer
/// of their own.
struct KeptColumns {
    forward: usize,
    backward: usize,
    len: usize,
    in_scratch: bool,
}

/// The GEMM of a linear forward or input-gradient step (run as a GEMM where its choice
/// says); `None` for other steps.
fn linear_gemm(step: &Step, shape: &dyn Fn(ValueId) -> Vec<usize>) -> Option<Gemm> {
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
