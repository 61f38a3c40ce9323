//! The memory budget of training the reference CNN on mnist10k (issue "Speed II" §6): the
//! trainer, the evaluator, both datasets resident and the im2col / split-K scratch, which
//! every staging pass shares (Gpu::scratch), peak at most 64 MiB. On a device of its own
//! (`common::own_gpu`): the peak is the device's, and other tests would move it.

use kiln::kernels::data::ResidentDataset;
use kiln::graph::{Executor, Mode};
use kiln::nn::ModelKind;
use kiln::ops::gemm::GemmConfig;
use kiln::ops::optim::Optimizer;
use crate::common::own_gpu;

const MIB: u64 = 1 << 20;

#[test]
fn the_mnist10k_cnn_trains_within_64_mib() {
    let gpu = &own_gpu();
    let batch = 64;
    // what train_mnist builds on a CPU adapter for mnist10k: a trainer and an evaluator of
    // the training batch size, 8,000 + 2,000 resident images
    let images = |n: usize| (0..n * 784).map(|i| (i * 7 % 256) as u8).collect::<Vec<u8>>();
    let labels = |n: usize| (0..n).map(|i| (i % 10) as u8).collect::<Vec<u8>>();
    let train = ResidentDataset::upload(gpu, &images(8000), &labels(8000), 28, 28, 0.13, 0.31).unwrap();
    let test = ResidentDataset::upload(gpu, &images(2000), &labels(2000), 28, 28, 0.13, 0.31).unwrap();
    let kernels = GemmConfig::default_for(gpu.info());
    let graph = ModelKind::Cnn.build(batch, 1).unwrap().graph;
    let mut trainer = Executor::new(gpu, &graph, Mode::Train, Some(Optimizer::adam(1e-3)), &kernels, None).unwrap();
    let mut evaluator = Executor::new(gpu, &graph, Mode::Eval, None, &kernels, Some(&trainer)).unwrap();
    trainer.attach_dataset(&train, kiln::kernels::data::Augment::Affine, 1).unwrap();
    evaluator.attach_dataset(&test, kiln::kernels::data::Augment::Off, 0).unwrap();
    for s in 0..3 {
        trainer.run_step(s * batch as u32).unwrap();
        evaluator.run_step(s * batch as u32).unwrap();
    }
    trainer.finish().unwrap();
    let stats = trainer.stats();
    println!("{stats:?}");
    assert!(trainer.read_metrics().unwrap().mean_loss().is_finite());
    assert!(stats.gpu_peak_bytes <= 64 * MIB, "peak {:.1} MiB", stats.gpu_peak_bytes as f64 / MIB as f64);
}
