"""Which fidelity path finds a good configuration for the least? Successive halving and Hyperband replayed on the
trials a correlate study recorded, without training anything (the paper's Table 3, as a distribution).

A path is a list of study cells (trainable layers z, budget fraction), one per rung. Each repeat samples the
starting configurations (and a seed for each where the study has several), halves them on the recorded losses
and judges the pick by its full-fidelity loss (the study's largest z at the full budget, averaged over seeds):
regret is that loss minus the best configuration's. Every path is run twice: from scratch (every trial trains
anew at its rung, as the paper evaluates fidelities) and continued (a promoted trial trains on from its previous
rung, as Ray Tune, Optuna's pruners and NePS run halving on steps), each on what the study recorded for it. A
rung costs its trials' recorded training seconds (set-up left out, where the study recorded it apart); a profile
of the task's model prices the same trials on a GPU (step time x steps, FLOPs, memory, and trials side by side
as memory allows).
"""

from __future__ import annotations

import heapq
import json
import math
import random
import statistics
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal, TypedDict

from layerprof.devices import CUDA_CONTEXT_RESERVE_BYTES, GpuKind, PriceBook, kind_of_device
from layerprof.errors import LayerprofError, read_json
from layerprof.fidelity.correlate import (
    ContinuedResult,
    SegmentResult,
    TrialResult,
    chain_label,
    check_study_meta,
    read_records,
    resolve_task,
    serving,
    task_layer_count,
)
from layerprof.fidelity.grids import Config
from layerprof.fidelity.judging import (
    SAME_SEED_WARNING,
    Fold,
    JudgeMode,
    NoiseFloor,
    OverFolds,
    judge_folds,
    judge_mode,
    rank_and_regret,
)
from layerprof.fidelity.ladder import (
    Bracket,
    Ladder,
    build_ladder,
    default_cost,
    hyperband,
    memory_need_bytes,
    successive_halving,
    time_scale,
)
from layerprof.fidelity.trials import (
    PATHS,
    PROFILE_PATHS,
    Chain,
    FidelityPath,
    GridCell,
    match_fraction,
    segments,
    step_at,
    study_paths,
)
from layerprof.parsing import check_eta
from layerprof.precision import get_precision
from layerprof.profile import JsonDict, Profile, Row
from layerprof.stats import (
    mean_confidence_interval,
    quantile,
    quantile_confidence_interval,
    share_confidence_interval,
)

SIMULATION_SCHEMA = "layerprof.simulation/3"  # adds the judge (held-out or same-seed) and the noise floor
BASELINE_PATH = "budget"  # costs are shown relative to halving on training budget alone, at full z
REGRET_QUANTILES = (0.05, 0.95)  # the 90% interval of regret over repeats
# Repeats until stable: batches of REPEAT_BATCH until every figure's 95% Monte-Carlo interval is narrow enough,
# at most MAX_REPEATS. Narrow enough: a regret quantile within REGRET_TOLERANCE of the study's worst regret, the
# share that found the best within SHARE_TOLERANCE either way, the mean cost within COST_TOLERANCE (relative), the
# mean regret within REGRET_TOLERANCE of the worst regret either way.
REPEAT_BATCH = 1000
MAX_REPEATS = 32_000
DRAWN_LIMIT = 1_000_000  # candidates a replay keeps for the next path (8 bytes each, ~200 per draw: <= ~25 MB)
REGRET_TOLERANCE = 0.01
SHARE_TOLERANCE = 0.01
COST_TOLERANCE = 0.01

# what a trial's recorded cost is: training, its evaluation and a continued run's checkpoints (set-up left out), or
# the whole trial (a study recorded before set-up was kept apart)
Seconds = Literal["training", "total"]
Runs = Literal["recorded", "assumed"]  # continued losses and seconds: from continued runs, or from scratch ones
# How an asynchronous halving decides, when a trial reaches a rung, whether it goes on (ASHA as the libraries run
# it: decided once, on arrival). optuna: SuccessiveHalvingPruner, the trial is among the best floor(n / eta) of
# the n recorded at the rung, itself included (the best so far while n < eta); ray: ASHAScheduler, its loss is at
# most the 1/eta quantile (numpy's linear interpolation) of the losses recorded there before it (the first goes on).
PromotionRule = Literal["optuna", "ray"]
PROMOTION_RULES: tuple[PromotionRule, ...] = ("optuna", "ray")
DEFAULT_WORKERS = 4  # trials that run at once in the wall-time figures of simulate (--workers)


# ---------------------------------------------------------------- the recorded study


@dataclass
class CellTable:
    """One cell's recorded trials: loss and seconds per configuration and seed (inf loss where it failed)."""

    losses: list[list[float]]
    seconds: list[list[float]]
    eval_seconds: list[list[float]] | None = None  # the part of `seconds` spent evaluating, where recorded

    def mean_losses(self, positions: Sequence[int] | None = None) -> list[float | None]:
        """Per configuration, the mean over the seeds (at `positions`, else all) that succeeded (None where every
        one failed)."""
        means: list[float | None] = []
        for row in self.losses:
            chosen = row if positions is None else [row[p] for p in positions]
            finite = [loss for loss in chosen if math.isfinite(loss)]
            means.append(sum(finite) / len(finite) if finite else None)
        return means


@dataclass
class RecordedStudy:
    """A correlate study's recorded trials, indexed by configuration, cell and seed."""

    directory: Path
    task: str
    configs: list[Config]
    seeds: list[int]
    trainable_layer_counts: list[int]
    budget_fractions: list[float]
    trials: dict[tuple[int, int, float, int], TrialResult]  # (config, z, fraction, seed)
    continued: dict[tuple[Chain, int, int], ContinuedResult] = field(default_factory=dict)  # (chain, config, seed)
    judge_seeds: list[int] = field(default_factory=list)  # seeds recorded at full fidelity only (--judge-seeds)

    @property
    def folds(self) -> list[Fold]:
        """Who judges whom (`judging.judge_folds`): the judge-only seeds, else each seed the others."""
        return judge_folds(self.seeds, self.judge_seeds)

    def judge_losses(self, seeds: Sequence[int]) -> list[float | None]:
        """Per configuration, the mean full-fidelity loss of `seeds` that succeeded (None where none did)."""
        z, fraction = self.full_cell
        means: list[float | None] = []
        for index in range(len(self.configs)):
            found = [self.trials.get((index, z, fraction, seed)) for seed in seeds]
            losses = [r.loss for r in found if r is not None and r.loss is not None]
            means.append(sum(losses) / len(losses) if losses else None)
        return means

    @property
    def full_cell(self) -> GridCell:
        """(largest z, largest budget fraction): full training, whose losses every pick is judged by."""
        return max(self.trainable_layer_counts), max(self.budget_fractions)

    @property
    def chains(self) -> list[Chain]:
        """The chains continued runs went through, shortest first."""
        return sorted({chain for chain, _, _ in self.continued}, key=lambda c: (len(c), chain_label(c)))

    @cached_property
    def seconds_used(self) -> Seconds:
        """Training seconds where every successful trial and rung recorded them apart from set-up; else the
        whole trials' (a study from before set-up was recorded, or a task that marks no phases)."""
        parts: list[TrialResult | SegmentResult] = [
            *(r for r in self.trials.values() if r.loss is not None),
            *(s for run in self.continued.values() for s in run.segments if s.loss is not None),
        ]
        return "training" if all(part.train_seconds is not None for part in parts) else "total"

    def cost(self, part: TrialResult | SegmentResult) -> float:
        """A trial's (or a continued rung's) recorded seconds as `seconds_used` counts them: its training, its
        one evaluation and (a continued rung) restoring and saving its checkpoint; one that failed before it marked
        any training trained for none."""
        if self.seconds_used == "total":
            return part.seconds
        return sum(getattr(part, name, None) or 0.0 for name in ("train_seconds", "eval_seconds", "checkpoint_seconds"))

    def missing_trials(self, cell: GridCell) -> int:
        """How many (configuration, seed) trials of the cell the study has not recorded; 0 when it is whole."""
        z, fraction = cell
        return sum(
            (index, z, fraction, seed) not in self.trials for index in range(len(self.configs)) for seed in self.seeds
        )

    def table(self, cell: GridCell) -> CellTable:
        """The cell's losses and seconds per configuration and seed; the cell must be whole (KeyError otherwise)."""
        z, fraction = cell
        losses, seconds, evaluations = [], [], []
        for index in range(len(self.configs)):
            results = [self.trials[(index, z, fraction, seed)] for seed in self.seeds]
            losses.append([math.inf if r.loss is None else r.loss for r in results])
            seconds.append([self.cost(r) for r in results])
            evaluations.append([r.eval_seconds or 0.0 if self.seconds_used == "training" else 0.0 for r in results])
        return CellTable(losses, seconds, evaluations)

    def mean_losses(self, cell: GridCell) -> list[float | None]:
        """Per configuration, the cell's mean loss over the seeds that succeeded (None where every seed failed)."""
        return self.table(cell).mean_losses()

    def continued_tables(self, path: Sequence[GridCell]) -> tuple[list[CellTable], Chain] | str:
        """Each rung's table from a chain whose continued runs serve the path (every configuration and seed
        recorded); else why there is none."""
        incomplete = None
        for chain in self.chains:
            blocks = serving(chain, path)
            if blocks is None:
                continue
            runs = [
                [self.continued.get((chain, index, seed)) for seed in self.seeds] for index in range(len(self.configs))
            ]
            absent = sum(run is None for row in runs for run in row)
            if absent:
                planned = len(self.configs) * len(self.seeds)
                incomplete = f"{absent} of {planned} runs through {chain_label(chain)} missing"
                continue
            tables = []
            for block in blocks:
                losses: list[list[float]] = []
                seconds: list[list[float]] = []
                for row in runs:
                    losses.append([_segment_loss(run, block[-1]) for run in row])  # type: ignore[arg-type]
                    seconds.append(
                        [
                            sum(self.cost(run.segments[j]) for j in block if j < len(run.segments))  # type: ignore[union-attr, misc]
                            for run in row
                        ]
                    )
                tables.append(CellTable(losses, seconds))
            return tables, chain
        return incomplete or "not recorded"


def _segment_loss(run: ContinuedResult, position: int) -> float:
    """The loss a continued run reached at a rung; inf where it failed there or before."""
    if position >= len(run.segments) or run.segments[position].loss is None:
        return math.inf
    return run.segments[position].loss  # type: ignore[return-value]


def load_study(path: Path) -> RecordedStudy:
    """A correlate --out directory (or a file in it): study.json names the task and configurations."""
    directory = path if path.is_dir() else path.parent
    meta_path, trials_path = directory / "study.json", directory / "trials.jsonl"
    if not path.exists():
        raise LayerprofError(f"study {str(path)!r} does not exist; give the --out directory of `layerprof correlate`")
    if not meta_path.is_file():
        where = f"{str(directory)!r} is not" if path.is_dir() else f"{str(path)!r} is not in"
        raise LayerprofError(
            f"{where} a correlate study (no study.json); give the --out directory of `layerprof correlate`"
        )
    meta = check_study_meta(
        read_json(meta_path, "study description", "the study.json `layerprof correlate` writes"), meta_path
    )
    task, configs = meta["task"], meta["configs"]
    results, continued = read_records(trials_path) if trials_path.is_file() else ({}, {})
    if not results:
        raise LayerprofError(f"{str(directory)!r} has no finished trials yet; run `layerprof correlate` first")
    trials = {(r.config_index, r.trainable_layers, r.budget_fraction, r.seed): r for r in results.values()}
    full = max(r.trainable_layers for r in results.values()), max(r.budget_fraction for r in results.values())
    cells_by_seed: dict[int, set[GridCell]] = {}
    for r in results.values():
        cells_by_seed.setdefault(r.seed, set()).add((r.trainable_layers, r.budget_fraction))
    # a seed trained at full fidelity only, where others trained more cells, is a judge (correlate --judge-seeds)
    judges = sorted(seed for seed, cells in cells_by_seed.items() if cells == {full})
    judges = judges if len(judges) < len(cells_by_seed) else []
    return RecordedStudy(
        directory=directory,
        task=task,
        configs=configs,
        judge_seeds=judges,
        seeds=sorted(set(cells_by_seed) - set(judges)),
        trainable_layer_counts=sorted({r.trainable_layers for r in results.values()}),
        budget_fractions=sorted({r.budget_fraction for r in results.values()}),
        trials=trials,
        continued={(run.cells, run.config_index, run.seed): run for run in continued.values()},
    )


# ---------------------------------------------------------------- paths


def check_cells(study: RecordedStudy, paths: Sequence[FidelityPath]) -> None:
    """Every cell a path needs must be recorded for every configuration and seed (exit 2 naming the rest)."""
    gaps: dict[GridCell, list[str]] = {}
    for path in paths:
        for cell in path.cells:
            if study.missing_trials(cell):
                gaps.setdefault(cell, []).append(path.name)
    full = study.full_cell
    if study.missing_trials(full):
        gaps.setdefault(full, []).append("full fidelity")
    if not gaps:
        return
    count = _task_layer_count(study.task)
    beyond = sorted((z, users) for (z, _), users in gaps.items() if count is not None and z > count)
    if beyond:
        z, users = beyond[0]
        raise LayerprofError(f"{', '.join(users)}: z={z} is beyond the {count} layers of the task {study.task}")
    shown = "; ".join(
        f"z={z} at budget {fraction:g} ({study.missing_trials((z, fraction))} of "
        f"{len(study.configs) * len(study.seeds)} trials missing; {', '.join(users)})"
        for (z, fraction), users in sorted(gaps.items())
    )
    zs = sorted({*study.trainable_layer_counts, *(z for z, _ in gaps)})
    fractions = sorted({*study.budget_fractions, *(f for _, f in gaps)})
    raise LayerprofError(
        f"the study lacks cells: {shown}. Add them (it resumes): layerprof correlate {study.task} "
        f"--layers {','.join(map(str, zs))} --budget-fractions {','.join(f'{f:g}' for f in fractions)} "
        f"--out {study.directory} (and the same --grid/--grid-preset and --seeds)"
    )


def _task_layer_count(task_spec: str) -> int | None:
    """The layer count the study's task declares, or None where it declares none (or no longer imports)."""
    try:
        return task_layer_count(resolve_task(task_spec))
    except LayerprofError:
        return None


# ---------------------------------------------------------------- prices from a profile


@dataclass
class RungPrice:
    """What one trial of a rung costs on the profiled device."""

    steps: int
    trial_gpu_seconds: float | None  # its training steps and its one evaluation
    trial_flops: float | None
    peak_memory_bytes: int | None
    memory_need_bytes: int | None  # what one trial holds: on CUDA, the reservation plus the context
    parallel_slots: int | None
    eval_gpu_seconds: float | None = None  # the evaluation's part of trial_gpu_seconds (0: the task evaluates none)
    # a continued rung: restoring its checkpoint before it and saving one after it, priced from their bytes at the
    # device's copy rate (part of trial_gpu_seconds; None where the profile cannot price them: not charged)
    checkpoint_gpu_seconds: float | None = None


@dataclass
class Pricing:
    """What trials cost on the profiled device: seconds, FLOPs and memory per rung."""

    profile: Profile
    batch_size: int
    full_steps: int
    gpu_memory_bytes: int | None
    eval_samples: int = 0  # samples the task evaluates after every rung (its `eval_samples`)
    copy_gbps: float | None = None  # the device's copy rate (`copy_rate`), for checkpoints; None: not priced

    def price(self, cell: GridCell, steps: int | None = None) -> RungPrice:
        """One trial of the cell from scratch, or `steps` of it (a continued rung's segment)."""
        z, fraction = cell
        row = next((r for r in self.profile.rows_for(self.batch_size) if r.trainable_layers == z and r.ok), None)
        if row is None:
            raise LayerprofError(
                f"the profile has no successful cell at z={z}, batch size {self.batch_size}; "
                f"profile that z (`layerprof profile ... --batch-sizes {self.batch_size}`)"
            )
        if steps is None:
            steps = step_at(fraction, self.full_steps)  # as the built-in tasks count their steps
        cuda = self.profile.environment.device_kind == "cuda"
        need = memory_need_bytes(row, CUDA_CONTEXT_RESERVE_BYTES if cuda else 0)
        ms = self.profile.step_time_ms(row)
        evaluation = self.eval_seconds(row, ms)
        return RungPrice(
            steps=steps,
            trial_gpu_seconds=None if ms is None or evaluation is None else ms * steps / 1000 + evaluation,
            eval_gpu_seconds=evaluation,
            trial_flops=None if row.flops is None else float(row.flops) * steps,
            peak_memory_bytes=row.peak_memory_bytes,
            memory_need_bytes=need,
            parallel_slots=self.gpu_memory_bytes // need if self.gpu_memory_bytes and need else None,
        )

    def eval_seconds(self, row: Row, step_ms: float | None) -> float | None:
        """One evaluation: its forward passes over `eval_samples` at the batch size, each a step's time scaled by
        the step's share of forward FLOPs (None where the profile lacks a step time or FLOPs)."""
        if not self.eval_samples:
            return 0.0
        if step_ms is None or not row.flops or not row.forward_flops:
            return None
        batches = math.ceil(self.eval_samples / self.batch_size)
        return batches * step_ms * min(1.0, row.forward_flops / row.flops) / 1000

    def continued(self, cells: Sequence[GridCell]) -> list[RungPrice]:
        """Each rung of one continued run through `cells`: its segment's steps, and (where the profile prices
        them) restoring the checkpoint the previous rung saved and saving its own for the next."""
        prices = []
        for index, (cell, segment) in enumerate(zip(cells, segments(cells), strict=True)):
            start, end, _ = segment.steps(self.full_steps)
            price = self.price(cell, end - start)
            moved: list[int | None] = []
            if index > 0:  # restored before the rung: what the previous rung saved
                moved.append(self.checkpoint_bytes(cells[index - 1][0]))
            if index < len(cells) - 1:  # saved after it, for the next (the last rung ends the run)
                moved.append(self.checkpoint_bytes(cell[0]))
            seconds = self.copy_seconds(moved)
            if seconds is not None and price.trial_gpu_seconds is not None:
                price.checkpoint_gpu_seconds = seconds
                price.trial_gpu_seconds += seconds
            prices.append(price)
        return prices

    def checkpoint_bytes(self, trainable_layers: int) -> int | None:
        """What a run training the last z layers saves and restores: every parameter (in the precision's parameter
        dtype; buffers left out) and the optimizer state of the trainable ones (None where the profile lacks it)."""
        row = next(
            (r for r in self.profile.rows_for(self.batch_size) if r.trainable_layers == trainable_layers and r.ok),
            None,
        )
        if row is None or row.optimizer_state_bytes is None or not self.profile.model.total_params:
            return None
        dtype = get_precision(self.profile.settings.precision).parameter_dtype
        return self.profile.model.total_params * PARAMETER_BYTES[dtype] + row.optimizer_state_bytes

    def copy_seconds(self, sizes: Sequence[int | None]) -> float | None:
        """Seconds to copy each of `sizes` bytes once (read and written) at the device's copy rate, as the time
        model prices memory movement; None where a size or the rate is unknown."""
        if not sizes:
            return 0.0
        if self.copy_gbps is None or any(size is None for size in sizes):
            return None
        return sum(2 * (size or 0) for size in sizes) / (self.copy_gbps * 1e9)


PARAMETER_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}  # a parameter's bytes in each precision's dtype


def copy_rate(profile: Profile) -> tuple[float | None, str]:
    """The profiled device's memory copy rate (GB/s, bytes read and written), which prices a checkpoint's save and
    restore: an estimate's own time-model peaks, a known GPU's datasheet bandwidth, or for a profile measured on
    this CPU its copy rate measured here (`cpu_peaks`, cached); else None, and why."""
    env = profile.environment
    if profile.time_model and isinstance(profile.time_model.get("peaks"), dict):
        rate = profile.time_model["peaks"].get("memory_gbps")
        if rate:
            return float(rate), f"the estimate's time model ({env.device_name})"
    if env.device_kind == "cuda":
        gpu = kind_of_device(env.device_name)
        if gpu is not None and gpu.memory_gbps:
            return gpu.memory_gbps, f"{gpu.name}'s memory bandwidth"
        return None, f"{env.device_name!r} is not a GPU kind layerprof knows"
    from layerprof.measure.environment import cpu_name

    if env.device_name != cpu_name():
        return None, f"the profile's CPU ({env.device_name}) is not this machine's, whose copy rate is measured"
    from layerprof.predict.timemodel import cpu_peaks

    return cpu_peaks(env.torch_threads).memory_gbps, "this CPU's copy rate, measured here"


CLOCK_DRIFT = 1.25  # the most the clock's seconds per device second may differ between phases without a note


def clock_rates(study: RecordedStudy, pricing: Pricing) -> dict[str, float]:
    """Recorded seconds per device second (the profile's): training over the from-scratch trials and over the
    continued runs' segments, and the continued runs' checkpoints (recorded save and restore against their price
    from bytes); a phase without any is left out."""
    spent = {"scratch": [0.0, 0.0], "continued": [0.0, 0.0], "checkpoint": [0.0, 0.0]}

    def add(phase: str, recorded: float | None, priced: float | None) -> None:
        if recorded is not None and priced is not None:
            spent[phase][0] += recorded
            spent[phase][1] += priced

    def training(price: RungPrice) -> float | None:
        if price.trial_gpu_seconds is None:
            return None
        return price.trial_gpu_seconds - (price.eval_gpu_seconds or 0.0) - (price.checkpoint_gpu_seconds or 0.0)

    for (_, z, fraction, _), trial in study.trials.items():
        if trial.loss is not None:
            with suppress(LayerprofError):  # a z the profile lacks: no device seconds to compare with
                add("scratch", trial.train_seconds, training(pricing.price((z, fraction))))
    for (chain, _, _), run in study.continued.items():
        try:
            prices = pricing.continued(chain)
        except LayerprofError:
            continue
        for part, price in zip(run.segments, prices, strict=False):
            if part.loss is not None:
                add("continued", part.train_seconds, training(price))
                if price.checkpoint_gpu_seconds:
                    add("checkpoint", part.checkpoint_seconds, price.checkpoint_gpu_seconds)
    return {phase: clock / device for phase, (clock, device) in spent.items() if clock > 0 and device > 0}


def drift_notes(rates: dict[str, float]) -> list[str]:
    """A note where the clock ran at another speed, per device second, for continued runs than for trials, and
    where checkpoints took another time than their bytes price them at (against training's rate)."""
    notes = []
    scratch, continued, checkpoint = rates.get("scratch"), rates.get("continued"), rates.get("checkpoint")
    if scratch and continued and max(scratch, continued) / min(scratch, continued) > CLOCK_DRIFT:
        notes.append(
            f"the clock drifted between phases: from-scratch trials recorded {scratch:.3g} s per device second of "
            f"the profile, continued runs {continued:.3g} s ({max(scratch, continued) / min(scratch, continued):.2f}x "
            "apart; the load of the machine changed while the study recorded): compare paths by device s, not by "
            "recorded seconds"
        )
    training = continued or scratch
    if checkpoint and training and max(checkpoint, training) / min(checkpoint, training) > CLOCK_DRIFT:
        notes.append(
            f"checkpoints: the clock recorded {checkpoint:.3g} s per device second priced from their bytes, training "
            f"{training:.3g} s: saving and restoring cost {checkpoint / training:.3g}x what copying their bytes "
            "does (serialisation and allocation, not bytes, where the state is small)"
        )
    return notes


def disturbed_price_notes(pricing: Pricing, paths: Sequence[FidelityPath]) -> list[str]:
    """A note where the paths' device seconds rest on profile cells that other work disturbed while they were
    timed: the prices compare z by those cells' step times, which the disturbance may have moved apart."""
    used = sorted({z for path in paths for z, _ in path.cells})
    rows = {row.trainable_layers: row for row in pricing.profile.rows_for(pricing.batch_size) if row.ok}
    disturbed = [z for z in used if z in rows and rows[z].disturbed]
    if not disturbed:
        return []
    return [
        f"the device seconds of z = {', '.join(map(str, disturbed))} rest on profile cells (batch "
        f"{pricing.batch_size}) other work disturbed while they were timed (the profile's disturbed_reason): the "
        "prices between z may be skewed; re-measure those cells on a quiet machine before relying on them"
    ]


def pricing_for(
    profile: Profile, task_spec: str, full_steps: int | None, gpu_memory: int | None
) -> tuple[Pricing, list[str]]:
    """Refuse a profile of another model; take steps and batch size from the task where it says them."""
    task = resolve_task(task_spec)
    notes = []
    expected = getattr(task, "profile_spec", None)
    if expected is not None and profile.model.spec != expected:
        raise LayerprofError(
            f"the profile is of {profile.model.spec!r}, but the study's task {task_spec} trains {expected!r}; "
            f"profile that: layerprof profile {expected} --batch-sizes {getattr(task, 'batch_size', 32)}"
        )
    count = task_layer_count(task)
    if count is not None and profile.layer_count != count:
        raise LayerprofError(
            f"the profile's model has {profile.layer_count} layers but the study's task trains {count}; "
            "give a profile of the task's own model"
        )
    if expected is None:
        notes.append(f"{task_spec} has no profile_spec: the profile is assumed to be of the model it trains")
    steps = full_steps or getattr(task, "full_steps", None)
    if steps is None:
        raise LayerprofError(f"{task_spec} does not say its training steps at budget 1; pass --full-steps N")
    batch_size = getattr(task, "batch_size", None)
    if batch_size is None:
        batch_size = max(profile.batch_sizes(), key=lambda b: (len(profile.rows_for(b)), b))
        notes.append(f"{task_spec} does not say its batch size: the profile's batch {batch_size} prices it")
    elif batch_size not in profile.batch_sizes():
        raise LayerprofError(
            f"the task trains at batch size {batch_size}; the profile has {', '.join(map(str, profile.batch_sizes()))}"
        )
    if gpu_memory is None and profile.environment.device_kind == "cuda" and not profile.environment.estimated:
        gpu_memory = profile.environment.total_memory_bytes
    if profile.predicts_time:
        notes.append(
            f"the profile is an estimate ({profile.environment.device_name}): its device seconds are predicted by the "
            "time model, not measured"
        )
    elif profile.is_estimate:
        notes.append("the profile is an estimate without predicted step times: it prices FLOPs and memory only")
    eval_samples = int(getattr(task, "eval_samples", 0) or 0)
    if not eval_samples:
        notes.append(f"{task_spec} does not say its eval_samples: device seconds leave its evaluations out")
    pricing = Pricing(profile, int(batch_size), int(steps), gpu_memory, eval_samples)
    if hasattr(task, "resume"):  # only a task that continues runs saves checkpoints
        pricing.copy_gbps, source = copy_rate(profile)
        if pricing.copy_gbps is None:
            notes.append(f"checkpoints are not in device seconds: {source} (they are in the recorded seconds)")
    return pricing, notes


# ---------------------------------------------------------------- results


class BracketShape(TypedDict):
    """One bracket as an outcome records it: its first rung and the trials at each rung (ASHA: the mean)."""

    first_rung: int
    configs_per_rung: Sequence[float]


@dataclass
class Outcome:
    """One algorithm on one path: regret over the repeats and what it spent, each sampled figure with its 95%
    Monte-Carlo interval (`uncertainty`: what another seed could give)."""

    brackets: list[BracketShape]  # first_rung and configs_per_rung of each bracket, run one after another
    regret_mean: float
    regret_median: float
    regret_low: float  # REGRET_QUANTILES
    regret_high: float
    best_found_share: float  # repeats whose pick is the best configuration (regret 0)
    recorded_seconds: float  # mean over repeats of the trials' recorded seconds
    repeats: int = 0
    stable: bool = True  # every interval within its tolerance (REGRET_TOLERANCE, SHARE_TOLERANCE, COST_TOLERANCE)
    uncertainty: dict[str, tuple[float, float]] = field(default_factory=dict)  # figure -> (low, high)
    recorded_seconds_vs_budget: float | None = None
    gpu_seconds: float | None = None
    flops: float | None = None
    peak_memory_bytes: int | None = None  # the largest need of one trial on the path (its top rung's)
    slot_wall_seconds: float | None = None  # each rung runs its trials side by side, as many as fit
    gpu_seconds_vs_budget: float | None = None
    slot_wall_vs_budget: float | None = None
    wall_seconds: float | None = None  # mean over repeats of the recorded seconds until the pick, on `workers`
    workers: int | None = None
    trials_per_rung: list[float] | None = None  # ASHA: mean trials that reached each rung
    usd: float | None = None  # simulate --gpu: its GPU seconds on that kind at its price (`Simulation.price`)
    regret_fold_low: float | None = None  # held-out judging: the lowest and highest fold's mean regret
    regret_fold_high: float | None = None


@dataclass
class RungResult:
    """One rung of a path: its rank correlation with full training."""

    trainable_layers: int
    budget_fraction: float
    spearman: float | None  # rank correlation of this cell's losses with full fidelity, mean over the folds
    price: RungPrice | None = None
    spearman_low: float | None = None  # the lowest and highest fold's rho (held-out judging)
    spearman_high: float | None = None


@dataclass
class CurvePoint:
    """One point of the regret-against-cost curve."""

    starting_configs: int
    recorded_seconds: float
    gpu_seconds: float | None
    regret_median: float
    regret_low: float
    regret_high: float
    regret_median_interval: tuple[float, float] | None = None  # its 95% Monte-Carlo interval


@dataclass
class ContinuedPath:
    """The path run as libraries that continue a promoted trial run it: a rung trains only its segment."""

    runs: Runs  # recorded: the study's continued runs; assumed: losses and seconds from the from-scratch trials
    chain: str | None  # the recorded chain that serves the path
    rungs: list[RungResult]  # rho of the continued losses; price of each rung's segment
    successive_halving: Outcome
    hyperband: Outcome | None
    curve: list[CurvePoint] = field(default_factory=list)
    asha: Outcome | None = None  # asynchronous halving (promotion on arrival) on the same draws

    @property
    def runs_label(self) -> str:
        """How the tables and the figure name these runs: continued (recorded) or assumed."""
        return "continued" if self.runs == "recorded" else "assumed"


@dataclass
class PathResult:
    """One path replayed: its rungs, and the outcome of each algorithm."""

    name: str
    about: str
    rungs: list[RungResult]
    successive_halving: Outcome
    hyperband: Outcome | None
    curve: list[CurvePoint] = field(default_factory=list)  # successive halving from eta, eta^2, ... configurations
    continued: ContinuedPath | None = None  # None: the study recorded no continued runs for the path
    asha: Outcome | None = None  # asynchronous halving (promotion on arrival) on the same draws


@dataclass
class Simulation:
    """Every path replayed under successive halving and Hyperband, with notes and uncertainty."""

    study: str
    task: str
    configs: int
    seeds: int
    eta: float
    starting_configs: int
    repeats: int | None  # None: each outcome until stable (REPEAT_BATCH at a time, at most MAX_REPEATS)
    seed: int
    full_fidelity: dict[str, float]
    best_full_loss: float
    paths: list[PathResult]
    profile: str | None = None
    device: str | None = None  # the profiled device's name
    batch_size: int | None = None
    full_steps: int | None = None
    gpu_memory_bytes: int | None = None
    notes: list[str] = field(default_factory=list)
    seconds_used: Seconds = "total"
    workers: int = DEFAULT_WORKERS  # trials at once in the wall-time figures
    promotion_rule: PromotionRule = "optuna"  # how ASHA decides a promotion
    gpu: str | None = None  # --gpu: the kind the dollars are for
    price: str | None = None  # its price and where it comes from
    priced_time_source: str | None = None  # the profile's step times measured on it, or scaled from another kind
    judge: JudgeMode = "same-seed"  # held-out: regret and rho judged by seeds the replay does not draw from
    judge_folds: int = 1  # rotations of the judge over the seeds
    judge_seeds: int = 0  # seeds recorded at full fidelity only, to judge
    noise_floor: NoiseFloor | None = None  # full training judged like every rung (None for a same-seed judge)
    # recorded training seconds per device second of the profile, from-scratch trials and continued runs apart:
    # the cross-check of the clock against the cost model (a drift between them: the load changed)
    clock_per_device_second: dict[str, float] | None = None

    def path(self, name: str) -> PathResult | None:
        """The result of the path of that name, or None where it was not replayed."""
        return next((p for p in self.paths if p.name == name), None)

    def to_dict(self) -> JsonDict:
        """The JSON form, with its schema."""
        return {"schema": SIMULATION_SCHEMA, **asdict(self)}


# ---------------------------------------------------------------- the replay


Candidate = tuple[int, int]  # (configuration index, seed position)


def halve(tables: Sequence[CellTable], bracket: Bracket, candidates: Sequence[Candidate]) -> tuple[Candidate, float]:
    """Successive halving over the bracket's rungs: train, keep the best `configs_per_rung[i+1]`, repeat.

    Sorting is stable and the candidates come in random order, so equal losses are broken at random.
    """
    winner, seconds, _ = halve_timed(tables, bracket, candidates, 1)
    return winner, seconds


def halve_timed(
    tables: Sequence[CellTable], bracket: Bracket, candidates: Sequence[Candidate], workers: int
) -> tuple[Candidate, float, float]:
    """`halve`, and its wall time on `workers`: each rung's trials in the order drawn, each on the first worker
    free, the next rung once the whole rung has ended (synchronous halving)."""
    alive = list(candidates)
    seconds = wall = 0.0
    for offset, count in enumerate(bracket.configs_per_rung):
        table = tables[bracket.first_rung + offset]
        alive = alive[:count]
        durations = [table.seconds[c][s] for c, s in alive]
        seconds += sum(durations)
        wall += on_workers(durations, workers)
        alive.sort(key=lambda cs: table.losses[cs[0]][cs[1]])
    return alive[0], seconds, wall


def on_workers(durations: Sequence[float], workers: int) -> float:
    """When the last of `durations` ends, each started in order on the first of `workers` free."""
    free = [0.0] * min(workers, len(durations))
    for duration in durations:
        heapq.heappush(free, heapq.heappop(free) + duration)
    return max(free, default=0.0)


def promoted(loss: float, earlier: Sequence[float], eta: float, rule: PromotionRule) -> bool:
    """Whether a trial that reached a rung with `loss` goes on, the rung having recorded `earlier` before it (see
    PromotionRule). A failed trial (inf or nan) never does."""
    if not math.isfinite(loss):
        return False
    if rule == "optuna":  # optuna.pruners._successive_halving._is_trial_promotable_to_next_rung
        competing = sorted([*earlier, loss])
        return loss <= competing[max(0, math.floor(len(competing) / eta) - 1)]
    # ray.tune.schedulers.async_hyperband._Bracket: continue unless -loss < nanpercentile(-earlier, (1 - 1/eta) 100)
    rewards = sorted(-value for value in earlier if not math.isnan(value))
    if not rewards:
        return True
    return -loss >= _numpy_percentile(rewards, 1 - 1 / eta)


def _numpy_percentile(ordered: Sequence[float], q: float) -> float:
    """numpy.percentile(values, 100 q) of sorted values, its default linear method, to the last bit (numpy
    interpolates from the upper value where the fraction is at least one half)."""
    q = q * 100 / 100  # numpy takes the percentage Ray passes and divides it
    position = len(ordered) * q + (1 + q * -1) - 1  # numpy's virtual index for alpha = beta = 1
    low = min(max(0, math.floor(position)), len(ordered) - 1)
    high = min(low + 1, len(ordered) - 1)
    below, above, t = ordered[low], ordered[high], position - low
    difference = above - below
    if math.isinf(below) or math.isinf(above):
        return below if t == 0 else above if t == 1 else (below + above) / 2 if below != above else below
    return above - difference * (1 - t) if t >= 0.5 else below + difference * t


@dataclass
class AshaRun:
    """One asynchronous halving: the pick, what its trials trained for, when the last ended, and how far each
    candidate went (the index of the highest rung it reached)."""

    pick: Candidate
    seconds: float
    wall_seconds: float
    reached: dict[Candidate, int]


# (candidate, rung, its loss there, the losses recorded there before it) -> whether it goes on
Decision = Callable[[Candidate, int, float, Sequence[float]], bool]


def asha(
    tables: Sequence[CellTable],
    candidates: Sequence[Candidate],
    eta: float,
    workers: int,
    rule: PromotionRule = "optuna",
    decide: Decision | None = None,
) -> AshaRun:
    """Asynchronous successive halving as Ray Tune's ASHAScheduler and Optuna's SuccessiveHalvingPruner run it:
    `workers` trials at once, each candidate started in the order drawn as a worker frees; a trial that ends a rung
    goes straight on to the next where `promoted` says so (on arrival, against the trials that ended that rung
    before it), else its worker takes the next candidate. No rung waits for another. The pick is the best of those
    that reached the top rung (ties: the first to get there). `decide` replaces the rule (a library's own
    scheduler, in the tests)."""
    top = len(tables) - 1
    recorded: list[list[float]] = [[] for _ in tables]
    waiting = iter(candidates)
    running: list[tuple[float, int, Candidate, int]] = []  # (ends at, started as number, candidate, rung)
    reached: dict[Candidate, int] = {}
    started = 0
    seconds = wall = 0.0

    def start(candidate: Candidate, rung: int, now: float) -> None:
        nonlocal started, seconds
        duration = tables[rung].seconds[candidate[0]][candidate[1]]
        seconds += duration
        heapq.heappush(running, (now + duration, started, candidate, rung))
        started += 1

    for candidate in list(candidates)[:workers]:
        start(candidate, 0, 0.0)
    for _ in range(min(workers, len(candidates))):
        next(waiting)
    finals: list[tuple[float, int, Candidate]] = []
    while running:
        now, _, candidate, rung = heapq.heappop(running)
        wall = now
        reached[candidate] = rung
        loss = tables[rung].losses[candidate[0]][candidate[1]]
        if rung < top:
            goes_on = (decide or (lambda _c, _r, value, earlier: promoted(value, earlier, eta, rule)))(
                candidate, rung, loss, recorded[rung]
            )
        else:
            goes_on = False
        recorded[rung].append(loss)
        if rung == top:
            finals.append((loss, len(finals), candidate))
        if goes_on:
            start(candidate, rung + 1, now)
        elif (following := next(waiting, None)) is not None:
            start(following, 0, now)
    if finals:
        pick = min(finals)[2]
    else:  # every trial failed before the top: the best at the highest rung any reached
        highest = max(reached.values())
        pick = min((c for c, r in reached.items() if r == highest), key=lambda c: tables[highest].losses[c[0]][c[1]])
    return AshaRun(pick, seconds, wall, reached)


BracketTables = Sequence[Sequence[CellTable]]  # by the rung a bracket starts at: the tables of its rungs


class Replay:
    """Sampled brackets on one study: repeat r of bracket b draws the same configurations and seeds on every path,
    so that paths differ only by rungs, and a path's figures do not depend on which other paths ran."""

    def __init__(
        self,
        study: RecordedStudy,
        repeats: int | None,
        seed: int,
        workers: int = DEFAULT_WORKERS,
        rule: PromotionRule = "optuna",
    ) -> None:
        """Each configuration's regret at full fidelity by each fold's judge; LayerprofError where none has a
        loss to judge picks by. Repeat r replays fold r mod the folds: it draws seeds from that fold's replay seeds
        and its pick is judged by that fold's judging seeds."""
        self.study = study
        self.repeats = repeats  # None: until stable
        self.seed = seed
        self.workers = workers  # trials at once, for wall times
        self.rule = rule
        self.folds = study.folds
        position = {s: i for i, s in enumerate(study.seeds)}
        self.positions = [[position[s] for s in fold.replay] for fold in self.folds]  # replay seeds' positions
        self.truths: list[list[float | None]] = []  # per fold: the judge's full-fidelity loss per configuration
        self.regrets: list[list[float]] = []
        bests, worst_regrets = [], []
        for fold in self.folds:
            truth = study.judge_losses(fold.judge)
            finite = [t for t in truth if t is not None]
            if not finite:
                raise LayerprofError(
                    "no configuration has a full-fidelity loss in the study; nothing to judge picks by"
                )
            best, worst = min(finite), max(finite)
            # a pick that failed at full fidelity counts as the worst configuration
            self.truths.append(truth)
            self.regrets.append([worst - best if t is None else t - best for t in truth])
            bests.append(best)
            worst_regrets.append(worst - best)
        self.best = statistics.fmean(bests)
        self.worst_regret = max(worst_regrets)
        self._tables: dict[GridCell, CellTable] = {}
        # each path replays the same draws: kept (up to DRAWN_LIMIT candidates) rather than drawn again,
        # which cost as much as the halving itself; the pairs made once and shared
        self._pairs = [[(index, s) for s in range(len(study.seeds))] for index in range(len(study.configs))]
        self._drawn: dict[tuple[int, int, int], tuple[Candidate, ...]] = {}
        self._drawn_count = 0

    def fold(self, repeat: int) -> int:
        """The fold a repeat replays."""
        return repeat % len(self.folds)

    def judged(self, table: CellTable) -> tuple[OverFolds, OverFolds]:
        """Rho and regret of a cell's mean losses over each fold's replay seeds against its judge, over folds."""
        pairs = [
            rank_and_regret(table.mean_losses(positions), truth)
            for positions, truth in zip(self.positions, self.truths, strict=True)
        ]
        return OverFolds.of([rho for rho, _ in pairs]), OverFolds.of([regret for _, regret in pairs])

    def tables(self, cells: Sequence[GridCell]) -> list[CellTable]:
        """The tables of `cells` in that order, each built once per replay."""
        for cell in cells:
            if cell not in self._tables:
                self._tables[cell] = self.study.table(cell)
        return [self._tables[cell] for cell in cells]

    def candidates(self, repeat: int, bracket_index: int, count: int) -> tuple[Candidate, ...]:
        """`count` (configuration, seed position) pairs for one repeat of one bracket, the same on every path
        (drawn once where the store has room)."""
        key = (repeat, bracket_index, count)
        drawn = self._drawn.get(key)
        if drawn is None:
            draw = random.Random(f"{self.seed}/{repeat}/{bracket_index}")
            chosen = draw.sample(range(len(self.study.configs)), count)
            positions = self.positions[self.fold(repeat)]
            drawn = tuple(self._pairs[index][positions[draw.randrange(len(positions))]] for index in chosen)
            if self._drawn_count + count <= DRAWN_LIMIT:
                self._drawn[key] = drawn
                self._drawn_count += count
        return drawn

    def run(
        self, tables: BracketTables, brackets: Sequence[Bracket], first: int, stop: int
    ) -> tuple[list[float], list[float], list[float]]:
        """Regret, recorded seconds and wall seconds (on `workers`, brackets one after another) of repeats
        first..stop-1; the pick is the bracket winner best at its bracket's top rung."""
        regrets, seconds, walls = [], [], []
        for repeat in range(first, stop):
            winners, spent, wall = [], 0.0, 0.0
            for index, bracket in enumerate(brackets):
                own = tables[bracket.first_rung]
                winner, bracket_seconds, bracket_wall = halve_timed(
                    own, bracket, self.candidates(repeat, index, bracket.configs_per_rung[0]), self.workers
                )
                winners.append((own[-1].losses[winner[0]][winner[1]], winner))
                spent += bracket_seconds
                wall += bracket_wall
            pick = min(winners, key=lambda loss_and_winner: loss_and_winner[0])[1]
            regrets.append(self.regrets[self.fold(repeat)][pick[0]])
            seconds.append(spent)
            walls.append(wall)
        return regrets, seconds, walls

    def run_asha(
        self, tables: Sequence[CellTable], count: int, eta: float, first: int, stop: int
    ) -> tuple[list[float], list[float], list[float], list[list[int]]]:
        """Regret, recorded seconds, wall seconds and trials per rung of ASHA over repeats first..stop-1, on the
        candidates successive halving draws for the same repeat (bracket 0)."""
        regrets, seconds, walls, reached = [], [], [], []
        for repeat in range(first, stop):
            run = asha(tables, self.candidates(repeat, 0, count), eta, self.workers, self.rule)
            regrets.append(self.regrets[self.fold(repeat)][run.pick[0]])
            seconds.append(run.seconds)
            walls.append(run.wall_seconds)
            reached.append([sum(rung >= index for rung in run.reached.values()) for index in range(len(tables))])
        return regrets, seconds, walls, reached


def replay_outcome(replay: Replay, tables: BracketTables, brackets: Sequence[Bracket], repeats: int | None) -> Outcome:
    """The algorithm's outcome over `repeats` sampled runs, or (None) over batches of REPEAT_BATCH until every
    figure is stable, at most MAX_REPEATS."""
    regrets, seconds, walls = replay.run(tables, brackets, 0, repeats or REPEAT_BATCH)
    outcome = _outcome(regrets, seconds, brackets, replay.worst_regret, walls, replay.workers)
    while repeats is None and not outcome.stable and len(regrets) < MAX_REPEATS:
        more = replay.run(tables, brackets, len(regrets), min(MAX_REPEATS, len(regrets) + REPEAT_BATCH))
        regrets += more[0]
        seconds += more[1]
        walls += more[2]
        outcome = _outcome(regrets, seconds, brackets, replay.worst_regret, walls, replay.workers)
    return _by_fold(outcome, regrets, len(replay.folds))


def _by_fold(outcome: Outcome, regrets: Sequence[float], folds: int) -> Outcome:
    """The lowest and highest fold's mean regret, where the judge rotated (repeat r replays fold r mod folds)."""
    if folds > 1:
        means = OverFolds.of([statistics.fmean(regrets[f::folds]) for f in range(folds) if regrets[f::folds]])
        outcome.regret_fold_low, outcome.regret_fold_high = means.low, means.high
    return outcome


def asha_outcome(replay: Replay, tables: Sequence[CellTable], count: int, eta: float, repeats: int | None) -> Outcome:
    """ASHA's outcome from `count` candidates over `repeats` sampled runs, or (None) until stable as
    `replay_outcome`; its brackets field holds the mean trials that reached each rung."""

    def outcome_of(runs: tuple[list[float], list[float], list[float], list[list[int]]]) -> Outcome:
        regrets, seconds, walls, reached = runs
        means = [round(statistics.fmean(column), 1) for column in zip(*reached, strict=True)]
        result = _by_fold(
            _outcome(regrets, seconds, [], replay.worst_regret, walls, replay.workers), regrets, len(replay.folds)
        )
        result.brackets = [{"first_rung": 0, "configs_per_rung": means}]
        result.trials_per_rung = means
        return result

    runs = replay.run_asha(tables, count, eta, 0, repeats or REPEAT_BATCH)
    outcome = outcome_of(runs)
    while repeats is None and not outcome.stable and len(runs[0]) < MAX_REPEATS:
        more = replay.run_asha(tables, count, eta, len(runs[0]), min(MAX_REPEATS, len(runs[0]) + REPEAT_BATCH))
        runs = (runs[0] + more[0], runs[1] + more[1], runs[2] + more[2], runs[3] + more[3])
        outcome = outcome_of(runs)
    return outcome


def _outcome(
    regrets: list[float],
    seconds: list[float],
    brackets: Sequence[Bracket],
    worst_regret: float,
    walls: list[float] | None = None,
    workers: int | None = None,
) -> Outcome:
    ordered = sorted(regrets)
    found = sum(r == 0 for r in ordered)
    uncertainty = {
        "regret_mean": mean_confidence_interval(ordered),
        "regret_median": quantile_confidence_interval(ordered, 0.5),
        "regret_low": quantile_confidence_interval(ordered, REGRET_QUANTILES[0]),
        "regret_high": quantile_confidence_interval(ordered, REGRET_QUANTILES[1]),
        "best_found_share": share_confidence_interval(found, len(ordered)),
        "recorded_seconds": mean_confidence_interval(seconds),
        **({"wall_seconds": mean_confidence_interval(walls)} if walls else {}),
    }
    mean_seconds = statistics.fmean(seconds)
    low, high = uncertainty["recorded_seconds"]
    share_low, share_high = uncertainty["best_found_share"]
    stable = (
        all(
            uncertainty[name][1] - uncertainty[name][0] <= REGRET_TOLERANCE * worst_regret
            for name in ("regret_median", "regret_low", "regret_high")
        )
        and uncertainty["regret_mean"][1] - uncertainty["regret_mean"][0] <= 2 * REGRET_TOLERANCE * worst_regret
        and share_high - share_low <= 2 * SHARE_TOLERANCE
        and high - low <= 2 * COST_TOLERANCE * mean_seconds
    )
    return Outcome(
        brackets=[{"first_rung": b.first_rung, "configs_per_rung": b.configs_per_rung} for b in brackets],
        regret_mean=statistics.fmean(ordered),
        regret_median=statistics.median(ordered),
        regret_low=quantile(ordered, REGRET_QUANTILES[0]),
        regret_high=quantile(ordered, REGRET_QUANTILES[1]),
        best_found_share=found / len(ordered),
        recorded_seconds=mean_seconds,
        repeats=len(ordered),
        stable=stable,
        uncertainty=uncertainty,
        wall_seconds=statistics.fmean(walls) if walls else None,
        workers=workers if walls else None,
    )


BracketPrices = Sequence[Sequence[RungPrice]]  # by the rung a bracket starts at: the prices of its rungs


def _priced(outcome: Outcome, brackets: Sequence[Bracket], prices: BracketPrices) -> None:
    """GPU seconds and FLOPs of every trial; wall time when a rung's trials share the GPU in waves."""

    def total(value: Callable[[RungPrice, int], float | None]) -> float | None:
        parts = [
            value(prices[b.first_rung][b.first_rung + i], c) for b in brackets for i, c in enumerate(b.configs_per_rung)
        ]
        return None if any(p is None for p in parts) else float(sum(parts))  # type: ignore[arg-type]

    def seconds(p: RungPrice, c: int) -> float | None:
        return None if p.trial_gpu_seconds is None else c * p.trial_gpu_seconds

    def flops(p: RungPrice, c: int) -> float | None:
        return None if p.trial_flops is None else c * p.trial_flops

    def waves(p: RungPrice, c: int) -> float | None:
        if p.trial_gpu_seconds is None or not p.parallel_slots:
            return None
        return math.ceil(c / p.parallel_slots) * p.trial_gpu_seconds

    peaks = [
        prices[b.first_rung][b.first_rung + i].memory_need_bytes
        for b in brackets
        for i in range(len(b.configs_per_rung))
    ]
    outcome.gpu_seconds = total(seconds)
    outcome.flops = total(flops)
    outcome.slot_wall_seconds = total(waves)
    outcome.peak_memory_bytes = None if any(p is None for p in peaks) else max(peaks)  # type: ignore[type-var]


def _relative(outcome: Outcome | None, baseline: Outcome | None) -> None:
    if outcome is None or baseline is None:
        return

    def share(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    outcome.recorded_seconds_vs_budget = share(outcome.recorded_seconds, baseline.recorded_seconds)
    outcome.gpu_seconds_vs_budget = share(outcome.gpu_seconds, baseline.gpu_seconds)
    outcome.slot_wall_vs_budget = share(outcome.slot_wall_seconds, baseline.slot_wall_seconds)


def simulate(
    study_path: Path,
    *,
    eta: float = 3.0,
    starting_configs: int | None = None,
    repeats: int | None = None,
    paths: Sequence[str] | None = None,
    custom_paths: Sequence[Sequence[GridCell]] = (),
    layer_counts: Sequence[int] | None = None,
    budget_fractions: Sequence[float] | None = None,
    profile: Profile | None = None,
    full_steps: int | None = None,
    gpu_memory: int | None = None,
    seed: int = 0,
    workers: int = DEFAULT_WORKERS,
    promotion_rule: PromotionRule = "optuna",
    gpu: GpuKind | None = None,
    prices: PriceBook | None = None,
) -> Simulation:
    """Replay successive halving, Hyperband and ASHA along each path of a recorded study, from scratch and
    continued; `repeats` sampled runs of each, or (None) as many as each needs to be stable. Wall times run
    `workers` trials at once."""
    check_eta(eta)
    if workers < 1:
        raise LayerprofError(f"--workers must be at least 1, got {workers}")
    if gpu is not None and profile is None:
        raise LayerprofError(f"--gpu {gpu.name} prices the profile's device seconds: give --profile too")
    if repeats is not None and repeats < 1:
        raise LayerprofError(f"--repeats must be at least 1, got {repeats}")
    study = load_study(study_path)
    zs, fractions = _chosen_axes(study, layer_counts, budget_fractions)
    names = list(paths) if paths else [p for p in PATHS if profile is not None or p not in PROFILE_PATHS]
    if profile is None and any(name in PROFILE_PATHS for name in names):
        raise LayerprofError("the ladder paths need --profile: a profile of the study's model recommends the rungs")
    notes: list[str] = []
    pricing = None
    ladder_layers = None
    clock = None
    if profile is not None:
        pricing, pricing_notes = pricing_for(profile, study.task, full_steps, gpu_memory)
        notes += pricing_notes
        clock = clock_rates(study, pricing)
        notes += drift_notes(clock)
        if any(name in PROFILE_PATHS for name in names):
            ladder = build_ladder(
                profile,
                eta=eta,
                cost_kind=default_cost(profile),
                batch_size=pricing.batch_size,
                gpu_memory=pricing.gpu_memory_bytes,
            )
            ladder_layers, ladder_notes = carried_ladder(study, ladder, eta, profile)
            notes += ladder_notes
    chosen, path_notes = study_paths(names, zs, fractions, ladder_layers)
    notes += path_notes
    for number, cells in enumerate(custom_paths, start=1):
        matched = [(z, match_fraction(f, study.budget_fractions)) for z, f in cells]
        chosen.append(FidelityPath(f"custom-{number}", matched, "rungs given with --path"))
    if not chosen:
        raise LayerprofError("no path to simulate; name some with --paths or give --path")
    check_cells(study, chosen)
    if pricing is not None:
        notes += disturbed_price_notes(pricing, chosen)
    count = _starting_configs(study, chosen, eta, starting_configs, notes)
    replay = Replay(study, repeats, seed, workers, promotion_rule)
    judge = judge_mode(replay.folds)
    if judge == "same-seed":
        notes.append(
            SAME_SEED_WARNING.format(
                command=f"layerprof correlate {study.task} --judge-seeds 2 --out {study.directory} (and the study's "
                "--grid/--grid-preset, --layers, --budget-fractions and --seeds), or a study with --seeds 3"
            )
        )
    unrecorded: list[FidelityPath] = []
    results = [_simulate_path(replay, path, eta, count, pricing, notes, unrecorded) for path in chosen]
    baseline = next((r for r in results if r.name == BASELINE_PATH), None)
    for result in results:
        _relative(result.successive_halving, baseline.successive_halving if baseline else None)
        _relative(result.hyperband, baseline.hyperband if baseline else None)
        _relative(result.asha, baseline.asha if baseline else None)
        if result.continued is not None:
            continued = baseline.continued if baseline else None
            _relative(result.continued.successive_halving, continued.successive_halving if continued else None)
            _relative(result.continued.hyperband, continued.hyperband if continued else None)
            _relative(result.continued.asha, continued.asha if continued else None)
    if baseline is None:
        notes.append(f"no {BASELINE_PATH!r} path: costs are not shown relative to halving on budget alone")
    if unrecorded:
        asks = " ".join(f"--continue {','.join(f'{z}@{f:g}' for z, f in p.cells)}" for p in unrecorded)
        notes.append(
            f"no continued runs of {', '.join(p.name for p in unrecorded)} (Hyperband's later starts included); "
            f"record them (it resumes): layerprof correlate {study.task} {asks} --out {study.directory} "
            "(and the study's --grid/--grid-preset, --layers, --budget-fractions and --seeds)"
        )
    notes += _unstable_notes(results, repeats)
    z_full, fraction_full = study.full_cell
    dollars: dict[str, str] = {}
    if gpu is not None and profile is not None:
        scale, source = time_scale(profile, gpu, "simulate")
        price = (prices or PriceBook()).price(gpu)
        for outcome in _every_outcome(results):
            if outcome.gpu_seconds is not None:
                outcome.usd = price.usd_per_hour * outcome.gpu_seconds * scale / 3600
        dollars = {"gpu": gpu.name, "price": price.label, "priced_time_source": source}
    return Simulation(
        study=str(study.directory),
        task=study.task,
        configs=len(study.configs),
        seeds=len(study.seeds),
        eta=eta,
        starting_configs=count,
        repeats=repeats,
        seed=seed,
        full_fidelity={"trainable_layers": z_full, "budget_fraction": fraction_full},
        best_full_loss=replay.best,
        paths=results,
        profile=None if profile is None else profile.model.spec,
        device=None if profile is None else profile.environment.device_name,
        batch_size=None if pricing is None else pricing.batch_size,
        full_steps=None if pricing is None else pricing.full_steps,
        gpu_memory_bytes=None if pricing is None else pricing.gpu_memory_bytes,
        notes=notes,
        judge=judge,
        judge_folds=len(replay.folds),
        judge_seeds=len(study.judge_seeds),
        noise_floor=None if judge == "same-seed" else _noise_floor(replay, count),
        clock_per_device_second=clock or None,
        seconds_used=study.seconds_used,
        workers=workers,
        promotion_rule=promotion_rule,
        **dollars,
    )


def _noise_floor(replay: Replay, count: int) -> NoiseFloor:
    """Full training judged like every rung: rho of the full cell's losses on the replay seeds against the judge,
    and the regret of picking the best of `count` drawn configurations (each at its drawn seed) by full training
    alone, mean and range over folds."""
    table = replay.tables([replay.study.full_cell])
    rho, _ = replay.judged(table[0])
    alone = replay_outcome(replay, [table], [Bracket(0, [count], 0.0)], replay.repeats)
    return NoiseFloor(
        rho.mean,
        rho.low,
        rho.high,
        alone.regret_mean,
        alone.regret_fold_low,
        alone.regret_fold_high,
        len(replay.folds),
    )


def carried_ladder(study: RecordedStudy, ladder: Ladder, eta: float, profile: Profile) -> tuple[list[int], list[str]]:
    """The ladder's z rungs the study carries for this eta (study.json `ladders`), written there from this
    profile's ladder the first time, so that a simulation on another machine replays the same rungs; a note
    where this profile's ladder differs, and where its rungs rest on disturbed cells."""
    built = [rung.trainable_layers for rung in ladder.rungs]
    notes = []
    disturbed = [rung.trainable_layers for rung in ladder.rungs if rung.disturbed]
    if disturbed:
        notes.append(
            f"the ladder's rungs z = {', '.join(map(str, disturbed))} rest on cells other work disturbed while they "
            "were timed: re-measure them on a quiet machine before relying on the ladder paths"
        )
    meta_path = study.directory / "study.json"
    meta = read_json(meta_path, "study description", "the study.json `layerprof correlate` writes")
    ladders = meta.get("ladders") if isinstance(meta.get("ladders"), dict) else {}
    carried = ladders.get(f"{eta:g}")
    if isinstance(carried, dict) and isinstance(carried.get("layers"), list) and carried["layers"]:
        layers = [int(z) for z in carried["layers"]]
        if layers != built:
            notes.append(
                f"the ladder paths use the study's ladder at eta {eta:g}, z {','.join(map(str, layers))} (from "
                f"{carried.get('device', 'another profile')}); this profile ({profile.environment.device_name}) "
                f"recommends z {','.join(map(str, built))}"
            )
        return layers, notes
    entry = {"layers": built, "profile": profile.model.spec, "device": profile.environment.device_name}
    meta["ladders"] = {**ladders, f"{eta:g}": entry}
    written = meta_path.with_suffix(".json.tmp")
    try:
        written.write_text(json.dumps(meta, indent=2) + "\n")
        written.replace(meta_path)
    except OSError as error:  # a read-only study: the ladder is used, not carried
        notes.append(f"the ladder could not be recorded in {str(meta_path)!r}: {error.strerror or error}")
    return built, notes


def _every_outcome(results: Sequence[PathResult]) -> list[Outcome]:
    """Every algorithm's outcome on every path, from scratch and continued."""
    ways: list[PathResult | ContinuedPath] = [*results, *(r.continued for r in results if r.continued is not None)]
    return [o for way in ways for o in (way.successive_halving, way.hyperband, way.asha) if o is not None]


def _chosen_axes(
    study: RecordedStudy, layer_counts: Sequence[int] | None, budget_fractions: Sequence[float] | None
) -> tuple[list[int], list[float]]:
    """--layers and --budgets pick among the study's values; a value the study lacks is an error naming them."""
    zs = sorted(set(layer_counts)) if layer_counts else study.trainable_layer_counts
    absent = [z for z in zs if z not in study.trainable_layer_counts]
    if absent:
        raise LayerprofError(
            f"--layers {','.join(map(str, absent))}: the study has z {','.join(map(str, study.trainable_layer_counts))}"
        )
    if budget_fractions:
        fractions = sorted({match_fraction(f, study.budget_fractions) for f in budget_fractions})
        absent_fractions = [f for f in fractions if f not in study.budget_fractions]
        if absent_fractions:
            raise LayerprofError(
                f"--budgets {','.join(f'{f:g}' for f in absent_fractions)}: the study has budget fractions "
                f"{','.join(f'{f:g}' for f in study.budget_fractions)}"
            )
    else:
        fractions = study.budget_fractions
    return zs, fractions


def _starting_configs(
    study: RecordedStudy, paths: Sequence[FidelityPath], eta: float, requested: int | None, notes: list[str]
) -> int:
    """--configs, or eta^(K-1) for the budget path's K rungs (else the longest path's), at most the study's."""
    available = len(study.configs)
    if requested is not None:
        if not 1 <= requested <= available:
            raise LayerprofError(f"--configs must be in 1..{available} (the study's configurations), got {requested}")
        return requested
    reference = next((p for p in paths if p.name == BASELINE_PATH), max(paths, key=lambda p: len(p.cells)))
    count = round(eta ** (len(reference.cells) - 1))
    if count > available:
        notes.append(
            f"{count} starting configurations would suit {len(reference.cells)} rungs; the study has {available}"
        )
        count = available
    return count


def _simulate_path(
    replay: Replay,
    path: FidelityPath,
    eta: float,
    count: int,
    pricing: Pricing | None,
    notes: list[str],
    unrecorded: list[FidelityPath],
) -> PathResult:
    """The path from scratch and, where the study allows, continued."""
    cells, rung_count = path.cells, len(path.cells)
    scratch_tables = replay.tables(cells)
    scratch_prices = [pricing.price(cell) for cell in cells] if pricing else None
    scratch = _replay_mode(
        replay,
        path,
        eta,
        count,
        [scratch_tables] * rung_count,
        None if scratch_prices is None else [scratch_prices] * rung_count,
        notes,
    )
    result = PathResult(path.name, path.about, *scratch[:4], asha=scratch[4])
    if rung_count == 1:
        return result  # nothing to continue from
    tables, runs, chain, reasons = _continued_tables(replay, cells)
    notes += [f"{path.name}, continued: {why}; rerun correlate with the same options (it resumes)" for why in reasons]
    if tables[0] is None or runs is None or any(t is None for t in tables[1:]):
        unrecorded.append(path)
    if tables[0] is None or runs is None:
        return result
    prices = None
    if pricing and scratch_prices:
        prices = [scratch_prices[:first] + pricing.continued(cells[first:]) for first in range(rung_count)]
    rungs, sh, hb, curve, asha_result = _replay_mode(replay, path, eta, count, tables, prices, notes, quiet=True)
    result.continued = ContinuedPath(
        runs, None if chain is None else chain_label(chain), rungs, sh, hb, curve, asha=asha_result
    )
    return result


def _continued_tables(
    replay: Replay, cells: Sequence[GridCell]
) -> tuple[list[list[CellTable] | None], Runs | None, Chain | None, list[str]]:
    """The continued tables of a path for a bracket starting at each rung (None where the study lacks them),
    where they come from, and why a chain that would serve them cannot (an interrupted study). A bracket that
    starts at the top rung trains from scratch there. A path at one z that the study recorded no continued runs
    for is assumed to continue as it trained from scratch: the same losses (exact for a constant learning rate)
    and each rung's training seconds cut to the share of its steps that its segment trains (its evaluation kept;
    no checkpoint is charged, as none was recorded)."""
    study, scratch = replay.study, replay.tables(cells)
    found = [study.continued_tables(cells[first:]) for first in range(len(cells) - 1)]
    reasons = {item for item in found if isinstance(item, str) and item != "not recorded"}
    if not isinstance(found[0], str):
        tables: list[list[CellTable] | None] = [
            None if isinstance(item, str) else scratch[:first] + item[0] for first, item in enumerate(found)
        ]
        return [*tables, scratch], "recorded", found[0][1], sorted(reasons)
    if len({z for z, _ in cells}) > 1:
        return [None] * len(cells), None, None, sorted(reasons)
    assumed = []
    for first in range(len(cells)):
        rest = [
            CellTable(
                table.losses,
                [
                    [
                        (value - evaluation) * (s.end_fraction - s.start_fraction) / s.budget_fraction + evaluation
                        for value, evaluation in zip(row, evaluations, strict=True)
                    ]
                    for row, evaluations in zip(
                        table.seconds, table.eval_seconds or [[0.0] * len(r) for r in table.seconds], strict=True
                    )
                ],
                table.eval_seconds,
            )
            for table, s in zip(scratch[first:], segments(cells[first:]), strict=True)
        ]
        assumed.append(scratch[:first] + rest)
    return assumed, "assumed", None, sorted(reasons)  # type: ignore[return-value]


def _replay_mode(
    replay: Replay,
    path: FidelityPath,
    eta: float,
    count: int,
    tables: Sequence[Sequence[CellTable] | None],
    prices: BracketPrices | None,
    notes: list[str],
    quiet: bool = False,
) -> tuple[list[RungResult], Outcome, Outcome | None, list[CurvePoint], Outcome | None]:
    """Rho per rung, successive halving, Hyperband (where the study has every start it needs), the curve and ASHA
    (more than one rung), on one set of tables (from scratch, or continued)."""
    first_tables = tables[0]
    assert first_tables is not None
    rungs = []
    for index, (cell, table) in enumerate(zip(path.cells, first_tables, strict=True)):
        rho, _ = replay.judged(table)
        price = prices[0][index] if prices else None
        spread = (rho.low, rho.high) if len(replay.folds) > 1 else (None, None)
        rungs.append(RungResult(cell[0], cell[1], rho.mean, price, *spread))
    unit_costs = [1.0] * len(path.cells)  # bracket sizes do not depend on costs
    halving = [successive_halving(unit_costs, count, eta)]
    sh = replay_outcome(replay, tables, halving, replay.repeats)  # type: ignore[arg-type]
    hb = None
    if len(path.cells) > 1:
        brackets = hyperband(unit_costs, eta)
        largest = max(b.configs_per_rung[0] for b in brackets)
        if largest > len(replay.study.configs):
            if not quiet:
                notes.append(
                    f"{path.name}: Hyperband starts a bracket with {largest} configurations, more than the study's "
                    f"{len(replay.study.configs)}; use fewer rungs (--layers/--budgets) or a larger eta"
                )
        elif all(tables[b.first_rung] is not None for b in brackets):
            hb = replay_outcome(replay, tables, brackets, replay.repeats)  # type: ignore[arg-type]
            if prices:
                _priced(hb, brackets, prices)
    if prices:
        _priced(sh, halving, prices)
    asha_result = None
    if len(path.cells) > 1:
        asha_result = asha_outcome(replay, first_tables, count, eta, replay.repeats)
        if prices:
            _priced_asha(asha_result, prices[0])
    return rungs, sh, hb, _curve(replay, path, eta, tables, prices, sh.repeats), asha_result


def _priced_asha(outcome: Outcome, prices: Sequence[RungPrice]) -> None:
    """ASHA's GPU seconds and FLOPs: each rung's price times the mean trials that reached it."""
    counts = outcome.trials_per_rung or []
    seconds = [p.trial_gpu_seconds for p in prices]
    flops = [p.trial_flops for p in prices]
    if all(s is not None for s in seconds):
        outcome.gpu_seconds = sum(c * (s or 0.0) for c, s in zip(counts, seconds, strict=True))
    if all(f is not None for f in flops):
        outcome.flops = sum(c * (f or 0.0) for c, f in zip(counts, flops, strict=True))
    needs = [p.memory_need_bytes for p in prices]
    outcome.peak_memory_bytes = None if any(n is None for n in needs) else max(needs)  # type: ignore[type-var]


def _curve(
    replay: Replay,
    path: FidelityPath,
    eta: float,
    tables: Sequence[Sequence[CellTable] | None],
    prices: BracketPrices | None,
    repeats: int,
) -> list[CurvePoint]:
    """Successive halving from eta, eta^2, ... configurations (up to the study's), as many repeats as the path's
    own halving took: regret against cost."""
    points = []
    sizes = sorted({round(eta**k) for k in range(1, 64) if round(eta**k) <= len(replay.study.configs)})
    for size in sizes:
        brackets = [successive_halving([1.0] * len(path.cells), size, eta)]
        outcome = replay_outcome(replay, tables, brackets, repeats)  # type: ignore[arg-type]
        if prices:
            _priced(outcome, brackets, prices)
        points.append(
            CurvePoint(
                size,
                outcome.recorded_seconds,
                outcome.gpu_seconds,
                outcome.regret_median,
                outcome.regret_low,
                outcome.regret_high,
                outcome.uncertainty["regret_median"],
            )
        )
    return points


def _unstable_notes(results: Sequence[PathResult], repeats: int | None) -> list[str]:
    """The outcomes whose figures still move between seeds, and what would settle them."""
    ways: list[tuple[str, str, PathResult | ContinuedPath]] = [(result.name, "", result) for result in results]
    ways += [(result.name, ", continued", result.continued) for result in results if result.continued is not None]
    unsettled = [
        f"{name} ({algorithm}{runs})"
        for name, runs, way in ways
        for algorithm, outcome in (("halving", way.successive_halving), ("Hyperband", way.hyperband))
        if outcome is not None and not outcome.stable
    ]
    if not unsettled:
        return []
    remedy = (
        f"even {MAX_REPEATS} repeats leave them between two values of the regret distribution"
        if repeats is None
        else "--repeats auto (the default) repeats until they settle"
    )
    return [f"figures marked ± still move between seeds in {', '.join(unsettled)}: {remedy}"]


# ---------------------------------------------------------------- what the figure draws


def _curves(simulation: Simulation) -> list[tuple[str, str, list[CurvePoint]]]:
    """(path, runs, curve) of every curve drawn: each path from scratch, then each path continued."""
    curves = [(path.name, "scratch", path.curve) for path in simulation.paths]
    curves += [
        (path.name, path.continued.runs_label, path.continued.curve)
        for path in simulation.paths
        if path.continued is not None
    ]
    return [(name, runs, curve) for name, runs, curve in curves if curve]


def repeats_text(simulation: Simulation) -> str:
    """How many repeats the curves stand on: one count, or the range over paths, and whether until stable."""
    ways: list[PathResult | ContinuedPath] = [
        *simulation.paths,
        *(p.continued for p in simulation.paths if p.continued is not None),
    ]
    counts = sorted({way.successive_halving.repeats for way in ways})
    shown = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{shown} repeats" + (" (until stable)" if simulation.repeats is None else "")


def priced_curves(simulation: Simulation) -> bool:
    """Whether a profile priced every point of every curve (GPU seconds), else they are recorded seconds."""
    return all(p.gpu_seconds is not None for _, _, curve in _curves(simulation) for p in curve)


def curve_series(simulation: Simulation) -> dict[str, JsonDict]:
    """What the figure draws per curve (a path from scratch under its name, continued as `name, continued` or
    `name, assumed`): the path and runs, cost (GPU seconds where a profile priced every trial, else recorded
    seconds), the median regret and its 5-95% band, and the starting configurations of each point."""
    priced = priced_curves(simulation)
    return {
        (name if runs == "scratch" else f"{name}, {runs}"): {
            "path": name,
            "runs": runs,
            "cost": [(p.gpu_seconds if priced else p.recorded_seconds) for p in curve],
            "median": [p.regret_median for p in curve],
            "low": [p.regret_low for p in curve],
            "high": [p.regret_high for p in curve],
            "configs": [p.starting_configs for p in curve],
        }
        for name, runs, curve in _curves(simulation)
    }
