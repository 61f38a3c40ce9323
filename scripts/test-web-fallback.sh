#!/usr/bin/env bash
# The page's fallback to the server, in a real browser without WebGPU: builds the page
# (scripts/build-web.sh) and serve, serves the page with `serve --web web/dist` on
# 127.0.0.1, and drives headless Chromium with WebGPU turned off (scripts/web_fallback.py):
# the page must say the server answers, recognise drawn MNIST test digits through it
# (/v1/classify) and read numbers written on its "write a number" canvas (/v1/read).
#
#   bash scripts/test-web-fallback.sh [--data-dir DIR]     (CHROMIUM=path overrides the browser;
#                                                           NO_BUILD=1 uses web/dist as it is)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/web-common.sh
parse_data_dir "$@"
[ -n "$data_dir" ] || { echo "test-web-fallback: no MNIST test set (--data-dir DIR or KILN_DATA)" >&2; exit 1; }
chromium="${CHROMIUM:-}"
for c in /usr/lib/chromium/chromium "$(command -v chromium || true)"; do
  if [ -z "$chromium" ] && [ -n "$c" ] && [ -x "$c" ]; then chromium="$c"; fi
done
[ -n "$chromium" ] || { echo "test-web-fallback: no Chromium (apt-get install chromium, or CHROMIUM=path)" >&2; exit 1; }
[ -n "${NO_BUILD:-}" ] || bash scripts/build-web.sh --data-dir "$data_dir"
cargo build --release --quiet --example serve
mkdir -p target
export NODEVICE_SELECT=1 MESA_SHADER_CACHE_DIR="${MESA_SHADER_CACHE_DIR:-/tmp/kiln-mesa-cache}"
target/release/examples/serve --model web/model/cnn.safetensors --addr 127.0.0.1:0 --web web/dist > target/serve-fallback.addr 2> target/serve-fallback.log &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 300); do grep -q listening target/serve-fallback.addr 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' target/serve-fallback.addr)
[ -n "$url" ] || { cat target/serve-fallback.log; echo "test-web-fallback: serve did not start" >&2; exit 1; }
timeout 300 python3 scripts/web_fallback.py --chromium "$chromium" --url "$url/" --data-dir "$data_dir"
