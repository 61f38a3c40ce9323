//! Checkpoints as safetensors, named and laid out as PyTorch names the same model
//! (`conv1.weight` [16, 1, 5, 5], ..., `fc2.bias` [10]), with metadata: model kind,
//! normalisation mean/std, dataset, kiln version. Saving writes a temporary file and
//! renames it, so a failed save never leaves a half-written checkpoint.

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
        let file_name = path.file_name().ok_or_else(|| Error::file(path, "not a file path"))?;
        let tmp = path.with_file_name(format!(".{}.part", file_name.to_string_lossy()));
        std::fs::write(&tmp, &bytes).map_err(|e| Error::file(path, format!("cannot write checkpoint: {e}")))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::file(path, format!("cannot move the checkpoint into place: {e}"))
        })
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
        Ok(Checkpoint { model, mean, std, dataset: meta.get("dataset").cloned().unwrap_or_default(), params })
    }
}
