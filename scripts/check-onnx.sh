#!/usr/bin/env bash
# The ONNX export check (a CI step): for every model kind — cnn, mlp, lenet5 and cnn-bn
# (train_mnist --model) and examples/custom_model.rs's residual net with BatchNorm and global
# average pooling (custom) — trains a checkpoint on mnist10k for one epoch (train_mnist's kinds
# on 2,000 of its images), exports it with
# the `export` example, and runs scripts/check_onnx.py on it against kiln's own GPU logits:
# onnxruntime's accuracy must equal kiln's and every logit agree within the script's
# tolerance. Exits non-zero on any failure.
#
#   bash scripts/check-onnx.sh [KIND | MODEL.safetensors ...]
#
# Each argument is a kind to train (cnn, mlp, lenet5, cnn-bn, custom) or a checkpoint to take
# as it is; none: all five kinds. KILN_ONNX_DATA: the MNIST IDX directory (default
# ../shared/data/mnist); KILN_ONNX_DATASET: mnist10k (default, 2,000 test images) or mnist
# (10,000); KILN_ONNX_OUT: where checkpoints, models and logits go (default target/onnx-check).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${KILN_ONNX_DATA:-../shared/data/mnist}"
dataset="${KILN_ONNX_DATASET:-mnist10k}"
out="${KILN_ONNX_OUT:-target/onnx-check}"
mkdir -p "$out"

python3 -m pip install -q onnxruntime onnx numpy

# KIND -> a 1-epoch checkpoint of it on a class-balanced 2,000 of mnist10k's training images
# (KILN_ONNX_TRAIN_LIMIT; heuristic kernels: deterministic): what the check needs is trained
# weights and BatchNorm statistics, not accuracy, and cnn-bn's full epoch took 230 s on lavapipe
train_limit="${KILN_ONNX_TRAIN_LIMIT:-2000}"
train() {
  local ck="$out/$1.safetensors"
  echo "== training the $1: mnist10k, 1 epoch" >&2
  case "$1" in
    custom) KILN_AUTOTUNE=off cargo run --release --quiet --example custom_model -- \
      --data-dir "$data" --epochs 1 --save "$ck" >&2 ;;
    *) KILN_AUTOTUNE=off cargo run --release --quiet --example train_mnist -- \
      --dataset mnist10k --data-dir "$data" --epochs 1 --train-limit "$train_limit" --quiet --model "$1" --save "$ck" >&2 ;;
  esac
  echo "$ck"
}

args=("$@")
[ ${#args[@]} -eq 0 ] && args=(cnn mlp lenet5 cnn-bn custom)
i=0
for arg in "${args[@]}"; do
  start=$SECONDS
  case "$arg" in
    cnn|mlp|lenet5|cnn-bn|custom) ck=$(train "$arg") ;;
    *) ck="$arg" ;;
  esac
  i=$((i + 1))
  name="$out/$i-$(basename "$ck" .safetensors)"
  echo "== $ck: export, then onnxruntime vs kiln on the $dataset test split"
  KILN_AUTOTUNE=off cargo run --release --quiet --example export -- \
    --model "$ck" --onnx "$name.onnx" --logits "$name.logits" --dataset "$dataset" --data-dir "$data"
  python3 scripts/check_onnx.py "$name.onnx" --data-dir "$data" --dataset "$dataset" --kiln-logits "$name.logits"
  echo "== $arg: $((SECONDS - start)) s"
done
echo "check-onnx: ${#args[@]} model(s) agree"
