#!/usr/bin/env bash
# layerprof's GPU check: one go, at most 8 minutes on one NVIDIA GPU, every step under a timeout, every result in
# one folder. Run from the repository root:
#
#   make gpu-check                         # after `make install` (needs the package registry)
#   GPU_CHECK_INSTALL=nodeps bash benchmarks/gpu_check.sh
#                                          # torch preinstalled, no registry: `pip install --no-deps -e .` and
#                                          # the wheels in .whl/ (`make gpu-wheels` downloads them beforehand)
#   GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh
#                                          # the same plumbing on the CPU with tiny models, to test the script
#
# Output: $OUT (default build/gpu-check/YYYYmmdd-HHMMSS): run.log, diagnostics, gpu-tests.xml, the profiles
# (p14b-32-true, p14b-bf16-mixed, r18) and estimates (e14b-*, e-r18) as JSON, and summary.txt.

set -uo pipefail

START=$(date +%s)
BUDGET_S=${BUDGET_S:-470}
DEADLINE=$((START + BUDGET_S))
RESERVE_S=20 # kept for the summary
OUT=${OUT:-build/gpu-check/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec > >(tee -a "$OUT/run.log") 2>&1

if [ ! -f pyproject.toml ] || [ ! -d layerprof ]; then
  echo "error: run this from the layerprof repository root"
  exit 2
fi

export PYTHONUNBUFFERED=1 COLUMNS=${COLUMNS:-150}
SMOKE=${GPU_CHECK_SMOKE:-}
if [ "${GPU_CHECK_INSTALL:-make}" = nodeps ]; then
  PY=${PY:-python3}
  INSTALL="$PY -m pip install -q --no-deps --no-build-isolation -e . && { [ ! -d .whl ] || $PY -m pip install -q --no-index --no-deps .whl/*.whl; }"
else
  PY=${PY:-.venv/bin/python}
  INSTALL="make install"
fi
LP="$PY -m layerprof"
DEVICE=cuda
[ -n "$SMOKE" ] && DEVICE=cpu
declare -A RC
ORDER=()

left() { echo $((DEADLINE - $(date +%s))); }

# step NAME CAP CMD...: CMD under `timeout min(CAP, time left - RESERVE_S)`, exit code recorded
step() {
  local name=$1 cap=$2
  shift 2
  local available=$(($(left) - RESERVE_S))
  local limit=$((cap < available ? cap : available))
  ORDER+=("$name")
  if ((limit < 5)); then
    echo "### $name: SKIPPED, the time budget is spent"
    RC[$name]=skipped
    return 0
  fi
  echo
  echo "### $name (timeout ${limit} s, $(date +%T))"
  echo "+ $*"
  local began=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  RC[$name]=$rc
  echo "### $name: exit $rc$([ "$rc" = 124 ] || [ "$rc" = 137 ] && echo ' (TIMED OUT)') after $(($(date +%s) - began)) s"
  return 0
}

echo "layerprof GPU check · $(date -Is) · git $(git rev-parse --short HEAD 2>/dev/null || echo '?') · $OUT · budget ${BUDGET_S} s"
command -v nvidia-smi >/dev/null && timeout 20 nvidia-smi --format=csv \
  --query-gpu=index,name,uuid,driver_version,memory.total,memory.used,mig.mode.current,clocks.max.sm,power.limit
env | grep -E '^(CUDA_|PYTORCH_|CUBLAS|NVIDIA_)' | sort

step install 150 bash -c "$INSTALL"
if ! $PY -c "import layerprof.cli" 2>/dev/null; then
  echo "error: layerprof does not import after the install step; nothing else can run"
  exit 1
fi

if [ -n "$SMOKE" ]; then
  LM=(pythia-14m --seq-len 64 --set padded_vocab_size=512 --layers 1,5,9)
  IMAGE_BATCHES=4,8
  FAST=(--warmup 1 --min-steps 3 --steps 3)
else
  LM=(pythia-1.4b --seq-len 2048 --layers 1,14,27)
  IMAGE_BATCHES=32,256
  FAST=(--warmup 3 --min-steps 10 --steps 20)
  step diagnostics 75 $PY benchmarks/gpu_diagnostics.py
  if [ "${RC[diagnostics]}" = 3 ]; then
    echo "error: torch cannot use CUDA here; the GPU path cannot be checked"
    exit 1
  fi
fi

# estimates run on the CPU, beside the GPU steps, and never touch the GPU
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
case "$GPU_NAME" in *H200*) TABLE_GPU=(--gpu H200) ;; *H100*) TABLE_GPU=(--gpu H100) ;; *) TABLE_GPU=() ;; esac
(
  for precision in 32-true bf16-mixed; do
    CUDA_VISIBLE_DEVICES="" timeout 200 $LP estimate "${LM[@]}" --batch-sizes 1 --precision "$precision" \
      "${TABLE_GPU[@]}" --out "$OUT/e14b-$precision.json"
  done
  CUDA_VISIBLE_DEVICES="" timeout 100 $LP estimate paper-resnet18-cifar100 --batch-sizes "$IMAGE_BATCHES" \
    "${TABLE_GPU[@]}" --out "$OUT/e-r18.json"
) >"$OUT/estimates.log" 2>&1 &
ESTIMATES=$!

if [ -z "$SMOKE" ]; then
  step gpu-tests 120 $PY -m pytest -m gpu -q -rA -p no:cacheprovider --junitxml="$OUT/gpu-tests.xml" tests/test_gpu.py
fi
for precision in 32-true bf16-mixed; do
  step "profile-pythia-$precision" 110 $LP profile "${LM[@]}" --batch-sizes 1 --precision "$precision" \
    "${FAST[@]}" --device $DEVICE --out "$OUT/p14b-$precision.json"
done
step profile-resnet18 100 $LP profile paper-resnet18-cifar100 --batch-sizes "$IMAGE_BATCHES" "${FAST[@]}" \
  --device $DEVICE --out "$OUT/r18.json"

wait "$ESTIMATES"
RC[estimates]=$?
ORDER+=(estimates)
tail -n 5 "$OUT/estimates.log"

echo
echo "### summary"
timeout 30 $PY benchmarks/gpu_check_summary.py "$OUT" | tee "$OUT/summary.txt"
echo
echo "### exit codes (124/137: timed out)"
for name in "${ORDER[@]}"; do printf '  %-26s %s\n' "$name" "${RC[$name]}"; done
echo "total $(($(date +%s) - START)) s of $BUDGET_S s; everything is in $OUT"
