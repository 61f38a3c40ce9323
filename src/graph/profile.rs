//! A per-kernel profile of one step: for the gather, each plan step and the optimizer,
//! its kernels, dispatches, GPU time and achieved GFLOP/s (GEMM, convolution: 2 FLOP per
//! multiply-add of the real operation count) or GB/s (everything else: the bytes of the
//! values it reads and writes once each). GPU times come from timestamp queries written at
//! the start and end of a compute pass per step, where the adapter has them; else each
//! step is submitted alone and waited for (which adds the submit's own cost). Beside the
//! sum of the GPU times: the wall time of a whole step (record, submit, wait) and the CPU
//! time of recording it, so a CPU-bound step can be told from a GPU-bound one.

use std::fmt::Write as _;
use std::time::Instant;

use super::lower::{Plan, Step};
use crate::kernels::Dispatch;
use crate::{Gpu, Result};

/// One row of the profile: one plan step (or the gather, or the optimizer).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProfileRow {
    /// `gather`, `optimizer`, or the plan step's kind and output (`Conv2dForward conv1`).
    pub step: String,
    /// The kernels' entry points, in dispatch order (the variant autotuning chose).
    pub kernels: Vec<String>,
    /// Dispatches per step.
    pub dispatches: usize,
    /// Median GPU microseconds per step.
    pub gpu_us: f64,
    /// Floating-point operations per step (0 for memory-bound steps).
    pub flops: f64,
    /// Bytes of the values read and written once each.
    pub bytes: f64,
}

/// [`super::Executor::profile`]'s result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Profile {
    /// `timestamp queries` or `each step submitted alone`.
    pub method: &'static str,
    /// Rows in submission order.
    pub rows: Vec<ProfileRow>,
    /// Median wall microseconds of a whole step: record, submit, wait.
    pub wall_step_us: f64,
    /// Median CPU microseconds to record a step's command buffer.
    pub record_us: f64,
}

impl Profile {
    /// The sum of the rows' GPU times.
    pub fn gpu_step_us(&self) -> f64 {
        self.rows.iter().map(|r| r.gpu_us).sum()
    }

    /// Dispatches per step.
    pub fn dispatches(&self) -> usize {
        self.rows.iter().map(|r| r.dispatches).sum()
    }

    /// The profile as an aligned text table, heaviest rows marked by their share.
    pub fn table(&self) -> String {
        let total = self.gpu_step_us().max(f64::MIN_POSITIVE);
        let mut s = String::new();
        let _ = writeln!(s, "{:<34} {:<36} {:>5} {:>10} {:>7} {:>9} {:>8}", "step", "kernels", "calls", "GPU µs", "share", "GFLOP/s", "GB/s");
        for r in &self.rows {
            let rate = |n: f64| if n > 0.0 && r.gpu_us > 0.0 { format!("{:.1}", n / (r.gpu_us * 1e3)) } else { "-".into() };
            let kernels = r.kernels.join("+");
            let kernels = if kernels.chars().count() > 36 { format!("{}…", kernels.chars().take(35).collect::<String>()) } else { kernels };
            let _ = writeln!(
                s,
                "{:<34} {:<36} {:>5} {:>10.1} {:>6.1}% {:>9} {:>8}",
                r.step,
                kernels,
                r.dispatches,
                r.gpu_us,
                100.0 * r.gpu_us / total,
                rate(r.flops),
                if r.flops > 0.0 { "-".into() } else { rate(r.bytes) }
            );
        }
        let _ = writeln!(
            s,
            "GPU time per step {:.1} µs ({}), {} dispatches; wall time per step {:.1} µs (record, submit, wait), of which recording {:.1} µs: the GPU is busy {:.0}% of the step, {}",
            self.gpu_step_us(),
            self.method,
            self.dispatches(),
            self.wall_step_us,
            self.record_us,
            100.0 * self.gpu_step_us() / self.wall_step_us.max(f64::MIN_POSITIVE),
            if self.gpu_step_us() >= 0.5 * self.wall_step_us { "GPU-bound" } else { "bound by the CPU side (recording, submit, synchronisation)" }
        );
        s
    }
}

/// FLOPs of a step: 2 per multiply-add of GEMMs and convolutions.
pub fn step_flops(plan: &Plan, step: &Step) -> f64 {
    let shape = |v: &super::ValueId| &plan.values[v.0].shape;
    match step {
        Step::Conv2dForward { conv, y, .. } | Step::Conv2dBackwardWeight { conv, dy: y, .. } | Step::Conv2dBackwardInput { conv, dy: y, .. } => {
            let out = shape(y);
            2.0 * (conv.batch * conv.cout * out[2] * out[3] * conv.cin * conv.r * conv.s) as f64
        }
        Step::LinearForward { x, w, .. } | Step::LinearBackwardWeight { x, dw: w, .. } => {
            let (n, inp, out) = (shape(x)[0], shape(x)[1], shape(w)[0]);
            2.0 * (n * inp * out) as f64
        }
        Step::LinearBackwardInput { dy, w, .. } => 2.0 * (shape(dy)[0] * shape(dy)[1] * shape(w)[1]) as f64,
        Step::LinearBackwardSmall { dy, w, dx, dw, db, .. } => {
            let (n, out, inp) = (shape(dy)[0], shape(dy)[1], shape(w)[1]);
            let products = dx.is_some() as usize + dw.is_some() as usize;
            (2 * products * n * out * inp + db.map_or(0, |_| n * out)) as f64
        }
        _ => 0.0,
    }
}

/// Bytes a step moves: each value it reads or writes, once.
pub fn step_bytes(plan: &Plan, step: &Step) -> f64 {
    let (reads, writes) = step.io();
    reads.iter().chain(&writes).map(|v| plan.values[v.0].dtype.bytes(plan.values[v.0].len()) as f64).sum()
}

/// A named group of dispatches timed as one.
pub(crate) struct Unit<'a> {
    pub name: String,
    pub step: Option<&'a Step>,
    pub dispatches: Vec<&'a Dispatch>,
}

/// Median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `units` `reps` times after one warm-up; `whole_step` runs and waits for one step.
pub(crate) fn measure(gpu: &Gpu, plan: &Plan, units: &[Unit], reps: usize, mut whole_step: impl FnMut() -> Result<f64>) -> Result<Profile> {
    let reps = reps.max(1);
    let timestamps = gpu.device.features().contains(wgpu::Features::TIMESTAMP_QUERY);
    let mut per_unit: Vec<Vec<f64>> = vec![Vec::new(); units.len()];
    let mut record = Vec::new();
    if timestamps {
        let count = 2 * units.len() as u32;
        let set = gpu.catch("timestamp query set", || gpu.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("kiln profile"), ty: wgpu::QueryType::Timestamp, count }))?;
        let resolve = gpu.catch("timestamp buffer", || {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln profile timestamps"),
                size: 8 * count as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        })?;
        let period_ns = gpu.queue.get_timestamp_period() as f64;
        for rep in 0..=reps {
            let t0 = Instant::now();
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            for (i, u) in units.iter().enumerate() {
                let writes = wgpu::ComputePassTimestampWrites { query_set: &set, beginning_of_pass_write_index: Some(2 * i as u32), end_of_pass_write_index: Some(2 * i as u32 + 1) };
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("kiln profile"), timestamp_writes: Some(writes) });
                for d in &u.dispatches {
                    d.record(&mut pass);
                }
            }
            encoder.resolve_query_set(&set, 0..count, &resolve, 0);
            let commands = encoder.finish();
            if rep > 0 {
                record.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            gpu.submit(commands)?;
            let bytes = gpu.read_bytes(&resolve, 0, 8 * count as u64)?;
            if rep == 0 {
                continue; // warm-up
            }
            let ticks: Vec<u64> = bytes.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
            for (i, times) in per_unit.iter_mut().enumerate() {
                times.push(ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period_ns / 1e3);
            }
        }
    } else {
        for (i, u) in units.iter().enumerate() {
            for rep in 0..=reps {
                let t0 = Instant::now();
                gpu.run(&u.dispatches)?;
                gpu.wait()?;
                if rep > 0 {
                    per_unit[i].push(t0.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        for _ in 0..reps {
            let t0 = Instant::now();
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                units.iter().flat_map(|u| &u.dispatches).for_each(|d| d.record(&mut pass));
            }
            drop(encoder.finish());
            record.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    let mut wall = Vec::new();
    for _ in 0..=reps {
        wall.push(whole_step()? * 1e6);
    }
    wall.remove(0);
    let rows = units
        .iter()
        .zip(&mut per_unit)
        .map(|(u, times)| ProfileRow {
            step: u.name.clone(),
            kernels: u.dispatches.iter().map(|d| d.name.to_string()).collect(),
            dispatches: u.dispatches.len(),
            gpu_us: median(times),
            flops: u.step.map_or(0.0, |s| step_flops(plan, s)),
            bytes: u.step.map_or(0.0, |s| step_bytes(plan, s)),
        })
        .collect();
    Ok(Profile { method: if timestamps { "timestamp queries" } else { "each step submitted alone" }, rows, wall_step_us: median(&mut wall), record_us: median(&mut record) })
}
