#!/usr/bin/env python3
"""The same models and protocol as kiln's train_mnist, in PyTorch, for comparison.

CNN: conv(1->16,5x5,pad 2)-ReLU-maxpool2 -> conv(16->32,5x5,pad 2)-ReLU-maxpool2 -> fc 1568->128-ReLU -> fc 128->10
MLP: 784->512-ReLU-dropout 0.2->10, with Keras's initialisation (Glorot-uniform weights, zero
biases) as kiln's. Adam 1e-3, batch 64, shuffled each epoch, last partial batch dropped,
inputs normalised with the training split's mean/std, and kiln's default schedule: full rate
for the first 80% of the steps, then half a cosine down to 0 (--lr-schedule constant: none).
The training pass is timed alone (data already on the device, synchronised at the end).
Prints one JSON line.

  python3 benches/peers/pytorch_mnist.py --data-dir DIR --dataset fashion --device cuda --epochs 1
"""
import argparse, gzip, json, math, os, struct, time

import numpy as np
import torch
import torch.nn as nn


def read_idx(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic, = struct.unpack(">I", raw[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(data_dir, dataset):
    f = lambda n: os.path.join(data_dir, n)
    if dataset == "mnist10k":
        x, y = read_idx(f("t10k-images-idx3-ubyte.gz")), read_idx(f("t10k-labels-idx1-ubyte.gz"))
        return (x[:8000], y[:8000]), (x[8000:], y[8000:])
    return ((read_idx(f("train-images-idx3-ubyte.gz")), read_idx(f("train-labels-idx1-ubyte.gz"))),
            (read_idx(f("t10k-images-idx3-ubyte.gz")), read_idx(f("t10k-labels-idx1-ubyte.gz"))))


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--dataset", default="mnist10k", choices=["mnist", "fashion", "mnist10k"])
    ap.add_argument("--model", default="cnn", choices=["cnn", "mlp"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-schedule", default="cosine", choices=["constant", "cosine"])
    ap.add_argument("--lr-hold", type=float, default=0.8)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    (xtr, ytr), (xte, yte) = load(a.data_dir, a.dataset)
    xtr = torch.tensor(xtr, dtype=torch.float32).div(255).unsqueeze(1)
    mean, std = xtr.mean().item(), xtr.std().item()
    xtr = ((xtr - mean) / std).to(dev)
    ytr = torch.tensor(ytr, dtype=torch.long).to(dev)
    xte = ((torch.tensor(xte, dtype=torch.float32).div(255).unsqueeze(1) - mean) / std).to(dev)
    yte = torch.tensor(yte, dtype=torch.long).to(dev)
    net = model(a.model).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    loss_fn = nn.CrossEntropyLoss()
    steps = len(xtr) // a.batch_size
    total = steps * a.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(k, total, a.lr_schedule, a.lr_hold))
    epoch_seconds = []
    for epoch in range(a.epochs):
        net.train()
        perm = torch.randperm(len(xtr), device=dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(steps):
            idx = perm[s * a.batch_size:(s + 1) * a.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            sched.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        epoch_seconds.append(time.perf_counter() - t0)
    net.eval()
    with torch.no_grad():
        correct = sum((net(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item() for i in range(0, len(xte), 1000))
    images = steps * a.batch_size
    print(json.dumps({
        "peer": "pytorch " + torch.__version__, "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "dataset": a.dataset, "model": a.model, "epochs": a.epochs, "batch_size": a.batch_size,
        "epoch_seconds": epoch_seconds, "images_per_sec": images / (sum(epoch_seconds) / len(epoch_seconds)),
        "images_per_sec_after_first": images / (sum(epoch_seconds[1:]) / max(1, len(epoch_seconds) - 1)) if len(epoch_seconds) > 1 else None,
        "test_accuracy": correct / len(xte), "seed": a.seed, "lr": a.lr, "lr_schedule": a.lr_schedule, "lr_hold": a.lr_hold,
    }))


if __name__ == "__main__":
    main()
