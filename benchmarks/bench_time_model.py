"""How well the step-time model predicts measured staircases: leave-one-model-out calibration.

For each measured profile, the model is calibrated on every *other* model's profiles of the same device and
predicts the held-out one; the table gives, per model, the median absolute error of the step time and of the
ratio to full training (× full), beside the same errors with the documented default constants.

    python benchmarks/bench_time_model.py gpu [DIR...]   # profiles measured on one GPU kind (default: the H200
                                                         # profiles committed in this repository); no GPU needed
    python benchmarks/bench_time_model.py cpu            # measures >= 10 models on this CPU (1 thread) first:
                                                         # ~25 minutes; run it on a quiet machine

Targets (issue 25): × full within 10% and step time within 25%, median over models.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from layerprof.devices import kind_of_device
from layerprof.predict.calibration import default_time_model, measured_steps
from layerprof.predict.timemodel import MeasuredStep, TimeModel, calibrate
from layerprof.profile import Profile, SweepSettings, load_profile

ROOT = Path(__file__).resolve().parent.parent
H200 = [ROOT / "profiles/baselines/nvidia-h200", ROOT / "benchmarks/results/nvidia-h200-2026-12-04/calibration"]

# (name, MODEL and options, batch sizes, --layers): families the issue names, small enough for this CPU
CPU_MODELS = [
    ("resnet18", ["paper-resnet18-cifar100"], "32", "all"),
    ("resnet50", ["resnet50", "--input-shape", "3,64,64"], "8", "1,5,10,15,19"),
    ("mobilenet_v3_small", ["mobilenet_v3_small", "--input-shape", "3,96,96"], "16", "all"),
    ("convnext_atto", ["timm:convnext_atto", "--input-shape", "3,64,64"], "8", "all"),
    ("convnext_tiny", ["convnext_tiny", "--input-shape", "3,64,64"], "4", "1,7,14,21,28"),
    ("vit_tiny", ["timm:vit_tiny_patch16_224", "--input-shape", "3,64,64"], "8", "all"),
    ("vit_b_32", ["vit_b_32", "--input-shape", "3,64,64"], "4", "1,4,8,12,15"),
    ("pythia-14m", ["pythia-14m", "--seq-len", "128"], "4", "all"),
    ("pythia-70m", ["pythia-70m", "--seq-len", "128"], "2", "all"),
    ("pythia-160m", ["pythia-160m", "--seq-len", "128"], "1", "1,4,8,12,15"),
    ("gpt-14m", ["paper-gpt-14m", "--seq-len", "128"], "4", "all"),
    ("llama", ["hf:llama", "--set", "hidden_size=256", "--set", "intermediate_size=688", "--set",
               "num_hidden_layers=4", "--set", "num_attention_heads=4", "--set", "num_key_value_heads=4",
               "--set", "vocab_size=8000", "--seq-len", "128"], "2", "all"),
]  # fmt: skip


def profiles_in(folders: list[Path]) -> list[Profile]:
    found = []
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            profile = load_profile(path)
            if not profile.is_estimate and any(row.ok and row.step_time_ms for row in profile.rows):
                found.append(profile)
    return found


def errors(model: TimeModel, steps: list[MeasuredStep]) -> tuple[float, float]:
    """Median |error| of step time and of × full: each cell against the cell with the most trainable layers of its
    own batch size (labels "spec b64 z=3"; a batch's full cell is never another batch's)."""
    predicted = {step.label: model.predict(step.trace).step_ms for step in steps}
    full_of: dict[str, MeasuredStep] = {}
    for step in steps:
        batch = batch_of(step)
        if batch not in full_of or z_of(step) > z_of(full_of[batch]):
            full_of[batch] = step
    step_errors = [abs(predicted[s.label] / s.step_ms - 1) for s in steps]
    ratio_errors = [
        abs((predicted[s.label] / predicted[full.label]) / (s.step_ms / full.step_ms) - 1)
        for s in steps
        if s is not (full := full_of[batch_of(s)])
    ]
    return statistics.median(step_errors), statistics.median(ratio_errors or [0.0])


def z_of(step: MeasuredStep) -> int:
    return int(step.label.rsplit("z=", 1)[1])


def batch_of(step: MeasuredStep) -> str:
    return step.label.rsplit(" z=", 1)[0].rsplit(" ", 1)[-1]  # "b64"


def leave_one_model_out(groups: dict[str, list[MeasuredStep]], default: TimeModel) -> None:
    header = f"{'held-out model':32s} {'cells':>5s}  {'default: step':>13s} {'× full':>7s}"
    print(f"{header}  {'calibrated: step':>16s} {'× full':>7s}")
    summary = {"default": [], "calibrated": []}
    for name, steps in groups.items():
        others = [step for other, group in groups.items() if other != name for step in group]
        fitted = calibrate(others, default.peaks, default.numerics)
        d, c = errors(default, steps), errors(fitted, steps)
        summary["default"].append(d)
        summary["calibrated"].append(c)
        print(f"{name:32s} {len(steps):5d}  {d[0]:13.1%} {d[1]:7.1%}  {c[0]:16.1%} {c[1]:7.1%}")
    for how, values in summary.items():
        print(f"median over models, {how}: step {statistics.median(v[0] for v in values):.1%}, "
              f"× full {statistics.median(v[1] for v in values):.1%}")  # fmt: skip


def group_steps(profiles: list[Profile], target: str) -> dict[str, list[MeasuredStep]]:
    groups: dict[str, list[MeasuredStep]] = {}
    for profile in profiles:
        began = time.perf_counter()
        steps = measured_steps(profile, target)
        name = f"{profile.model.spec} {profile.settings.precision}"
        groups.setdefault(name, []).extend(steps)
        print(f"  traced {name}: {len(steps)} cells in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    return groups


def gpu(folders: list[Path]) -> None:
    profiles = profiles_in(folders)
    kinds = {kind_of_device(p.environment.device_name) for p in profiles}
    if len(kinds) != 1 or None in kinds:
        raise SystemExit(f"profiles of one known GPU kind are needed, found {kinds}")
    gpu_name = kinds.pop().name
    default = default_time_model(SweepSettings((1,), (1,), target="cuda", target_gpu=gpu_name))
    print(f"{gpu_name}: {len(profiles)} measured profiles")
    leave_one_model_out(group_steps(profiles, "cuda"), default)


def cpu(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, model, batches, layers in CPU_MODELS:
        path = out / f"{name}.json"
        if path.exists():
            continue
        command = [sys.executable, "-m", "layerprof", "profile", *model, "--batch-sizes", batches, "--layers",
                   layers, "--threads", "1", "--warmup", "3", "--min-steps", "10", "--steps", "20",
                   "--out", str(path)]  # fmt: skip
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        print(f"  measured {name}: exit {done.returncode} in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    profiles = profiles_in([out])
    default = default_time_model(SweepSettings((1,), (1,), target="cpu"), threads=1)
    print(f"this CPU ({default.peaks.name}), 1 thread: {len(profiles)} measured profiles; peaks "
          f"{default.peaks.fp32_tflops * 1e3:.0f} GFLOP/s fp32, {default.peaks.memory_gbps:.1f} GB/s")  # fmt: skip
    leave_one_model_out(group_steps(profiles, "cpu"), default)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "gpu"
    if mode == "gpu":
        gpu([Path(p) for p in sys.argv[2:]] or H200)
    elif mode == "cpu":
        import torch

        torch.set_num_threads(1)
        cpu(ROOT / "build/bench-time-model/cpu")
    else:
        raise SystemExit("usage: bench_time_model.py gpu [DIR...] | cpu")
