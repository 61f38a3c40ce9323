#!/usr/bin/env bash
# The scarce-data learning curve of the default CNN on full MNIST: trains on 100, 1,000,
# 6,000 and 60,000 (the whole split) labelled images, class-balanced (--train-limit), with
# kiln's augmentation and a one-cycle schedule, and evaluates each on the full 10,000-image
# test split. Writes OUT/labels-N.json (each run's --json summary), OUT/learning-curve.csv
# and OUT/learning-curve.png (accuracy vs labelled images, log x, beside the PyTorch
# reference of issue 12).
#
#   bash scripts/learning_curve.sh                       # all four sizes
#   SIZES="100 1000" bash scripts/learning_curve.sh      # some of them
#
# Environment: DATA (MNIST's IDX files; default ../shared/data/mnist), OUT (default
# learning-curve), SEED (default 1), SIZES, CARGO_TARGET_DIR.
#
# The epochs per size are chosen here so that every run takes enough optimizer steps
# (a small subset's epoch is a few steps): see the recipe table below and README.md
# "Scarce data". On lavapipe (2 CPU cores) the whole curve takes about 1.5-2 hours, most of
# it the 6,000 and 60,000 runs; on a GPU, minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/mnist}
OUT=${OUT:-learning-curve}
SEED=${SEED:-1}
SIZES=${SIZES:-"100 1000 6000 60000"}
TARGET=${CARGO_TARGET_DIR:-target}

# labels -> "epochs batch-size [more flags]": about 1,000-2,000 steps for each size; the
# whole split gets 2 epochs (1,874 steps), which lavapipe affords
recipe() {
    case "$1" in
        100) echo "300 25" ;;
        1000) echo "60 64" ;;
        6000) echo "20 64 --label-smoothing 0.1" ;;
        60000) echo "2 64" ;;
        *) echo "unknown size $1: add it to recipe() in $0" >&2; exit 2 ;;
    esac
}

cargo build --release --example train_mnist --example learning_curve
mkdir -p "$OUT"
for n in $SIZES; do
    read -r epochs batch more <<<"$(recipe "$n")"
    echo "== $n labels: $epochs epochs, batch $batch $more" >&2
    start=$(date +%s)
    "$TARGET/release/examples/train_mnist" --dataset mnist --data-dir "$DATA" --model cnn \
        --train-limit "$n" --epochs "$epochs" --batch-size "$batch" --seed "$SEED" \
        --augment --optimizer adam --lr 3e-3 --lr-schedule onecycle --warmup 0.3 \
        --eval-every "$epochs" --no-save --quiet --json ${more:+$more} >"$OUT/labels-$n.json"
    echo "   $(( $(date +%s) - start )) s" >&2
done
runs=()
for n in $SIZES; do runs+=("$OUT/labels-$n.json"); done
"$TARGET/release/examples/learning_curve" --png "$OUT/learning-curve.png" --csv "$OUT/learning-curve.csv" \
    --reference 100:0.925,1000:0.978,6000:0.990 --reference-name "PyTorch, same CNN (issue 12)" "${runs[@]}"
