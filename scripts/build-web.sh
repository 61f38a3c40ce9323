#!/usr/bin/env bash
# Builds the web page into web/dist/ (gitignored): kiln compiled to WebAssembly
# (wasm32-unknown-unknown, wgpu's WebGPU backend), wasm-bindgen's JS glue, the static
# page, the committed CNN checkpoint, and MNIST's test set for "Train in this browser".
#
#   bash scripts/build-web.sh [--data-dir DIR] && python3 -m http.server -d web/dist
#
# Needs: rustup target add wasm32-unknown-unknown; wasm-bindgen-cli at the version of the
# wasm-bindgen crate in Cargo.lock (the script says which when it is missing).
# The data comes from --data-dir, else $KILN_DATA, else ../shared/data/mnist, else data/mnist.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/web-common.sh
parse_data_dir "$@"

version=$(wasm_bindgen_version)
if ! command -v wasm-bindgen >/dev/null || [ "$(wasm-bindgen --version | awk '{print $2}')" != "$version" ]; then
  echo "wasm-bindgen $version is needed (the wasm-bindgen crate's version in Cargo.lock):" >&2
  echo "  cargo install wasm-bindgen-cli --version $version" >&2
  exit 1
fi
if [ ! -f web/model/cnn.safetensors ]; then
  echo "web/model/cnn.safetensors is missing: bash scripts/train-robust.sh web/model/cnn.safetensors (the robust default, ~10 minutes on lavapipe)" >&2
  exit 1
fi

target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --release --target wasm32-unknown-unknown -p kiln-web --lib
rm -rf web/dist
mkdir -p web/dist/model web/dist/data
wasm-bindgen --target web --no-typescript --out-dir web/dist/pkg "$target_dir/wasm32-unknown-unknown/release/kiln_web.wasm"
cp web/static/* web/dist/
cp web/model/cnn.safetensors web/dist/model/

# MNIST's test set, gzipped as published (kiln's IDX reader takes either form); never committed
if [ -n "$data_dir" ]; then
  for f in t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if [ -f "$data_dir/$f.gz" ]; then cp "$data_dir/$f.gz" web/dist/data/
    elif [ -f "$data_dir/$f" ]; then gzip -c "$data_dir/$f" > "web/dist/data/$f.gz"
    else echo "warning: $data_dir has no $f(.gz): 'Train in this browser' will say so" >&2; fi
  done
else
  echo "warning: no MNIST test set found (--data-dir, KILN_DATA, ../shared/data/mnist): 'Train in this browser' will say so" >&2
fi
echo "web/dist: $(du -sh web/dist | cut -f1) (wasm $(du -h web/dist/pkg/kiln_web_bg.wasm | cut -f1)); serve it with: python3 -m http.server -d web/dist"
