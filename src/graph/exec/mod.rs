//! The executor: allocates what the plan needs once (the flat parameter, gradient and
//! optimizer-state buffers, the planned activation buffers, the step buffer, the metrics
//! buffer), builds every bind group once, and then records a whole step (batch gather,
//! forward, loss, metrics, backward, optimizer) into one compute pass and one submit.
//! Per-step values (the step number, the batch's offset into the shuffled dataset) travel
//! in the 32-byte step buffer, written with the submit; the host reads back only metrics,
//! and only when asked.
//!
//! Here: building (the buffers, the kernel choice of each step, the memory plan);
//! `dispatch`: step to dispatches; `run`: one step as one submit, and timing steps;
//! `io`: the host's reads and writes. Initial parameter values come from `graph::init`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::lower::{lower, lower_keeping, Mode, Plan, PoolRoute, Step, ValueId, ValueKind};
use crate::kernels::pool::{MaxPoolOut, MaxPoolRoute};
use super::planner::{naive_bytes, plan_memory, MemoryPlan};
use super::profile::{self, Profile, Unit};
use super::{Graph, NodeId};
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
use crate::runtime::tensor::{DType, Tensor};
use crate::{Error, Result};

mod dispatch;
mod io;
mod run;

use super::init::init_params;

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
    /// The flat gradient buffer (training only), which the optimizer reads.
    grads: Option<Tensor>,
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

/// Activation and input buffers that several executors of one model take turns in: built
/// for the largest batch ([`Executor::arena`]), and every executor built in it
/// ([`Executor::new_in`]) places its values there, so that an executor for each batch size
/// up to the arena's costs its bind groups, not its memory (a classifier's executors for
/// whatever batch a server gathers). Executors in one arena share their activations:
/// write, run and read one before writing the next.
#[derive(Clone)]
pub struct Arena {
    /// The activation buffers with their bytes, largest first.
    slots: Vec<(u64, Arc<GpuBuffer>)>,
    /// The model's inputs (and labels) by value name.
    inputs: Vec<(String, Tensor)>,
    batch: usize,
}

impl Arena {
    /// Rows of the plan the arena was built for: the largest batch it is meant to hold.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The activation buffers for `memory`: the arena's, slot for slot by size (the largest
    /// slot in the largest buffer, and so on); a slot that does not fit gets a buffer of its
    /// own, so any plan runs correctly in any arena.
    fn place(&self, gpu: &Gpu, memory: &MemoryPlan) -> Result<Vec<Arc<GpuBuffer>>> {
        let mut order: Vec<usize> = (0..memory.slots.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(memory.slots[i].bytes));
        let mut buffers = vec![None; memory.slots.len()];
        for (rank, i) in order.into_iter().enumerate() {
            let bytes = memory.slots[i].bytes;
            buffers[i] = Some(match self.slots.get(rank) {
                Some((have, b)) if *have >= bytes => b.clone(),
                _ => activation_buffer(gpu, bytes)?,
            });
        }
        Ok(buffers.into_iter().map(|b| b.expect("every slot placed")).collect())
    }

    /// The arena's tensor for the input value `name` seen as `shape`, if it holds that much.
    fn input(&self, name: &str, shape: &[usize], dtype: DType) -> Option<Tensor> {
        let (_, t) = self.inputs.iter().find(|(n, _)| n == name)?;
        (t.bytes() >= dtype.bytes(shape.iter().product())).then(|| Tensor::from_buffer(t.buffer().clone(), t.offset(), shape, dtype))
    }
}

/// One planned activation buffer (a memory-plan slot) of `bytes`.
fn activation_buffer(gpu: &Gpu, bytes: u64) -> Result<Arc<GpuBuffer>> {
    gpu.storage_buffer("kiln activation", bytes).map(Arc::new)
}

/// What a new executor takes from others: their parameters and state, an arena.
#[derive(Clone, Copy, Default)]
struct Sharing<'a> {
    params: Option<&'a SharedParams>,
    arena: Option<&'a Arena>,
}

impl<'g> Executor<'g> {
    /// The buffers of `graph`'s activations and inputs in `mode`, planned as
    /// [`Executor::new`] plans them, for executors of the same model at this batch or
    /// below to be built in ([`Executor::new_in`]). Nothing is compiled.
    pub fn arena(gpu: &Gpu, graph: &Graph, mode: Mode) -> Result<Arena> {
        let plan = lower(graph, mode)?;
        let memory = plan_memory(&plan);
        let mut slots = memory.slots.iter().map(|s| Ok((s.bytes, activation_buffer(gpu, s.bytes)?))).collect::<Result<Vec<_>>>()?;
        slots.sort_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
        let mut inputs = Vec::new();
        for (i, v) in plan.values.iter().enumerate() {
            if matches!(v.kind, ValueKind::Input | ValueKind::Labels | ValueKind::OutputGrad) && plan.root(ValueId(i)).0 == i {
                inputs.push((v.name.clone(), Tensor::empty(gpu, &v.shape, v.dtype)?));
            }
        }
        Ok(Arena { slots, inputs, batch: plan.batch })
    }

    /// [`Executor::new`] without optimizer, its activations and inputs in `arena` and, with
    /// `shared`, its parameters and state another executor's.
    pub fn new_in(gpu: &'g Gpu, graph: &Graph, mode: Mode, kernels: impl Into<Tuning>, arena: &Arena, shared: Option<&SharedParams>) -> Result<Executor<'g>> {
        Self::build(gpu, lower(graph, mode)?, graph.seed, None, &kernels.into(), Sharing { params: shared, arena: Some(arena) }, false)
    }

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
        Self::build(gpu, lower(graph, mode)?, graph.seed, optimizer, &kernels.into(), Sharing { params: shared.as_ref(), arena: None }, false)
    }
    /// [`Executor::new`] without optimizer, on the parameters and state of `shared`.
    pub fn new_sharing(gpu: &'g Gpu, graph: &Graph, mode: Mode, kernels: impl Into<Tuning>, shared: &SharedParams) -> Result<Executor<'g>> {
        Self::build(gpu, lower(graph, mode)?, graph.seed, None, &kernels.into(), Sharing { params: Some(shared), arena: None }, false)
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
        Self::build(gpu, lower_keeping(graph, mode, keep)?, graph.seed, None, &kernels.into(), Sharing::default(), false)
    }
    /// As `new`, but every activation buffer is filled with NaN right after its last
    /// reader: if the planner ever let two live values share memory, results change.
    pub fn new_poisoning_freed(gpu: &'g Gpu, graph: &Graph, mode: Mode, optimizer: Option<Optimizer>, kernels: impl Into<Tuning>) -> Result<Executor<'g>> {
        Self::build(gpu, lower(graph, mode)?, graph.seed, optimizer, &kernels.into(), Sharing::default(), true)
    }
    fn build(
        gpu: &'g Gpu,
        plan: Plan,
        seed: u64,
        optimizer: Option<Optimizer>,
        tuning: &Tuning,
        sharing: Sharing,
        poison_freed: bool,
    ) -> Result<Executor<'g>> {
        let Sharing { params: share_params, arena } = sharing;
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
        // Checked before the parameters are drawn on the host: they live in one flat buffer,
        // which the optimizer binds whole.
        let limits = gpu.limits();
        let (most, which) = match mode {
            Mode::Train => (limits.max_storage_buffer_binding_size, "storage binding limit"),
            _ => (limits.max_buffer_size, "max_buffer_size"),
        };
        let param_bytes = DType::F32.bytes(flat_len.max(state_len));
        if param_bytes > most {
            return Err(Error::unsupported("model", format!("its parameters take {param_bytes} bytes, more than the adapter's {which} of {most} bytes")));
        }
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
        let slot_buffers: Vec<Arc<GpuBuffer>> = match arena {
            Some(a) => a.place(gpu, &memory)?,
            None => memory.slots.iter().map(|s| activation_buffer(gpu, s.bytes)).collect::<Result<_>>()?,
        };
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
                        match arena.and_then(|a| a.input(&v.name, &v.shape, v.dtype)) {
                            Some(t) => t,
                            None => Tensor::empty(gpu, &v.shape, v.dtype)?,
                        }
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
            grads: None,
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
            exec.grads = Some(grads);
        }
        Ok(exec)
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

fn view(flat: &Tensor, offset: usize, shape: &[usize]) -> Tensor {
    Tensor::from_buffer(flat.buffer().clone(), flat.offset() + 4 * offset as u64, shape, DType::F32)
}

