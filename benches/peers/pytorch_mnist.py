#!/usr/bin/env python3
"""The same models and protocol as kiln's train_mnist, in PyTorch, for comparison.

CNN: conv(1->16,5x5,pad 2)-ReLU-maxpool2 -> conv(16->32,5x5,pad 2)-ReLU-maxpool2 -> fc 1568->128-ReLU -> fc 128->10
MLP: 784->512-ReLU-dropout 0.2->10, with Keras's initialisation (Glorot-uniform weights, zero
biases) as kiln's. Adam 1e-3, batch 64, shuffled each epoch, last partial batch dropped,
inputs normalised with the training split's mean/std, and kiln's default schedule: full rate
for the first 80% of the steps, then half a cosine down to 0 (--lr-schedule constant: none).
The training pass is timed alone (data already on the device, synchronised at the end).

--mode eager (default): the step as written. --mode compile: torch.compile of the step (forward,
loss, backward, Adam) with mode="reduce-overhead" on CUDA, which replays the compiled code as CUDA
graphs (the strongest PyTorch setting at batch 64), plain torch.compile on the CPU. --mode graphs
(CUDA only): the whole step captured by hand as one CUDA graph after 3 warm-up steps, replayed
at every step with the batch copied into static buffers. In compile and graphs modes the learning
rate is a tensor on the device, filled in place before each step, and Adam is capturable on CUDA,
so that the schedule reaches compiled code and the graph. The first epoch includes the
compilation or capture (for compile, shorter when inductor's cache, /tmp/torchinductor_$USER, is warm):
"first_epoch_seconds" says how long it took, "images_per_sec_after_first" is the steady state.
Prints one JSON line.

  python3 benches/peers/pytorch_mnist.py --data-dir DIR --dataset fashion --device cuda --epochs 3 --mode compile [--model mlp]
  python3 benches/peers/pytorch_mnist.py --data-dir DIR --dataset mnist10k --threads 1      # CPU

Every mode and model on one GPU (benches/peers/run_all.sh DIR adds kiln and JAX):

  for m in cnn mlp; do for mode in eager compile graphs; do
      python3 benches/peers/pytorch_mnist.py --data-dir DIR --dataset fashion --device cuda --epochs 3 --model $m --mode $mode
  done; done
"""
import argparse, json, math, os, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from mnist_idx import load_split  # noqa: E402  (the scripts' one IDX reader)

import numpy as np
import torch
import torch.nn as nn


def model(kind):
    if kind == "cnn":
        return nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(1568, 128), nn.ReLU(), nn.Linear(128, 10))
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, 10))
    for layer in net:
        if isinstance(layer, nn.Linear):  # keras.layers.Dense's defaults
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return net


def lr_factor(step, total, schedule, hold):
    """kiln's Schedule::factor: 1 for the first floor(hold * total) steps, then a half cosine to 0."""
    start = math.floor(hold * total)
    if schedule == "constant" or step < start:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (min(step, total) - start) / max(1, total - start)))


def graphed(train_step, x0, y0, opt, warmup=3):
    """--mode graphs: train_step captured once as a CUDA graph and replayed at every step.

    Each call copies its batch into the static input buffers. The first `warmup` calls are real
    training steps run eagerly on a side stream (as torch.cuda.graph asks before a capture, so
    that cuDNN/cuBLAS pick their kernels and Adam creates its state); the next call captures the
    step (nothing runs during a capture) and replays it, as do all later calls."""
    sx, sy = torch.empty_like(x0), torch.empty_like(y0)
    side = torch.cuda.Stream()
    graph, done = None, 0

    def step(x, y):
        nonlocal graph, done
        sx.copy_(x)
        sy.copy_(y)
        if graph is None and done < warmup:
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                train_step(sx, sy)
            torch.cuda.current_stream().wait_stream(side)
            done += 1
            return
        if graph is None:
            opt.zero_grad(set_to_none=True)  # the gradients are then allocated in the graph's pool
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                train_step(sx, sy)
        graph.replay()
    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--dataset", default="mnist10k", choices=["mnist", "fashion", "mnist10k"])
    ap.add_argument("--model", default="cnn", choices=["cnn", "mlp"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mode", default="eager", choices=["eager", "compile", "graphs"])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-schedule", default="cosine", choices=["constant", "cosine"])
    ap.add_argument("--lr-hold", type=float, default=0.8)
    a = ap.parse_args()
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if a.mode == "graphs" and not cuda:
        sys.exit(f"pytorch_mnist.py: --mode graphs captures CUDA graphs and needs a CUDA device, not --device {a.device}")
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    (xtr, ytr), (xte, yte) = load_split(a.data_dir, a.dataset)
    xtr = torch.tensor(xtr, dtype=torch.float32).div(255).unsqueeze(1)
    mean, std = xtr.mean().item(), xtr.std().item()
    xtr = ((xtr - mean) / std).to(dev)
    ytr = torch.tensor(ytr, dtype=torch.long).to(dev)
    xte = ((torch.tensor(xte, dtype=torch.float32).div(255).unsqueeze(1) - mean) / std).to(dev)
    yte = torch.tensor(yte, dtype=torch.long).to(dev)
    net = model(a.model).to(dev)
    # eager: a float rate, set in param_groups before each step. compile/graphs: a 0-d tensor on
    # the device that set_lr fills in place, so that compiled code and captured graphs read the
    # new rate without recompiling or recapturing (capturable=True keeps Adam's step count and
    # bias corrections on the device too; CPU parameters cannot be capturable).
    lr = a.lr if a.mode == "eager" else torch.tensor(a.lr, device=dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr, capturable=a.mode != "eager" and cuda)
    loss_fn = nn.CrossEntropyLoss()
    steps = len(xtr) // a.batch_size
    total = steps * a.epochs

    def set_lr(k):
        rate = a.lr * lr_factor(k, total, a.lr_schedule, a.lr_hold)
        if a.mode == "eager":
            opt.param_groups[0]["lr"] = rate
        else:
            lr.fill_(rate)

    def update(x, y):  # forward, loss, backward, Adam
        loss_fn(net(x), y).backward()
        opt.step()

    def train_step(x, y):
        opt.zero_grad(set_to_none=True)
        update(x, y)

    compile_mode = None
    if a.mode == "compile":
        # reduce-overhead replays the compiled code as CUDA graphs; it has no meaning on the CPU.
        # Dynamo does not trace zero_grad, so it stays outside; backward() and Adam's step are
        # graph breaks PyTorch makes itself (the compiled step is the forward+loss graph, its
        # backward compiled by AOTAutograd, and Adam's graph).
        compile_mode = "reduce-overhead" if cuda else "default"
        compiled = torch.compile(update, mode=compile_mode)

        def step(x, y):
            opt.zero_grad(set_to_none=True)
            compiled(x, y)
    elif a.mode == "graphs":
        step = graphed(train_step, xtr[:a.batch_size], ytr[:a.batch_size], opt)
    else:
        step = train_step

    epoch_seconds = []
    for epoch in range(a.epochs):
        net.train()
        perm = torch.randperm(len(xtr), device=dev)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(steps):
            idx = perm[s * a.batch_size:(s + 1) * a.batch_size]
            set_lr(epoch * steps + s)
            try:
                step(xtr[idx], ytr[idx])
            except Exception as e:  # torch.compile's failures (no C++ compiler, ...) end here
                if a.mode != "compile" or epoch or s:
                    raise
                first_line = (str(e).strip().splitlines() or [""])[0]
                sys.exit(f"pytorch_mnist.py: --mode compile: torch.compile failed on {a.device}: {type(e).__name__}: {first_line}")
        if cuda:
            torch.cuda.synchronize()
        epoch_seconds.append(time.perf_counter() - t0)
    net.eval()
    with torch.no_grad():
        correct = sum((net(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item() for i in range(0, len(xte), 1000))
    images = steps * a.batch_size
    later = epoch_seconds[1:]
    print(json.dumps({
        "peer": "pytorch " + torch.__version__, "mode": a.mode, "compile_mode": compile_mode,
        "device": torch.cuda.get_device_name(dev) if cuda else a.device,
        "dataset": a.dataset, "model": a.model, "epochs": a.epochs, "batch_size": a.batch_size,
        "epoch_seconds": epoch_seconds, "first_epoch_seconds": epoch_seconds[0],
        "images_per_sec": images / (sum(epoch_seconds) / len(epoch_seconds)),
        "images_per_sec_after_first": images / (sum(later) / len(later)) if later else None,
        "test_accuracy": correct / len(xte), "seed": a.seed, "lr": a.lr, "lr_schedule": a.lr_schedule, "lr_hold": a.lr_hold,
        "threads": torch.get_num_threads() if not cuda else None,
    }))


if __name__ == "__main__":
    main()
