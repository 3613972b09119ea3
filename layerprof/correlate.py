"""Does a low rung rank hyperparameters like full training? Rank correlation over (trainable layers x budget).

Every configuration of a grid is trained at each chosen trainable-layer count z and budget fraction; each
cell's losses are ranked against full fidelity (the largest z at the full budget). Trials are appended to
`trials.jsonl` as they finish, so a rerun of the same command runs only what is missing.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from layerprof.errors import LayerprofError, read_json
from layerprof.grids import GRID_PRESETS, HYPERPARAMETERS, expand_grid, load_grid
from layerprof.parsing import LayerSelection

# ---------------------------------------------------------------- grids


EXECUTORS = ("local", "ray")

# ---------------------------------------------------------------- statistics


def average_ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    mean_x, mean_y = sum(x) / n, sum(y) / n
    covariance = sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y, strict=True))
    spread_x = math.sqrt(sum((a - mean_x) ** 2 for a in x))
    spread_y = math.sqrt(sum((b - mean_y) ** 2 for b in y))
    return covariance / (spread_x * spread_y) if spread_x and spread_y else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return _pearson(average_ranks(x), average_ranks(y))


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else math.nan


def bootstrap_interval(
    x: Sequence[float], y: Sequence[float], statistic: Callable, repeats: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95% interval of `statistic` over configurations resampled with replacement."""
    generator = random.Random(seed)
    n = len(x)
    samples = []
    for _ in range(repeats):
        index = [generator.randrange(n) for _ in range(n)]
        value = statistic([x[i] for i in index], [y[i] for i in index])
        if not math.isnan(value):
            samples.append(value)
    if not samples:
        return math.nan, math.nan
    samples.sort()
    return samples[int(0.025 * (len(samples) - 1))], samples[int(math.ceil(0.975 * (len(samples) - 1)))]


# ---------------------------------------------------------------- trials


@dataclass(frozen=True)
class Trial:
    config_index: int
    trainable_layers: int
    budget_fraction: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.config_index}/{self.trainable_layers}/{self.budget_fraction:g}/{self.seed}"


@dataclass
class TrialResult:
    config_index: int
    trainable_layers: int
    budget_fraction: float
    seed: int
    loss: float | None
    error: str | None = None
    seconds: float = 0.0


def run_trial(task_spec: str, config: dict[str, Any], trial: Trial) -> TrialResult:
    """Run in a worker: seed everything, call the task, turn failures and NaN into a failed result."""
    import time

    import torch

    torch.set_num_threads(1)  # one trial per core
    random.seed(trial.seed)
    torch.manual_seed(trial.seed)
    began = time.perf_counter()
    try:
        task = resolve_task(task_spec)
        loss = float(task({**config, "seed": trial.seed}, trial.trainable_layers, trial.budget_fraction))
        if not math.isfinite(loss):
            return TrialResult(
                **_fields(trial), loss=None, error=f"returned {loss}", seconds=time.perf_counter() - began
            )
        return TrialResult(**_fields(trial), loss=loss, seconds=time.perf_counter() - began)
    except Exception as error:  # noqa: BLE001 - a failing configuration is data, not a crash
        message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        return TrialResult(**_fields(trial), loss=None, error=message, seconds=time.perf_counter() - began)


def _fields(trial: Trial) -> dict[str, Any]:
    return {
        "config_index": trial.config_index,
        "trainable_layers": trial.trainable_layers,
        "budget_fraction": trial.budget_fraction,
        "seed": trial.seed,
    }


def resolve_task(spec: str) -> Callable[[dict[str, Any], int, float], float]:
    from layerprof.tasks import TASKS

    if spec in TASKS:
        return TASKS[spec]
    if ":" in spec:
        from layerprof.models import load_factory

        return load_factory(spec)
    raise LayerprofError(f"unknown task {spec!r}; built-in: {', '.join(TASKS)}, or path/to/file.py:fn")


def task_layer_count(task: Callable) -> int | None:
    count = getattr(task, "layer_count", None)
    return int(count) if count is not None else None


# ---------------------------------------------------------------- store


def read_trials(path: Path) -> dict[str, TrialResult]:
    """Finished trials by key; a line torn by a crash is skipped (that trial runs again on resume)."""
    results: dict[str, TrialResult] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            result = TrialResult(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue
        trial = Trial(result.config_index, result.trainable_layers, result.budget_fraction, result.seed)
        results[trial.key] = result
    return results


class TrialStore:
    """`trials.jsonl` in the output directory, one finished trial per line, for resuming."""

    def __init__(self, directory: Path, identity: dict[str, Any]) -> None:
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LayerprofError(f"cannot create {str(directory)!r}: {error.strerror or error}") from None
        self.path = directory / "trials.jsonl"
        meta = directory / "study.json"
        if meta.exists():
            existing = read_json(meta, "study description", "the study.json `layerprof correlate` writes")
            if not isinstance(existing, dict) or existing.get("fingerprint") != identity["fingerprint"]:
                raise LayerprofError(
                    f"{str(directory)!r} holds a study of another task or grid; use a new --out directory"
                )
        else:
            meta.write_text(json.dumps(identity, indent=2) + "\n")

    def load(self) -> dict[str, TrialResult]:
        return read_trials(self.path) if self.path.exists() else {}

    def append(self, result: TrialResult) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(result)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


# ---------------------------------------------------------------- the study


@dataclass
class CellStatistics:
    trainable_layers: int
    budget_fraction: float
    configs: int  # configurations with a loss here and at full fidelity
    spearman: float | None
    spearman_low: float | None
    spearman_high: float | None
    kendall: float | None
    kendall_low: float | None
    kendall_high: float | None
    regret: float | None  # full-fidelity loss of this cell's best configuration minus the best full loss
    note: str = ""


CORRELATION_SCHEMA = "layerprof.correlation/2"
CORRELATION_SCHEMA_V1 = "layerprof.correlation/1"  # called the z values `layers`


@dataclass
class CorrelationResult:
    task: str
    configs: list[dict[str, Any]]
    trainable_layer_counts: list[int]
    budget_fractions: list[float]
    seeds: int
    cells: list[CellStatistics] = field(default_factory=list)
    failed_trials: int = 0
    wall_seconds: float = 0.0
    executor: str = "local"

    def cell(self, trainable_layers: int, budget_fraction: float) -> CellStatistics | None:
        return next(
            (c for c in self.cells if c.trainable_layers == trainable_layers and c.budget_fraction == budget_fraction),
            None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"schema": CORRELATION_SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "result") -> CorrelationResult:
        if data.get("schema") not in (CORRELATION_SCHEMA, CORRELATION_SCHEMA_V1):
            raise LayerprofError(f"{source} is not a layerprof correlation result")
        payload = {k: v for k, v in data.items() if k not in ("schema", "cells")}
        if data["schema"] == CORRELATION_SCHEMA_V1:
            payload["trainable_layer_counts"] = payload.pop("layers")
        return cls(cells=[CellStatistics(**cell) for cell in data["cells"]], **payload)


@dataclass(frozen=True)
class StudyPlan:
    """What a study trains: every configuration at every (z, budget fraction), `seeds` times."""

    task: str
    configs: list[dict[str, Any]]
    trainable_layer_counts: tuple[int, ...]
    budget_fractions: tuple[float, ...]
    seeds: int = 1

    @property
    def trial_count(self) -> int:
        return len(self.configs) * len(self.trainable_layer_counts) * len(self.budget_fractions) * self.seeds

    def trials(self) -> list[Trial]:
        """Cheap trials first, so that an interrupted study has its low rungs."""
        return [
            Trial(index, z, fraction, seed)
            for z in sorted(self.trainable_layer_counts)
            for fraction in sorted(self.budget_fractions)
            for index in range(len(self.configs))
            for seed in range(self.seeds)
        ]


# `--layers` when none is given: 1, 2, 4 and full training, those of them the task has
DEFAULT_LAYER_COUNTS = (1, 2, 4)


def plan_study(
    task: str,
    layer_selection: LayerSelection | None,
    budget_fractions: Sequence[float],
    seeds: int = 1,
    grid: Path | None = None,
    grid_preset: str = "small",
) -> StudyPlan:
    """The configurations (a grid file, or a preset for a built-in task) and the cells a study covers."""
    from layerprof.tasks import TASKS

    function = resolve_task(task)
    builtin = task in TASKS
    if grid is not None:
        space = load_grid(grid, HYPERPARAMETERS if builtin else None)
    elif builtin:
        if grid_preset not in GRID_PRESETS:
            raise LayerprofError(f"--grid-preset {grid_preset!r}: choose one of {', '.join(GRID_PRESETS)}")
        space = GRID_PRESETS[grid_preset](task)
    else:
        raise LayerprofError("a user task needs --grid FILE (the presets name built-in hyperparameters)")
    count = task_layer_count(function)
    if count is None and (layer_selection is None or layer_selection.mentions_all):
        raise LayerprofError(
            f"{task} does not say how many layers it has (set fn.layer_count); give --layers as numbers"
        )
    if layer_selection is None:
        assert count is not None
        zs = tuple(sorted({z for z in DEFAULT_LAYER_COUNTS if z < count} | {count}))
    else:
        zs = layer_selection.resolve(count)
    return StudyPlan(task, expand_grid(space), zs, tuple(sorted(budget_fractions)), seeds)


def run_local(
    task_spec: str,
    configs: list[dict[str, Any]],
    trials: list[Trial],
    workers: int,
    on_result: Callable[[TrialResult], None],
) -> None:
    """Worker processes (spawned, one torch thread each); results stream back as they finish."""
    import multiprocessing

    if workers <= 1:
        for trial in trials:
            on_result(run_trial(task_spec, configs[trial.config_index], trial))
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: set[Future] = set()
        queue: Iterator[Trial] = iter(trials)
        try:
            for trial in itertools.islice(queue, workers * 2):
                pending.add(pool.submit(run_trial, task_spec, configs[trial.config_index], trial))
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    on_result(future.result())
                for trial in itertools.islice(queue, len(done)):
                    pending.add(pool.submit(run_trial, task_spec, configs[trial.config_index], trial))
        except BaseException:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def run_ray(
    task_spec: str,
    configs: list[dict[str, Any]],
    trials: list[Trial],
    on_result: Callable[[TrialResult], None],
    address: str | None,
    gpu_fraction: Callable[[int], float] | None = None,
) -> None:
    """Each trial a Ray task asking for the GPU share its rung needs (memory-parallel halving, Figure 6b)."""
    from layerprof.cluster import connect, import_ray

    ray = import_ray()
    started_here = connect(address)  # an unreachable address fails in seconds, as for profile and plan
    try:
        remote = ray.remote(run_trial)
        futures = {}
        for trial in trials:
            options = {"num_cpus": 1}
            if gpu_fraction is not None:
                options["num_gpus"] = gpu_fraction(trial.trainable_layers)
            futures[remote.options(**options).remote(task_spec, configs[trial.config_index], trial)] = trial
        remaining = list(futures)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            on_result(ray.get(done[0]))
    finally:
        if started_here:  # a connection (or a local instance) this call opened is closed by it
            ray.shutdown()


def summarise(plan: StudyPlan, results: dict[str, TrialResult]) -> list[CellStatistics]:
    """Mean loss over seeds per configuration and cell, then rank statistics against full fidelity."""

    def mean_loss(index: int, z: int, fraction: float) -> float | None:
        losses = [
            results[key].loss
            for seed in range(plan.seeds)
            if (key := Trial(index, z, fraction, seed).key) in results and results[key].loss is not None
        ]
        return sum(losses) / len(losses) if losses else None

    full_z, full_fraction = max(plan.trainable_layer_counts), max(plan.budget_fractions)
    configs = range(len(plan.configs))
    full = [mean_loss(i, full_z, full_fraction) for i in configs]
    cells = []
    for z in sorted(plan.trainable_layer_counts):
        for fraction in sorted(plan.budget_fractions):
            low = [mean_loss(i, z, fraction) for i in configs]
            pairs = [(a, b) for a, b in zip(low, full, strict=True) if a is not None and b is not None]
            cell = CellStatistics(z, fraction, len(pairs), None, None, None, None, None, None, None)
            if len(pairs) < 3:
                cell.note = f"rho undefined: {len(pairs)} configuration(s) succeeded here and at full fidelity, need 3"
            else:
                x, y = [a for a, _ in pairs], [b for _, b in pairs]
                cell.spearman, cell.kendall = spearman(x, y), kendall_tau_b(x, y)
                cell.spearman_low, cell.spearman_high = bootstrap_interval(x, y, spearman)
                cell.kendall_low, cell.kendall_high = bootstrap_interval(x, y, kendall_tau_b, repeats=300)
                best_here = min(range(len(pairs)), key=lambda i: x[i])
                cell.regret = y[best_here] - min(y)
                for name in ("spearman", "kendall", "spearman_low", "spearman_high", "kendall_low", "kendall_high"):
                    if isinstance(getattr(cell, name), float) and math.isnan(getattr(cell, name)):
                        setattr(cell, name, None)
                if cell.spearman is None:
                    cell.note = "rho undefined: every configuration has the same loss"
            cells.append(cell)
    return cells


def fingerprint(task: str, configs: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps([task, configs], sort_keys=True).encode()).hexdigest()[:16]


def run_study(
    plan: StudyPlan,
    directory: Path,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    on_result: Callable[[TrialResult, int, int], None] | None = None,
    gpu_fraction: Callable[[int], float] | None = None,
) -> CorrelationResult:
    """Run what is missing, then summarise; every finished trial is on disk before the next is reported."""
    import time

    if len(plan.configs) < 3:
        raise LayerprofError(f"the grid has {len(plan.configs)} configuration(s); rank correlation needs at least 3")
    if any(not 0 < f <= 1 for f in plan.budget_fractions):
        raise LayerprofError("--budget-fractions must lie in (0, 1]")
    store = TrialStore(
        directory,
        {"task": plan.task, "configs": plan.configs, "fingerprint": fingerprint(plan.task, plan.configs)},
    )
    results = store.load()
    planned = plan.trials()
    missing = [trial for trial in planned if trial.key not in results]
    done_before = len(planned) - len(missing)
    began = time.perf_counter()

    def record(result: TrialResult) -> None:
        store.append(result)
        trial = Trial(result.config_index, result.trainable_layers, result.budget_fraction, result.seed)
        results[trial.key] = result
        if on_result:
            on_result(result, len(results), len(planned))

    if executor == "ray":
        run_ray(plan.task, plan.configs, missing, record, address, gpu_fraction)
    elif executor == "local":
        count = workers or min(len(missing), os.cpu_count() or 1) or 1
        run_local(plan.task, plan.configs, missing, count, record)
    else:
        raise LayerprofError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    result = CorrelationResult(
        task=plan.task,
        configs=plan.configs,
        trainable_layer_counts=sorted(plan.trainable_layer_counts),
        budget_fractions=sorted(plan.budget_fractions),
        seeds=plan.seeds,
        executor=executor,
        wall_seconds=time.perf_counter() - began,
    )
    result.cells = summarise(plan, results)
    result.failed_trials = sum(1 for t in planned if results.get(t.key) and results[t.key].loss is None)
    if done_before:
        result.executor += f" (resumed: {done_before} of {len(planned)} trials were on disk)"
    return result


def write_outputs(result: CorrelationResult, directory: Path) -> list[Path]:
    """result.json, cells.csv and heatmap.png."""
    import csv

    json_path = directory / "result.json"
    json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    csv_path = directory / "cells.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(result.cells[0])))
        writer.writeheader()
        for cell in result.cells:
            writer.writerow(asdict(cell))
    return [json_path, csv_path, heatmap_png(result, directory / "heatmap.png")]


def heatmap_png(result: CorrelationResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zs, fractions = result.trainable_layer_counts, result.budget_fractions
    grid = [[math.nan] * len(fractions) for _ in zs]
    for cell in result.cells:
        value = cell.spearman if cell.spearman is not None else math.nan
        grid[zs.index(cell.trainable_layers)][fractions.index(cell.budget_fraction)] = value
    figure, axes = plt.subplots(figsize=(max(5.5, 1.3 * len(fractions) + 3), 0.6 * len(zs) + 2.2))
    image = axes.imshow(grid, cmap="viridis", vmin=-1, vmax=1, origin="lower", aspect="auto")
    for row in range(len(zs)):
        for column in range(len(fractions)):
            value = grid[row][column]
            text = "n/a" if math.isnan(value) else f"{value:.2f}"
            axes.text(column, row, text, ha="center", va="center", color="white" if value < 0.5 else "black")
    axes.set_xticks(range(len(fractions)), [f"{f:g}" for f in fractions])
    axes.set_yticks(range(len(zs)), [str(z) for z in zs])
    axes.set_xlabel("training budget (fraction of full)")
    axes.set_ylabel("trainable layers z")
    axes.set_title(
        f"Spearman's ρ against full fidelity\n{result.task}, {len(result.configs)} configurations", fontsize=10
    )
    figure.colorbar(image, ax=axes, label="Spearman's ρ")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def load_result(path: Path) -> CorrelationResult:
    data = read_json(path, "correlation result", "a result.json written by `layerprof correlate`")
    return CorrelationResult.from_dict(data, source=repr(str(path)))
