//! SGD (with momentum) and Adam over flat parameter buffers (shaders/optim.wgsl): one
//! dispatch updates every parameter of a model laid out in one buffer. The learning rate
//! follows a [`Schedule`]: the host folds it, with Adam's bias corrections, into the two
//! scalars of each step's [`step_words`], written with the step number as before.

use super::elementwise::check_same;
use super::Dispatch;
use crate::runtime::gpu::Gpu;
use crate::runtime::pipelines::Kernel;
use crate::runtime::shaders::Shader;
use crate::runtime::tensor::{DType, Tensor};
use crate::{Error, Result};

const WG: u32 = 256;

/// An update rule and the schedule of its learning rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Optimizer {
    /// How a gradient becomes an update.
    pub rule: Rule,
    /// How the learning rate changes over the steps.
    pub schedule: Schedule,
}

/// An update rule with its hyperparameters, named and defined as in `torch.optim`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Rule {
    /// v = momentum v + g + wd w; w -= lr v (momentum 0: plain SGD)
    Sgd {
        /// Learning rate (before the schedule's factor).
        lr: f32,
        /// Velocity decay; 0 for plain SGD.
        momentum: f32,
        /// L2 coefficient added to the gradient.
        weight_decay: f32,
    },
    /// Bias-corrected Adam; weight decay added to the gradient (L2, as torch.optim.Adam).
    Adam {
        /// Learning rate (before the schedule's factor).
        lr: f32,
        /// Decay of the first moment (0.9).
        beta1: f32,
        /// Decay of the second moment (0.999).
        beta2: f32,
        /// Added to the root of the second moment (1e-8).
        eps: f32,
        /// L2 coefficient added to the gradient.
        weight_decay: f32,
    },
    /// Adam with decoupled weight decay (torch.optim.AdamW): w *= 1 - lr wd before the step.
    AdamW {
        /// Learning rate (before the schedule's factor).
        lr: f32,
        /// Decay of the first moment (0.9).
        beta1: f32,
        /// Decay of the second moment (0.999).
        beta2: f32,
        /// Added to the root of the second moment (1e-8).
        eps: f32,
        /// Decoupled decay coefficient (torch's default is 0.01).
        weight_decay: f32,
    },
}

/// The learning rate at step t (steps already taken) is `lr * factor(t)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// The factor is always 1.
    Constant,
    /// Full rate for the first `hold` steps, then half a cosine down to 0 at step `total`,
    /// and 0 after it. `hold` 0 is plain cosine annealing (torch's CosineAnnealingLR with
    /// T_max = total); a late decay is the "warmup-stable-decay" shape without warmup.
    Cosine {
        /// Steps at the full rate.
        hold: u32,
        /// The step at which the rate reaches 0.
        total: u32,
    },
    /// One cycle (torch's OneCycleLR, cosine, without momentum cycling): from 1/25 of the
    /// rate up to the full rate linearly over the first `warmup` steps, then half a cosine
    /// down to 0 at step `total` (torch ends at 1/25e4 of the rate: nearly the same).
    OneCycle {
        /// Steps of the linear warmup.
        warmup: u32,
        /// The step at which the rate reaches 0.
        total: u32,
    },
}

impl Schedule {
    /// A cosine decay over the last `1 - hold_fraction` of `total` steps.
    pub fn cosine(hold_fraction: f64, total: usize) -> Result<Schedule> {
        Self::check_hold(hold_fraction)?;
        let total = u32::try_from(total).map_err(|_| Error::unsupported("Schedule", format!("{total} steps")))?;
        Ok(Schedule::Cosine { hold: (hold_fraction * total as f64).floor() as u32, total })
    }

    /// A linear warmup over the first `warmup_fraction` of `total` steps, then a cosine
    /// decay to 0 ([`Schedule::OneCycle`]).
    pub fn one_cycle(warmup_fraction: f64, total: usize) -> Result<Schedule> {
        Self::check_warmup(warmup_fraction)?;
        let total = u32::try_from(total).map_err(|_| Error::unsupported("Schedule", format!("{total} steps")))?;
        Ok(Schedule::OneCycle { warmup: (warmup_fraction * total as f64).round() as u32, total })
    }

    /// The fraction of a run spent warming up must lie in (0, 1).
    pub fn check_warmup(warmup_fraction: f64) -> Result<()> {
        if warmup_fraction > 0.0 && warmup_fraction < 1.0 {
            Ok(())
        } else {
            Err(Error::unsupported("Schedule::warmup", format!("{warmup_fraction}: expected a fraction in (0, 1)")))
        }
    }

    /// The fraction of a run held at full rate must lie in [0, 1).
    pub fn check_hold(hold_fraction: f64) -> Result<()> {
        if (0.0..1.0).contains(&hold_fraction) {
            Ok(())
        } else {
            Err(Error::unsupported("Schedule::hold", format!("{hold_fraction}: expected a fraction in [0, 1)")))
        }
    }

    /// The factor of the learning rate after `t` steps.
    pub fn factor(self, t: u32) -> f64 {
        match self {
            Schedule::Constant => 1.0,
            Schedule::Cosine { hold, total } => {
                if t < hold {
                    return 1.0;
                }
                let u = (t.min(total) - hold) as f64 / total.saturating_sub(hold).max(1) as f64;
                0.5 * (1.0 + (std::f64::consts::PI * u).cos())
            }
            Schedule::OneCycle { warmup, total } => {
                const START: f64 = 1.0 / 25.0; // torch's div_factor
                if t < warmup {
                    return START + (1.0 - START) * t as f64 / warmup as f64;
                }
                Schedule::Cosine { hold: warmup, total }.factor(t)
            }
        }
    }
}

impl Optimizer {
    /// Adam with torch.optim.Adam's defaults (betas 0.9, 0.999, eps 1e-8, no weight decay)
    /// and a constant rate.
    pub fn adam(lr: f32) -> Optimizer {
        Rule::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }.into()
    }
    /// AdamW with torch.optim.AdamW's defaults but the given weight decay.
    pub fn adamw(lr: f32, weight_decay: f32) -> Optimizer {
        Rule::AdamW { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay }.into()
    }
    /// SGD with `momentum` (0 for plain SGD), no weight decay, a constant rate.
    pub fn sgd(lr: f32, momentum: f32) -> Optimizer {
        Rule::Sgd { lr, momentum, weight_decay: 0.0 }.into()
    }
    /// The same rule under `schedule`.
    pub fn with_schedule(self, schedule: Schedule) -> Optimizer {
        Optimizer { schedule, ..self }
    }
    /// State buffers per parameter: SGD keeps a velocity, Adam two moments.
    pub fn state_slots(&self) -> usize {
        match self.rule {
            Rule::Sgd { .. } => 1,
            Rule::Adam { .. } | Rule::AdamW { .. } => 2,
        }
    }
}

impl From<Rule> for Optimizer {
    fn from(rule: Rule) -> Optimizer {
        Optimizer { rule, schedule: Schedule::Constant }
    }
}

impl Rule {
    /// Refuses hyperparameters no run could use, naming each (`Rule::lr`, ...): a learning
    /// rate that is not finite and > 0, a momentum or beta outside [0, 1), an eps that is not
    /// finite and > 0, a negative or non-finite weight decay.
    pub fn check(&self) -> Result<()> {
        let bad = |flag: &str, v: f32, expected: &str| Err(Error::unsupported(flag, format!("{v}: expected {expected}")));
        let in_unit = |v: f32| (0.0..1.0).contains(&v);
        let (lr, weight_decay) = match *self {
            Rule::Sgd { lr, momentum, weight_decay } => {
                if !in_unit(momentum) {
                    return bad("Rule::momentum", momentum, "a value in [0, 1)");
                }
                (lr, weight_decay)
            }
            Rule::Adam { lr, beta1, beta2, eps, weight_decay } | Rule::AdamW { lr, beta1, beta2, eps, weight_decay } => {
                if !in_unit(beta1) || !in_unit(beta2) {
                    return bad("Adam betas", if in_unit(beta1) { beta2 } else { beta1 }, "values in [0, 1)");
                }
                if !(eps.is_finite() && eps > 0.0) {
                    return bad("Adam eps", eps, "a finite value > 0");
                }
                (lr, weight_decay)
            }
        };
        if !(lr.is_finite() && lr > 0.0) {
            return bad("Rule::lr", lr, "a finite learning rate > 0");
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return bad("weight decay", weight_decay, "a finite value >= 0");
        }
        Ok(())
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Rule::Sgd { lr, momentum, weight_decay } => write!(f, "SGD lr {lr}, momentum {momentum}, weight decay {weight_decay}"),
            Rule::Adam { lr, beta1, beta2, eps, weight_decay } => {
                write!(f, "Adam lr {lr}, betas ({beta1}, {beta2}), eps {eps:e}, weight decay {weight_decay}")
            }
            Rule::AdamW { lr, beta1, beta2, eps, weight_decay } => {
                write!(f, "AdamW lr {lr}, betas ({beta1}, {beta2}), eps {eps:e}, decoupled weight decay {weight_decay}")
            }
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) n: u32,
    pub(crate) momentum: f32,
    pub(crate) beta1: f32,
    pub(crate) beta2: f32,
    pub(crate) eps: f32,
    pub(crate) weight_decay: f32,
    pub(crate) _pad: [u32; 2],
}

/// Words in the step buffer (see [`step_words`]).
pub const STEP_WORDS: usize = 8;

/// The step buffer's words for the step after `taken` steps: [taken, batch_start, a_t,
/// c_t, d_t, 0, 0, 0], a_t..d_t f32 bits computed here in f64 (see shaders/optim.wgsl): the
/// scheduled step size a_t (Adam's divided by 1 - beta1^t), Adam's 1 / sqrt(1 - beta2^t),
/// and AdamW's decay factor 1 - lr f_t wd (1 for the other rules).
/// The gather kernel reads `batch_start`, dropout and augmentation `taken`.
pub fn step_words(opt: Option<&Optimizer>, taken: u32, batch_start: u32) -> [u32; STEP_WORDS] {
    let (a, c, d) = match opt {
        None => (0.0, 0.0, 1.0),
        Some(o) => {
            let f = o.schedule.factor(taken);
            match o.rule {
                Rule::Sgd { lr, .. } => (lr as f64 * f, 1.0, 1.0),
                Rule::Adam { lr, beta1, beta2, .. } | Rule::AdamW { lr, beta1, beta2, .. } => {
                    let t = taken as f64 + 1.0;
                    // 1 - b^t without cancellation: -expm1(t ln b)
                    let (bc1, bc2) = (-(t * (beta1 as f64).ln()).exp_m1(), -(t * (beta2 as f64).ln()).exp_m1());
                    let decay = match o.rule {
                        Rule::AdamW { weight_decay, .. } => 1.0 - lr as f64 * f * weight_decay as f64,
                        _ => 1.0,
                    };
                    (lr as f64 * f / bc1, 1.0 / bc2.sqrt(), decay)
                }
            }
        }
    };
    [taken, batch_start, (a as f32).to_bits(), (c as f32).to_bits(), (d as f32).to_bits(), 0, 0, 0]
}

/// One optimizer step over `w` given `grad`. `m1` (and `m2` for Adam) hold the state and
/// must start at zero; `step` holds this step's [`step_words`].
pub fn optimizer_step(gpu: &Gpu, opt: &Optimizer, step: &Tensor, grad: &Tensor, w: &Tensor, m1: &Tensor, m2: Option<&Tensor>) -> Result<Dispatch> {
    let op = "optimizer_step";
    check_same(op, &[w, grad, m1])?;
    if step.dtype() != DType::U32 || step.len() < STEP_WORDS {
        return Err(Error::shape(op, format!("step must be a u32 step buffer of {STEP_WORDS} words (see step_words)")));
    }
    let n = w.len() as u32;
    let (entry, params, m2) = match opt.rule {
        Rule::Sgd { momentum, weight_decay, .. } => ("sgd_step", Params { n, momentum, weight_decay, ..Default::default() }, None),
        Rule::Adam { beta1, beta2, eps, weight_decay, .. } => {
            let Some(m2) = m2 else { return Err(Error::shape(op, "Adam needs a second moment buffer")) };
            check_same(op, &[w, m2])?;
            ("adam_step", Params { n, beta1, beta2, eps, weight_decay, ..Default::default() }, Some(m2))
        }
        // the same kernel: no L2 term in the gradient, the decay comes as d_t
        Rule::AdamW { beta1, beta2, eps, .. } => {
            let Some(m2) = m2 else { return Err(Error::shape(op, "AdamW needs a second moment buffer")) };
            check_same(op, &[w, m2])?;
            ("adam_step", Params { n, beta1, beta2, eps, weight_decay: 0.0, ..Default::default() }, Some(m2))
        }
    };
    let kernel = Kernel::new(Shader::Optim, entry).with("WG", WG);
    let mut tensors = vec![(1, step), (2, grad), (3, w), (4, m1)];
    if let Some(m2) = m2 {
        tensors.extend([(5, m2)]);
    }
    Dispatch::new(gpu, &kernel, &params, &tensors, gpu.grid_for(w.len(), WG))
}
