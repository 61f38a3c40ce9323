#!/usr/bin/env python3
"""kiln's train_mnist models and protocol in JAX + optax, as benches/peers/pytorch_mnist.py does in PyTorch.

The same layers as pytorch_mnist.py, in NHWC (JAX's and XLA's usual layout; the CNN's flatten
then runs over (h, w, c) instead of PyTorch's (c, h, w), which only renames the fc weights):
CNN: conv(1->16,5x5,pad 2)-ReLU-maxpool2 -> conv(16->32,5x5,pad 2)-ReLU-maxpool2 -> fc 1568->128-ReLU -> fc 128->10,
     PyTorch's default initialisation (weights and biases uniform in +-1/sqrt(fan_in))
MLP: 784->512-ReLU-dropout 0.2->10, Keras's initialisation (Glorot-uniform weights, zero biases),
     a fresh dropout key per step (split inside the step).
Adam 1e-3 (optax.adam, whose eps sits outside the square root as torch's), batch 64, a new
permutation each epoch, last partial batch dropped, inputs normalised with the training split's
mean/std, kiln's schedule (full rate for the first floor(0.8 * steps), then half a cosine to 0;
--lr-schedule constant: none) as optax's learning-rate schedule. The data go to the device once
(jax.device_put); each step is one call of a jax.jit-ed function (gather the batch from the
permutation, loss, grad, Adam update), the parameters and optimiser state donated. The training
pass is timed alone (the permutation made before the clock starts, block_until_ready at the end);
the first epoch includes the compilation. Prints one JSON line, with the same fields as
pytorch_mnist.py.

  python3 benches/peers/jax_mnist.py --data-dir DIR --dataset fashion --epochs 3 [--model mlp]

On the CPU, --threads 1 sets XLA_FLAGS to one thread (before jax is imported). On a CUDA GPU
(pip install "jax[cuda12]" optax) JAX picks the GPU itself; --device cpu|gpu chooses. Every peer,
kiln included, on one GPU: benches/peers/run_all.sh DIR [DATASET] [EPOCHS].
"""
import argparse, json, math, os, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from mnist_idx import load_split  # noqa: E402  (the scripts' one IDX reader)

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--dataset", default="mnist10k", choices=["mnist", "fashion", "mnist10k"])
    ap.add_argument("--model", default="cnn", choices=["cnn", "mlp"])
    ap.add_argument("--device", default=None, help="cpu | gpu (default: JAX's default backend)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="1: one CPU thread (other counts are not settable)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-schedule", default="cosine", choices=["constant", "cosine"])
    ap.add_argument("--lr-hold", type=float, default=0.8)
    a = ap.parse_args()
    if a.threads not in (0, 1):
        sys.exit("jax_mnist.py: --threads: only 1 (one thread) or 0 (XLA's default) can be set")
    if a.threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    import jax, jax.numpy as jnp, optax  # after XLA_FLAGS

    dev = jax.devices(a.device)[0] if a.device else jax.devices()[0]
    (xtr, ytr), (xte, yte) = load_split(a.data_dir, a.dataset)
    xtr = xtr.astype(np.float32)[..., None] / 255  # NHWC
    mean, std = float(xtr.mean()), float(xtr.std(ddof=1))  # ddof=1 as torch.std
    xte = (xte.astype(np.float32)[..., None] / 255 - mean) / std
    xtr, ytr = jax.device_put((xtr - mean) / std, dev), jax.device_put(ytr.astype(np.int32), dev)
    xte, yte = jax.device_put(xte, dev), jax.device_put(yte.astype(np.int32), dev)

    key, init_key, drop_key, perm_key = jax.random.split(jax.random.PRNGKey(a.seed), 4)
    keys = iter(jax.random.split(init_key, 8))

    def uniform(shape, bound):
        return jax.random.uniform(next(keys), shape, jnp.float32, -bound, bound)

    def torch_default(shape_w, fan_in, n_out):  # nn.Conv2d's / nn.Linear's reset_parameters
        b = 1 / math.sqrt(fan_in)
        return {"w": uniform(shape_w, b), "b": uniform((n_out,), b)}

    def glorot(n_in, n_out):  # keras.layers.Dense's defaults
        return {"w": uniform((n_in, n_out), math.sqrt(6 / (n_in + n_out))), "b": jnp.zeros(n_out)}

    if a.model == "cnn":
        params = {"c1": torch_default((5, 5, 1, 16), 25, 16), "c2": torch_default((5, 5, 16, 32), 400, 32),
                  "f1": torch_default((1568, 128), 1568, 128), "f2": torch_default((128, 10), 128, 10)}
    else:
        params = {"f1": glorot(784, 512), "f2": glorot(512, 10)}
    params = jax.device_put(params, dev)

    def conv(x, p):
        y = jax.lax.conv_general_dilated(x, p["w"], (1, 1), ((2, 2), (2, 2)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + p["b"]

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    def forward(params, x, drop=None):
        if a.model == "cnn":
            x = pool(jax.nn.relu(conv(x, params["c1"])))
            x = pool(jax.nn.relu(conv(x, params["c2"])))
            x = jax.nn.relu(x.reshape(len(x), -1) @ params["f1"]["w"] + params["f1"]["b"])
        else:
            x = jax.nn.relu(x.reshape(len(x), -1) @ params["f1"]["w"] + params["f1"]["b"])
            if drop is not None:  # inverted dropout, as nn.Dropout
                x = jnp.where(jax.random.bernoulli(drop, 0.8, x.shape), x / 0.8, 0)
        return x @ params["f2"]["w"] + params["f2"]["b"]

    steps = len(xtr) // a.batch_size
    total = steps * a.epochs
    start = math.floor(a.lr_hold * total)

    def rate(k):  # kiln's Schedule::factor times --lr; k counts the updates made before this one
        if a.lr_schedule == "constant":
            return a.lr
        cos = 0.5 * (1 + jnp.cos(jnp.pi * (jnp.minimum(k, total) - start) / max(1, total - start)))
        return a.lr * jnp.where(k < start, 1.0, cos)

    opt = optax.adam(rate)
    opt_state = opt.init(params)

    def loss_fn(params, x, y, drop):
        return optax.softmax_cross_entropy_with_integer_labels(forward(params, x, drop), y).mean()

    @jax.jit
    def count_correct(params, x, y):
        return (forward(params, x).argmax(1) == y).sum()

    def train_step(params, opt_state, key, x_all, y_all, perm, s):
        idx = jax.lax.dynamic_slice_in_dim(perm, s * a.batch_size, a.batch_size)
        key, drop = jax.random.split(key)
        grads = jax.grad(loss_fn)(params, x_all[idx], y_all[idx], drop if a.model == "mlp" else None)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key

    train_step = jax.jit(train_step, donate_argnums=(0, 1, 2))

    epoch_seconds = []
    for epoch in range(a.epochs):
        perm = jax.random.permutation(jax.random.fold_in(perm_key, epoch), len(xtr)).block_until_ready()
        t0 = time.perf_counter()
        for s in range(steps):
            params, opt_state, drop_key = train_step(params, opt_state, drop_key, xtr, ytr, perm, s)
        jax.block_until_ready(params)
        epoch_seconds.append(time.perf_counter() - t0)
    correct = sum(int(count_correct(params, xte[i:i + 1000], yte[i:i + 1000])) for i in range(0, len(xte), 1000))
    images = steps * a.batch_size
    later = epoch_seconds[1:]
    print(json.dumps({
        "peer": "jax " + jax.__version__, "mode": "jit", "optax": optax.__version__,
        "device": "cpu" if dev.platform == "cpu" else dev.device_kind,
        "dataset": a.dataset, "model": a.model, "epochs": a.epochs, "batch_size": a.batch_size,
        "epoch_seconds": epoch_seconds, "first_epoch_seconds": epoch_seconds[0],
        "images_per_sec": images / (sum(epoch_seconds) / len(epoch_seconds)),
        "images_per_sec_after_first": images / (sum(later) / len(later)) if later else None,
        "test_accuracy": correct / len(xte), "seed": a.seed, "lr": a.lr, "lr_schedule": a.lr_schedule, "lr_hold": a.lr_hold,
        "threads": a.threads or None, "layout": "NHWC",
    }))


if __name__ == "__main__":
    main()
