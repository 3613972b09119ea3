#!/usr/bin/env bash
# layerprof's GPU check: one go, at most BUDGET_S seconds (default 420) on one NVIDIA GPU, every step under a
# timeout, every result in one folder. Run from the repository root:
#
#   make gpu-check              # picks the install: .venv if it exists, else the machine's python3 with the
#                               # wheels carried in .whl/ (`make gpu-wheels` downloads them beforehand)
#   GPU_CHECK_SMOKE=1 ...       # the same plumbing on the CPU with tiny models (`make gpu-smoke` rehearses it in
#                               # an imitation of the GPU machine's image)
#
# GPU_CHECK_INSTALL=venv|wheels|make chooses the install; PY the interpreter for `wheels`.
# Output: $OUT (default build/gpu-check/YYYYmmdd-HHMMSS): run.log, diagnostics.log, gpu-tests.xml, the profiles
# (p14b-32-true, p14b-bf16-mixed, r18) and estimates (e14b-*, e-r18) as JSON, sharing/, and summary.txt; the
# recipe cells (docs/recipes.md) on paper-resnet18-cifar100 at batch RECIPE_BATCH: LoRA, checkpointing, 8-bit AdamW
# (profiles r18-lora, r18-ckpt, r18-8bit with estimates e-r18-*) and torch.compile (r18-compile, measured only),
# run while the budget lasts (GPU_CHECK_RECIPES=0 leaves them out).

set -uo pipefail

START=$(date +%s)
BUDGET_S=${BUDGET_S:-540}
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
env | grep -E '^(CUDA_|PYTORCH_|CUBLAS|NVIDIA_|TORCH_)' | sort

# ---------------------------------------------------------------- install
MODE=${GPU_CHECK_INSTALL:-}
if [ -z "$MODE" ]; then
  if [ -x .venv/bin/python ]; then MODE=venv; elif [ -d .whl ]; then MODE=wheels; else MODE=make; fi
fi
case "$MODE" in
  venv) PY=.venv/bin/python ;;
  make) make install || { echo "error: make install failed"; exit 1; }; PY=.venv/bin/python ;;
  wheels)
    # The image's own packages stay; the wheels it lacks go to a folder of their own, with no dependencies
    # resolved (there is no registry). Exactly one wheel per package, or the install is refused.
    PY=${PY:-python3}
    SITE=${GPU_CHECK_SITE:-/tmp/layerprof-site}
    names=$(ls .whl/*.whl 2>/dev/null | xargs -n1 basename | cut -d- -f1 | tr 'A-Z_.' 'a-z--' | sort)
    if [ -z "$names" ]; then echo "error: no wheels in .whl/ (make gpu-wheels)"; exit 1; fi
    twice=$(echo "$names" | uniq -d)
    if [ -n "$twice" ]; then echo "error: .whl/ holds more than one wheel of: $twice; keep one of each"; exit 1; fi
    rm -rf "$SITE"
    if ! $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl; then
      echo "error: the carried wheels do not install"
      exit 1
    fi
    # layerprof itself runs from this checkout: no install step that could fail and take the wheels with it
    export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
    ;;
  *) echo "error: GPU_CHECK_INSTALL must be venv, wheels or make, got $MODE"; exit 2 ;;
esac
echo "install: $MODE, python $($PY -c 'import sys; print(sys.version.split()[0])') at $(command -v "$PY" || echo "$PY")"

# every module the run needs imports before anything is timed
if ! $PY benchmarks/gpu_imports.py; then
  echo "error: a module the check needs does not import; nothing else can run"
  exit 1
fi
LP="$PY -m layerprof"

if [ -n "$SMOKE" ]; then
  LM=(pythia-14m --seq-len 64 --set padded_vocab_size=512 --layers 1,5,9)
  IMAGE_BATCHES=4,8
  RECIPE_BATCH=4
  FAST=(--warmup 1 --min-steps 3 --steps 3)
else
  LM=(pythia-1.4b --seq-len 2048 --layers 1,14,27)
  IMAGE_BATCHES=32,256
  RECIPE_BATCH=256
  FAST=(--warmup 3 --min-steps 10 --steps 20)
  step diagnostics 90 bash -c "set -o pipefail; $PY benchmarks/gpu_diagnostics.py | tee '$OUT/diagnostics.log'"
  if [ "${RC[diagnostics]}" = 3 ]; then
    echo "error: torch cannot use CUDA here; the GPU path cannot be checked"
    exit 1
  fi
fi

# ---------------------------------------------------------------- estimates, on the CPU beside the GPU steps
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
case "$GPU_NAME" in *H200*) TABLE_GPU=(--gpu H200) ;; *H100*) TABLE_GPU=(--gpu H100) ;; *) TABLE_GPU=() ;; esac
(
  # each estimate's exit code on its own line, read back below; CUDA hidden so they never touch the GPU
  for precision in 32-true bf16-mixed; do
    CUDA_VISIBLE_DEVICES="" timeout 200 $LP estimate "${LM[@]}" --batch-sizes 1 --precision "$precision" \
      "${TABLE_GPU[@]}" --out "$OUT/e14b-$precision.json"
    echo "rc estimate-pythia-$precision $?" >>"$OUT/estimates.rc"
  done
  CUDA_VISIBLE_DEVICES="" timeout 100 $LP estimate paper-resnet18-cifar100 --batch-sizes "$IMAGE_BATCHES" \
    "${TABLE_GPU[@]}" --out "$OUT/e-r18.json"
  echo "rc estimate-resnet18 $?" >>"$OUT/estimates.rc"
  if [ "${GPU_CHECK_RECIPES:-1}" != 0 ]; then
    for recipe in "lora --adapter lora" "ckpt --checkpointing trainable" "8bit --optimizer adamw8bit"; do
      set -- $recipe
      name=$1
      shift
      CUDA_VISIBLE_DEVICES="" timeout 100 $LP estimate paper-resnet18-cifar100 --batch-sizes "$RECIPE_BATCH" \
        --layers 1,6,11 "$@" "${TABLE_GPU[@]}" --out "$OUT/e-r18-$name.json"
      echo "rc estimate-resnet18-$name $?" >>"$OUT/estimates.rc"
    done
  fi
) >"$OUT/estimates.log" 2>&1 &
ESTIMATES=$!

if [ -z "$SMOKE" ]; then
  step gpu-tests 120 $PY -m pytest -m gpu -q -rA -p no:cacheprovider --junitxml="$OUT/gpu-tests.xml" tests/measure/test_gpu.py
fi
for precision in 32-true bf16-mixed; do
  step "profile-pythia-$precision" 110 $LP profile "${LM[@]}" --batch-sizes 1 --precision "$precision" \
    "${FAST[@]}" --device $DEVICE --out "$OUT/p14b-$precision.json"
done
step profile-resnet18 90 $LP profile paper-resnet18-cifar100 --batch-sizes "$IMAGE_BATCHES" "${FAST[@]}" \
  --device $DEVICE --out "$OUT/r18.json"
if [ -z "$SMOKE" ]; then
  step profile-resnet18-16-mixed 45 $LP profile paper-resnet18-cifar100 --batch-sizes 256 --layers 1,11 \
    --precision 16-mixed "${FAST[@]}" --device $DEVICE --out "$OUT/r18-16-mixed.json"
  step sharing 100 $PY benchmarks/gpu_sharing.py "$OUT"
fi
if [ "${GPU_CHECK_RECIPES:-1}" != 0 ]; then
  RECIPE=(paper-resnet18-cifar100 --batch-sizes "$RECIPE_BATCH" --layers 1,6,11 "${FAST[@]}" --device $DEVICE)
  step profile-resnet18-lora 60 $LP profile "${RECIPE[@]}" --adapter lora --out "$OUT/r18-lora.json"
  step profile-resnet18-ckpt 60 $LP profile "${RECIPE[@]}" --checkpointing trainable --out "$OUT/r18-ckpt.json"
  if [ -z "$SMOKE" ]; then # torchao's step and inductor compile for minutes on a CPU
    step profile-resnet18-8bit 90 $LP profile "${RECIPE[@]}" --optimizer adamw8bit --out "$OUT/r18-8bit.json"
    step profile-resnet18-compile 150 $LP profile "${RECIPE[@]}" --compile --out "$OUT/r18-compile.json"
  fi
fi

# the estimates get what is left of the budget, then are stopped
while kill -0 "$ESTIMATES" 2>/dev/null && (($(left) > RESERVE_S)); do
  sleep 1
done
if kill -0 "$ESTIMATES" 2>/dev/null; then
  echo "### estimates: still running at the deadline, stopped"
  pkill -P "$ESTIMATES" 2>/dev/null
  kill "$ESTIMATES" 2>/dev/null
fi
wait "$ESTIMATES" 2>/dev/null
ESTIMATE_NAMES=(estimate-pythia-32-true estimate-pythia-bf16-mixed estimate-resnet18)
[ "${GPU_CHECK_RECIPES:-1}" != 0 ] && ESTIMATE_NAMES+=(estimate-resnet18-lora estimate-resnet18-ckpt estimate-resnet18-8bit)
for name in "${ESTIMATE_NAMES[@]}"; do
  ORDER+=("$name")
  RC[$name]=$(awk -v n="$name" '$2 == n {print $3}' "$OUT/estimates.rc" 2>/dev/null | tail -1)
  [ -n "${RC[$name]}" ] || RC[$name]="not run"
done
tail -n 5 "$OUT/estimates.log"

echo
echo "### summary"
timeout 30 $PY benchmarks/gpu_check_summary.py "$OUT" | tee "$OUT/summary.txt"
echo
echo "### exit codes (124/137: timed out)"
failed=0
for name in "${ORDER[@]}"; do
  printf '  %-28s %s\n' "$name" "${RC[$name]}"
  [ "${RC[$name]}" = 0 ] || failed=1
done
echo "total $(($(date +%s) - START)) s of $BUDGET_S s; everything is in $OUT"
exit $failed
