"""How well the step-time model predicts measured staircases off its training set: default constants and
leave-one-model-out calibration, beside the model of an earlier commit.

For each measured profile, the model predicts the held-out one with its documented default constants, and again
calibrated on every *other* model's profiles of the same device; the table gives, per model, the median absolute
error of the step time and of the ratio to full training (× full). `--before REF` runs the same evaluation with the
code of git commit REF (exported under build/, in a subprocess) and prints both side by side.

    python benchmarks/bench_time_model.py gpu [DIR...] [--before REF]   # profiles of one GPU kind (default: the
                                                  # committed H200 ones); host-bound and device-bound cells apart
    python benchmarks/bench_time_model.py cpu [--from DIR] [--peaks FILE] [--before REF]  # measures the CPU_MODELS
                         # on this CPU at 1 thread first (~30 minutes; quiet machine), or reads DIR's
    ... --default-only   # the default constants alone: no leave-one-model-out calibration (a minute, not ten)

On a CPU the peaks are those recorded with the profiles (DIR/cpu-peaks.json, written when they were measured;
`--peaks FILE` for others): the table then depends on committed data and the code alone, not on how busy the
machine that evaluates is. Without recorded peaks this CPU's are measured now (said in the title).

Targets (issue 37): median step error <= 12% with the default constants on >= 10 held-out models on a CPU.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from layerprof.devices import kind_of_device
from layerprof.predict.timemodel import MeasuredStep, TimeModel, calibrate
from layerprof.profile import Profile, SweepSettings, load_profile

try:  # where `speed` moved them (issue 37 part 3), or where they were
    from layerprof.predict.calibration import default_time_model, measured_steps
except ImportError:
    from layerprof.predict.estimate import default_time_model, measured_steps

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build/bench-time-model"
H200 = [ROOT / "profiles/baselines/nvidia-h200", ROOT / "benchmarks/results/nvidia-h200-2026-12-04/calibration"]

# (name, MODEL and options, batch sizes, --layers): six families (ResNet, mobile CNNs with grouped/depthwise
# convolutions, RegNet, ConvNeXt, ViT, GPT/Llama decoders), none of which the CPU's default constants were fitted
# on; small inputs so that the whole set measures in about half an hour at one thread
CPU_MODELS = [
    ("resnet18", ["paper-resnet18-cifar100"], "32", "all"),
    ("resnet34", ["resnet34", "--input-shape", "3,64,64"], "8", "doubling"),
    ("mobilenet_v2", ["mobilenet_v2", "--input-shape", "3,64,64"], "8", "doubling"),
    ("mobilenet_v3_small", ["mobilenet_v3_small", "--input-shape", "3,96,96"], "16", "all"),
    ("efficientnet_b0", ["efficientnet_b0", "--input-shape", "3,64,64"], "8", "doubling"),
    ("shufflenet_v2", ["shufflenet_v2_x1_0", "--input-shape", "3,64,64"], "16", "doubling"),
    ("squeezenet1_1", ["squeezenet1_1", "--input-shape", "3,64,64"], "16", "doubling"),
    ("regnet_y_400mf", ["regnet_y_400mf", "--input-shape", "3,64,64"], "8", "doubling"),
    ("convnext_atto", ["timm:convnext_atto", "--input-shape", "3,64,64"], "8", "all"),
    ("vit_tiny", ["timm:vit_tiny_patch16_224", "--input-shape", "3,64,64"], "8", "all"),
    ("deit_small", ["timm:deit_small_patch16_224", "--input-shape", "3,64,64"], "4", "doubling"),
    ("pythia-14m", ["pythia-14m", "--seq-len", "128"], "4", "all"),
    ("pythia-70m", ["pythia-70m", "--seq-len", "128"], "2", "all"),
    ("gpt-14m", ["paper-gpt-14m", "--seq-len", "128"], "4", "all"),
    ("llama", ["hf:llama", "--set", "hidden_size=256", "--set", "intermediate_size=688", "--set",
               "num_hidden_layers=4", "--set", "num_attention_heads=4", "--set", "num_key_value_heads=4",
               "--set", "vocab_size=8000", "--seq-len", "128"], "2", "all"),
]  # fmt: skip


def profiles_in(folders: list[Path]) -> list[Profile]:
    found = []
    for folder in folders:
        for path in sorted(p for p in folder.glob("*.json") if p.name != PEAKS_FILE):
            profile = load_profile(path)
            if not profile.is_estimate and any(row.ok and row.step_time_ms for row in profile.rows):
                found.append(profile)
    return found


def errors(model: TimeModel, steps: list[MeasuredStep]) -> tuple[float, float, list[tuple[float, bool]]]:
    """Median |error| of step time and of × full, and each cell's |step error| with whether the model predicts it
    host-bound: each cell against the cell with the most trainable layers of its own batch size (labels
    "spec b64 z=3"; a batch's full cell is never another batch's)."""
    predicted = {step.label: model.predict(step.trace) for step in steps}
    full_of: dict[str, MeasuredStep] = {}
    for step in steps:
        batch = batch_of(step)
        if batch not in full_of or z_of(step) > z_of(full_of[batch]):
            full_of[batch] = step
    cells = [(abs(predicted[s.label].step_ms / s.step_ms - 1), host_bound(predicted[s.label])) for s in steps]
    ratio_errors = [
        abs((predicted[s.label].step_ms / predicted[full.label].step_ms) / (s.step_ms / full.step_ms) - 1)
        for s in steps
        if s is not (full := full_of[batch_of(s)])
    ]
    return statistics.median(e for e, _ in cells), statistics.median(ratio_errors or [0.0]), cells


def host_bound(prediction) -> bool:  # noqa: ANN001
    """A cell the model predicts host-bound: its host time exceeds its device time."""
    return prediction.host_ms > prediction.device_ms


def z_of(step: MeasuredStep) -> int:
    return int(step.label.rsplit("z=", 1)[1])


def batch_of(step: MeasuredStep) -> str:
    return step.label.rsplit(" z=", 1)[0].rsplit(" ", 1)[-1]  # "b64"


def leave_one_model_out(groups: dict[str, list[MeasuredStep]], default: TimeModel) -> list[dict]:
    """One row per held-out model: its errors with the default constants and calibrated on the other models."""
    rows = []
    for name, steps in groups.items():
        d = errors(default, steps)
        if DEFAULT_ONLY:  # --default-only: no calibration (seconds instead of minutes); the calibrated columns repeat
            c = d
        else:
            others = [step for other, group in groups.items() if other != name for step in group]
            c = errors(calibrate(others, default.peaks, default.numerics), steps)
        rows.append({"model": name, "cells": len(steps), "default": d, "calibrated": c})
        print(f"  held out {name}: default {d[0]:.1%}, calibrated on the others {c[0]:.1%}", file=sys.stderr)
    return rows


def print_table(rows: list[dict], before: list[dict] | None, ref: str | None) -> None:
    """The per-model table (before | after where `before` is given) and the medians over models."""
    sides = [("before", before), ("after", rows)] if before else [("", rows)]
    by_model = [{row["model"]: row for row in side} for _, side in sides]
    head = "  ".join(f"{f'{label} default: step':>22s} {'× full':>7s} {'LOMO: step':>10s} {'× full':>7s}"
                     for label, _ in sides)  # fmt: skip
    if before:
        print(f"before: the model of {ref}; after: this tree's")
    print(f"{'held-out model':34s} {'cells':>5s}  {head}")
    for row in rows:
        cells = []
        for index in range(len(sides)):
            got = by_model[index].get(row["model"])
            if got is None:
                cells.append(f"{'—':>22s} {'—':>7s} {'—':>10s} {'—':>7s}")
                continue
            d, c = got["default"], got["calibrated"]
            cells.append(f"{d[0]:22.1%} {d[1]:7.1%} {c[0]:10.1%} {c[1]:7.1%}")
        print(f"{row['model']:34s} {row['cells']:5d}  {'  '.join(cells)}")
    for label, side in sides:
        for how in ("default", "calibrated"):
            step = statistics.median(r[how][0] for r in side)
            ratio = statistics.median(r[how][1] for r in side)
            cells = [cell for r in side for cell in r[how][2]]
            split = "; ".join(
                f"{kind} cells: {len(chosen)}, median step {statistics.median(chosen):.1%}"
                for kind, chosen in (("host-bound", [e for e, hb in cells if hb]),
                                     ("device-bound", [e for e, hb in cells if not hb]))
                if chosen
            )  # fmt: skip
            print(f"{label or 'model'} {how}: median over models step {step:.1%}, × full {ratio:.1%} ({split})")


def group_steps(profiles: list[Profile], target: str) -> dict[str, list[MeasuredStep]]:
    groups: dict[str, list[MeasuredStep]] = {}
    for profile in profiles:
        began = time.perf_counter()
        steps = measured_steps(profile, target)
        name = f"{profile.model.spec} {profile.settings.precision}"
        groups.setdefault(name, []).extend(steps)
        print(f"  traced {name}: {len(steps)} cells in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    return groups


def gpu_rows(folders: list[Path]) -> tuple[str, list[dict]]:
    profiles = profiles_in(folders)
    kinds = {kind_of_device(p.environment.device_name) for p in profiles}
    if len(kinds) != 1 or None in kinds:
        raise SystemExit(f"profiles of one known GPU kind are needed, found {kinds}")
    gpu_name = kinds.pop().name
    default = default_time_model(SweepSettings((1,), (1,), target="cuda", target_gpu=gpu_name))
    title = f"{gpu_name}: {len(profiles)} measured profiles"
    return title, leave_one_model_out(group_steps(profiles, "cuda"), default)


# the CPU's peaks a folder of measured profiles was measured with (`cpu_peaks` at one thread, written beside the
# profiles when they are measured): the table depends only on these committed figures and the code, never on how
# busy the machine that evaluates is
PEAKS_FILE = "cpu-peaks.json"


def measure_cpu(out: Path) -> None:
    """Profile every CPU_MODELS entry not yet in `out` at one thread, with this CPU's peaks beside them."""
    from dataclasses import asdict

    from layerprof.predict.timemodel import cpu_peaks

    out.mkdir(parents=True, exist_ok=True)
    if not (out / PEAKS_FILE).exists():
        (out / PEAKS_FILE).write_text(json.dumps(asdict(cpu_peaks(1)), indent=2) + "\n")
    for name, model, batches, layers in CPU_MODELS:
        path = out / f"{name}.json"
        if path.exists():
            continue
        command = [sys.executable, "-m", "layerprof", "profile", *model, "--batch-sizes", batches, "--layers",
                   layers, "--threads", "1", "--warmup", "3", "--min-steps", "10", "--steps", "20",
                   "--max-time", "120", "--out", str(path)]  # fmt: skip
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        print(f"  measured {name}: exit {done.returncode} in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)


def recorded_peaks(path: Path):  # noqa: ANN201 - the DevicePeaks of the code under test (this tree's or --before's)
    """The peaks stored in `path` (a DevicePeaks as JSON), as the DevicePeaks of the code that runs: fields that
    code does not know (the cache levels, for code from before them) are left out."""
    from dataclasses import fields

    from layerprof.predict.timemodel import DevicePeaks

    stored = json.loads(path.read_text())
    known = {field.name for field in fields(DevicePeaks)}
    return DevicePeaks(**{key: value for key, value in stored.items() if key in known})


def peaks_of(folder: Path, given: Path | None) -> Path:
    """Where the peaks of a CPU run come from: `--peaks FILE`, else the folder's own PEAKS_FILE, else this CPU's
    measured (or cached) now, written under build/ (a busy machine moves those: the title says so)."""
    if given is not None:
        return given
    if (folder / PEAKS_FILE).exists():
        return folder / PEAKS_FILE
    from dataclasses import asdict

    from layerprof.predict.timemodel import cpu_peaks

    BUILD.mkdir(parents=True, exist_ok=True)
    (BUILD / PEAKS_FILE).write_text(json.dumps(asdict(cpu_peaks(1))))
    return BUILD / PEAKS_FILE


def cpu_rows(folder: Path, peaks_path: Path) -> tuple[str, list[dict]]:
    """The held-out rows of the profiles in `folder`, predicted with the peaks stored in `peaks_path`."""
    from layerprof.predict.timemodel import Numerics

    profiles = profiles_in([folder])
    default = TimeModel.default(recorded_peaks(peaks_path), Numerics.current())
    origin = "measured now" if peaks_path.parent == BUILD else f"from {peaks_path.name}"
    peaks = default.peaks
    levels = ", ".join(f"{n} {b // 1024} KiB {r:.0f} GB/s" for n, b, r in getattr(peaks, "caches", ()))
    title = (f"this CPU ({peaks.name}), 1 thread: {len(profiles)} measured profiles; peaks {origin}: "
             f"{peaks.fp32_tflops * 1e3:.0f} GFLOP/s fp32, memory {peaks.memory_gbps:.1f} GB/s"
             + (f"; {levels}" if levels else ""))  # fmt: skip
    return title, leave_one_model_out(group_steps(profiles, "cpu"), default)


def before_rows(ref: str, mode: str, args: list[str]) -> list[dict]:
    """The rows of this benchmark run on the code of commit `ref` (`git archive` into build/), in a subprocess;
    on a CPU with the same peaks as this tree's run (`--peaks`, which the caller resolves), never its own."""
    tree = BUILD / f"src-{ref}"
    if not tree.exists():
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "layerprof"], capture_output=True,
                                 check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, __file__, mode, *args, "--json"], env=env, capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"the run on {ref} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)["rows"]


def option(rest: list[str], name: str) -> tuple[str | None, list[str]]:
    """The value of `name VALUE` in `rest`, and `rest` without the two."""
    if name not in rest:
        return None, rest
    at = rest.index(name)
    return rest[at + 1], rest[:at] + rest[at + 2 :]


DEFAULT_ONLY = False


def main(argv: list[str]) -> None:
    global DEFAULT_ONLY  # noqa: PLW0603 - one flag for the whole run
    mode, rest = (argv[0], argv[1:]) if argv else ("gpu", [])
    DEFAULT_ONLY = "--default-only" in rest
    rest = [a for a in rest if a != "--default-only"]
    as_json = "--json" in rest
    rest = [a for a in rest if a != "--json"]
    ref, rest = option(rest, "--before")
    if mode == "gpu":
        title, rows = gpu_rows([Path(p) for p in rest] or H200)
    elif mode == "cpu":
        import torch

        torch.set_num_threads(1)
        given, rest = option(rest, "--from")
        peaks, rest = option(rest, "--peaks")
        folder = Path(given).resolve() if given else BUILD / "cpu"
        if not given:
            measure_cpu(folder)
        peaks_path = peaks_of(folder, Path(peaks).resolve() if peaks else None)
        title, rows = cpu_rows(folder, peaks_path)
        rest = ["--from", str(folder), "--peaks", str(peaks_path)]  # --before: the very same peaks
    else:
        raise SystemExit(
            "usage: bench_time_model.py gpu [DIR...] [--before REF] | cpu [--from DIR] [--peaks FILE] [--before REF]"
        )
    if as_json:
        print(json.dumps({"title": title, "rows": rows}))
        return
    print(title)
    print_table(rows, None, None)  # this tree's first: the earlier commit's run takes as long again
    if ref:
        print(flush=True)
        print_table(rows, before_rows(ref, mode, rest), ref)


if __name__ == "__main__":
    main(sys.argv[1:])
