"""Speed of `estimate` and `fit`: the old paths (every cell and every layer traced; each z's fit searched from the
smallest batch) beside the new ones (runs of alike z composed from traced anchors; frozen layers, trainable blocks
with their backward and optimizer steps replayed from an alike one's record, a trainable block's record at a new
batch size scaled from two others and checked against its own trace; each z's search seeded by the z before it),
in one run, with a check that the answers are identical.

    .venv/bin/python benchmarks/bench_estimate_speed.py                       # the issue's figures (minutes)
    .venv/bin/python benchmarks/bench_estimate_speed.py --smoke               # tiny models, seconds
    taskset -c 1 .venv/bin/python benchmarks/bench_estimate_speed.py --cli OLD_CHECKOUT   # the commands, end to end

`--cli OLD_CHECKOUT` runs the issue's three commands as a user does (`python -m layerprof ...`, start-up
included) in this checkout and in OLD_CHECKOUT (e.g. `git worktree add /tmp/old main`), one after the other, each
in its own checkout's folder; it prints wall and CPU seconds (the process's, which a busy machine disturbs less
than wall time) and checks that both answer the same: the estimate's rows and `fit --json`.

Targets (a quiet 2-core machine): `estimate pythia-1.4b --batch-sizes 1 --seq-len 2048` (27 z) under 8 s,
pythia-12b (39 z) under 20 s, `fit pythia-1.4b --gpu H100 --seq-len 2048` under 15 s. Take the figures on a
quiet machine: every figure here is wall time.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

COMPARED_EXACTLY = ("estimate_basis", "predicted_step_time_ms", "predicted_device_time_ms",
                    "predicted_host_time_ms", "predicted_host_bound")  # fmt: skip


@dataclass(frozen=True)
class Case:
    kind: str  # "estimate" | "fit"
    spec: str
    seq_len: int | None
    batch_sizes: tuple[int, ...] = (1,)
    gpu: str = "H100"


FULL = (
    Case("estimate", "pythia-1.4b", 2048),
    Case("estimate", "pythia-12b", 2048),
    Case("fit", "pythia-1.4b", 2048),
)
SMOKE = (
    Case("estimate", "pythia-14m", 128, (1, 4)),
    Case("fit", "pythia-14m", 96, gpu="T4"),
)


def estimate_pair(case: Case) -> tuple[float, float, str]:
    from layerprof.predict.calibration import default_time_model
    from layerprof.predict.estimate import estimate_model
    from layerprof.profile import SweepSettings
    from layerprof.sources.models import ModelOptions, split_without_memory

    options = ModelOptions(seq_len=case.seq_len)
    n = len(split_without_memory(case.spec, options)[1])
    settings = SweepSettings(case.batch_sizes, tuple(range(1, n + 1)), mode="estimate", target="cuda")
    time_model = default_time_model(settings)
    began = time.perf_counter()
    old = estimate_model(case.spec, options, settings, time_model=time_model, compose=False, reuse=False)
    old_s = time.perf_counter() - began
    began = time.perf_counter()
    new = estimate_model(case.spec, options, settings, time_model=time_model)
    new_s = time.perf_counter() - began
    differences = []
    for traced, row in zip(old.rows, new.rows, strict=True):
        ours, theirs = asdict(row), asdict(traced)
        exact = [name for name in ours if name not in COMPARED_EXACTLY and ours[name] != theirs[name]]
        if exact:
            differences.append(f"{row.key}: {', '.join(exact)}")
        if row.estimate_basis == "traced" and row.predicted_step_time_ms != traced.predicted_step_time_ms:
            differences.append(f"{row.key}: predicted_step_time_ms of a traced row")
    composed = sum(row.estimate_basis == "composed" for row in new.rows)
    verdict = "identical" if not differences else f"DIFFERENT: {'; '.join(differences[:5])}"
    return old_s, new_s, f"{composed} of {len(new.rows)} cells composed; figures {verdict}"


def fit_pair(case: Case) -> tuple[float, float, str]:
    from layerprof.devices import gpu_kind, gpu_memory_bytes
    from layerprof.parsing import LayerSelection
    from layerprof.predict.fit import fit_model
    from layerprof.profile import SweepSettings
    from layerprof.sources.models import ModelOptions

    options = ModelOptions(seq_len=case.seq_len)
    settings = SweepSettings((1,), (1,), mode="estimate", target="cuda", target_gpu=gpu_kind(case.gpu).name)
    budget = gpu_memory_bytes(case.gpu)
    runs: list[Any] = []
    seconds = []
    for seeded in (False, True):
        began = time.perf_counter()
        runs.append(fit_model(case.spec, options, settings, budget, LayerSelection("all"), seeded=seeded, reuse=seeded))
        seconds.append(time.perf_counter() - began)
    old, new = runs
    # the largest batch and its need must be identical; a composed z has no predicted step time (nothing traced)
    same = all(
        (a.trainable_layers, a.largest_batch_size, a.need_at_largest_bytes)
        == (b.trainable_layers, b.largest_batch_size, b.need_at_largest_bytes)
        and (b.composed or a.predicted_step_time_ms == b.predicted_step_time_ms)
        for a, b in zip(old.results, new.results, strict=True)
    )
    verdict = "identical" if same else "DIFFERENT"
    composed = sum(r.composed for r in new.results)
    return seconds[0], seconds[1], f"traces {old.traces} -> {new.traces}, {composed} z composed; answers {verdict}"


def cli_commands(model: str, seq_len: int, gpu: str) -> dict[str, list[str]]:
    """The issue's commands, as a user runs them (the smoke run: a small model); the estimate writes its profile to
    compare rows."""
    estimate = ["estimate", model, "--batch-sizes", "1", "--seq-len", str(seq_len)]
    fit = ["fit", model, "--gpu", gpu, "--seq-len", str(seq_len)]
    return {
        "layerprof --help": ["--help"],
        " ".join(estimate): [*estimate, "--out", "{out}/estimate.json"],
        " ".join(fit): [*fit, "--json"],
    }


def run_cli(checkout: Path, arguments: list[str], out: Path) -> tuple[float, float, Any]:
    """One command in `checkout` (its folder first on the path, as `python -m` puts it): wall seconds, CPU
    seconds of the process, and its answer (the estimate's rows, fit's JSON, the help's text)."""
    import json
    import os
    import resource
    import shutil
    import subprocess

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    command = [sys.executable, "-m", "layerprof", *(a.format(out=out) for a in arguments)]
    environment = {**os.environ, "PYTHONPATH": str(checkout), "COLUMNS": "120"}
    environment.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's install has its bytecode compiled
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    result = subprocess.run(command, cwd=checkout, env=environment, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {checkout}: {result.stderr[-2000:]}")
    if "--json" in arguments:
        answer: Any = json.loads(result.stdout)
    elif (out / "estimate.json").exists():
        answer = json.loads((out / "estimate.json").read_text())["rows"]
    else:
        answer = result.stdout
    return wall, cpu, answer


def same_answer(old: Any, new: Any) -> bool:
    """Equal answers; a fit's composed z may have gained a predicted step time where the old code had none, and
    its `traces` (how many fake-tensor steps the search ran: a cost, not an answer) may be fewer."""
    if isinstance(old, dict) and isinstance(new, dict) and "results" in old and "results" in new:
        old, new = dict(old), dict(new)
        old.pop("traces", None)
        new.pop("traces", None)
        old_results, new_results = old.pop("results"), new.pop("results")
        if old != new or len(old_results) != len(new_results):
            return False
        for a, b in zip(old_results, new_results, strict=True):
            if b.get("composed") and a.get("predicted_step_time_ms") is None:
                a, b = {**a, "predicted_step_time_ms": None}, {**b, "predicted_step_time_ms": None}
            if a != b:
                return False
        return True
    return old == new


def cli_main(old: Path, smoke: bool, repeats: int) -> int:
    """The commands end to end, the old checkout's beside this one's (best of `repeats`)."""
    import tempfile

    new = Path(__file__).resolve().parents[1]
    failed = False
    print(f"{'command':56s} {'old wall':>9s} {'new wall':>9s} {'old CPU':>8s} {'new CPU':>8s}  answers")
    with tempfile.TemporaryDirectory() as scratch:
        for label, arguments in (
            cli_commands("pythia-14m", 64, "T4") if smoke else cli_commands("pythia-1.4b", 2048, "H100")
        ).items():
            figures = {}
            for name, checkout in (("old", old), ("new", new)):
                runs = [run_cli(checkout, arguments, Path(scratch) / name) for _ in range(repeats)]
                figures[name] = (min(r[0] for r in runs), min(r[1] for r in runs), runs[0][2])
            same = label == "layerprof --help" or same_answer(figures["old"][2], figures["new"][2])
            failed |= not same
            (old_wall, old_cpu, _), (new_wall, new_cpu, _) = figures["old"], figures["new"]
            verdict = "identical" if same else "DIFFERENT"
            if isinstance(figures["new"][2], dict) and "traces" in figures["new"][2]:
                verdict += f" (traces {figures['old'][2].get('traces')} -> {figures['new'][2]['traces']})"
            print(f"{label:56s} {old_wall:9.2f} {new_wall:9.2f} {old_cpu:8.2f} {new_cpu:8.2f}  {verdict}", flush=True)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models only (a check that it runs)")
    parser.add_argument("--cli", type=Path, metavar="OLD_CHECKOUT", help="the commands end to end, old beside new")
    parser.add_argument("--repeats", type=int, default=1, help="--cli: runs of each command (the best is shown)")
    args = parser.parse_args()
    if args.cli is not None:
        return cli_main(args.cli, args.smoke, args.repeats)
    failed = False
    print(f"{'case':44s} {'old (s)':>8s} {'new (s)':>8s} {'speed-up':>8s}  answers")
    for case in SMOKE if args.smoke else FULL:
        old_s, new_s, note = (estimate_pair if case.kind == "estimate" else fit_pair)(case)
        sizes = ",".join(map(str, case.batch_sizes))
        tail = f" --batch-sizes {sizes}" if case.kind == "estimate" else f" --gpu {case.gpu}"
        label = f"{case.kind} {case.spec} --seq-len {case.seq_len}{tail}"
        print(f"{label:44s} {old_s:8.1f} {new_s:8.1f} {old_s / new_s:7.1f}x  {note}", flush=True)
        failed |= "DIFFERENT" in note
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
