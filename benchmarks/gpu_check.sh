#!/usr/bin/env bash
# GPU check: what is installed; hanrt's cuda-python wrapper on the GPU; where TensorRT is installed the
# TensorRT smoke list (issue 11: builds of the four bundled graphs, two contexts on one profile, copy vs
# mapped memory, device 1 from a worker thread); the `gpu`/`trt`-marked tests; a short throughput run of the
# PyTorch CUDA pinned-memory/stream processor through the pipeline; a short hanrt bench sweep.
# Installs nothing (the GPU machine is offline). Run from a checkout; PYTHONPATH is set here.
#
#   benchmarks/gpu_check.sh [REPORT]      default REPORT: $OUT/gpu_check_report.txt, else ./gpu_check_report.txt
#
# Time budget: the whole script ends within 8 minutes in the worst case. Every step runs under `timeout`
# with its own cap (below), cut to what is left of a 450 s budget (HANRT_GPU_CHECK_BUDGET_S) minus the 10 s
# a step may take to die after its SIGINT; a step with under 15 s left is skipped with that reason. So the
# steps end by 450 s, plus a few seconds for the summary. Caps, in order: environment 30 s, cuda 40 s,
# TensorRT build 75 s x 4, two contexts 40 s, copy vs mapped 50 s, device 1 90 s, pytest 120 s,
# 4 synthetic stream runs 30 s each, clip 40 s, bench 75 s (sum 955 s: on a machine with TensorRT the
# later steps are cut or skipped for time, and the report says so).
# Each step that cannot run here (no GPU, no TensorRT, one GPU, no PyAV) is listed as skipped with the
# reason. Exit code: 0 done (see the report), 1 a step failed.
set -u
cd "$(dirname "$0")/.." || exit 1
REPORT="${1:-${OUT:-.}/gpu_check_report.txt}"
mkdir -p "$(dirname "$REPORT")"
export PYTHONPATH="runtime:export:benchmarks${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
START=$(date +%s)
BUDGET="${HANRT_GPU_CHECK_BUDGET_S:-450}"
FAIL=0
SKIPPED=()
STEP_OUT="$(mktemp)"
trap 'rm -f "$STEP_OUT"' EXIT

log() { echo "$@" | tee -a "$REPORT"; }
skip() {  # skip STEP REASON
  SKIPPED+=("$1: $2")
  log ""
  log "SKIPPED $1: $2"
}
run() {  # run NAME CAP_S CMD...: output into the report, failure remembered, cut to the time left
  local name=$1 cap=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) - 10 ))
  if [ "$left" -lt 15 ]; then
    skip "$name" "time budget of ${BUDGET} s spent ($(( $(date +%s) - START )) s since start)"
    return 0
  fi
  local limit=$(( cap < left ? cap : left ))
  log ""
  log "[$name, limit ${limit} s] \$ $*"
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee "$STEP_OUT"
  local rc=${PIPESTATUS[0]}
  cat "$STEP_OUT" >> "$REPORT"
  local why
  why=$(grep -m1 '^SKIP: ' "$STEP_OUT")  # a step that found it cannot run here says why
  [ -n "$why" ] && SKIPPED+=("$name: ${why#SKIP: }")
  log "[$name: exit $rc$([ "$rc" -eq 124 ] && echo ", timed out after ${limit} s"), $(( $(date +%s) - START )) s since start]"
  [ "$rc" -eq 0 ] || FAIL=1
  return 0
}
finish() {
  log ""
  log "== summary =="
  if [ "${#SKIPPED[@]}" -gt 0 ]; then
    for s in "${SKIPPED[@]}"; do log "  skipped: $s"; done
  fi
  log "total $(( $(date +%s) - START )) s; $([ $FAIL = 0 ] && echo 'all steps run passed' || echo 'SOME STEPS FAILED (see above)')"
  log "report: $REPORT"
  exit $FAIL
}

: > "$REPORT"
log "hanrt GPU check (cuda-python wrapper, TensorRT smoke list, streaming, bench) -- $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
log "host: $(uname -srm), $(nproc) CPUs; time budget ${BUDGET} s"
if command -v nvidia-smi >/dev/null 2>&1; then
  timeout 20 nvidia-smi --query-gpu=index,name,memory.total,driver_version,compute_cap --format=csv 2>&1 | tee -a "$REPORT"
else
  log "nvidia-smi: not found"
fi

run environment 30 "$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for m in ["numpy", "torch", "cupy", "cuda.bindings", "cuda", "onnx", "onnxruntime", "tensorrt", "av", "cv2", "PIL", "pytest", "tqdm"]:
    try:
        mod = importlib.import_module(m)
        print(f"  {m:14s} {getattr(mod, '__version__', 'present')}")
    except Exception as exc:  # noqa: BLE001 - report anything
        print(f"  {m:14s} missing ({type(exc).__name__})")
try:
    import torch
    ok = torch.cuda.is_available()
    print("torch CUDA:", ok, "| CUDA", torch.version.cuda, "| devices", torch.cuda.device_count())
    if ok:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"  device {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}, "
                  f"integrated={bool(getattr(p, 'is_integrated', 0))}")
except Exception as exc:  # noqa: BLE001
    print("torch CUDA: unavailable:", exc)
EOF

HAVE_GPU=$(timeout 60 "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1 && echo 1 || echo 0)
HAVE_CUDA_PY=$(timeout 30 "$PY" -c "
try:
    import cuda.bindings.runtime
except ImportError:
    import cuda.cudart" >/dev/null 2>&1 && echo 1 || echo 0)
HAVE_TRT=$(timeout 30 "$PY" -c "import tensorrt" >/dev/null 2>&1 && echo 1 || echo 0)

if [ "$HAVE_GPU" != 1 ]; then
  for s in cuda "TensorRT smoke list" "gpu/trt tests" "stream throughput" "hanrt bench"; do
    skip "$s" "no GPU: PyTorch sees no CUDA device (or torch is missing)"
  done
  finish
fi

log ""
log "== hanrt's cuda-python wrapper on the GPU (hanrt.backends.tensorrt.cuda; no TensorRT needed) =="
if [ "$HAVE_CUDA_PY" = 1 ]; then
  run cuda 40 "$PY" -m hanrt_bench.trt_smoke cuda
else
  skip cuda "cuda-python is not installed (neither cuda.bindings.runtime nor cuda.cudart imports)"
fi

log ""
log "== TensorRT smoke list (what the conformance suite's fakes cannot show) =="
PLANS="$(dirname "$REPORT")/trt_smoke"
if [ "$HAVE_TRT" != 1 ]; then
  skip "TensorRT smoke list (builds of fp32/fp16/int8/uint8, two contexts on one profile, copy vs mapped, device 1)" \
    "TensorRT is not installed ('import tensorrt' fails)"
elif [ "$HAVE_CUDA_PY" != 1 ]; then
  skip "TensorRT smoke list" "cuda-python is not installed (the TensorRT backend needs it)"
else
  for v in fp32 fp16 int8 uint8; do
    f="runtime/hanrt/models/hanrt_x4$([ "$v" = fp32 ] || echo "_$v").onnx"
    run "build $v" 75 "$PY" -m hanrt_bench.trt_smoke build "$v" "$f" "$PLANS"
  done
  if [ -f "$PLANS/fp32.plan" ]; then
    run "two contexts on one profile" 40 "$PY" -m hanrt_bench.trt_smoke contexts "$PLANS/fp32.plan"
    run "copy vs mapped" 50 "$PY" -m hanrt_bench.trt_smoke memory "$PLANS/fp32.plan"
  else
    skip "two contexts on one profile" "no fp32 engine (its build failed or was skipped)"
    skip "copy vs mapped" "no fp32 engine (its build failed or was skipped)"
  fi
  run "device 1 from a worker thread" 90 "$PY" -m hanrt_bench.trt_smoke device1 runtime/hanrt/models/hanrt_x4.onnx "$PLANS"
fi

log ""
log "== gpu- and trt-marked tests =="
run "gpu/trt tests" 120 "$PY" -m pytest -m "gpu or trt" tests -q -p no:cacheprovider -rs --continue-on-collection-errors

log ""
log "== throughput: PyTorch CUDA processor through the pipeline (HAN 10 groups x 2 blocks x 64 feats, random weights) =="
log "compute_only_fps: processor alone with the same in-flight depth; end_to_end_fps: pipeline (reader, worker, writer threads)"
HAVE_AV=$("$PY" -c "import av" >/dev/null 2>&1 && echo 1 || echo 0)
BENCH=("$PY" -m hanrt_bench.stream_bench --processor torch-cuda --feats 64 --groups 10 --blocks 2)
for args in "--slots 2 --memory copy" "--slots 2 --memory copy --fp16" "--slots 1 --memory copy --fp16" \
            "--slots 2 --memory mapped --fp16"; do
  # shellcheck disable=SC2086
  run "stream $args" 30 "${BENCH[@]}" --synthetic 320x180 --frames 120 $args
done
if [ "$HAVE_AV" = 1 ]; then
  CLIP="$(mktemp -d)/clip.mp4"
  run "stream clip" 40 "${BENCH[@]}" --clip "$CLIP" --make-clip 320x180 --seconds 6 --slots 2 --fp16
else
  skip "stream clip" "PyAV is missing: no decode/encode run (synthetic frames only)"
fi

log ""
log "== hanrt bench: a short sweep on the GPU (issue 6; HAN 10 groups x 2 blocks x 64 feats, random weights) =="
log "hanrt's torch backend FP32/FP16 (and ONNX Runtime when 'auto' finds its CUDA provider) against the PyTorch"
log "baselines on CUDA; latency p50/p99, frames/s, GFLOP/s and fraction of a measured FP16 matmul peak"
BENCH_OUT="$(dirname "$REPORT")/hanrt_bench_gpu"
run "hanrt bench" 75 "$PY" -m hanrt bench random:10x2x64 --input 180x320 --device cuda --backend torch auto \
  --precision fp32 fp16 --tile 128 0 --margin 16 --batch 1 4 --warmup 2 --iters 5 --max-seconds 15 \
  --output "$BENCH_OUT"
[ -f "$BENCH_OUT/bench.md" ] && log "bench files: $BENCH_OUT (bench.json, bench.csv, bench.md, PNG plots)"

finish
