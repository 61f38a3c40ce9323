#!/usr/bin/env python3
"""Loads a kiln checkpoint into the equivalent PyTorch module and prints its test accuracy.

  python3 scripts/check_pytorch.py model.safetensors --data-dir DIR [--dataset mnist10k]

Needs torch and safetensors (pip install torch safetensors). The tensor names and layouts
are PyTorch's own, so load_state_dict(strict=True) takes the file as it is.
"""
import argparse, gzip, json, os, struct, sys

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file


def read_idx(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    dims = struct.unpack(">I", raw[:4])[0] & 0xFF
    shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.fc1 = nn.Linear(1568, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 512)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--dataset", default=None, help="mnist | fashion | mnist10k (default: the checkpoint's)")
    a = ap.parse_args()
    with safe_open(a.checkpoint, "pt") as f:
        meta = f.metadata()
    model = {"cnn": Cnn, "mlp": Mlp}[meta["model"]]()
    model.load_state_dict(load_file(a.checkpoint), strict=True)
    model.eval()
    dataset = a.dataset or meta.get("dataset", "mnist")
    x = read_idx(os.path.join(a.data_dir, "t10k-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(a.data_dir, "t10k-labels-idx1-ubyte.gz"))
    if dataset == "mnist10k":
        x, y = x[8000:], y[8000:]
    x = (torch.tensor(x, dtype=torch.float32).div(255).unsqueeze(1) - float(meta["mean"])) / float(meta["std"])
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    acc = (pred == torch.tensor(y, dtype=torch.long)).float().mean().item()
    print(json.dumps({"checkpoint": a.checkpoint, "model": meta["model"], "dataset": dataset, "images": len(y), "pytorch_accuracy": acc}))


if __name__ == "__main__":
    sys.exit(main())
