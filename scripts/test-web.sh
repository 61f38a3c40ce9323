#!/usr/bin/env bash
# The web page, tested in a real browser: builds it (scripts/build-web.sh), serves it on
# 127.0.0.1, and in headless Chromium on SwiftShader's WebGPU (scripts/web_driver.py, the
# DevTools protocol on a pipe): draws ten MNIST test digits stroke by stroke through
# synthetic mouse and touch input and checks the page's predictions, writes four numbers
# made of MNIST test digits on the "write a number" canvas stroke by stroke and checks the
# page's readings (the exact strings, the boxes, the unsure marks), trains the CNN for one
# epoch on a small subset in the page and checks the loss fell, saves a screenshot
# (target/web.png), checks the messages for a lost device (and its retry) and for a browser
# without WebGPU. Then compares the page's preprocessing and probabilities with the
# native build's (web_reference: same bytes, probabilities within WEB_VS_NATIVE), and its
# readings of the numbers with the native Reader's (the same digits in the same boxes).
#
#   bash scripts/test-web.sh [--data-dir DIR]      (CHROMIUM=path overrides the browser)
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/web-common.sh
parse_data_dir "$@"
[ -n "$data_dir" ] || { echo "test-web: no MNIST test set (--data-dir DIR or KILN_DATA)" >&2; exit 1; }
chromium="${CHROMIUM:-}"
if [ -z "$chromium" ]; then
  for c in /usr/lib/chromium/chromium "$(command -v chromium || true)" "$(command -v google-chrome || true)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then chromium="$c"; break; fi
  done
fi
[ -n "$chromium" ] || { echo "test-web: no Chromium (apt-get install chromium, or CHROMIUM=path)" >&2; exit 1; }

target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p target
start=$(date +%s)
bash scripts/build-web.sh --data-dir "$data_dir"
cargo build --release --quiet -p kiln-web --bin web_reference
echo "test-web: built in $(( $(date +%s) - start )) s"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory web/dist "$port" > target/web-server.log 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break
  sleep 0.1
done

timeout 900 python3 scripts/web_driver.py --chromium "$chromium" --url "http://127.0.0.1:$port/" \
  --data-dir "$data_dir" --cases target/web-cases.json --screenshot target/web.png --log target/chromium.log
"$target_dir/release/web_reference" web/model/cnn.safetensors target/web-cases.json
echo "test-web: passed in $(( $(date +%s) - start )) s (screenshot: target/web.png)"
