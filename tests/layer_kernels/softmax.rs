//! Softmax, softmax + cross-entropy (forward, backward) and the metrics fold against the
//! reference, including padding rows and large logits (max subtraction).

use kiln::cpu::softmax as cpu;
use kiln::ops::softmax::*;
use kiln::testing::{assert_close, gpu, Rng, REDUCTION, TRANSCENDENTAL};
use kiln::{DType, Tensor};

#[test]
fn a_tempered_softmax_matches_cpu_and_a_temperature_of_one_is_the_plain_softmax() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    for (rows, classes) in [(1, 1), (7, 3), (67, 10), (33, 17)] {
        let logits: Vec<f32> = rng.vec(rows * classes).iter().map(|v| v * 60.0).collect();
        let tl = Tensor::from_f32(gpu, &[rows, classes], &logits).unwrap();
        for temperature in [1.0f32, 0.37, 2.5] {
            let tp = Tensor::empty(gpu, &[rows, classes], DType::F32).unwrap();
            tp.poison(gpu).unwrap();
            gpu.run(&[&softmax_forward(gpu, &tl, &tp, temperature).unwrap()]).unwrap();
            let what = format!("softmax_forward rows={rows} classes={classes} T={temperature}");
            assert_close(&what, &tp.to_f32(gpu).unwrap(), &cpu::softmax_forward(&logits, classes, temperature), TRANSCENDENTAL);
        }
        // softmax(z / T) = softmax(z * (1/T)): the reference agrees with itself scaled
        let scaled: Vec<f32> = logits.iter().map(|v| v / 2.5).collect();
        assert_close("reference", &cpu::softmax_forward(&logits, classes, 2.5), &cpu::softmax_forward(&scaled, classes, 1.0), TRANSCENDENTAL);
    }
    let (tl, tp) = (Tensor::from_f32(gpu, &[1, 2], &[0.0, 1.0]).unwrap(), Tensor::empty(gpu, &[1, 2], DType::F32).unwrap());
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY, 1e-45] {
        let e = softmax_forward(gpu, &tl, &tp, bad).err().unwrap_or_else(|| panic!("temperature {bad} accepted")).to_string();
        assert!(e.contains("temperature"), "{e}");
    }
}

#[test]
fn softmax_xent_and_metrics_match_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(9);
    // label smoothing 0 (plain cross-entropy) and 0.1 (as modern MNIST recipes use)
    for (rows, classes, smoothing) in [(1, 1, 0.0), (1, 10, 0.1), (7, 3, 0.0), (64, 10, 0.1), (1000, 10, 0.0), (33, 17, 0.1), (64, 10, 0.0)] {
        // large logits: without max subtraction exp() would overflow
        let logits: Vec<f32> = rng.vec(rows * classes).iter().map(|v| v * 60.0).collect();
        let mut labels: Vec<u32> = (0..rows).map(|_| rng.range(0, classes - 1) as u32).collect();
        if rows > 5 {
            labels[rows - 1] = u32::MAX; // a padding row
            labels[rows - 2] = classes as u32; // no class: the uniform target
            labels[1] = classes as u32 + 1; // the first label past "no class" is padding too
        }
        let tl = Tensor::from_f32(gpu, &[rows, classes], &logits).unwrap();
        let tlab = Tensor::from_u32(gpu, &[rows], &labels).unwrap();
        let tp = Tensor::empty(gpu, &[rows, classes], DType::F32).unwrap();
        let tloss = Tensor::empty(gpu, &[rows], DType::F32).unwrap();
        let tpred = Tensor::empty(gpu, &[rows], DType::U32).unwrap();
        let tdl = Tensor::empty(gpu, &[rows, classes], DType::F32).unwrap();
        let tm = Tensor::from_u32(gpu, &[metrics_words(classes)], &vec![0; metrics_words(classes)]).unwrap();
        for t in [&tp, &tloss, &tpred, &tdl] {
            t.poison(gpu).unwrap();
        }
        let scale = 1.0 / rows as f32;
        let d = [
            softmax_forward(gpu, &tl, &tp, 1.0).unwrap(),
            softmax_xent_forward(gpu, &tl, &tlab, smoothing, &tloss, &tpred).unwrap(),
            softmax_xent_backward(gpu, &tl, &tlab, smoothing, scale, &tdl).unwrap(),
            metrics_accumulate(gpu, classes, &tloss, &tpred, &tlab, &tm).unwrap(),
            // a second fold: the metrics accumulate across steps
            metrics_accumulate(gpu, classes, &tloss, &tpred, &tlab, &tm).unwrap(),
        ];
        gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
        let what = format!("rows={rows} classes={classes} smoothing={smoothing}");
        assert_close(&format!("softmax_forward {what}"), &tp.to_f32(gpu).unwrap(), &cpu::softmax_forward(&logits, classes, 1.0), TRANSCENDENTAL);
        let (loss, pred) = cpu::softmax_xent_forward(&logits, &labels, classes, smoothing);
        assert_close(&format!("softmax_xent_forward {what}"), &tloss.to_f32(gpu).unwrap(), &loss, TRANSCENDENTAL);
        assert_eq!(tpred.to_u32(gpu).unwrap(), pred, "argmax {what}");
        assert_close(
            &format!("softmax_xent_backward {what}"),
            &tdl.to_f32(gpu).unwrap(),
            &cpu::softmax_xent_backward(&logits, &labels, classes, smoothing, scale),
            TRANSCENDENTAL,
        );
        // the fused head (forward, metrics, backward in one dispatch) gives the same bits
        let fresh = |t: &Tensor| {
            let f = Tensor::empty(gpu, t.shape(), t.dtype()).unwrap();
            f.poison(gpu).unwrap();
            f
        };
        let (floss, fpred, fdl) = (fresh(&tloss), fresh(&tpred), fresh(&tdl));
        let fm = Tensor::from_u32(gpu, &[metrics_words(classes)], &vec![0; metrics_words(classes)]).unwrap();
        let fused = [
            softmax_xent_metrics(gpu, &tl, &tlab, smoothing, &floss, &fpred, Some((&fdl, scale)), &fm).unwrap(),
            softmax_xent_metrics(gpu, &tl, &tlab, smoothing, &floss, &fpred, None, &fm).unwrap(),
        ];
        gpu.run(&fused.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(floss.to_f32(gpu).unwrap(), tloss.to_f32(gpu).unwrap(), "fused loss {what}");
        assert_eq!(fpred.to_u32(gpu).unwrap(), tpred.to_u32(gpu).unwrap(), "fused prediction {what}");
        assert_eq!(fdl.to_f32(gpu).unwrap(), tdl.to_f32(gpu).unwrap(), "fused dlogits {what}");
        assert_eq!(fm.to_u32(gpu).unwrap(), tm.to_u32(gpu).unwrap(), "fused metrics {what}");
        let m = Metrics::from_words(&tm.to_u32(gpu).unwrap(), classes);
        let valid: Vec<usize> = (0..rows).filter(|&r| (labels[r] as usize) < classes).collect();
        let none: Vec<usize> = (0..rows).filter(|&r| labels[r] as usize == classes).collect();
        let want_loss: f64 = valid.iter().chain(&none).map(|&r| loss[r] as f64).sum::<f64>() * 2.0;
        let want_correct = valid.iter().filter(|&&r| pred[r] == labels[r]).count() as u32 * 2;
        assert_eq!(m.rows, (valid.len() + none.len()) as u32 * 2, "{what}");
        assert_eq!(m.no_class, none.len() as u32 * 2, "{what}");
        assert_eq!(m.correct, want_correct, "{what}");
        assert_eq!(m.accuracy(), want_correct as f32 / (valid.len() as f32 * 2.0).max(1.0), "{what}: no-class rows are outside the accuracy");
        assert_close(&format!("loss sum {what}"), &[m.loss_sum], &[want_loss as f32], REDUCTION);
        for &r in &valid {
            assert!(m.confusion[labels[r] as usize][pred[r] as usize] >= 2);
        }
        assert_eq!(m.confusion.iter().flatten().sum::<u32>(), m.rows - m.no_class);
    }
}

#[test]
fn the_no_class_label_trains_towards_the_uniform_target_whatever_the_smoothing() {
    // hand-computed: logits [0, ln 3] (softmax [1/4, 3/4]), label C = 2: the target is
    // [1/2, 1/2], the loss lse - mean = ln 4 - ln(3)/2, the gradient [-1/4, 1/4]
    let gpu = gpu();
    let logits = [0.0f32, 3f32.ln()];
    let tl = Tensor::from_f32(gpu, &[1, 2], &logits).unwrap();
    let tlab = Tensor::from_u32(gpu, &[1], &[2]).unwrap();
    for smoothing in [0.0, 0.3] {
        let (tloss, tpred, tdl) = (Tensor::empty(gpu, &[1], DType::F32).unwrap(), Tensor::empty(gpu, &[1], DType::U32).unwrap(), Tensor::empty(gpu, &[1, 2], DType::F32).unwrap());
        let tm = Tensor::from_u32(gpu, &[metrics_words(2)], &[0; 8]).unwrap();
        for t in [&tloss, &tpred, &tdl] {
            t.poison(gpu).unwrap();
        }
        gpu.run(&[&softmax_xent_metrics(gpu, &tl, &tlab, smoothing, &tloss, &tpred, Some((&tdl, 1.0)), &tm).unwrap()]).unwrap();
        let want = 4f64.ln() - 3f64.ln() / 2.0;
        assert_close(&format!("no-class loss, smoothing {smoothing}"), &tloss.to_f32(gpu).unwrap(), &[want as f32], TRANSCENDENTAL);
        assert_close(&format!("no-class dlogits, smoothing {smoothing}"), &tdl.to_f32(gpu).unwrap(), &[-0.25, 0.25], TRANSCENDENTAL);
        assert_close("reference loss", &cpu::softmax_xent_forward(&logits, &[2], 2, smoothing).0, &[want as f32], TRANSCENDENTAL);
        assert_close("reference dlogits", &cpu::softmax_xent_backward(&logits, &[2], 2, smoothing, 1.0), &[-0.25, 0.25], TRANSCENDENTAL);
        let m = Metrics::from_words(&tm.to_u32(gpu).unwrap(), 2);
        assert_eq!((m.rows, m.no_class, m.correct), (1, 1, 0), "a no-class row is counted, never correct");
        assert_eq!(m.confusion, vec![vec![0, 0], vec![0, 0]]);
        assert_eq!(m.accuracy(), 0.0);
    }
}
