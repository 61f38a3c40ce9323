#!/usr/bin/env bash
# The ONNX export check (a CI step): trains the CNN and the MLP on mnist10k for one epoch
# (or takes the checkpoints given as arguments), exports each with the `export` example,
# and runs scripts/check_onnx.py on it against kiln's own GPU logits: onnxruntime's accuracy
# must equal kiln's and every logit agree within the script's tolerance. Exits non-zero on
# any failure.
#
#   bash scripts/check-onnx.sh [MODEL.safetensors ...]
#
# KILN_ONNX_DATA: the MNIST IDX directory (default ../shared/data/mnist);
# KILN_ONNX_DATASET: mnist10k (default, 2,000 test images) or mnist (10,000);
# KILN_ONNX_OUT: where checkpoints, models and logits go (default target/onnx-check).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${KILN_ONNX_DATA:-../shared/data/mnist}"
dataset="${KILN_ONNX_DATASET:-mnist10k}"
out="${KILN_ONNX_OUT:-target/onnx-check}"
mkdir -p "$out"

python3 -m pip install -q onnxruntime onnx numpy

checkpoints=("$@")
if [ ${#checkpoints[@]} -eq 0 ]; then
  for model in cnn mlp; do
    echo "== training the $model: mnist10k, 1 epoch (heuristic kernels: deterministic)"
    KILN_AUTOTUNE=off cargo run --release --quiet --example train_mnist -- \
      --dataset mnist10k --data-dir "$data" --epochs 1 --quiet --model "$model" \
      --save "$out/$model.safetensors"
    checkpoints+=("$out/$model.safetensors")
  done
fi

i=0
for ck in "${checkpoints[@]}"; do
  i=$((i + 1))
  name="$out/$i-$(basename "$ck" .safetensors)"
  echo "== $ck: export, then onnxruntime vs kiln on the $dataset test split"
  KILN_AUTOTUNE=off cargo run --release --quiet --example export -- \
    --model "$ck" --onnx "$name.onnx" --logits "$name.logits" --dataset "$dataset" --data-dir "$data"
  python3 scripts/check_onnx.py "$name.onnx" --data-dir "$data" --dataset "$dataset" --kiln-logits "$name.logits"
done
echo "check-onnx: ${#checkpoints[@]} model(s) agree"
