//! Kernel benchmarks: `cargo bench --bench kernels -- gemm` (criterion filter).
//! Groups are `<op>/<variant>/<shape>`; GEMM and conv throughput is the real FLOP count
//! (criterion's "elem/s" reads as FLOP/s), memory-bound kernels report bytes
//! moved (pooling, activations, optimizer). Every timed iteration submits the dispatch and waits for the GPU.
//! KILN_BENCH_LARGE=1 adds the 4096^3 GEMM (meant for real GPUs).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln::ops::activation::{activation_backward, activation_forward, Activation};
use kiln::ops::batchnorm::{batchnorm_backward, batchnorm_forward_eval, batchnorm_forward_train, BatchNorm, EPS, MOMENTUM};
use kiln::kernels::conv::{backward_input, backward_weight, forward, Conv2d, ConvChoice, ConvSwitches, Pass, WeightInput};
use kiln::ops::gemm::{gemm, Family, Gemm, GemmConfig};
use kiln::ops::linear::{linear_backward_input_routed, Linear};
use kiln::ops::optim::{optimizer_step, step_words, Optimizer, STEP_WORDS};
use kiln::ops::pool::{
    avg_pool2d_backward, avg_pool2d_forward, global_avg_pool_backward, global_avg_pool_forward, max_pool2d_backward, max_pool2d_forward,
    GlobalPool2d, MaxPoolRoute, Pool2d,
};
use kiln::kernels::data::{impulse_median3x3, median3x3, Augment, ResidentDataset};
use kiln::ops::{elementwise, Dispatch};
use kiln::testing::{gpu, Rng};
use kiln::{DType, Tensor};

fn tensor(n: usize, rng: &mut Rng) -> Tensor {
    Tensor::from_f32(gpu(), &[n], &rng.vec(n)).unwrap()
}

fn time(c: &mut Criterion, group: &str, variant: &str, shape: &str, throughput: Throughput, d: &[Dispatch]) {
    let gpu = gpu();
    let mut g = c.benchmark_group(group);
    g.throughput(throughput);
    g.bench_function(BenchmarkId::new(variant, shape), |b| {
        b.iter(|| {
            gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
            gpu.wait().unwrap();
        })
    });
    g.finish();
}

/// The named variants, plus any in KILN_BENCH_CONFIGS: comma-separated
/// `family:WGXxWGY:TMxTN:BK` (family tiled|tiled4|regblock|vec4), for exploring tile shapes on a
/// new device without editing the code: the GEMM and the convolution benches both time them.
fn variants() -> Vec<(String, GemmConfig)> {
    let mut v: Vec<(String, GemmConfig)> = GemmConfig::ALL.iter().map(|(n, c)| (n.to_string(), *c)).collect();
    let Ok(extra) = std::env::var("KILN_BENCH_CONFIGS") else { return v };
    for spec in extra.split(',').filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = spec.split(':').collect();
        let pair = |s: &str| s.split_once('x').and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
        let family = match parts.first() {
            Some(&"tiled") => Family::Tiled,
            Some(&"tiled4") => Family::Tiled4,
            Some(&"regblock") => Family::RegBlock,
            Some(&"vec4") => Family::Vec4,
            _ => panic!("KILN_BENCH_CONFIGS: unknown family in '{spec}' (tiled|tiled4|regblock|vec4)"),
        };
        let (Some((wgx, wgy)), Some((tm, tn)), Some(bk)) =
            (parts.get(1).and_then(|s| pair(s)), parts.get(2).and_then(|s| pair(s)), parts.get(3).and_then(|s| s.parse().ok()))
        else {
            panic!("KILN_BENCH_CONFIGS: '{spec}' is not family:WGXxWGY:TMxTN:BK");
        };
        v.push((spec.replace(':', "_"), GemmConfig { family, wgx, wgy, tm, tn, bk, subgroups: false }));
    }
    v
}

fn gemm_benches(c: &mut Criterion) {
    let gpu = gpu();
    println!("kiln kernels on {} ({:?})", gpu.info().name, gpu.info().backend);
    let mut rng = Rng::new(1);
    let mut shapes = vec![
        ("1024x1024x1024", Gemm::new(1024, 1024, 1024)),
        ("fc1_fwd_64x1568x128", Gemm { trans_b: true, ..Gemm::new(64, 128, 1568) }),
        ("fc1_dx_64x128x1568", Gemm::new(64, 1568, 128)),
        ("fc1_dw_128x64x1568", Gemm { trans_a: true, ..Gemm::new(128, 1568, 64) }),
    ];
    if std::env::var("KILN_BENCH_LARGE").is_ok_and(|v| v == "1") {
        shapes.push(("4096x4096x4096", Gemm::new(4096, 4096, 4096)));
    }
    for (shape, g) in shapes {
        let (a, b, out) = (tensor(g.m * g.k, &mut rng), tensor(g.k * g.n, &mut rng), tensor(g.m * g.n, &mut rng));
        for (name, cfg) in variants() {
            let d = gemm(gpu, &cfg, &g, &a, &b, None, &out).unwrap();
            time(c, "gemm", &name, shape, Throughput::Elements(g.flops()), &d);
        }
    }
    // fc1's dX through pool2's and relu2's backward, as training runs it (dflatten)
    let pool = Pool2d { batch: 64, channels: 32, h: 14, w: 14, k: 2, stride: 2, pad: 0 };
    let l = Linear { rows: 64, inp: 1568, out: 128 };
    let (dy, w, relu_out, dx) = (tensor(l.rows * l.out, &mut rng), tensor(l.out * l.inp, &mut rng), tensor(pool.x_len(), &mut rng), tensor(pool.x_len(), &mut rng));
    let (py, arg) = (tensor(pool.y_len(), &mut rng), Tensor::empty(gpu, &[pool.y_len()], DType::U32).unwrap());
    gpu.run(&[&max_pool2d_forward(gpu, &pool, &relu_out, &py, &arg).unwrap()]).unwrap();
    let route = MaxPoolRoute { pool: &pool, argmax: &arg, relu: Some(&relu_out) };
    for (name, cfg) in variants() {
        let d = linear_backward_input_routed(gpu, &cfg, &l, &dy, &w, &dx, &route).unwrap();
        time(c, "linear_backward_input_routed", &name, "fc1_dx_64x128x1568_pool2", Throughput::Elements(Gemm::new(64, 1568, 128).flops()), &d);
    }
}

fn conv_benches(c: &mut Criterion) {
    let gpu = gpu();
    let mut rng = Rng::new(2);
    let layers = [
        ("conv1_64x1x28x28_16x5x5", Conv2d { batch: 64, cin: 1, h: 28, w: 28, cout: 16, r: 5, s: 5, stride: 1, pad: 2 }),
        ("conv2_64x16x14x14_32x5x5", Conv2d { batch: 64, cin: 16, h: 14, w: 14, cout: 32, r: 5, s: 5, stride: 1, pad: 2 }),
    ];
    // KILN_DIRECT_CONV=0 compares the GPU families' direct kernels with the implicit GEMM
    // (scripts/gpu-measure.sh), as the executor reads it
    let switches = ConvSwitches::from_env().unwrap_or_else(|e| panic!("{e}"));
    for (shape, conv) in layers {
        let (x, w, y) = (tensor(conv.x_len(), &mut rng), tensor(conv.w_len(), &mut rng), tensor(conv.y_len(), &mut rng));
        let (dx, dw) = (tensor(conv.x_len(), &mut rng), tensor(conv.w_len(), &mut rng));
        let flops = Throughput::Elements(conv.flops());
        for (name, cfg) in variants() {
            let choice = |pass| ConvChoice::choose(gpu, &cfg, &conv, pass, None, switches);
            let f = forward(gpu, &choice(Pass::Forward), &conv, &x, &w, None, false, &y, None, None).unwrap();
            time(c, "conv2d_forward", &name, shape, flops.clone(), &f);
            let bi = backward_input(gpu, &choice(Pass::BackwardInput), &conv, &w, &y, &dx, None).unwrap();
            time(c, "conv2d_backward_input", &name, shape, flops.clone(), &bi);
            let bw = backward_weight(gpu, &choice(Pass::BackwardWeight), &conv, WeightInput::X(&x), &y, &dw, false, None).unwrap();
            time(c, "conv2d_backward_weight", &name, shape, flops.clone(), &bw);
        }
    }
}

fn memory_bound_benches(c: &mut Criterion) {
    let gpu = gpu();
    let mut rng = Rng::new(3);
    let p = Pool2d { batch: 64, channels: 16, h: 28, w: 28, k: 2, stride: 2, pad: 0 };
    let (x, y, dx) = (tensor(p.x_len(), &mut rng), tensor(p.y_len(), &mut rng), tensor(p.x_len(), &mut rng));
    let arg = Tensor::empty(gpu, &[p.y_len()], DType::U32).unwrap();
    let fwd = max_pool2d_forward(gpu, &p, &x, &y, &arg).unwrap();
    let bytes = 4 * (p.x_len() + 2 * p.y_len()) as u64;
    time(c, "max_pool2d_forward", "direct", "64x16x28x28_2x2", Throughput::Bytes(bytes), &[fwd]);
    let bwd = max_pool2d_backward(gpu, &p, &arg, &y, &dx).unwrap();
    time(c, "max_pool2d_backward", "gather", "64x16x28x28_2x2", Throughput::Bytes(bytes), &[bwd]);
    let avg = avg_pool2d_forward(gpu, &p, &x, &y).unwrap();
    time(c, "avg_pool2d_forward", "direct", "64x16x28x28_2x2", Throughput::Bytes(4 * (p.x_len() + p.y_len()) as u64), &[avg]);
    let davg = avg_pool2d_backward(gpu, &p, &y, &dx).unwrap();
    time(c, "avg_pool2d_backward", "gather", "64x16x28x28_2x2", Throughput::Bytes(4 * (p.x_len() + p.y_len()) as u64), &[davg]);

    // --denoise over a batch of 256 MNIST digits: the plain and the impulse-detecting median
    let (n, rows, cols) = (256, 28, 28);
    let levels: Vec<f32> = rng.vec(n * rows * cols).iter().map(|v| (v.abs() * 255.0).round().min(255.0)).collect();
    let img = Tensor::from_f32(gpu, &[n, rows, cols], &levels).unwrap();
    let out = Tensor::empty(gpu, &[n, rows, cols], DType::F32).unwrap();
    let bytes = Throughput::Bytes(8 * (n * rows * cols) as u64);
    time(c, "median3x3", "direct", "256x28x28", bytes.clone(), &[median3x3(gpu, &img, &out, rows, cols).unwrap()]);
    time(c, "impulse_median3x3", "direct", "256x28x28", bytes, &[impulse_median3x3(gpu, &img, &out, rows, cols).unwrap()]);

    // global average pooling at the end of a CNN: 64 x 32 planes of 7 x 7
    let gp = GlobalPool2d { batch: 64, channels: 32, h: 7, w: 7 };
    let (gx, gy, gdx) = (tensor(gp.x_len(), &mut rng), tensor(gp.y_len(), &mut rng), tensor(gp.x_len(), &mut rng));
    let gbytes = Throughput::Bytes(4 * (gp.x_len() + gp.y_len()) as u64);
    let f = global_avg_pool_forward(gpu, &gp, &gx, &gy).unwrap();
    time(c, "global_avg_pool_forward", "plane_loop", "64x32x7x7", gbytes.clone(), &[f]);
    let b = global_avg_pool_backward(gpu, &gp, &gy, &gdx).unwrap();
    time(c, "global_avg_pool_backward", "broadcast", "64x32x7x7", gbytes, &[b]);

    // activations over the CNN's first activation map, 64 x 16 x 28 x 28: forward reads x and
    // writes y (8 bytes an element), backward reads saved and dy and writes dx (12)
    let n = p.x_len();
    let (ax, ay, ady, adx) = (tensor(n, &mut rng), tensor(n, &mut rng), tensor(n, &mut rng), tensor(n, &mut rng));
    for act in Activation::ALL_DEFAULT {
        let f = activation_forward(gpu, act, &ax, &ay).unwrap();
        time(c, "activation_forward", act.name(), "64x16x28x28", Throughput::Bytes(8 * n as u64), &[f]);
        let b = activation_backward(gpu, act, &ay, &ady, &adx).unwrap();
        time(c, "activation_backward", act.name(), "64x16x28x28", Throughput::Bytes(12 * n as u64), &[b]);
    }

    // the MNIST CNN's parameters, in one flat buffer
    let n = 16 * 25 + 16 + 32 * 16 * 25 + 32 + 1568 * 128 + 128 + 128 * 10 + 10;
    let (g, w, m1, m2) = (tensor(n, &mut rng), tensor(n, &mut rng), tensor(n, &mut rng), tensor(n, &mut rng));
    let opt = Optimizer::adam(1e-3);
    let step = Tensor::from_u32(gpu, &[STEP_WORDS], &step_words(Some(&opt), 3, 0)).unwrap();
    let adam = optimizer_step(gpu, &opt, &step, &g, &w, &m1, Some(&m2)).unwrap();
    // reads g, w, m, v; writes w, m, v
    time(c, "adam_step", "flat", &format!("{n}"), Throughput::Bytes(7 * 4 * n as u64), &[adam]);
}

/// Batch norm on the MNIST CNN's conv1 output (2d) and fc1 output (1d). Bytes are what
/// each kernel moves: train reads x three times (mean, variance, normalise) and writes y;
/// eval reads x and writes y; backward reads x and dy twice (sums, then dx) and writes dx.
/// The [C] vectors are left out (under 0.1%).
fn batchnorm_benches(c: &mut Criterion) {
    let gpu = gpu();
    let mut rng = Rng::new(4);
    for (shape, dims) in [("64x16x28x28", vec![64, 16, 28, 28]), ("64x128", vec![64, 128])] {
        let bn = BatchNorm::for_shape("bench", &dims, MOMENTUM, EPS).unwrap();
        let (n, ch) = (bn.len(), bn.channels);
        let (x, y, dy, dx) = (tensor(n, &mut rng), tensor(n, &mut rng), tensor(n, &mut rng), tensor(n, &mut rng));
        let [w, b, mean, invstd, rm, dw, db] = [(); 7].map(|_| tensor(ch, &mut rng));
        let rv = Tensor::from_f32(gpu, &[ch], &vec![1.0; ch]).unwrap();
        let count = tensor(1, &mut rng);
        let train = batchnorm_forward_train(gpu, &bn, &x, &w, &b, &y, &mean, &invstd, &rm, &rv, &count).unwrap();
        time(c, "batchnorm", "forward_train", shape, Throughput::Bytes(16 * n as u64), &[train]);
        let eval = batchnorm_forward_eval(gpu, &bn, &x, &w, &b, &rm, &rv, &y).unwrap();
        time(c, "batchnorm", "forward_eval", shape, Throughput::Bytes(8 * n as u64), &[eval]);
        let bwd = batchnorm_backward(gpu, &bn, &x, &w, &mean, &invstd, &dy, &dx, &dw, &db, (false, false)).unwrap();
        time(c, "batchnorm", "backward", shape, Throughput::Bytes(20 * n as u64), &[bwd]);
    }
}

/// The inference API end to end (host normalisation, batches of 256, readback of the
/// probabilities): latency for 1 image, a batch of 64, and throughput over 10,000, for the
/// CNN and the MLP with random weights (speed does not depend on them). Images/s.
fn classify_benches(c: &mut Criterion) {
    let gpu = gpu();
    let mut rng = Rng::new(5);
    for kind in [kiln::nn::ModelKind::Cnn, kiln::nn::ModelKind::Mlp] {
        let model = kind.spec();
        let graph = model.build(1, 3).unwrap();
        let params = graph.graph.params().iter().map(|(_, n, s)| (n.to_string(), s.to_vec(), rng.vec(s.iter().product()))).collect();
        let ck = kiln::checkpoint::Checkpoint { model, mean: 0.13, std: 0.31, dataset: "mnist".into(), temperature: 1.0, deskew: false, params };
        let mut classifier = kiln::Classifier::new(gpu, ck, kiln::classify::DEFAULT_BATCH).unwrap();
        let mut g = c.benchmark_group("classify");
        for n in [1usize, 64, 10_000] {
            let images = rng.vec(n * 784);
            classifier.classify_tensor(&images).unwrap(); // builds the executors outside the timing
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(BenchmarkId::new(kind.name(), n), |b| b.iter(|| classifier.classify_tensor(&images).unwrap()));
        }
        g.finish();
    }
}

/// `kiln::read::Reader` end to end on 64 fields of each frozen string set (segmentation on
/// the host, every candidate of the 64 fields classified in batches of 256, the DP): fields/s.
/// The CNN with random weights: the candidates come from the segmentation, not the weights.
/// Needs MNIST's test files in ../shared/data/mnist (the sets are drawn from them).
fn read_benches(c: &mut Criterion) {
    let gpu = gpu();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    let data = kiln::data::Dataset::load(kiln::data::DatasetKind::Mnist10k, Some(&dir)).expect("the read bench draws its fields from MNIST's test files in ../shared/data/mnist");
    let mut rng = Rng::new(6);
    let model = kiln::nn::ModelKind::Cnn.spec();
    let params = model.build(1, 3).unwrap().graph.params().iter().map(|(_, n, s)| (n.to_string(), s.to_vec(), rng.vec(s.iter().product()))).collect();
    let ck = kiln::checkpoint::Checkpoint { model, mean: 0.13, std: 0.31, dataset: "mnist".into(), temperature: 1.0, deskew: false, params };
    let classifier = kiln::Classifier::new(gpu, ck, kiln::classify::DEFAULT_BATCH).unwrap();
    let mut reader = kiln::read::Reader::new(classifier, kiln::read::Options::default());
    let mut g = c.benchmark_group("read");
    for kind in kiln::string_sets::ALL {
        let set = kiln::string_sets::generate(kind, &data.test, kiln::string_sets::SEED);
        let fields: Vec<image::GrayImage> = set.fields.into_iter().take(64).map(|(_, _, img)| img).collect();
        reader.read(&fields).unwrap(); // builds the executors outside the timing
        g.throughput(Throughput::Elements(fields.len() as u64));
        g.bench_function(BenchmarkId::new(kind.name(), fields.len()), |b| b.iter(|| reader.read(&fields).unwrap()));
    }
    g.finish();
}

/// The host side of a `serve`/`predict` request: 256 of MNIST's test digits as PNG files
/// bytes, decoded as `predict` decodes a file and prepared as it prepares one
/// (`predict::load_gray_bytes` + `to_mnist_with`, without and with deskewing): images/s.
/// No GPU work; needs MNIST's test files in ../shared/data/mnist.
fn prepare_benches(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    let data = kiln::data::Dataset::load(kiln::data::DatasetKind::Mnist10k, Some(&dir)).expect("the prepare bench reads MNIST's test files in ../shared/data/mnist");
    let pngs: Vec<Vec<u8>> = (0..256)
        .map(|i| {
            let img = image::GrayImage::from_raw(28, 28, data.test.images.image(i).unwrap().to_vec()).unwrap();
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
            png
        })
        .collect();
    let name = std::path::Path::new("digit.png");
    let mut g = c.benchmark_group("prepare");
    g.throughput(Throughput::Elements(pngs.len() as u64));
    for (variant, deskew) in [("png", false), ("png-deskew", true)] {
        let preparation = kiln::predict::Preparation { deskew };
        g.bench_function(BenchmarkId::new(variant, pngs.len()), |b| {
            b.iter(|| pngs.iter().map(|png| kiln::predict::to_mnist_with(&kiln::predict::load_gray_bytes(png, name).unwrap(), name, &preparation).unwrap()).collect::<Vec<_>>())
        });
    }
    g.finish();
}

/// What one dispatch costs beyond its work: a one-workgroup `fill` of 4 bytes, 1 and 100
/// times in one compute pass and one submit (recording, submit and wait included). The
/// per-dispatch cost is (t(100) - t(1)) / 99; criterion's "elem/s" reads as dispatches/s.
fn dispatch_benches(c: &mut Criterion) {
    let gpu = gpu();
    let y = Tensor::empty(gpu, &[1], DType::F32).unwrap();
    for n in [1usize, 100] {
        let d: Vec<Dispatch> = (0..n).map(|i| elementwise::fill(gpu, &y, i as f32).unwrap()).collect();
        time(c, "dispatch", "fill_4_bytes", &format!("x{n}"), Throughput::Elements(n as u64), &d);
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// The batch gather at each augmentation level (`gather_batch` for off and affine,
/// `gather_batch_warp` for elastic and robust): 64 images of 28x28 from a resident split of
/// 1,000 (seeded random pixels; the work does not depend on them), in images/s ("elem/s").
fn gather_benches(c: &mut Criterion) {
    let gpu = gpu();
    let mut rng = Rng::new(5);
    let pixels: Vec<u8> = rng.vec(1000 * 784).iter().map(|v| (v.abs() * 255.0).min(255.0) as u8).collect();
    let labels: Vec<u8> = (0..1000).map(|i| (i % 10) as u8).collect();
    let ds = ResidentDataset::upload(gpu, &pixels, &labels, 28, 28, 0.13, 0.31).unwrap();
    let x = Tensor::empty(gpu, &[64, 1, 28, 28], DType::F32).unwrap();
    let y = Tensor::empty(gpu, &[64], DType::U32).unwrap();
    let step = Tensor::from_u32(gpu, &[STEP_WORDS], &[7, 128, 0, 0, 0, 0, 0, 0]).unwrap();
    for level in Augment::ALL {
        let d = ds.gather(gpu, &step, &x, &y, level, 1).unwrap();
        time(c, "gather_batch", level.name(), "64x28x28", Throughput::Elements(64), &[d]);
    }
}

criterion_group! { name = benches; config = config(); targets = gemm_benches, conv_benches, memory_bound_benches, gather_benches, batchnorm_benches, classify_benches, read_benches, prepare_benches, dispatch_benches }
criterion_main!(benches);
