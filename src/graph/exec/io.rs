//! Host I/O: the batch (written, or gathered from a resident dataset), the metrics, node
//! values and gradients, and the flat parameter and state buffers as named host tensors.

use super::*;
use crate::kernels::data::Augment;

impl<'g> Executor<'g> {
    /// Makes each step start with a gather of the batch from `data` (resident on the GPU).
    pub fn attach_dataset(&mut self, data: &ResidentDataset, augment: Augment, seed: u32) -> Result<()> {
        let labels = self.plan.labels.ok_or_else(|| Error::unsupported("attach_dataset", "the graph has no labels node"))?;
        let (x, y) = (self.t(self.plan.input).clone(), self.t(labels).clone());
        self.gather = Some(data.gather(self.gpu, &self.step_buffer, &x, &y, augment, seed)?);
        Ok(())
    }

    /// Trains only the parameters from index `first` of `plan.params` on (fine-tuning's last
    /// layer): the optimizer's dispatch then covers their part of the flat parameter,
    /// gradient and moment buffers, and the parameters before it keep their values. Their
    /// gradients are still computed (the backward pass is the model's).
    pub fn train_only_from(&mut self, first: usize) -> Result<()> {
        let (Some(opt), Some(grads)) = (self.update, self.grads.clone()) else {
            return Err(Error::unsupported("train_only_from", "the executor does not train"));
        };
        let Some(&offset) = self.offsets.get(first) else {
            return Err(Error::unsupported("train_only_from", format!("parameter {first} of a model of {}", self.offsets.len())));
        };
        let n = self.params.len() - offset;
        // offsets are aligned to the adapter's storage-binding offset alignment (flat_layout)
        let part = |t: &Tensor| Tensor::from_buffer(t.buffer().clone(), t.offset() + 4 * offset as u64, &[n], DType::F32);
        let m2 = self.moments.get(1).map(part);
        self.optimizer = Some(optimizer_step(self.gpu, &opt, &self.step_buffer, &part(&grads), &part(&self.params), &part(&self.moments[0]), m2.as_ref())?);
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

    pub(super) fn moment_name(&self, k: usize) -> &'static str {
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
}

/// One named tensor as a checkpoint holds it: (name, shape, values).
pub(super) type Tensors = (String, Vec<usize>, Vec<f32>);

/// The tensors laid out in `flat` at `offsets` (the parameter or state buffer), named and
/// shaped by `entries`: one readback.
pub(super) async fn read_flat(gpu: &Gpu, flat: &Tensor, entries: &[(&str, &[usize])], offsets: &[usize]) -> Result<NamedTensors> {
    let values = flat.to_f32_async(gpu).await?;
    Ok(entries
        .iter()
        .zip(offsets)
        .map(|(&(name, shape), &o)| (name.to_string(), shape.to_vec(), values[o..o + shape.iter().product::<usize>()].to_vec()))
        .collect())
}

/// Writes `values` into `flat` at `offsets` after checking them against `entries`, in
/// order (names, shapes, lengths); `op` names the caller in errors. One upload.
pub(super) fn write_flat(gpu: &Gpu, op: &str, flat: &Tensor, entries: &[(&str, &[usize])], offsets: &[usize], values: &[Tensors]) -> Result<()> {
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
