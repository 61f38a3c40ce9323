//! Running: one step as one submit, and timing steps alone (autotune, `--profile`).

use super::*;

impl<'g> Executor<'g> {
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
}
