//! Test support: the shared test GPU, named tolerances, a seeded input generator and a
//! mismatch report. Used by tests/ and benches/; public so downstream kernels can reuse it.
//!
//! A comparison passes when `|gpu - cpu| <= abs + rel * |cpu|` for every element, and NaN
//! never passes, so an output the kernel forgot to write (poisoned with NaN) fails.

use std::sync::OnceLock;

use crate::runtime::gpu::Gpu;

/// `|gpu - cpu| <= abs + rel * |cpu|`
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Shown in failure reports.
    pub name: &'static str,
    /// Absolute part of the bound.
    pub abs: f64,
    /// Relative part of the bound, times `|cpu|`.
    pub rel: f64,
}

/// Integer-valued or copied data: must match bit for bit.
pub const EXACT: Tolerance = Tolerance { name: "exact", abs: 0.0, rel: 0.0 };
/// One or two f32 roundings per element (ReLU, bias, axpy, optimizer steps).
pub const ELEMENTWISE: Tolerance = Tolerance { name: "elementwise", abs: 1e-6, rel: 1e-5 };
/// f32 sums of up to ~10^4 products (GEMM, conv, channel sums) against f64: the error grows
/// with the reduction length and the order of accumulation, which differs by kernel variant.
pub const REDUCTION: Tolerance = Tolerance { name: "reduction", abs: 2e-4, rel: 2e-4 };
/// Reductions of 10^4 to 10^5 products (a convolution's weight gradient sums over
/// batch * OH * OW): a sequential f32 sum's error grows like sqrt(K) * eps * the partial
/// sums, about 1e-3 at K = 50,176 with unit inputs.
pub const LONG_REDUCTION: Tolerance = Tolerance { name: "long reduction", abs: 3e-3, rel: 1e-3 };
/// exp/log in f32 (softmax, cross-entropy): the GPU's exp is accurate to a few ulp.
pub const TRANSCENDENTAL: Tolerance = Tolerance { name: "transcendental", abs: 2e-6, rel: 2e-5 };
/// Central finite differences of f32 references (h = 1e-2 on inputs of size ~1): the
/// f32 rounding of the outputs (~1e-7) divided by 2h, plus O(h^2) curvature for smooth
/// ops (softmax).
pub const FINITE_DIFF: Tolerance = Tolerance { name: "finite differences", abs: 2e-4, rel: 2e-3 };
/// Batch normalisation: outputs are O(1) normalised values whose error is the error of the
/// f32 per-channel statistics (sums of up to ~10^5 values) times 1/std, so inputs with
/// |mean| >> std (tested up to mean/std ~ 10^3) amplify the mean's rounding; the backward
/// adds dy * M - sum dy - xhat * sum(dy xhat), terms of size M |dy| whose rounding
/// cancels back to ~eps |dy| weight/std. A REDUCTION-sized abs, tighter rel.
pub const BATCH_NORM: Tolerance = Tolerance { name: "batch norm", abs: 2e-4, rel: 1e-4 };
/// Several training steps compared end to end: errors compound through the steps.
pub const TRAINING: Tolerance = Tolerance { name: "training", abs: 2e-4, rel: 2e-3 };

/// The GPU all tests share. With no adapter the test FAILS (never skips) and says how to
/// get one.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    match GPU.get_or_init(|| Gpu::new().map_err(|e| e.to_string())) {
        Ok(gpu) => gpu,
        Err(e) => panic!("GPU tests need an adapter: {e}"),
    }
}

pub use crate::base::rng::Rng;

/// Compares `got` against `want`; on failure returns a report of the worst elements.
pub fn compare(what: &str, got: &[f32], want: &[f32], tol: Tolerance) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} elements, expected {}", got.len(), want.len()));
    }
    let mut bad: Vec<(usize, f64)> = Vec::new();
    let mut max_err = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs();
        let limit = tol.abs + tol.rel * (w as f64).abs();
        if g.is_nan() || w.is_nan() || err > limit {
            bad.push((i, if err.is_nan() { f64::INFINITY } else { err }));
        }
        if err.is_finite() {
            max_err = max_err.max(err);
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    bad.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut report = format!(
        "{what}: {} of {} elements outside tolerance '{}' (abs {:e} + rel {:e}); max finite error {max_err:e}; worst:\n",
        bad.len(),
        got.len(),
        tol.name,
        tol.abs,
        tol.rel
    );
    for &(i, err) in bad.iter().take(8) {
        report += &format!("  [{i}] gpu {:e} cpu {:e} |diff| {err:e}\n", got[i], want[i]);
    }
    Err(report)
}

/// `compare`, panicking with the report: the assertion tests use.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: Tolerance) {
    if let Err(report) = compare(what, got, want, tol) {
        panic!("{report}");
    }
}
