#!/usr/bin/env bash
# Every GPU-only figure of BENCHMARKS.md in one command, for one lease of a lent GPU machine
# (../shared/docs/GPU-MACHINE.md): that machine has no Rust toolchain, so the binaries are
# built here and carried.
#
#   scripts/gpu-measure.sh bundle DIR    (here) build, strip and copy train_mnist, the kernels
#                                        bench, MNIST's gz files and the Vulkan loader into DIR
#   scripts/gpu-measure.sh run DIR OUT   (there) measure; JSON lines to OUT/results.jsonl
#                                        (each with "tag"), logs to OUT/log.txt, a table last
#   KILN_BASELINE=REF scripts/gpu-measure.sh bundle DIR
#                                        also build git REF's train_mnist and kernels bench (in a
#                                        worktree and target/gpu-measure-baseline) as
#                                        DIR/train_mnist_base, DIR/kernels_base: run then times
#                                        them against this build (batch 64 training, GEMM
#                                        4096^3 of the tiled4 variants), alternating, so a
#                                        lease judges a change on the GPU
#   KILN_MEASURE_SMOKE=1 scripts/gpu-measure.sh run DIR OUT
#                                        (here, on lavapipe) the kiln runs on 256 images of
#                                        mnist10k and no benches: checks the script itself
#
# What it measures, in this order (the cheap kiln figures first, the peers last, so a run
# cut short still brings back the kiln numbers): start-up cold (the machine's first run),
# cold again on the warm machine with no shader caches, and cached, the CNN at batch
# 64 (twice; with a baseline, alternating with it and with KILN_DIRECT_CONV=unfused), 256 and
# 1024 and the MLP, time to 99% test accuracy under a few recipes, the per-kernel profile at
# batch 64 (pools fused and apart) and 1024, the kernel tests, the conv passes with the direct
# kernels on and off, GEMM 4096^3 for every tiled variant and cuBLAS's fp32 rate beside it,
# the dispatch cost and the inference API, then benches/peers/run_all.sh (at most
# KILN_MEASURE_PEERS_SECONDS, 600 by default).
set -u -o pipefail
mode=${1:-} dir=${2:-}
usage() { echo "usage: $0 bundle DIR | run DIR OUT" >&2; exit 2; }
[ -n "$mode" ] && [ -n "$dir" ] || usage
cd "$(dirname "$0")/.." || exit 2

# the integration tests that exercise kernels without a dataset: their binaries (one per
# layer), and per binary the test modules to run
tests="layer_kernels layer_graph"
filters_layer_kernels="activation:: conv2d:: elementwise:: gemm:: linear:: optim:: pool:: shaders:: softmax::"
filters_layer_graph="graph:: input_gradient::"

if [ "$mode" = bundle ]; then
    data=${KILN_MNIST:-../shared/data/mnist}
    for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
        [ -f "$data/$f" ] || { echo "$0: $data/$f is missing (set KILN_MNIST to the full MNIST's directory)" >&2; exit 2; }
    done
    cargo build --release --example train_mnist >&2 || exit 1
    bench=$(cargo bench --bench kernels --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "kernels" and m.get("executable"): print(m["executable"])' | tail -n 1)
    [ -x "$bench" ] || { echo "$0: could not build the kernels bench" >&2; exit 1; }
    rm -rf "$dir" && mkdir -p "$dir/mnist" "$dir/deb" || exit 1
    cp target/release/examples/train_mnist "$bench" "$dir/" && mv "$dir/$(basename "$bench")" "$dir/kernels" || exit 1
    if [ -n "${KILN_BASELINE:-}" ]; then
        wt=$(mktemp -d) && git worktree add -q --detach "$wt" "$KILN_BASELINE" || { echo "$0: no git ref $KILN_BASELINE" >&2; exit 1; }
        root=$PWD
        (cd "$wt" && CARGO_TARGET_DIR="$root/target/gpu-measure-baseline" cargo build --release --example train_mnist >&2) &&
            cp target/gpu-measure-baseline/release/examples/train_mnist "$dir/train_mnist_base"
        status=$?
        # its kernels bench too, for the GEMM 4096^3 comparison
        base_bench=$(cd "$wt" && CARGO_TARGET_DIR="$root/target/gpu-measure-baseline" cargo bench --bench kernels --no-run --message-format=json 2>/dev/null |
            python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "kernels" and m.get("executable"): print(m["executable"])' | tail -n 1)
        [ $status = 0 ] && [ -x "$base_bench" ] && strip -o "$dir/kernels_base" "$base_bench" && gzip -9 "$dir/kernels_base" || status=1
        git worktree remove --force "$wt"
        [ $status = 0 ] || { echo "$0: could not build $KILN_BASELINE's train_mnist" >&2; exit 1; }
        git rev-parse "$KILN_BASELINE" >"$dir/baseline.txt"
        strip "$dir/train_mnist_base" && gzip -9 "$dir/train_mnist_base"
    fi
    # gzipped: the carried tree is limited to 64 MiB (run unpacks them)
    strip "$dir/train_mnist" "$dir/kernels" && gzip -9 "$dir/train_mnist" "$dir/kernels" || exit 1
    # the GPU kernel tests that need no dataset, gzipped (run checks them on NVIDIA's Vulkan)
    mkdir -p "$dir/tests" || exit 1
    cargo test --release --no-run --message-format=json $(printf -- '--test %s ' $tests) 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]: print(m["target"]["name"], m["executable"])' |
        while read -r name exe; do strip -o "$dir/tests/$name" "$exe" && gzip -9 "$dir/tests/$name"; done
    [ "$(ls "$dir/tests" | wc -l)" = "$(echo $tests | wc -w)" ] || { echo "$0: could not build the tests $tests" >&2; exit 1; }
    cp "$data"/*.gz "$dir/mnist/"
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64'
    (cd "$dir/deb" && apt-get $o download libvulkan1 libglvnd0 libglx0 libgl1 libegl1 libopengl0 libgles2 >/dev/null 2>&1) || { echo "$0: apt-get download of the Vulkan loader and glvnd failed" >&2; exit 1; }
    du -sh "$dir"
    exit 0
fi

[ "$mode" = run ] || usage
out=${3:-}
[ -n "$out" ] || usage
[ -f "$dir/train_mnist.gz" ] && [ -f "$dir/kernels.gz" ] && [ -d "$dir/mnist" ] ||
    { echo "$0: $dir is not a bundle (train_mnist.gz, kernels.gz, mnist/): make one with $0 bundle $dir" >&2; exit 2; }
mkdir -p "$out" || exit 2
dir=$(realpath "$dir")
# the executables, unpacked
bin=$(mktemp -d)
for f in "$dir"/*.gz "$dir"/tests/*.gz; do
    gunzip -c "$f" >"$bin/$(basename "$f" .gz)" && chmod +x "$bin/$(basename "$f" .gz)" || exit 1
done
# the Vulkan loader (the machine has NVIDIA's driver and ICD file, not always the loader)
# (the tool library's device README: NVIDIA's ICD loads libGLX_nvidia, which needs glvnd)
for f in "$dir"/deb/*.deb; do dpkg -x "$f" /; done
ldconfig
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
{ echo "ICD files:"; ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d 2>&1; cat "$icd" 2>&1; ldconfig -p | grep -E 'libvulkan|GLX_nvidia|GLdispatch'; } >>"$out/gpu.txt" 2>&1
export KILN_BACKEND=vulkan
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee -a "$out/gpu.txt"
log=$out/log.txt results=$out/results.jsonl
: >"$results"
tm=$bin/train_mnist
smoke=${KILN_MEASURE_SMOKE:-0}
set=(--dataset mnist)
p64=300 p1024=100
[ "$smoke" = 1 ] && set=(--dataset mnist10k --train-limit 256) p64=3 p1024=2
data=("${set[@]}" --data-dir "$dir/mnist" --no-download --no-save --quiet --json)
step() { echo "== $* ($(date +%T))" | tee -a "$log" >&2; }
kiln() {  # kiln TAG ARGS...: one train_mnist run, its JSON line tagged
    local tag=$1 line
    shift
    line=$("$tm" "${data[@]}" "$@" 2>>"$log" | grep '^{' | tail -n 1)
    if [ -z "$line" ]; then echo "kiln $tag failed: $*" | tee -a "$log" >&2; return; fi
    python3 -c 'import json,sys; print(json.dumps({"tag": sys.argv[1], "args": sys.argv[2], **json.loads(sys.argv[3])}))' "$tag" "$*" "$line" >>"$results"
}

step "start-up: cold, then cached (KILN_CACHE fresh)"
export KILN_CACHE=$(mktemp -d)
kiln cold-b64 --epochs 2 --bench
[ -s "$results" ] || { echo "no kiln run worked: stopping (Vulkan set-up in $out/gpu.txt, errors in $log)" >&2; cat "$out/gpu.txt" >&2; exit 1; }
# kiln's own cold start on a machine that has opened Vulkan once: a fresh KILN_CACHE and no
# NVIDIA shader disk cache (__GL_SHADER_DISK_CACHE=0, which NVIDIA's Vulkan driver reads too),
# so every pipeline is compiled by the driver again; the run above also paid the machine's
# first device open and its cold page cache
for round in 1 2; do
    KILN_CACHE=$(mktemp -d) __GL_SHADER_DISK_CACHE=0 kiln cold-nocache-b64-$round --epochs 1 --bench
done
kiln cached-b64 --epochs 3 --bench
kiln cached2-b64 --epochs 3 --bench
if [ -x "$bin/train_mnist_base" ]; then
    step "this build against the baseline $(cat "$dir/baseline.txt" 2>/dev/null) and against itself with the pools apart (KILN_DIRECT_CONV=unfused), batch 64, alternating"
    for round in 1 2; do
        tm=$bin/train_mnist_base kiln base-b64-$round --epochs 3 --bench
        kiln this-b64-$round --epochs 3 --bench
        KILN_DIRECT_CONV=unfused kiln unfused-b64-$round --epochs 3 --bench
    done
fi
step "throughput: batch 256, 1024; MLP"
kiln b256 --epochs 3 --bench --batch-size 256
kiln b1024 --epochs 3 --bench --batch-size 1024
kiln mlp-b64 --epochs 3 --bench --model mlp
step "time to 99%"
kiln tta-b64-e2 --epochs 2
kiln tta-b128-onecycle3-e2 --epochs 2 --batch-size 128 --lr 3e-3 --lr-schedule onecycle
kiln tta-b256-onecycle4-e3 --epochs 3 --batch-size 256 --lr 4e-3 --lr-schedule onecycle
# the one-epoch recipe found on lavapipe (BENCHMARKS.md), three seeds
for seed in 1 2 3; do
    kiln tta-b128-adamw5-ls-e1-seed$seed --epochs 1 --batch-size 128 --lr 5e-3 --optimizer adamw --label-smoothing 0.1 --lr-schedule onecycle --seed $seed
done
step "profile"
"$tm" "${data[@]}" --profile $p64 2>>"$log" | grep '^{' | tail -n 1 >"$out/profile-b64.json"
"$tm" "${set[@]}" --data-dir "$dir/mnist" --no-download --profile $p64 2>>"$log" >"$out/profiles.txt"
KILN_DIRECT_CONV=unfused "$tm" "${set[@]}" --data-dir "$dir/mnist" --no-download --profile $p64 2>>"$log" >>"$out/profiles.txt"
"$tm" "${set[@]}" --data-dir "$dir/mnist" --no-download --profile $p1024 --batch-size 1024 2>>"$log" >>"$out/profiles.txt"
[ "$smoke" != 1 ] && step "kernel tests on this GPU ($tests)" &&
for name in $tests; do
    filters=filters_$name
    if timeout 240 "$bin/$name" ${!filters} --test-threads=4 >>"$out/tests.txt" 2>&1; then echo "tests $name: ok" | tee -a "$log"; else echo "tests $name: FAILED" | tee -a "$log"; fi
done
if [ "$smoke" != 1 ] && [ "${KILN_MEASURE_BENCHES:-1}" = 1 ]; then
[ "${KILN_MEASURE_CONV:-1}" = 1 ] && step "conv passes at batch 64 (training's five), tiled32x64: the direct kernels (conv_shared) on, then off (KILN_DIRECT_CONV=0)" &&
for direct in 1 0; do
    echo "KILN_DIRECT_CONV=$direct" >>"$out/conv.txt"
    KILN_DIRECT_CONV=$direct "$bin/kernels" --bench 'conv2d_(forward|backward_weight)/tiled32x64/conv|conv2d_backward_input/tiled32x64/conv2' \
        --warm-up-time 0.3 --measurement-time 1 2>>"$log" | grep -E '^conv2d|thrpt|time:' >>"$out/conv.txt"
done
step "kernels: GEMM 4096^3 (tiled variants and extra tiled4 shapes; the baseline's tiled4 beside), fc1's GEMMs and routed dX, dispatch cost, inference"
KILN_BENCH_LARGE=1 KILN_BENCH_CONFIGS=tiled4:16x16:8x8:32,tiled4:16x32:8x8:16 \
    "$bin/kernels" --bench 'gemm/tiled.*/4096' --warm-up-time 1 --measurement-time 2 2>>"$log" | grep -E 'gemm/|thrpt' | tee "$out/gemm4096.txt" >&2
if [ -x "$bin/kernels_base" ]; then
    for round in 1 2; do
        for b in kernels_base kernels; do
            echo "$b round $round" | tee -a "$out/gemm4096.txt" >&2
            KILN_BENCH_LARGE=1 "$bin/$b" --bench 'gemm/tiled4_.*/4096' --warm-up-time 1 --measurement-time 2 2>>"$log" | grep -E 'gemm/|thrpt' | tee -a "$out/gemm4096.txt" >&2
        done
    done
fi
"$bin/kernels" --bench 'gemm/(tiled64|tiled4_64x128|vec4_sg)/fc1|linear_backward_input_routed/tiled64|dispatch/|classify' --warm-up-time 0.5 --measurement-time 1 2>>"$log" | grep -E '^[a-z_0-9]+/|thrpt|time:' >"$out/kernels.txt"
python3 - <<'EOF' 2>>"$log" | tee -a "$out/gemm4096.txt" >&2
import torch
torch.backends.cuda.matmul.allow_tf32 = False
n = 4096
a, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
for _ in range(3): a @ b
torch.cuda.synchronize()
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
times = []
for _ in range(20):
    s.record(); a @ b; e.record(); torch.cuda.synchronize(); times.append(s.elapsed_time(e) / 1e3)
times.sort()
print(f"cuBLAS fp32 (TF32 off) 4096^3: {2 * n**3 / times[len(times) // 2] / 1e12:.1f} TFLOP/s (median of 20)")
EOF
[ "${KILN_MEASURE_PEERS:-1}" = 1 ] && step "peers (full MNIST, 3 epochs)" &&
KILN_BIN=$tm KILN_CACHE=$KILN_CACHE timeout "${KILN_MEASURE_PEERS_SECONDS:-600}" benches/peers/run_all.sh "$dir/mnist" mnist 3 2>>"$log" |
    python3 -c 'import json,sys
for l in sys.stdin: print(json.dumps({"tag": "peer", **json.loads(l)}))' >>"$results"
fi

step "summary"
python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    acc = r.get("epoch_test_accuracy") or []
    secs = r.get("epoch_seconds") or []
    tta, t = None, 0.0
    for s, a in zip(secs, acc):
        t += s
        if a is not None and a >= 0.99:
            tta = t
            break
    name = r["tag"] if r["tag"] != "peer" else f'peer {r.get("peer", r.get("framework", ""))} {r.get("mode", "")} {r.get("model", "")}'
    print(f'{name:32} ips={r.get("images_per_sec_after_first_epoch") or r.get("images_per_sec_after_first") or r.get("images_per_sec")} '
          f'start={r.get("startup_seconds")} tune={r.get("autotune_seconds")} disp={r.get("dispatches_per_step")} '
          f'acc={[round(a, 4) if a is not None else None for a in acc]} epochs_s={[round(s, 3) for s in secs]} tta99={tta}'
          + (' phases=' + ' '.join(f'{k}:{v:.3f}' for k, v in r['startup_phases'].items()) if r.get('startup_phases') else ''))
EOF
