//! Kernel variant choice per adapter. For each GEMM or convolution of a planned graph, the
//! candidate variants are timed on this adapter (a few runs of each step alone, median),
//! the fastest kept, and the choice cached on disk keyed by kiln version, adapter name,
//! driver and shape (`KILN_CACHE` overrides the cache directory; `KILN_AUTOTUNE=off` uses
//! the heuristic `GemmConfig::default_for` without timing anything). A cached entry that is
//! not a candidate for its step on this adapter is refused with a warning and re-tuned.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::graph::choice::StepChoice;
use crate::graph::{lower, Executor, Graph, Mode};
use crate::kernels::conv::{Conv2d, ConvSwitches, Pass};
use crate::kernels::gemm::GemmConfig;
use crate::kernels::optim::Optimizer;
use crate::runtime::gpu::Gpu;
use crate::{Error, Result};

/// The autotune key of a GEMM or convolution step: its kind and shapes. Its text
/// (`Display`, parsed back by [`TuneKey::parse`]) is what the cache file stores, e.g.
/// `linear_forward x[64, 784] w[128, 784]` or `conv2d_backward_input Conv2d { batch: 64, .. }`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TuneKey {
    /// A convolution pass.
    Conv2d(Pass, Conv2d),
    /// A linear layer's pass and its two operands' shapes: x and w (forward), dy and w (dX),
    /// dy and x (dW).
    Linear(Pass, Vec<usize>, Vec<usize>),
}

impl TuneKey {
    /// Whether the step is a convolution (its candidates differ from a plain GEMM's).
    pub fn is_conv(&self) -> bool {
        matches!(self, TuneKey::Conv2d(..))
    }

    /// The key whose text is `s`, or `None` (a line this kiln does not write).
    pub fn parse(s: &str) -> Option<TuneKey> {
        let (kind, rest) = s.split_once(' ')?;
        let pass = match kind.split_once('_')?.1 {
            "forward" => Pass::Forward,
            "backward_input" => Pass::BackwardInput,
            "backward_weight" => Pass::BackwardWeight,
            _ => return None,
        };
        let numbers = |t: &str| t.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).map(|n| n.parse().ok()).collect::<Option<Vec<usize>>>();
        let key = if kind.starts_with("conv2d_") {
            let n = numbers(rest.strip_prefix("Conv2d")?)?;
            let &[batch, cin, h, w, cout, r, s, stride, pad] = n.as_slice() else { return None };
            TuneKey::Conv2d(pass, Conv2d { batch, cin, h, w, cout, r, s, stride, pad })
        } else {
            let (a, b) = rest.split_once("] ")?;
            TuneKey::Linear(pass, numbers(a)?, numbers(b)?)
        };
        // the names, separators and field order, exactly as written
        (key.to_string() == s).then_some(key)
    }
}

impl std::fmt::Display for TuneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let pass = |p: &Pass| match p {
            Pass::Forward => "forward",
            Pass::BackwardInput => "backward_input",
            Pass::BackwardWeight => "backward_weight",
        };
        match self {
            TuneKey::Conv2d(p, conv) => write!(f, "conv2d_{} {conv:?}", pass(p)),
            TuneKey::Linear(p, a, b) => {
                let (na, nb) = match p {
                    Pass::Forward => ("x", "w"),
                    Pass::BackwardInput => ("dy", "w"),
                    Pass::BackwardWeight => ("dy", "x"),
                };
                write!(f, "linear_{} {na}{a:?} {nb}{b:?}", pass(p))
            }
        }
    }
}

/// The variant to use for each GEMM/conv step, by shape key; `default` for the rest.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// The variant for steps without a tuned entry (and for every step when tuning is off).
    pub default: GemmConfig,
    /// The variant per step key ([`crate::graph::Plan::tune_key`]: the step's kind and
    /// shapes, e.g. `linear_forward x[64, 784] w[128, 784]`).
    pub per_key: HashMap<TuneKey, GemmConfig>,
}

impl Tuning {
    /// One variant for every step: what `KILN_AUTOTUNE=off` and the tests use.
    pub fn fixed(cfg: GemmConfig) -> Tuning {
        Tuning { default: cfg, per_key: HashMap::new() }
    }
    /// The variant for the step with tune key `key` (`None` for steps without GEMM/conv).
    pub fn choose(&self, key: Option<&TuneKey>) -> GemmConfig {
        key.and_then(|k| self.per_key.get(k)).copied().unwrap_or(self.default)
    }
}

impl From<&GemmConfig> for Tuning {
    fn from(cfg: &GemmConfig) -> Tuning {
        Tuning::fixed(*cfg)
    }
}

impl From<&Tuning> for Tuning {
    fn from(t: &Tuning) -> Tuning {
        t.clone()
    }
}

/// What tuning did: the choices, where they came from, and what it cost.
#[derive(Clone, Debug, Default)]
pub struct TuneReport {
    /// key -> (chosen variant, its median seconds)
    pub chosen: BTreeMap<String, (String, f64)>,
    /// True when every choice came from the cache file and nothing was timed.
    pub from_cache: bool,
    /// Wall-clock seconds the tuning took, cache reads and pipeline compilation included.
    pub seconds: f64,
    /// The cache file read and written; `None` without a home directory or when tuning is off.
    pub cache_file: Option<PathBuf>,
    /// What the caller should tell the user: cache entries refused, a cache not written.
    pub warnings: Vec<String>,
}

/// The variants worth timing for a step on this adapter. On CPU adapters convolutions
/// take the im2col family (the implicit-GEMM families measured 4-10x slower on llvmpipe,
/// BENCHMARKS.md), and plain GEMMs choose between vec4 and register blocking (small shapes),
/// vec4 sharing A's loads across subgroups where they have 8 or more lanes;
/// on GPUs the linear layers take `tiled64` (it won every linear step on an H200 against
/// `tiled4_64x128`), the convolutions choose between the narrow tiles `tiled32x64` and
/// `tiled16x64` (their GEMMs have as many rows as channels: 16 or 32 in the MNIST CNN,
/// where these won all five passes on an H200 against 64-row tiles, BENCHMARKS.md). Each
/// candidate timed costs its pipelines' compilation at a cold start; a step with one
/// candidate is not timed.
pub fn candidates(gpu: &Gpu, key: &TuneKey) -> Vec<GemmConfig> {
    if gpu.info().is_cpu() {
        // the vec4 GEMMs share A's loads across subgroups where the adapter allows
        let sg = gpu.info().shares_subgroups();
        if key.is_conv() {
            vec![if sg { GemmConfig::IM2COL_VEC4_SG } else { GemmConfig::IM2COL_VEC4 }]
        } else {
            vec![if sg { GemmConfig::VEC4_SG } else { GemmConfig::VEC4 }, GemmConfig::REGBLOCK_4X4]
        }
    } else if key.is_conv() {
        vec![GemmConfig::TILED_32X64, GemmConfig::TILED_16X64]
    } else {
        vec![GemmConfig::TILED_64]
    }
}

/// The cache file for this adapter, driver and kiln version (a new kiln re-tunes: its
/// kernels may differ), or `None` when there is no home directory. `KILN_CACHE` names
/// the directory; empty means unset; naming something that is not a directory is an error
/// (it would silently turn caching off).
pub fn cache_file(gpu: &Gpu) -> Result<Option<PathBuf>> {
    let dir = match std::env::var_os("KILN_CACHE").filter(|d| !d.is_empty()) {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.exists() && !d.is_dir() {
                return Err(Error::Env {
                    var: "KILN_CACHE",
                    value: d.display().to_string(),
                    expected: "a directory for the autotune cache (this names a file)",
                });
            }
            d
        }
        None => {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cache")));
            match base {
                Some(b) => b.join("kiln"),
                None => return Ok(None),
            }
        }
    };
    let i = gpu.info();
    let id: String = format!("{}-{}-{}-{}", env!("CARGO_PKG_VERSION"), i.name, i.driver, i.driver_info)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .collect();
    Ok(Some(dir.join(format!("autotune-{id}.txt"))))
}

fn read_cache(path: &Path) -> HashMap<TuneKey, String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().filter_map(|l| l.split_once('\t')).filter_map(|(k, v)| Some((TuneKey::parse(k)?, v.to_string()))).collect())
        .unwrap_or_default()
}

/// Whether cache entry `k` -> `v` names a variant this adapter's family competes with for that step.
fn trusted(gpu: &Gpu, k: &TuneKey, v: &str) -> bool {
    GemmConfig::named(v).is_some_and(|c| candidates(gpu, k).contains(&c))
}

/// Writes `ours` into the cache file at `p`, merged with what the file holds now (another
/// run may have written since it was read: its entries stay, ours win on a shared key),
/// under an exclusive lock on `p.lock`, so that concurrent first runs keep each other's entries.
fn merge_cache(gpu: &Gpu, p: &Path, ours: &HashMap<TuneKey, String>) -> Result<()> {
    let lock_path = p.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| Error::file(&lock_path, e))?;
    lock.lock().map_err(|e| Error::file(&lock_path, e))?;
    let mut merged = read_cache(p);
    merged.retain(|k, v| trusted(gpu, k, v));
    merged.extend(ours.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut lines: Vec<String> = merged.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
    lines.sort();
    crate::base::files::write_atomic(p, lines.concat().as_bytes())
    // the lock is released when `lock` is dropped
}

/// Chooses a variant for every GEMM/conv step of `graph` trained with `optimizer`.
pub fn tune(gpu: &Gpu, graph: &Graph, optimizer: Optimizer) -> Result<(Tuning, TuneReport)> {
    let t0 = Instant::now();
    let default = GemmConfig::default_for(gpu.info());
    let mut report = TuneReport::default();
    if std::env::var("KILN_AUTOTUNE").is_ok_and(|v| v == "off" || v == "0") {
        return Ok((Tuning::fixed(default), report));
    }
    let path = cache_file(gpu)?;
    report.cache_file = path.clone();
    let mut cached = path.as_deref().map(read_cache).unwrap_or_default();
    let switches = ConvSwitches::from_env()?;
    let plan = lower(graph, Mode::Train)?;
    let keys: Vec<TuneKey> = plan.tune_keys().into_iter().flatten().collect();
    // keys whose step runs the same kernel whatever the candidate's GEMM tile (conv_shared,
    // linear_forward_small)
    let tile_free = |s, k: &TuneKey| candidates(gpu, k).iter().all(|cfg| StepChoice::for_step(gpu, &plan, s, cfg, switches).tile_free());
    let untimed: Vec<TuneKey> = plan.steps.iter().filter_map(|s| plan.tune_key(s).filter(|k| tile_free(s, k))).collect();
    // An entry is trusted only if it names a variant this adapter's family competes with
    // for that step (a GPU choice on a CPU adapter can be 8x slower, a misspelt one unknown).
    cached.retain(|k, v| {
        let ok = trusted(gpu, k, v);
        if !ok && keys.contains(k) {
            let file = path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            report.warnings.push(format!("autotune cache {file}: '{v}' is not a candidate for {k} on this adapter; re-tuning"));
        }
        ok
    });
    let missing = keys.iter().any(|k| !cached.contains_key(k));
    if missing {
        // Time each candidate on the steps it competes for; keep the fastest per key. A key
        // with a single candidate, or whose step runs the same kernel with each, is decided
        // without timing.
        let mut best: HashMap<TuneKey, (String, f64)> = HashMap::new();
        let mut all: Vec<GemmConfig> = Vec::new();
        for k in &keys {
            let c = candidates(gpu, k);
            if c.len() == 1 || untimed.contains(k) {
                best.insert(k.clone(), (c[0].name(), f64::NAN));
            }
            for cfg in c {
                if !all.contains(&cfg) {
                    all.push(cfg);
                }
            }
        }
        for cfg in all {
            let timed = |k: &TuneKey| best.get(k).is_none_or(|b| !b.1.is_nan()) && candidates(gpu, k).contains(&cfg);
            if !keys.iter().any(timed) {
                continue;
            }
            let exec = Executor::new(gpu, graph, Mode::Train, Some(optimizer), &cfg, None)?;
            let times = exec.time_steps(3, &timed)?;
            for (key, secs) in exec.plan.tune_keys().into_iter().zip(times) {
                let (Some(key), Some(secs)) = (key, secs) else { continue };
                let e = best.entry(key).or_insert((cfg.name(), f64::INFINITY));
                if secs < e.1 {
                    *e = (cfg.name(), secs);
                }
            }
        }
        for (k, (name, secs)) in &best {
            cached.insert(k.clone(), name.clone());
            report.chosen.insert(k.to_string(), (name.clone(), *secs));
        }
        if let Some(p) = &path {
            if let Some(dir) = p.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // a cache that cannot be written only costs the next start the same tuning
            if let Err(e) = merge_cache(gpu, p, &cached) {
                report.warnings.push(format!("autotune cache not saved: {e}"));
            }
        }
    } else {
        report.from_cache = true;
        for k in &keys {
            report.chosen.insert(k.to_string(), (cached[k].clone(), f64::NAN));
        }
    }
    let per_key = keys.iter().filter_map(|k| cached.get(k).and_then(|n| GemmConfig::named(n)).map(|c| (k.clone(), c))).collect();
    report.seconds = t0.elapsed().as_secs_f64();
    Ok((Tuning { default, per_key }, report))
}
