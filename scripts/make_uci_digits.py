#!/usr/bin/env python3
"""Writes UCI's optical digits (43 writers, 1,797 digits, 8x8, 17 grey levels) as a labelled
PNG folder for `evaluate --images OUT_DIR --labels OUT_DIR/labels.txt`.

    python3 scripts/make_uci_digits.py OUT_DIR [--wheel-dir DIR]

The digits come from scikit-learn's wheel on PyPI (sklearn/datasets/data/digits.csv.gz),
fetched with `pip download scikit-learn --no-deps` into --wheel-dir (default: a temporary
folder) unless a wheel is already there; scikit-learn itself is not imported. Each digit is
drawn as a scan would show it: dark ink on white (level 16 - v scaled to 0..255), scaled up
4x to 32x32 by bilinear interpolation, in a white margin of 8 px (48x48 in all). Only the
standard library is used, and the output is deterministic: the same wheel gives the same
bytes (README gives the labels file's SHA-256).
"""

import argparse
import glob
import gzip
import hashlib
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib

SIDE = 8  # UCI's digits are 8x8
SCALE = 4  # scaled up to 32x32
MARGIN = 8  # white margin on each side
LEVELS = 16  # values 0..16


def find_wheel(wheel_dir):
    """The scikit-learn wheel in wheel_dir, downloaded there first if there is none."""
    found = sorted(glob.glob(os.path.join(wheel_dir, "scikit_learn-*.whl")))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "scikit-learn", "--no-deps", "--quiet", "-d", wheel_dir]
        if subprocess.call(cmd) != 0:
            sys.exit(f"error: '{' '.join(cmd)}' failed: give --wheel-dir a folder holding a scikit-learn wheel")
        found = sorted(glob.glob(os.path.join(wheel_dir, "scikit_learn-*.whl")))
    if not found:
        sys.exit(f"error: {wheel_dir}: no scikit_learn-*.whl after pip download")
    return found[-1]


def read_digits(wheel):
    """[(64 values 0..16, label)] from the wheel's digits.csv.gz."""
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.endswith("sklearn/datasets/data/digits.csv.gz")]
        if not names:
            sys.exit(f"error: {wheel}: no sklearn/datasets/data/digits.csv.gz in the wheel")
        text = gzip.decompress(z.read(names[0])).decode("ascii")
    digits = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        values = [int(float(v)) for v in line.split(",")]
        if len(values) != SIDE * SIDE + 1 or not all(0 <= v <= LEVELS for v in values[:-1]) or not 0 <= values[-1] <= 9:
            sys.exit(f"error: {wheel}: digits.csv line {i + 1}: expected 64 values 0-16 and a label 0-9")
        digits.append((values[:-1], values[-1]))
    return digits


def upscale(values):
    """The 8x8 digit as 8-bit grey, dark ink on white, scaled up SCALE times (bilinear,
    pixel centres aligned, edges replicated) inside a white margin: rows of bytes."""
    paper = [255.0 * (LEVELS - v) / LEVELS for v in values]
    side = SIDE * SCALE
    out = [[255] * (side + 2 * MARGIN) for _ in range(side + 2 * MARGIN)]
    for y in range(side):
        sy = min(max((y + 0.5) / SCALE - 0.5, 0.0), SIDE - 1.0)
        y0 = min(int(sy), SIDE - 2)
        ty = sy - y0
        for x in range(side):
            sx = min(max((x + 0.5) / SCALE - 0.5, 0.0), SIDE - 1.0)
            x0 = min(int(sx), SIDE - 2)
            tx = sx - x0
            p = lambda yy, xx: paper[yy * SIDE + xx]
            top = p(y0, x0) * (1 - tx) + p(y0, x0 + 1) * tx
            bottom = p(y0 + 1, x0) * (1 - tx) + p(y0 + 1, x0 + 1) * tx
            out[y + MARGIN][x + MARGIN] = int(round(top * (1 - ty) + bottom * ty))
    return out


def png(rows):
    """An 8-bit greyscale PNG of the rows."""
    h, w = len(rows), len(rows[0])
    raw = b"".join(b"\x00" + bytes(r) for r in rows)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", help="folder for the PNGs and labels.txt")
    ap.add_argument("--wheel-dir", help="folder holding (or to download) the scikit-learn wheel")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    if args.wheel_dir:
        os.makedirs(args.wheel_dir, exist_ok=True)
        digits = read_digits(find_wheel(args.wheel_dir))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            digits = read_digits(find_wheel(tmp))
    lines = []
    for i, (values, label) in enumerate(digits):
        name = f"uci-{i:04d}.png"
        with open(os.path.join(args.out_dir, name), "wb") as f:
            f.write(png(upscale(values)))
        lines.append(f"{name} {label}\n")
    labels = "".join(lines).encode("ascii")
    with open(os.path.join(args.out_dir, "labels.txt"), "wb") as f:
        f.write(labels)
    print(f"{len(digits)} digits in {args.out_dir}; labels.txt sha256 {hashlib.sha256(labels).hexdigest()}")


if __name__ == "__main__":
    main()
