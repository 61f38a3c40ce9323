#!/usr/bin/env bash
# Every peer on one CUDA GPU, one after another, with the same data, epochs and protocol:
# kiln (cnn, mlp), PyTorch eager / compile / graphs (cnn, mlp) and JAX (cnn, mlp). Prints one
# JSON line per run on stdout (kiln's gets "peer": "kiln" added), in that order; the runs' own
# messages go to stderr. For the table in BENCHMARKS.md, the steady-state rate is
# "images_per_sec_after_first" ("images_per_sec_after_first_epoch" in kiln's line) and the
# first epoch (compilation, capture, autotuning) is "epoch_seconds"[0].
#
#   benches/peers/run_all.sh DATA_DIR [DATASET] [EPOCHS]       (defaults: fashion 3)
#
# Needs: cargo, or KILN_BIN naming a train_mnist binary built elsewhere (a GPU machine without
# a Rust toolchain); kiln runs through wgpu: a Vulkan driver for the GPU. python3 (or $PYTHON) with
# numpy, torch built for CUDA, and jax with its CUDA plugin plus optax
# (pip install "jax[cuda12]" optax), and DATA_DIR holding the dataset's gzip IDX files.
# A run that fails is reported on stderr and the others still run; the exit status is then 1.
set -u -o pipefail

usage() { echo "usage: $0 DATA_DIR [mnist|fashion|mnist10k] [EPOCHS >= 2]" >&2; exit 2; }
need() { echo "$0: $*" >&2; exit 2; }

[ $# -ge 1 ] && [ $# -le 3 ] || usage
data=$1 dataset=${2:-fashion} epochs=${3:-3}
py=${PYTHON:-python3}
case $dataset in mnist|fashion|mnist10k) ;; *) usage ;; esac
[[ $epochs =~ ^[0-9]+$ ]] && [ "$epochs" -ge 2 ] || need "EPOCHS must be a whole number >= 2 (the first epoch holds the compilation; the steady state is measured after it)"
files="t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
[ "$dataset" = mnist10k ] || files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz $files"
for f in $files; do
    [ -f "$data/$f" ] || need "$data/$f is missing: DATA_DIR must hold the $dataset IDX files ($files)"
done
if [ -n "${KILN_BIN:-}" ]; then
    [ -x "$KILN_BIN" ] || need "KILN_BIN=$KILN_BIN is not an executable train_mnist"
    KILN_BIN=$(realpath "$KILN_BIN")
else
    command -v cargo >/dev/null || need "cargo is not on PATH (kiln is built with it; or set KILN_BIN)"
fi
"$py" -c 'import numpy, torch; assert torch.cuda.is_available()' 2>/dev/null ||
    need "$py cannot import numpy and a torch that sees a CUDA GPU"
"$py" -c 'import jax, optax; jax.devices("gpu")' 2>/dev/null ||
    need "$py cannot import optax and a jax that sees a GPU (pip install \"jax[cuda12]\" optax)"

cd "$(dirname "$0")/../.." || exit 2
if [ -z "${KILN_BIN:-}" ]; then
    cargo build --release --example train_mnist >&2 || need "cargo build --release --example train_mnist failed"
    KILN_BIN=target/release/examples/train_mnist
fi

status=0
run() {  # run NAME COMMAND...: the command's last JSON line on stdout, or a note on stderr
    local name=$1 line
    shift
    line=$("$@" | grep '^{' | tail -n 1)
    if [ -z "$line" ]; then
        echo "$0: $name printed no JSON line: $*" >&2
        status=1
    else
        echo "$line"
    fi
}
kiln() {
    "$KILN_BIN" --dataset "$dataset" --data-dir "$data" \
        --epochs "$epochs" --model "$1" --json --quiet --no-save --no-download |
        "$py" -c 'import json, sys
for l in sys.stdin:
    if l.startswith("{"): print(json.dumps({"peer": "kiln", **json.loads(l)}))'
}
common=(--data-dir "$data" --dataset "$dataset" --epochs "$epochs")
for model in cnn mlp; do
    run kiln kiln "$model"
    for mode in eager compile graphs; do
        run "pytorch --mode $mode" "$py" benches/peers/pytorch_mnist.py "${common[@]}" --model "$model" --device cuda --mode "$mode"
    done
    run jax "$py" benches/peers/jax_mnist.py "${common[@]}" --model "$model" --device gpu
done
exit $status
