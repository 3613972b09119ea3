#!/usr/bin/env bash
# Measured profiles of several model families on the GPU, for the step-time model's calibration and its check
# (leave-one-model-out): short sweeps, each under a timeout, all under BUDGET_S. Run after benchmarks/gpu_check.sh
# in the same lease (it reuses the install that script made when PYTHONPATH is set the same way):
#
#   OUT=build/gpu-calibration bash benchmarks/gpu_calibration.sh
set -uo pipefail
START=$(date +%s)
BUDGET_S=${BUDGET_S:-240}
OUT=${OUT:-build/gpu-calibration}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
FAST=(--warmup 3 --min-steps 10 --steps 10 --device "$DEVICE")
run() { # NAME CAP ARGS...
  local name=$1 cap=$2
  shift 2
  local left=$((START + BUDGET_S - $(date +%s)))
  local limit=$((cap < left ? cap : left))
  if ((limit < 10)); then echo "### $name: skipped, budget spent"; return; fi
  local began=$(date +%s)
  timeout --kill-after=5 "$limit" $PY -m layerprof profile "$@" "${FAST[@]}" --out "$OUT/$name.json" >"$OUT/$name.log" 2>&1
  echo "### $name: exit $? after $(($(date +%s) - began)) s"
}
run pythia-160m-bf16 40 pythia-160m --seq-len 1024 --batch-sizes 4 --precision bf16-mixed
run pythia-410m-bf16 40 pythia-410m --seq-len 2048 --batch-sizes 1 --layers 1,7,14,20,27 --precision bf16-mixed
run resnet50-bf16 40 resnet50 --batch-sizes 64 --precision bf16-mixed
run vit_b_16-bf16 40 vit_b_16 --batch-sizes 32 --layers 1,4,8,12,15 --precision bf16-mixed
run convnext_tiny-bf16 40 convnext_tiny --batch-sizes 32 --precision bf16-mixed
run mobilenet_v3_large-bf16 40 mobilenet_v3_large --batch-sizes 64 --precision bf16-mixed
run gpt-14m-32 30 paper-gpt-14m --batch-sizes 8
run resnet50-32 40 resnet50 --batch-sizes 64
run pythia-160m-32 40 pythia-160m --seq-len 1024 --batch-sizes 4
echo "calibration: $(($(date +%s) - START)) s; profiles in $OUT"
