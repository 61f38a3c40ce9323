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

/// Executors of several batch sizes built in one arena (`Executor::arena`, `new_in`, what a
/// `Classifier` does for each batch a server gathers) read exactly what executors of their
/// own read, on one copy of the parameters, and allocate no activations of their own. On a
/// device of its own: the live-bytes counter is the device's.
#[test]
fn executors_of_every_batch_size_share_one_arena_and_read_as_executors_of_their_own() {
    use kiln::graph::exec::SharedParams;
    let gpu = &own_gpu();
    let kernels = GemmConfig::default_for(gpu.info());
    let mut rng = kiln::rng::Rng::new(12);
    let model = ModelKind::Cnn.spec();
    let params: kiln::graph::NamedTensors = model.build(1, 3).unwrap().graph.params().iter().map(|(_, n, s)| (n.to_string(), s.to_vec(), rng.vec(s.iter().product()))).collect();
    let arena = Executor::arena(gpu, &model.build_inference(16).unwrap().graph, Mode::Eval).unwrap();
    assert_eq!(arena.batch(), 16);
    let mut shared: Option<SharedParams> = None;
    for n in [16, 5, 1, 16] {
        let inference = model.build_inference(n).unwrap();
        let images = rng.vec(n * 784);
        let alone = {
            let exec = Executor::new(gpu, &inference.graph, Mode::Eval, None, &kernels, None).unwrap();
            exec.write_model(&params).unwrap();
            exec.write_input(&images).unwrap();
            let mut exec = exec;
            exec.run_step(0).unwrap();
            exec.read_node(inference.probs).unwrap()
        };
        let live = gpu.counters.bytes_live.load(std::sync::atomic::Ordering::Relaxed);
        let mut exec = Executor::new_in(gpu, &inference.graph, Mode::Eval, &kernels, &arena, shared.as_ref()).unwrap();
        let grown = gpu.counters.bytes_live.load(std::sync::atomic::Ordering::Relaxed) - live;
        let planned = exec.stats().planned_bytes;
        match &shared {
            None => {
                exec.write_model(&params).unwrap();
                shared = Some(exec.shared_params());
            }
            // no activations, no inputs, no parameters of its own: the step and metrics words
            Some(_) => assert!(grown < 4096, "batch {n}: {grown} bytes of its own beside {planned} planned in the arena"),
        }
        exec.write_input(&images).unwrap();
        exec.run_step(0).unwrap();
        assert_eq!(exec.read_node(inference.probs).unwrap(), alone, "batch {n}");
    }
}
