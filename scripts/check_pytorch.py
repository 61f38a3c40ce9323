#!/usr/bin/env python3
"""Loads a kiln checkpoint into the equivalent PyTorch module and prints its test accuracy.

  python3 scripts/check_pytorch.py model.safetensors [--data-dir DIR] [--dataset mnist10k]
                                   [--expect-accuracy 94.55]

The module is built from the checkpoint's own description (the `model_spec` JSON in the
safetensors metadata: kiln's `nn::Model`), one PyTorch module per kiln layer under the same
name, so the state_dict keys are kiln's tensor names (`conv1.weight`, `block1.conv1.weight`,
`bn1.running_mean`, ...) and load_state_dict(strict=True) takes the file as it is. Older
checkpoints without `model_spec` are built from their `model` name (cnn, mlp, lenet5, cnn-bn).

The test split is the one kiln evaluates on: mnist and fashion's t10k files, or for mnist10k
the last 2,000 of MNIST's t10k images. Inputs are normalised as kiln did, with the `mean` and
`std` in the metadata: (pixel / 255 - mean) / std. BatchNorm layers use their running
statistics (eval mode), as kiln's evaluation does.

With --expect-accuracy A (a fraction such as 0.9455, or a percentage such as 94.55 or 94.55%,
as train_mnist prints it), exits 1 when PyTorch's count of correct images differs from A's by
more than one image.

Needs torch, safetensors and numpy (pip install torch safetensors numpy); CPU is enough.
"""
import argparse, json, math, os, sys
from collections import OrderedDict

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file

from mnist_idx import find_file, read_idx

# kiln's built-in models (src/model/nn.rs, ModelKind::layers), for checkpoints written before the
# metadata carried `model_spec`. Same JSON shape as `model_spec`.
def _conv(i, o, k, s=1, p=0):
    return {"conv2d": {"in_channels": i, "out_channels": o, "kernel": k, "stride": s, "padding": p}}

def _linear(i, o):
    return {"linear": {"inputs": i, "outputs": o, "init": "PyTorch"}}

def _builtin(name):
    mp = {"max_pool2d": {"kernel": 2, "stride": 2}}
    ap = {"avg_pool2d": {"kernel": 2, "stride": 2, "padding": 0}}
    tanh = {"activation": "Tanh"}
    if name == "cnn":
        layers = [["conv1", _conv(1, 16, 5, p=2)], ["relu1", "relu"], ["pool1", mp],
                  ["conv2", _conv(16, 32, 5, p=2)], ["relu2", "relu"], ["pool2", mp],
                  ["flatten", "flatten"], ["fc1", _linear(32 * 7 * 7, 128)], ["relu3", "relu"],
                  ["fc2", _linear(128, 10)]]
    elif name == "mlp":
        layers = [["flatten", "flatten"], ["fc1", _linear(784, 512)], ["relu1", "relu"],
                  ["dropout", {"dropout": 0.2}], ["fc2", _linear(512, 10)]]
    elif name == "lenet5":
        layers = [["conv1", _conv(1, 6, 5, p=2)], ["tanh1", tanh], ["pool1", ap],
                  ["conv2", _conv(6, 16, 5)], ["tanh2", tanh], ["pool2", ap], ["flatten", "flatten"],
                  ["fc1", _linear(400, 120)], ["tanh3", tanh], ["fc2", _linear(120, 84)],
                  ["tanh4", tanh], ["fc3", _linear(84, 10)]]
    elif name == "cnn-bn":
        layers = []
        for i, (cin, cout) in enumerate([(1, 32), (32, 32), (32, 64), (64, 64)], 1):
            layers += [[f"conv{i}", _conv(cin, cout, 3, p=1)], [f"bn{i}", {"batch_norm": {"channels": cout}}],
                       [f"relu{i}", "relu"]]
            if i % 2 == 0:
                layers.append([f"pool{i // 2}", mp])
        layers += [["flatten", "flatten"], ["fc1", _linear(64 * 7 * 7, 256)],
                   ["bn5", {"batch_norm": {"channels": 256}}], ["relu5", "relu"],
                   ["dropout", {"dropout": 0.2}], ["fc2", _linear(256, 10)]]
    else:
        return None
    return {"name": name, "input": [1, 28, 28], "layers": {"layers": layers}}


class Residual(nn.Sequential):
    """y = x + body(x). The body's layers are this module's own children, so their names
    join the block's directly (`block1.conv1.weight`), as in kiln."""

    def forward(self, x):
        return x + super().forward(x)


class SpecError(ValueError):
    pass


def _pool_out(size, kernel, stride, padding, what):
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise SpecError(f"{what}: a {kernel}x{kernel} window (stride {stride}, padding {padding}) "
                        f"does not fit a side of {size}")
    return out


def build_layer(name, spec, shape):
    """One kiln LayerSpec (serde's externally tagged JSON) -> (module, output shape).
    `shape` is one sample's shape ([C, H, W] or [F]), checked against the layer's sizes."""
    if isinstance(spec, str):
        kind, arg = spec, None
    elif isinstance(spec, dict) and len(spec) == 1:
        (kind, arg), = spec.items()
    else:
        raise SpecError(f"{name}: not a layer description: {json.dumps(spec)}")

    def need_chw():
        if len(shape) != 3:
            raise SpecError(f"{name} ({kind}) needs [C, H, W] input, gets {shape}")
        return shape

    if kind == "conv2d":
        c, h, w = need_chw()
        cin, cout, k = arg["in_channels"], arg["out_channels"], arg["kernel"]
        s, p = arg.get("stride", 1), arg.get("padding", 0)
        if c != cin:
            raise SpecError(f"{name}: conv2d takes {cin} channels, gets {c}")
        m = nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=True)
        return m, [cout, _pool_out(h, k, s, p, name), _pool_out(w, k, s, p, name)]
    if kind == "linear":
        if len(shape) != 1 or shape[0] != arg["inputs"]:
            raise SpecError(f"{name}: linear takes [{arg['inputs']}], gets {shape}")
        return nn.Linear(arg["inputs"], arg["outputs"], bias=True), [arg["outputs"]]
    if kind == "max_pool2d":
        c, h, w = need_chw()
        k, s = arg["kernel"], arg["stride"]
        return nn.MaxPool2d(k, stride=s), [c, _pool_out(h, k, s, 0, name), _pool_out(w, k, s, 0, name)]
    if kind == "avg_pool2d":
        c, h, w = need_chw()
        k, s, p = arg["kernel"], arg["stride"], arg.get("padding", 0)
        m = nn.AvgPool2d(k, stride=s, padding=p, count_include_pad=True)
        return m, [c, _pool_out(h, k, s, p, name), _pool_out(w, k, s, p, name)]
    if kind == "global_avg_pool":
        c, _, _ = need_chw()
        return nn.AdaptiveAvgPool2d(1), [c, 1, 1]
    if kind == "relu":
        return nn.ReLU(), shape
    if kind == "dropout":
        return nn.Dropout(float(arg)), shape
    if kind == "flatten":
        return nn.Flatten(), [math.prod(shape)]
    if kind == "activation":
        if arg == "Tanh":
            return nn.Tanh(), shape
        if arg == "Sigmoid":
            return nn.Sigmoid(), shape
        if arg == "Gelu":
            return nn.GELU(approximate="none"), shape
        if isinstance(arg, dict) and "LeakyRelu" in arg:
            return nn.LeakyReLU(float(arg["LeakyRelu"]["slope"])), shape
        raise SpecError(f"{name}: unknown activation {json.dumps(arg)}")
    if kind == "batch_norm":
        ch = arg["channels"]
        if shape[0] != ch or len(shape) not in (1, 3):
            raise SpecError(f"{name}: batch_norm over {ch} channels, gets {shape}")
        bn = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        return bn(ch, eps=1e-5, momentum=0.1), shape
    if kind == "residual":
        body, out = build_sequential(arg["body"], shape, Residual, prefix=name + ".")
        if out != shape:
            raise SpecError(f"{name}: a residual body must keep the shape {shape}, gives {out}")
        return body, shape
    raise SpecError(f"{name}: layer kind {kind!r} is not known to this script")


def build_sequential(seq, shape, cls=nn.Sequential, prefix=""):
    """kiln's Sequential ({"layers": [[name, spec], ...]}) -> (cls of named children, shape)."""
    children = OrderedDict()
    for name, spec in seq["layers"]:
        if name in children or "." in name or not name:
            raise SpecError(f"{prefix}{name}: layer names must be unique, non-empty and dot-free")
        children[name], shape = build_layer(prefix + name, spec, shape)
    return cls(children), shape


def build_model(spec):
    """kiln's Model JSON -> an nn.Module whose state_dict keys are the checkpoint's names."""
    model, out = build_sequential(spec["layers"], list(spec.get("input", [1, 28, 28])))
    if len(out) != 1:
        raise SpecError(f"the model ends in shape {out}, not [classes]")
    return model




FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def data_dir(dataset, given):
    """--data-dir, else kiln's search: $KILN_DATA/<dir>, ./data/<dir> (mnist10k: mnist, then
    mnist10k), and for fashion Debian's /usr/share/datasets/fashion-mnist."""
    if given:
        return given
    names = ["mnist", "mnist10k"] if dataset == "mnist10k" else [dataset]
    roots = ([os.environ["KILN_DATA"]] if os.environ.get("KILN_DATA") else []) + ["data"]
    candidates = [os.path.join(r, n) for r in roots for n in names]
    if dataset == "fashion":
        candidates.append("/usr/share/datasets/fashion-mnist")
    for c in candidates:
        if all(find_file(c, f) for f in FILES):
            return c
    sys.exit(f"no {dataset} test files ({', '.join(FILES)}, gzip or not) in any of "
             f"{', '.join(candidates)}; give --data-dir")


def test_split(dataset, directory):
    paths = [find_file(directory, f) for f in FILES]
    if None in paths:
        sys.exit(f"{directory} lacks {FILES[paths.index(None)]} (gzip or not)")
    x, y = read_idx(paths[0]), read_idx(paths[1])
    if dataset == "mnist10k":
        if len(y) != 10000:
            sys.exit(f"mnist10k needs exactly 10000 test images, {paths[0]} holds {len(y)}")
        x, y = x[8000:], y[8000:]
    return x, y


def parse_accuracy(text):
    t = text.strip()
    pct = t.endswith("%")
    v = float(t.rstrip("%"))
    return v / 100 if pct or v > 1 else v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data-dir", default=None,
                    help="directory with the t10k IDX files (default: kiln's search, $KILN_DATA/<dataset> then ./data/<dataset>)")
    ap.add_argument("--dataset", default=None, choices=["mnist", "mnist10k", "fashion"],
                    help="mnist | fashion | mnist10k (default: the checkpoint's)")
    ap.add_argument("--expect-accuracy", default=None, metavar="A",
                    help="kiln's test accuracy (0.9455, 94.55 or 94.55%%): exit 1 if PyTorch's differs by more than one image")
    ap.add_argument("--show", action="store_true", help="print the PyTorch module built")
    a = ap.parse_args()

    with safe_open(a.checkpoint, "pt") as f:
        meta = f.metadata() or {}
    name = meta.get("model", "?")
    if "model_spec" in meta:
        spec, source = json.loads(meta["model_spec"]), "model_spec"
    else:
        spec, source = _builtin(name), "model name"
        if spec is None:
            sys.exit(f"{a.checkpoint} has no model_spec and its model {name!r} is not a built-in one "
                     "(cnn, mlp, lenet5, cnn-bn)")
    try:
        model = build_model(spec)
    except (SpecError, KeyError, TypeError) as e:
        sys.exit(f"{a.checkpoint}: cannot build the model from its {source}: {e}")
    if a.show:
        print(model, file=sys.stderr)
    try:
        model.load_state_dict(load_file(a.checkpoint), strict=True)
    except RuntimeError as e:
        sys.exit(f"{a.checkpoint}: its tensors do not load strictly into the model its {source} describes:\n{e}")
    model.eval()
    if "mean" not in meta or "std" not in meta:
        sys.exit(f"{a.checkpoint} has no mean/std in its metadata: cannot normalise inputs as kiln did")

    dataset = a.dataset or meta.get("dataset", "mnist")
    x, y = test_split(dataset, data_dir(dataset, a.data_dir))
    c, h, w = spec.get("input", [1, 28, 28])
    if tuple(x.shape[1:]) != (h, w) or c != 1:
        sys.exit(f"the model takes {[c, h, w]} images, the {dataset} test files hold {list(x.shape[1:])}")
    x = (torch.tensor(x, dtype=torch.float32).div(255).unsqueeze(1) - float(meta["mean"])) / float(meta["std"])
    labels = torch.tensor(y, dtype=torch.long)
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
    correct = int((pred == labels).sum())
    out = {"checkpoint": a.checkpoint, "model": name, "built_from": source, "dataset": dataset,
           "images": len(y), "correct": correct, "pytorch_accuracy": correct / len(y)}
    status = 0
    if a.expect_accuracy is not None:
        kiln = parse_accuracy(a.expect_accuracy)
        diff = correct - kiln * len(y)
        agree = abs(diff) <= 1 + 1e-6 * len(y)
        out.update(kiln_accuracy=round(kiln, 6), difference_images=round(diff, 3) + 0.0, agree=agree)
        status = 0 if agree else 1
    print(json.dumps(out))
    return status


if __name__ == "__main__":
    sys.exit(main())
