//! Checkpoints as safetensors, named and laid out as PyTorch names the same model
//! (`conv1.weight` `[16, 1, 5, 5]`, ..., `fc2.bias` `[10]`), with metadata: the model's name
//! and description (`model_spec`, JSON of [`crate::model::nn::Model`]: any program rebuilds the
//! model from the file alone), normalisation mean/std, dataset, kiln version. Saving goes through
//! [`crate::base::files::write_atomic`], so a failed save never leaves a half-written checkpoint,
//! and identical checkpoints are identical files (the header's keys are sorted). Loading
//! refuses what no model could use: non-finite or non-positive normalisation, non-finite
//! weights.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::model::nn::{Model, ModelKind};
use crate::{Error, Result};

pub use crate::graph::NamedTensors;

/// A trained model in a file: what `digits::classify::Classifier`, `predict`, `export` and PyTorch
/// read.
///
/// ```
/// use kiln::checkpoint::Checkpoint;
/// use kiln::nn::ModelKind;
/// let model = ModelKind::Mlp.spec();
/// let graph = model.build(1, 7).unwrap();
/// let params = graph.graph.params().iter().map(|(_, n, s)| (n.to_string(), s.to_vec(), vec![0.5; s.iter().product()])).collect();
/// let ck = Checkpoint { model, mean: 0.1307, std: 0.3081, dataset: "mnist".into(), temperature: 1.0, deskew: false, params };
/// let path = std::env::temp_dir().join(format!("kiln-doc-{}.safetensors", std::process::id()));
/// ck.save(&path).unwrap();
/// assert_eq!(Checkpoint::load(&path).unwrap(), ck); // the model comes back from the file alone
/// std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The model's description, written into the file: any program rebuilds the model
    /// from the checkpoint alone.
    pub model: Model,
    /// Input normalisation: (pixel / 255 - mean) / std, the training split's statistics.
    pub mean: f32,
    /// See `mean`; > 0.
    pub std: f32,
    /// What it was trained on (`mnist`, `mnist10k`, `fashion`).
    pub dataset: String,
    /// The softmax temperature its probabilities are read with: 1 until one is fitted on
    /// held-out data (`digits::calibrate`), when confidences then mean what they say.
    pub temperature: f32,
    /// Its inputs are sheared upright by their second moments before they are fitted to the
    /// box (`digits::predict::deskew`): it was trained on deskewed digits, and the front
    /// ends prepare what they read for it the same way unless told otherwise.
    pub deskew: bool,
    /// The model's tensors with PyTorch's names: parameters, then state.
    pub params: NamedTensors,
}

/// Writes f32 tensors and string metadata as a safetensors file (header keys sorted, so
/// the same content gives the same bytes), atomically.
pub fn write_tensors(path: &Path, tensors: &NamedTensors, meta: &[(&str, String)]) -> Result<()> {
    crate::base::files::write_atomic(path, &encode_tensors(path, tensors, meta)?)
}

/// The bytes [`write_tensors`] writes; `path` names the file in errors.
pub fn encode_tensors(path: &Path, tensors: &NamedTensors, meta: &[(&str, String)]) -> Result<Vec<u8>> {
    let mut map = HashMap::new();
    for (k, v) in meta {
        map.insert(k.to_string(), v.clone());
    }
    map.insert("kiln_version".to_string(), env!("CARGO_PKG_VERSION").to_string());
    // PyTorch keeps BatchNorm's step count as an int64 scalar; kiln counts in f32 (exact
    // to 2^24 steps), so it is converted here and back in `read_tensors`
    let counts: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(name, _, data)| if is_count(name) { data.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect() } else { Vec::new() })
        .collect();
    let views = tensors
        .iter()
        .zip(&counts)
        .map(|((name, shape, data), count)| {
            let (dtype, bytes) = if is_count(name) { (Dtype::I64, count.as_slice()) } else { (Dtype::F32, bytemuck::cast_slice(data)) };
            TensorView::new(dtype, shape.clone(), bytes).map(|v| (name.clone(), v)).map_err(|e| Error::file(path, format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(map)).map_err(|e| Error::file(path, e))?;
    sorted_header(bytes).map_err(|e| Error::file(path, e))
}

/// Reads a safetensors file of f32 tensors: its metadata and its tensors in file order.
/// `what` names the kind of file in errors ("checkpoint", "training state").
pub fn read_tensors(path: &Path, what: &str) -> Result<(HashMap<String, String>, NamedTensors)> {
    let bytes = read_file(path, what)?;
    let bad = |m: String| Error::file(path, format!("not a kiln {what}: {m}"));
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for (name, t) in tensors.iter() {
        out.push((name.to_string(), t.shape().to_vec(), f32_values(name, &t).map_err(bad)?));
    }
    Ok((meta, out))
}

/// The largest safetensors header read (the safetensors crate's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// Reads a safetensors file whole, once its header agrees with its size: a regular file
/// ([`crate::base::files::open_input`]) whose 8-byte header length and JSON header describe
/// exactly its bytes. A device, or a huge file that is no safetensors, is refused after
/// reading at most its header. `what` names the kind of file in errors.
pub fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let (mut f, len) = crate::base::files::open_input(path, what)?;
    let bad = |m: String| Error::file(path, format!("not a kiln {what}: {m}"));
    let io = |e: std::io::Error| Error::file(path, format!("cannot read the {what}: {e}"));
    let mut head = [0u8; 8];
    if len < 8 {
        return Err(bad(format!("{len} bytes, shorter than a safetensors header")));
    }
    f.read_exact(&mut head).map_err(io)?;
    let n = u64::from_le_bytes(head);
    if n > MAX_HEADER || n > len - 8 {
        return Err(bad(format!("its header claims {n} bytes, the file has {len}")));
    }
    let mut bytes = Vec::with_capacity(8 + n as usize);
    bytes.extend_from_slice(&head);
    (&mut f).take(n).read_to_end(&mut bytes).map_err(io)?;
    let header: HashMap<String, serde_json::Value> = serde_json::from_slice(&bytes[8..]).map_err(|e| bad(format!("its header is not safetensors JSON: {e}")))?;
    let data = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    if 8 + n + data != len {
        return Err(bad(format!("the file has {len} bytes, its header describes {}", 8 + n + data)));
    }
    bytes.reserve(data as usize);
    f.take(data).read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// BatchNorm's step counter (`*.num_batches_tracked`), an int64 in PyTorch's files.
fn is_count(name: &str) -> bool {
    name.ends_with(".num_batches_tracked")
}

/// A tensor's values as f32: F32 tensors, and the I64 step counters.
fn f32_values(name: &str, t: &safetensors::tensor::TensorView) -> std::result::Result<Vec<f32>, String> {
    match t.dtype() {
        Dtype::F32 => Ok(bytemuck::pod_collect_to_vec(t.data())),
        Dtype::I64 if is_count(name) => Ok(bytemuck::pod_collect_to_vec::<u8, i64>(t.data()).into_iter().map(|v| v as f32).collect()),
        d => Err(format!("tensor '{name}' is {d:?}, expected F32")),
    }
}

impl Checkpoint {
    /// Writes the parameters with PyTorch's names and the metadata (model description,
    /// normalisation, dataset, kiln version), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::base::files::write_atomic(path, &self.to_bytes(path)?)
    }

    /// The bytes [`Checkpoint::save`] writes (`path` names the file in errors).
    pub fn to_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        let meta = [
            ("model", self.model.name().to_string()),
            ("model_spec", self.model.to_json()),
            ("mean", self.mean.to_string()),
            ("std", self.std.to_string()),
            ("dataset", self.dataset.clone()),
            ("temperature", self.temperature.to_string()),
        ];
        // written only when set: a checkpoint that reads digits as they come keeps its bytes
        let deskew = self.deskew.then(|| ("deskew", "true".to_string()));
        let meta: Vec<_> = meta.into_iter().chain(deskew).collect();
        encode_tensors(path, &self.params, &meta)
    }

    /// [`Checkpoint::to_bytes`], checked to load back ([`Checkpoint::from_bytes`]): what
    /// replaces a checkpoint must be usable. The error says that nothing was written.
    pub fn usable_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        let bytes = self.to_bytes(path)?;
        if let Err(e) = Checkpoint::from_bytes(&bytes, path) {
            let why = match e {
                Error::File { message, .. } => message,
                e => e.to_string(),
            };
            let kept = if path.exists() { "the earlier file is kept" } else { "nothing was written" };
            return Err(Error::file(path, format!("the new checkpoint would not load ({why}): {kept}")));
        }
        Ok(bytes)
    }

    /// Reads and validates a checkpoint: its tensors must be exactly those of the model
    /// it describes, finite, with a usable normalisation.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        Checkpoint::from_bytes(&read_file(path, "checkpoint")?, path)
    }

    /// [`Checkpoint::load`] for a file already in memory (what the web page fetched);
    /// `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
        let bad = |m: String| Error::file(path, format!("not a kiln checkpoint: {m}"));
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| meta.get(k).cloned().ok_or_else(|| bad(format!("metadata has no '{k}'")));
        // the description; a checkpoint from before descriptions names a built-in model
        let model = match meta.get("model_spec") {
            Some(spec) => Model::from_json(spec).map_err(bad)?,
            None => get("model")?.parse::<ModelKind>().map_err(bad)?.spec(),
        };
        let mean: f32 = get("mean")?.parse().map_err(|e| bad(format!("mean: {e}")))?;
        let std: f32 = get("std")?.parse().map_err(|e| bad(format!("std: {e}")))?;
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        // Order and check against the model's own parameter list.
        let reference = model.build(1, 0).map_err(|e| bad(format!("its model description does not build: {e}")))?;
        let mut params = Vec::new();
        // the parameters, then the state, as Executor::write_model takes them
        for (_, name, shape) in reference.graph.params().into_iter().chain(reference.graph.state()) {
            let t = tensors.tensor(name).map_err(|_| bad(format!("missing tensor '{name}' of a {} model", model.name())))?;
            let values = f32_values(name, &t).map_err(bad)?;
            if t.shape() != shape {
                return Err(bad(format!("tensor '{name}' is {:?}, the {} model needs {shape:?}", t.shape(), model.name())));
            }
            params.push((name.to_string(), shape.to_vec(), values));
        }
        if tensors.len() != params.len() {
            let extra: Vec<_> = tensors.names().into_iter().filter(|n| !params.iter().any(|p| &p.0 == n)).collect();
            return Err(bad(format!("unexpected tensors {extra:?} for a {} model", model.name())));
        }
        // Checkpoints from before calibration have none: temperature 1, the plain softmax.
        let temperature: f32 = match meta.get("temperature") {
            Some(t) => t.parse().map_err(|e| bad(format!("temperature: {e}")))?,
            None => 1.0,
        };
        crate::kernels::softmax::check_temperature(temperature).map_err(|e| bad(e.to_string()))?;
        let deskew = match meta.get("deskew").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(bad(format!("deskew: {other:?}, expected true or false"))),
        };
        if !mean.is_finite() || !std.is_finite() || std <= 0.0 {
            return Err(bad(format!("input normalisation mean {mean}, std {std}: expected finite values and std > 0")));
        }
        for (name, _, values) in &params {
            if let Some(i) = values.iter().position(|v: &f32| !v.is_finite()) {
                return Err(bad(format!("tensor '{name}' holds {} at index {i}: the weights are not usable", values[i])));
            }
        }
        Ok(Checkpoint { model, mean, std, dataset: meta.get("dataset").cloned().unwrap_or_default(), temperature, deskew, params })
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
