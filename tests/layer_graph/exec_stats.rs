//! ExecStats over a 100-step run. On a device of its own (`common::own_gpu`): the counters are
//! the device's, and other tests running in parallel on a shared device would move them.

use kiln::graph::{Executor, Mode};
use kiln::ops::gemm::GemmConfig;
use kiln::ops::optim::Optimizer;
use kiln::ops::elementwise::fill;
use kiln::testing::Rng;
use kiln::{DType, Tensor};
use std::sync::atomic::Ordering;

use crate::common::{own_gpu, small_mlp, BATCH};

#[test]
fn a_training_step_is_one_submit_with_no_readback() {
    let gpu = &own_gpu();
    let graph = small_mlp();
    let mut exec = Executor::new(gpu, &graph, Mode::Train, Some(Optimizer::adam(1e-3)), &GemmConfig::default_for(gpu.info()), None).unwrap();
    let mut rng = Rng::new(6);
    exec.write_input(&rng.vec(BATCH * 36)).unwrap();
    exec.write_labels(&[0, 1, 2, 3, 3, 2, 1, 0]).unwrap();
    exec.run_step(0).unwrap();
    exec.finish().unwrap();
    let first = exec.stats();
    for _ in 0..100 {
        exec.run_step(0).unwrap();
    }
    exec.finish().unwrap();
    let last = exec.stats();
    println!("ExecStats after 101 steps: {last:?}");
    assert_eq!(last.submits - first.submits, 100, "one submit per step");
    assert_eq!(last.readbacks, first.readbacks, "no readback while training");
    assert_eq!(last.gpu_bytes, first.gpu_bytes, "GPU memory constant after the first step");
    assert_eq!(last.gpu_peak_bytes, first.gpu_peak_bytes, "no step allocates, even briefly");
    assert!(last.gpu_bytes > 0 && last.gpu_bytes <= last.gpu_peak_bytes);
    let m = exec.read_metrics().unwrap();
    assert_eq!(m.rows, 101 * BATCH as u32);
    assert!(m.mean_loss().is_finite());
    drop(exec);
    let live = || gpu.counters.bytes_live.load(Ordering::Relaxed);
    assert!(live() < last.gpu_bytes, "dropping the executor frees its buffers: {} of {} bytes still live", live(), last.gpu_bytes);

    // Scratch whose only owner is a dispatch (im2col columns, split-K partials) is memory
    // until the dispatch goes: counted until then, not when the tensor handle drops.
    let before = live();
    let scratch = Tensor::empty(gpu, &[1 << 20], DType::F32).unwrap();
    let d = fill(gpu, &scratch, 1.0).unwrap();
    drop(scratch);
    assert_eq!(live(), before + (4 << 20), "the dispatch keeps its 4 MiB of scratch");
    drop(d);
    assert_eq!(live(), before);
    assert!(gpu.counters.bytes_peak.load(Ordering::Relaxed) >= last.gpu_peak_bytes);
}

