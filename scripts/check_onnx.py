#!/usr/bin/env python3
"""Runs an ONNX model exported by kiln with onnxruntime on the MNIST test split and compares
it with kiln's own logits for the same images.

  python3 scripts/check_onnx.py model.onnx --data-dir DIR [--dataset mnist10k|mnist] [--kiln-logits FILE]

FILE is what `cargo run --release --example export -- ... --logits FILE` writes: raw
little-endian float32, [test images, 10]. Inputs are normalised with the mean and std the
model records in its metadata_props, as kiln normalises them. Prints one JSON line; exits 1
when the model fails onnx's checker, when its accuracy differs from kiln's, or when a logit
differs from kiln's by more than ATOL + RTOL * |kiln's logit|.

Needs onnx, onnxruntime and numpy (python3 -m pip install onnxruntime onnx numpy).
"""
import argparse, json, sys

import numpy as np
import onnx
import onnxruntime as ort

from mnist_idx import find_file, read_idx

# kiln and onnxruntime both compute in f32 but sum convolutions and GEMMs in different
# orders (kiln: im2col/tiled GEMM on the GPU; onnxruntime: MLAS, with Conv+Relu fusion).
# Each reduction of K products then differs by a few ulps of its partial sums (kiln's own
# GPU-vs-f64 bound for one GEMM/conv is 2e-4 abs + 2e-4 rel, ARCHITECTURE.md "REDUCTION").
# Measured on lavapipe after one epoch of mnist10k: max |diff| 6e-6 (CNN) and 7e-6 (MLP) on
# logits up to ~20, i.e. ~1e-6 relative; 2e-6 (lenet5), 5e-6 (cnn-bn: kiln folds BatchNorm
# into the conv, onnxruntime applies BatchNormalization) and 3e-6 (custom_model's residual net). 1e-4 relative plus 1e-4 absolute (for logits near
# zero) leaves a 10-100x margin for other adapters and longer training, while a wrong
# layout, padding, bias or normalisation (errors of order 0.01..10) cannot pass.
ATOL = 1e-4
RTOL = 1e-4
# Rows per onnxruntime call: not a divisor of 2,000 or 10,000, so the last call has another
# batch size and the dynamic batch dimension is exercised.
CHUNK = 768




def test_split(data_dir, dataset):
    """kiln's test split: mnist's 10,000 test images, or the last 2,000 of them for mnist10k."""
    paths = [find_file(data_dir, f) for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]
    if None in paths:
        sys.exit(f"check_onnx: MNIST's t10k files are not in {data_dir}")
    x, y = read_idx(paths[0]), read_idx(paths[1])
    return (x[8000:], y[8000:]) if dataset == "mnist10k" else (x, y)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="the .onnx file")
    ap.add_argument("--data-dir", required=True, help="directory holding t10k-*-ubyte(.gz)")
    ap.add_argument("--dataset", choices=["mnist10k", "mnist"], default="mnist10k")
    ap.add_argument("--kiln-logits", help="kiln's logits for the same split (export --logits)")
    a = ap.parse_args()

    model = onnx.load(a.model)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    mean, std = np.float32(meta["mean"]), np.float32(meta["std"])
    x, y = test_split(a.data_dir, a.dataset)
    # the same f32 operations as kiln::predict::logits, so both see identical inputs
    x = ((x.astype(np.float32) / np.float32(255) - mean) / std)[:, None, :, :]

    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(["logits"], {"input": x[i:i + CHUNK]})[0] for i in range(0, len(x), CHUNK)])
    correct = int((logits.argmax(1) == y).sum())
    report = {"model": a.model, "kind": meta.get("model"), "dataset": a.dataset, "images": len(y),
              "onnx_accuracy": correct / len(y)}
    ok = True
    if a.kiln_logits:
        kiln = np.fromfile(a.kiln_logits, dtype="<f4")
        if kiln.size != logits.size:
            print(f"error: {a.kiln_logits} holds {kiln.size} values, expected {logits.shape}", file=sys.stderr)
            return 1
        kiln = kiln.reshape(logits.shape)
        diff = np.abs(logits - kiln)
        worst = np.unravel_index(diff.argmax(), diff.shape)
        kiln_correct = int((kiln.argmax(1) == y).sum())
        over = int((diff > ATOL + RTOL * np.abs(kiln)).sum())
        report.update({
            "kiln_accuracy": kiln_correct / len(y),
            "max_abs_diff": float(diff.max()),
            "worst": {"image": int(worst[0]), "class": int(worst[1]), "onnx": float(logits[worst]), "kiln": float(kiln[worst])},
            "argmax_disagreements": int((logits.argmax(1) != kiln.argmax(1)).sum()),
            "over_tolerance": over, "tolerance": f"{ATOL} + {RTOL} * |kiln|",
        })
        ok = kiln_correct == correct and over == 0
    print(json.dumps(report))
    if not ok:
        print(f"error: onnxruntime and kiln disagree on {a.model} (see above)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
