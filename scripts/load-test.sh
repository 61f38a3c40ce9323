#!/usr/bin/env bash
# The service under load (issue 32, BENCHMARKS.md "Serving"): starts examples/serve on
# 127.0.0.1 and drives examples/loadgen against it, each phase once:
#   1. batched: 64 clients for $SECS s (default 60);
#   2. unbatched (--max-batch 1): the same; the ratio of 1 to 2 is what batching buys;
#   3. overload: 4x phase 1's throughput (open loop) for $OVER s (default 30) on --queue 64,
#      the server's RSS sampled; then 16 clients for 5 s must all be answered (recovery);
#   4. faults under load (32 clients): a reload of a corrupt checkpoint (refused, 422), a good
#      reload, clients that disconnect mid-upload and slow-loris uploads (504, not holding the
#      worker): loadgen must see no error;
#   5. SIGTERM under load: the server exits 0, no request that got an open connection is lost.
# Prints each phase's report and the GPU worker's figures from /metrics; the JSON lines go to
# target/load-test/.
#
#   bash scripts/load-test.sh [--model M.safetensors] [--data-dir DIR]
#   (SECS=5 OVER=5 for a quick pass; PHASES="batched unbatched" for some phases only)
set -euo pipefail
cd "$(dirname "$0")/.."
model=web/model/cnn.safetensors
data=../shared/data/mnist
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --data-dir) data="$2"; shift 2 ;;
    *) echo "usage: $0 [--model M.safetensors] [--data-dir DIR]" >&2; exit 2 ;;
  esac
done
secs="${SECS:-60}"
over="${OVER:-30}"
phases=" ${PHASES:-batched unbatched overload faults sigterm} "
want() { [[ "$phases" == *" $1 "* ]]; }
export NODEVICE_SELECT=1 MESA_SHADER_CACHE_DIR="${MESA_SHADER_CACHE_DIR:-/tmp/kiln-mesa-cache}"
cargo build --release --quiet --example serve --example loadgen
bin=target/release/examples
out=target/load-test
mkdir -p "$out"
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; true' EXIT

# start_server FLAGS...: sets $server (pid) and $url
start_server() {
  rm -f "$out/addr"
  "$bin/serve" --model "$served" --addr 127.0.0.1:0 "$@" > "$out/addr" 2>> "$out/server.log" &
  server=$!
  for _ in $(seq 300); do grep -q listening "$out/addr" 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/^listening on //p' "$out/addr")
  [ -n "$url" ] || { echo "load-test: serve did not start (see $out/server.log)" >&2; exit 1; }
}
# the GPU worker's batches so far: images per batch and GPU milliseconds per batch and per image
gpu_figures() {
  curl -s "$url/metrics" | python3 -c "
import sys
m = dict(l.rsplit(' ', 1) for l in sys.stdin if l.startswith(('kiln_batch_size_', 'kiln_gpu_batch_seconds_')) and '{' not in l)
n, images, secs = float(m['kiln_batch_size_count']), float(m['kiln_batch_size_sum']), float(m['kiln_gpu_batch_seconds_sum'])
print(f'GPU worker: {n:.0f} batches, {images / n:.1f} images per batch, {1000 * secs / n:.2f} ms per batch, {1000 * secs / images:.3f} ms per image, busy {secs:.1f} s')"
}
stop_server() {
  kill -TERM "$server"
  local code=0
  wait "$server" || code=$?
  server=""
  echo "server exit code: $code"
  [ "$code" = 0 ] || { echo "load-test: serve exited $code after SIGTERM" >&2; exit 1; }
}
# load NAME FLAGS...: runs loadgen, keeps its JSON line, fails the script on a bad run
load() {
  local name="$1"; shift
  echo "== $name"
  "$bin/loadgen" --url "$url" --model "$model" --data-dir "$data" --json "$@" | tee "$out/$name.txt"
  tail -1 "$out/$name.txt" > "$out/$name.json"
}
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$out/$1.json" "$2"; }

served="$out/served.safetensors"
cp "$model" "$served"
: > "$out/server.log"

if want batched; then
  start_server
  load batched --clients 64 --seconds "$secs"
  gpu_figures
  stop_server
fi
if want unbatched; then
  start_server --max-batch 1
  load unbatched --clients 64 --seconds "$secs"
  gpu_figures
  stop_server
fi
if want batched && want unbatched; then
  python3 -c "import sys; print(f'batching: {float(sys.argv[1]) / float(sys.argv[2]):.2f}x the throughput of --max-batch 1')" "$(field batched throughput)" "$(field unbatched throughput)"
fi

if want overload; then
# 4x the batched throughput (this run's, else the last one's)
rate=$(python3 -c "import sys; print(round(4 * float(sys.argv[1]), 1))" "$(field batched throughput)")
start_server --queue 64
load overload --clients 512 --seconds "$over" --rate "$rate" --pid "$server"
load recovery --clients 16 --seconds 5 --pid "$server"
[ "$(field recovery refused_503)" = 0 ] || { echo "load-test: still refusing after the overload" >&2; exit 1; }
stop_server
fi

if want faults; then
start_server --timeout-ms 2000
"$bin/loadgen" --url "$url" --model "$model" --data-dir "$data" --json --clients 32 --seconds 20 > "$out/faults.txt" &
gen=$!
sleep 4
cp "$served" "$out/good.safetensors"
head -c 5000 "$out/good.safetensors" > "$served"  # a checkpoint cut short
code=$(curl -s -o "$out/reload-bad.json" -w '%{http_code}' -X POST "$url/admin/reload")
echo "corrupt reload: $code $(cat "$out/reload-bad.json")"
[ "$code" = 422 ] || { echo "load-test: a corrupt checkpoint was not refused" >&2; exit 1; }
cp "$out/good.safetensors" "$served"
echo "good reload: $(curl -s -w ' %{http_code}' -X POST "$url/admin/reload")"
python3 - "$url" <<'PY'
# 8 clients that leave mid-upload, 8 slow-loris uploads (a byte every 0.3 s): the slow ones get 504
import socket, sys, time, threading
host, port = sys.argv[1].removeprefix("http://").split(":")
def head(n):
    s = socket.create_connection((host, int(port)))
    s.sendall(f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\nContent-Length: {n}\r\n\r\n".encode())
    return s
for _ in range(8):
    s = head(5000); s.sendall(b"\x89PNG" * 100); s.close()
answers = []
def slow():
    s = head(5000); s.settimeout(30)
    try:
        for _ in range(60):
            s.sendall(b"\x00"); time.sleep(0.3)
    except OSError:
        pass
    try:
        answers.append(s.recv(200).split(b"\r\n")[0].decode())
    except OSError as e:
        answers.append(f"no answer: {e}")
ts = [threading.Thread(target=slow) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print("slow-loris answers:", sorted(set(answers)), "x", len(answers))
assert all(a.startswith("HTTP/1.1 504") for a in answers), answers
PY
wait "$gen" || { cat "$out/faults.txt"; echo "load-test: errors under the faults" >&2; exit 1; }
echo "== faults"; cat "$out/faults.txt"; tail -1 "$out/faults.txt" > "$out/faults.json"
stop_server
fi

if want sigterm; then
start_server
"$bin/loadgen" --url "$url" --model "$model" --data-dir "$data" --json --clients 32 --seconds 10 --allow-refused > "$out/sigterm.txt" &
gen=$!
# SIGTERM once the clients have been sending for 3 s
for _ in $(seq 600); do curl -s "$url/metrics" | grep -q 'route="/v1/classify",status="200"' && break; sleep 0.05; done
sleep 3
stop_server
wait "$gen" || { cat "$out/sigterm.txt"; echo "load-test: requests lost at SIGTERM" >&2; exit 1; }
echo "== sigterm"; cat "$out/sigterm.txt"; tail -1 "$out/sigterm.txt" > "$out/sigterm.json"
fi
echo "load-test: every phase passed"
