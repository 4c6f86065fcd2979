#!/usr/bin/env bash
# GPU check for the streaming path (issue 5): what is installed, the `gpu`-marked tests, and a short
# throughput run of the PyTorch CUDA pinned-memory/stream processor through the pipeline (FP32 and
# FP16; copy and mapped host memory; 1 vs 2 slots). Installs nothing (the GPU machine is offline).
#
#   benchmarks/gpu_check.sh [REPORT]      default REPORT: $OUT/gpu_check_report.txt, else ./gpu_check_report.txt
#
# Budget: under 8 minutes in the worst case (pytest <= 150 s, 4 synthetic runs <= 40 s, clip <= 60 s, bench <= 90 s; all capped by timeout).
# Without a CUDA GPU it reports "no GPU" and exits 0. Exit code: 0 done (see the report), 1 a step failed.
set -u
cd "$(dirname "$0")/.." || exit 1
REPORT="${1:-${OUT:-.}/gpu_check_report.txt}"
mkdir -p "$(dirname "$REPORT")"
export PYTHONPATH="runtime:export:benchmarks${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
START=$(date +%s)
FAIL=0

log() { echo "$@" | tee -a "$REPORT"; }
run() {  # run LIMIT_S CMD...: output into the report, failure remembered
  local limit=$1; shift
  log ""
  log "\$ $*"
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$REPORT"
  local rc=${PIPESTATUS[0]}
  log "[exit $rc, $(( $(date +%s) - START )) s since start]"
  [ "$rc" -eq 0 ] || FAIL=1
  return 0
}

: > "$REPORT"
log "hanrt GPU check (streaming: pinned memory, CUDA streams, pipeline) -- $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
log "host: $(uname -srm), $(nproc) CPUs"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>&1 | tee -a "$REPORT"
else
  log "nvidia-smi: not found"
fi

log ""
log "== what is available =="
"$PY" - <<'EOF' 2>&1 | tee -a "$REPORT"
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
        p = torch.cuda.get_device_properties(0)
        print(f"  device 0: {p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}, "
              f"integrated={bool(getattr(p, 'is_integrated', 0))}")
except Exception as exc:  # noqa: BLE001
    print("torch CUDA: unavailable:", exc)
EOF

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  log ""
  log "no GPU: PyTorch sees no CUDA device (or torch is missing); GPU tests and throughput skipped."
  log "report: $REPORT"
  exit 0
fi

log ""
log "== gpu-marked tests =="
run 150 "$PY" -m pytest -m gpu tests -q -p no:cacheprovider -rs --continue-on-collection-errors

log ""
log "== throughput: PyTorch CUDA processor through the pipeline (HAN 10 groups x 2 blocks x 64 feats, random weights) =="
log "compute_only_fps: processor alone with the same in-flight depth; end_to_end_fps: pipeline (reader, worker, writer threads)"
HAVE_AV=$("$PY" -c "import av" >/dev/null 2>&1 && echo 1 || echo 0)
BENCH=("$PY" -m hanrt_bench.stream_bench --processor torch-cuda --feats 64 --groups 10 --blocks 2)
for args in "--slots 2 --memory copy" "--slots 2 --memory copy --fp16" "--slots 1 --memory copy --fp16" \
            "--slots 2 --memory mapped --fp16"; do
  # shellcheck disable=SC2086
  run 40 "${BENCH[@]}" --synthetic 320x180 --frames 120 $args
done
if [ "$HAVE_AV" = 1 ]; then
  CLIP="$(mktemp -d)/clip.mp4"
  run 60 "${BENCH[@]}" --clip "$CLIP" --make-clip 320x180 --seconds 6 --slots 2 --fp16
else
  log "PyAV missing: no decode/encode run (synthetic frames only)"
fi

log ""
log "== hanrt bench: a short sweep on the GPU (issue 6; HAN 10 groups x 2 blocks x 64 feats, random weights) =="
log "hanrt's torch backend FP32/FP16 (and ONNX Runtime when 'auto' finds its CUDA provider) against the PyTorch"
log "baselines on CUDA; latency p50/p99, frames/s, GFLOP/s and fraction of a measured FP16 matmul peak"
BENCH_OUT="$(dirname "$REPORT")/hanrt_bench_gpu"
run 90 "$PY" -m hanrt bench random:10x2x64 --input 180x320 --device cuda --backend torch auto \
  --precision fp32 fp16 --tile 128 0 --margin 16 --batch 1 4 --warmup 2 --iters 5 --max-seconds 15 \
  --output "$BENCH_OUT"
[ -f "$BENCH_OUT/bench.md" ] && log "bench files: $BENCH_OUT (bench.json, bench.csv, bench.md, PNG plots)"

log ""
log "total $(( $(date +%s) - START )) s; $([ $FAIL = 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED (see above)')"
log "report: $REPORT"
exit $FAIL
