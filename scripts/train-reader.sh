#!/usr/bin/env bash
# Trains the reading model (kiln::read::Reader's default): the CNN on full MNIST, 3 epochs,
# with 20,000 generated images that are not one digit (the segmenter's wrong cuts of fields
# of training digits, trained towards the uniform distribution) and 10,000 of its right cuts
# (train_mnist --not-digits, ARCHITECTURE.md "Reading numbers"), the temperature fitted on
# the last 5,000 training digits (--calibrate). Seeded (--seed 1): the same data every run.
#
#   bash scripts/train-reader.sh OUT.safetensors [DATA_DIR]
#
# DATA_DIR holds MNIST's IDX files (default ../shared/data/mnist; downloaded there when
# missing). Then: cargo run --release --example read -- --model OUT.safetensors field.png
# On lavapipe (2 CPU cores) it takes about 15 minutes (BENCHMARKS.md), most of it training.
set -euo pipefail
out=${1:?usage: scripts/train-reader.sh OUT.safetensors [DATA_DIR]}
data=${2:-../shared/data/mnist}
# relative paths are the caller's: resolve them before moving to the repository
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
case "$data" in /*) ;; *) [ $# -ge 2 ] && data="$PWD/$data" ;; esac
cd "$(dirname "$0")/.."
cargo build --release --example train_mnist
exec target/release/examples/train_mnist --dataset mnist --data-dir "$data" --model cnn --epochs 3 --seed 1 \
    --not-digits 20000 --calibrate 5000 --save "$out"
