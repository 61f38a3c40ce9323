//! Checkpoints as safetensors, named and laid out as PyTorch names the same model
//! (`conv1.weight` [16, 1, 5, 5], ..., `fc2.bias` [10]), with metadata: model kind,
//! normalisation mean/std, dataset, kiln version. Saving goes through
//! [`crate::files::write_atomic`], so a failed save never leaves a half-written checkpoint,
//! and identical checkpoints are identical files (the header's keys are sorted). Loading
//! refuses what no model could use: non-finite or non-positive normalisation, non-finite
//! weights.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::nn::ModelKind;
use crate::{Error, Result};

/// Parameters as (name, shape, values), in model order.
pub type Params = Vec<(String, Vec<usize>, Vec<f32>)>;

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub model: ModelKind,
    pub mean: f32,
    pub std: f32,
    pub dataset: String,
    pub params: Params,
}

impl Checkpoint {
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut meta = HashMap::new();
        meta.insert("model".to_string(), self.model.name().to_string());
        meta.insert("mean".to_string(), self.mean.to_string());
        meta.insert("std".to_string(), self.std.to_string());
        meta.insert("dataset".to_string(), self.dataset.clone());
        meta.insert("kiln_version".to_string(), env!("CARGO_PKG_VERSION").to_string());
        let views = self
            .params
            .iter()
            .map(|(name, shape, data)| {
                TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data))
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::file(path, format!("tensor {name}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::file(path, e))?;
        let bytes = sorted_header(bytes).map_err(|e| Error::file(path, e))?;
        crate::files::write_atomic(path, &bytes)
    }

    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read checkpoint: {e}")))?;
        let bad = |m: String| Error::file(path, format!("not a kiln checkpoint: {m}"));
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| meta.get(k).cloned().ok_or_else(|| bad(format!("metadata has no '{k}'")));
        let model: ModelKind = get("model")?.parse().map_err(bad)?;
        let mean: f32 = get("mean")?.parse().map_err(|e| bad(format!("mean: {e}")))?;
        let std: f32 = get("std")?.parse().map_err(|e| bad(format!("std: {e}")))?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        // Order and check against the model's own parameter list.
        let reference = model.build(1, 0)?;
        let mut params = Vec::new();
        for (_, name, shape) in reference.graph.params() {
            let t = tensors.tensor(name).map_err(|_| bad(format!("missing tensor '{name}' of a {} model", model.name())))?;
            if t.dtype() != Dtype::F32 || t.shape() != shape {
                return Err(bad(format!("tensor '{name}' is {:?} {:?}, the {} model needs F32 {shape:?}", t.dtype(), t.shape(), model.name())));
            }
            params.push((name.to_string(), shape.to_vec(), bytemuck::pod_collect_to_vec(t.data())));
        }
        if tensors.len() != params.len() {
            let extra: Vec<_> = tensors.names().into_iter().filter(|n| !params.iter().any(|p| &p.0 == n)).collect();
            return Err(bad(format!("unexpected tensors {extra:?} for a {} model", model.name())));
        }
        if !mean.is_finite() || !std.is_finite() || std <= 0.0 {
            return Err(bad(format!("input normalisation mean {mean}, std {std}: expected finite values and std > 0")));
        }
        for (name, _, values) in &params {
            if let Some(i) = values.iter().position(|v: &f32| !v.is_finite()) {
                return Err(bad(format!("tensor '{name}' holds {} at index {i}: the weights are not usable", values[i])));
            }
        }
        Ok(Checkpoint { model, mean, std, dataset: meta.get("dataset").cloned().unwrap_or_default(), params })
    }

    /// A warning when this checkpoint was trained on another dataset than `expected`
    /// (a Fashion-MNIST model asked to read digits, say); `None` when they agree.
    pub fn dataset_warning(&self, expected: &[&str]) -> Option<String> {
        (!expected.contains(&self.dataset.as_str())).then(|| {
            format!(
                "this checkpoint was trained on '{}', not on {}: its answers here may mean nothing",
                self.dataset,
                expected.join(" or ")
            )
        })
    }
}

/// Rewrites a safetensors file's JSON header with its keys sorted (safetensors writes the
/// metadata from a HashMap, in a different order each run), padded to 8 bytes as the format
/// asks. Tensor offsets are relative to the data section, so the data is untouched.
fn sorted_header(bytes: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    let n = u64::from_le_bytes(bytes[..8].try_into().map_err(|_| "short safetensors buffer")?) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| e.to_string())?;
    let mut text = serde_json::to_string(&header).map_err(|e| e.to_string())?; // serde_json's Map is a BTreeMap
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}
