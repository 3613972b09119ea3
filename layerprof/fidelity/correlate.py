"""Does a low rung rank hyperparameters like full training? Rank correlation over (trainable layers x budget).

Every configuration of a grid is trained at each chosen trainable-layer count z and budget fraction; each
cell's losses are ranked against full fidelity (the largest z at the full budget). With `--continue`, each
configuration also goes through a path's rungs in one run that carries its weights and optimizer state from
rung to rung (a checkpointed budget rung, or thawing more layers), as HPO libraries that continue trials do.
Trials are appended to `trials.jsonl` as they finish, so a rerun of the same command runs only what is missing;
each records its set-up apart from its training and evaluation seconds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, TypedDict

from layerprof.errors import LayerprofError, read_json
from layerprof.fidelity.grids import GRID_PRESETS, HYPERPARAMETERS, Config, expand_grid, load_grid
from layerprof.fidelity.judging import Fold, JudgeMode, NoiseFloor, OverFolds, judge_folds, judge_mode, rank_and_regret
from layerprof.fidelity.trials import (
    CONTINUED_PATHS,
    EXECUTORS,
    PHASES,
    Chain,
    GridCell,
    PhaseClock,
    Segment,
    TaskState,
    match_fraction,
    segments,
    study_paths,
    timed_trial,
)
from layerprof.parsing import MAX_TRIALS, LayerSelection
from layerprof.profile import JsonDict, current_spec
from layerprof.stats import bootstrap_interval, kendall_tau_b, spearman

# ---------------------------------------------------------------- grids

# ---------------------------------------------------------------- trials


@dataclass(frozen=True)
class Trial:
    """One from-scratch trial: a configuration trained at z layers for a budget fraction, with a seed."""

    config_index: int
    trainable_layers: int
    budget_fraction: float
    seed: int

    @property
    def key(self) -> str:
        """The trial's name in the trial store: `config/z/fraction/seed`."""
        return f"{self.config_index}/{self.trainable_layers}/{self.budget_fraction:g}/{self.seed}"


@dataclass(frozen=True)
class ContinuedTrial:
    """One configuration trained through a chain of rungs in a single run."""

    config_index: int
    chain: Chain
    seed: int

    @property
    def key(self) -> str:
        """The run's name in the trial store (`continued_key`)."""
        return continued_key(self.chain, self.config_index, self.seed)


def continued_key(chain: Sequence[GridCell], config_index: int, seed: int) -> str:
    """The key that names a continued run in the trial store (exact fractions: 1/9 is not 0.111111)."""
    exact = ",".join(f"{z}@{f!r}" for z, f in chain)  # repr: 1/9 and 0.111111 are different chains
    return f"continued/{exact}/{config_index}/{seed}"


def chain_label(chain: Sequence[GridCell]) -> str:
    """A chain as the user writes it: 1@0.25,3@0.5,6@1."""
    return ",".join(f"{z}@{f:g}" for z, f in chain)


def serving(chain: Sequence[GridCell], path: Sequence[GridCell]) -> list[list[int]] | None:
    """For each rung of `path`, the segments of a run through `chain` that train it; None where the runs differ.

    A run serves a path when it passes through every rung of the path, ends where the path ends, and trains at
    the next rung's z in between: a budget run evaluated at 1/9, 1/4, 1/3 and 1 serves halving on 1/9, 1/3 and
    1 (evaluating changes nothing), but a run that thawed layers on the way serves only its own rungs."""
    blocks: list[list[int]] = []
    position = 0
    for cell in path:
        block: list[int] = []
        while position < len(chain) and chain[position][0] == cell[0]:
            block.append(position)
            position += 1
            if chain[block[-1]] == cell:
                break
        if not block or chain[block[-1]] != cell:
            return None
        # several segments make one only when the first of them trains on to a higher fraction
        if len(block) > 1 and block[0] > 0 and chain[block[0]][1] <= chain[block[0] - 1][1]:
            return None
        blocks.append(block)
    return blocks if position == len(chain) else None


_now = time.perf_counter  # the clock of trials and phases


@dataclass
class TrialResult:
    """A from-scratch trial's loss (None where it failed) and where its seconds went."""

    config_index: int
    trainable_layers: int
    budget_fraction: float
    seed: int
    loss: float | None
    error: str | None = None
    seconds: float = 0.0  # the whole trial: set-up, training and evaluation
    setup_seconds: float | None = None  # None: the task marked no phases, or the study predates them
    train_seconds: float | None = None
    eval_seconds: float | None = None


@dataclass
class SegmentResult:
    """One rung of a continued run: the loss evaluated at its end and its seconds."""

    trainable_layers: int
    budget_fraction: float
    loss: float | None
    error: str | None = None
    seconds: float = 0.0  # the task's resume call for this rung
    train_seconds: float | None = None
    eval_seconds: float | None = None
    checkpoint_seconds: float | None = None  # restoring the run before the rung and saving it after (not the last)


@dataclass
class ContinuedResult:
    """A continued run: one result per rung it reached (it stops at a rung that fails)."""

    config_index: int
    seed: int
    chain: list[list[float]]  # [z, budget fraction] per rung
    segments: list[SegmentResult]
    seconds: float = 0.0
    setup_seconds: float | None = None  # the run less its marked training and evaluation
    error: str | None = None
    kind: Literal["continued"] = "continued"

    @property
    def cells(self) -> Chain:
        """The chain as a Chain of (z, budget fraction) tuples (the record holds lists, as JSON does)."""
        return tuple((int(z), float(f)) for z, f in self.chain)

    @property
    def key(self) -> str:
        """The run's name in the trial store, the same as its ContinuedTrial's."""
        return continued_key(self.cells, self.config_index, self.seed)


def _error_text(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _phase_seconds(clock: PhaseClock, before: dict[str, float]) -> tuple[float | None, float | None]:
    if not clock.marked:
        return None, None
    return clock.seconds["training"] - before["training"], clock.seconds["evaluation"] - before["evaluation"]


def _checkpoint_seconds(clock: PhaseClock, before: dict[str, float]) -> float | None:
    return clock.seconds["checkpoint"] - before["checkpoint"] if clock.marked else None


def _seed_worker(seed: int) -> None:
    import torch

    torch.set_num_threads(1)  # one trial per core
    random.seed(seed)
    torch.manual_seed(seed)


def run_trial(task_spec: str, config: Config, trial: Trial) -> TrialResult:
    """Run in a worker: seed everything, call the task, turn failures and NaN into a failed result."""
    _seed_worker(trial.seed)
    began = _now()
    with timed_trial(_now) as clock:
        error, loss = None, None
        try:
            task = resolve_task(task_spec)
            loss = float(task({**config, "seed": trial.seed}, trial.trainable_layers, trial.budget_fraction))
            if not math.isfinite(loss):
                error, loss = f"returned {loss}", None
        except Exception as raised:  # noqa: BLE001 - a failing configuration is data, not a crash
            error = _error_text(raised)
        seconds = _now() - began
        train, evaluation = _phase_seconds(clock, dict.fromkeys(PHASES, 0.0))
    setup = None if train is None or evaluation is None else seconds - train - evaluation
    return TrialResult(
        **_fields(trial),
        loss=loss,
        error=error,
        seconds=seconds,
        setup_seconds=setup,
        train_seconds=train,
        eval_seconds=evaluation,
    )


def run_continued(task_spec: str, config: Config, trial: ContinuedTrial) -> ContinuedResult:
    """Run in a worker: one run through the chain, the task's state handed from rung to rung; a rung that
    raises or returns NaN ends the run there."""
    _seed_worker(trial.seed)
    began = _now()
    done: list[SegmentResult] = []
    error = None
    with timed_trial(_now) as clock:
        try:
            resume = continuation_of(resolve_task(task_spec), task_spec)
        except Exception as raised:  # noqa: BLE001
            resume, error = None, _error_text(raised)
        state: TaskState = None
        for segment in segments(trial.chain) if resume is not None else []:
            before, started = dict(clock.seconds), _now()
            loss: float | None = None
            try:
                returned = resume({**config, "seed": trial.seed}, segment, state)  # type: ignore[misc]
                if not (isinstance(returned, tuple) and len(returned) == 2):
                    raise TypeError(f"resume must return (loss, state), got {type(returned).__name__}")
                loss, state = float(returned[0]), returned[1]
                if not math.isfinite(loss):
                    error, loss = f"returned {loss}", None
            except Exception as raised:  # noqa: BLE001
                error = _error_text(raised)
            train, evaluation = _phase_seconds(clock, before)
            done.append(
                SegmentResult(
                    segment.trainable_layers,
                    segment.budget_fraction,
                    loss,
                    error,
                    _now() - started,
                    train,
                    evaluation,
                    _checkpoint_seconds(clock, before),
                )
            )
            if error is not None:
                break
        seconds = _now() - began
        marked = clock.marked
        phases = sum(clock.seconds.values())
    return ContinuedResult(
        config_index=trial.config_index,
        seed=trial.seed,
        chain=[[z, f] for z, f in trial.chain],
        segments=done,
        seconds=seconds,
        setup_seconds=seconds - phases if marked else None,
        error=error,
    )


def run_job(task_spec: str, config: Config, job: Trial | ContinuedTrial) -> TrialResult | ContinuedResult:
    """What a worker runs: a from-scratch trial or a continued run."""
    if isinstance(job, ContinuedTrial):
        return run_continued(task_spec, config, job)
    return run_trial(task_spec, config, job)


class TrialFields(TypedDict):
    """What names a from-scratch trial in its result."""

    config_index: int
    trainable_layers: int
    budget_fraction: float
    seed: int


def _fields(trial: Trial) -> TrialFields:
    return {
        "config_index": trial.config_index,
        "trainable_layers": trial.trainable_layers,
        "budget_fraction": trial.budget_fraction,
        "seed": trial.seed,
    }


def resolve_task(spec: str) -> Callable[[Config, int, float], float]:
    """The task a name (digits, pydoc-lm) or a factory (file.py:fn, pkg.mod:fn) names; a bad one is an
    input error."""
    from layerprof.fidelity.tasks import TASKS

    if spec in TASKS:
        return TASKS[spec]
    if ":" in spec:
        from layerprof.sources.builders import load_factory

        return load_factory(spec)
    raise LayerprofError(f"unknown task {spec!r}; built-in: {', '.join(TASKS)}, or path/to/file.py:fn")


def continuation_of(
    task: Callable[..., float], spec: str
) -> Callable[[Config, Segment, TaskState], tuple[float, TaskState]]:
    """A task's `resume(config, segment, state) -> (loss, state)`; a task without one cannot continue a run."""
    resume = getattr(task, "resume", None)
    if not callable(resume):
        raise LayerprofError(
            f"{spec} cannot continue a run: give it fn.resume = resume(config, segment, state) -> (loss, state) "
            "(docs/commands/correlate.md, continued runs), or leave out --continue"
        )
    return resume


def task_layer_count(task: Callable) -> int | None:
    """The layer count a task declares (its `layer_count` attribute), or None."""
    count = getattr(task, "layer_count", None)
    return int(count) if count is not None else None


# ---------------------------------------------------------------- store

# /2: trials record set-up, training and evaluation seconds; continued runs. /3: continued runs record their
# checkpoints' seconds and are recorded among the from-scratch trials, not after them
STUDY_SCHEMA = "layerprof.study/3"
STUDY_SCHEMAS = ("layerprof.study/1", "layerprof.study/2", STUDY_SCHEMA)  # a study.json without a schema is /1


def check_study_meta(meta: object, path: Path) -> JsonDict:
    """A study.json's content, refused with one line where it is not one or is of a later schema."""
    if not isinstance(meta, dict) or not isinstance(meta.get("configs"), list) or "task" not in meta:
        raise LayerprofError(f"{str(path)!r} is not a correlate study's description (no task and configs)")
    schema = meta.get("schema", STUDY_SCHEMAS[0])
    if schema not in STUDY_SCHEMAS:
        raise LayerprofError(
            f"{str(path)!r} is a {schema} study; this layerprof reads {', '.join(STUDY_SCHEMAS[:-1])} and "
            f"{STUDY_SCHEMAS[-1]} (upgrade it)"
        )
    return {**meta, "task": current_spec(str(meta["task"]))}  # a task naming a moved module, written before the move


def read_records(path: Path) -> tuple[dict[str, TrialResult], dict[str, ContinuedResult]]:
    """Finished from-scratch trials and continued runs by key; a line torn by a crash is skipped (that trial runs
    again on resume)."""
    results: dict[str, TrialResult] = {}
    continued: dict[str, ContinuedResult] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if data.get("kind") == "continued":
                parts = [SegmentResult(**segment) for segment in data.pop("segments")]
                run = ContinuedResult(segments=parts, **data)
                continued[run.key] = run
                continue
            result = TrialResult(**data)
        except (json.JSONDecodeError, TypeError, AttributeError, KeyError, ValueError):
            continue
        trial = Trial(result.config_index, result.trainable_layers, result.budget_fraction, result.seed)
        results[trial.key] = result
    return results, continued


class TrialStore:
    """`trials.jsonl` in the output directory, one finished trial or continued run per line, for resuming."""

    def __init__(self, directory: Path, identity: JsonDict) -> None:
        """Creates `directory` and its study.json; LayerprofError where it holds another study or cannot be made."""
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LayerprofError(f"cannot create {str(directory)!r}: {error.strerror or error}") from None
        self.path = directory / "trials.jsonl"
        meta = directory / "study.json"
        if meta.exists():
            existing = read_json(meta, "study description", "the study.json `layerprof correlate` writes")
            if not isinstance(existing, dict) or identity["fingerprint"] not in (
                existing.get("fingerprint"),
                fingerprint(current_spec(str(existing.get("task"))), existing.get("configs", [])),
            ):
                raise LayerprofError(
                    f"{str(directory)!r} holds a study of another task or grid; use a new --out directory"
                )
            check_study_meta(existing, meta)
        else:
            meta.write_text(json.dumps({"schema": STUDY_SCHEMA, **identity}, indent=2) + "\n")

    def load(self) -> tuple[dict[str, TrialResult], dict[str, ContinuedResult]]:
        """The results recorded so far by key (trials, continued runs): empty for a new study, damaged lines skipped."""
        return read_records(self.path) if self.path.exists() else ({}, {})

    def append(self, result: TrialResult | ContinuedResult) -> None:
        """Record one finished result, synced to disk, so that an interrupted study keeps it."""
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(result)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


# ---------------------------------------------------------------- the study


@dataclass
class CellStatistics:
    """Rank correlation of one (z, budget) cell with full training, with its bootstrap intervals."""

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
    spearman_fold_low: float | None = None  # the lowest and highest fold's rho (held-out judging, over rotations)
    spearman_fold_high: float | None = None


@dataclass
class ContinuedRung:
    """One rung of a continued path: its losses ranked against full fidelity (trained from scratch)."""

    trainable_layers: int
    budget_fraction: float
    configs: int  # configurations with a continued loss here and a full-fidelity loss
    spearman: float | None
    spearman_scratch: float | None  # the same cell trained from scratch, where the study has it
    regret: float | None


@dataclass
class ContinuedStatistics:
    """Rank correlation of each rung of a continued chain with full training."""

    chain: list[list[float]]  # [z, budget fraction] per rung
    rungs: list[ContinuedRung]
    failed_runs: int = 0


CORRELATION_SCHEMA = "layerprof.correlation/4"  # adds `judge`, `judge_seeds` and `noise_floor`
CORRELATION_SCHEMAS = (
    "layerprof.correlation/1",
    "layerprof.correlation/2",
    "layerprof.correlation/3",
    CORRELATION_SCHEMA,
)
CORRELATION_SCHEMA_V1 = CORRELATION_SCHEMAS[0]  # called the z values `layers`


@dataclass
class CorrelationResult:
    """A finished study: every cell's statistics, the continued chains, and how it ran."""

    task: str
    configs: list[Config]
    trainable_layer_counts: list[int]
    budget_fractions: list[float]
    seeds: int
    cells: list[CellStatistics] = field(default_factory=list)
    failed_trials: int = 0
    wall_seconds: float = 0.0
    executor: str = "local"
    continued: list[ContinuedStatistics] = field(default_factory=list)
    judge: JudgeMode = "same-seed"  # held-out: rho and regret against seeds the low rung's losses do not come from
    judge_seeds: int = 0  # seeds recorded at full fidelity only, to judge (correlate --judge-seeds)
    noise_floor: NoiseFloor | None = None  # full training judged like every cell: seed-to-seed rho and regret

    def cell(self, trainable_layers: int, budget_fraction: float) -> CellStatistics | None:
        """The statistics of one (z, budget fraction) cell, or None where the study has none."""
        return next(
            (c for c in self.cells if c.trainable_layers == trainable_layers and c.budget_fraction == budget_fraction),
            None,
        )

    def to_dict(self) -> JsonDict:
        """The JSON form `correlate` writes, with its schema."""
        return {"schema": CORRELATION_SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, data: JsonDict, source: str = "result") -> CorrelationResult:
        """From its JSON form (either schema); LayerprofError naming `source` when it is not a correlation result."""
        if data.get("schema") not in CORRELATION_SCHEMAS:
            raise LayerprofError(f"{source} is not a layerprof correlation result")
        payload = {k: v for k, v in data.items() if k not in ("schema", "cells", "continued", "noise_floor")}
        if isinstance(payload.get("task"), str):  # a task naming a moved module, written before the move
            payload["task"] = current_spec(payload["task"])
        if data["schema"] == CORRELATION_SCHEMA_V1:
            payload["trainable_layer_counts"] = payload.pop("layers")
        continued = [
            ContinuedStatistics(
                chain=item["chain"],
                rungs=[ContinuedRung(**rung) for rung in item["rungs"]],
                failed_runs=item.get("failed_runs", 0),
            )
            for item in data.get("continued", [])
        ]
        floor = data.get("noise_floor")
        return cls(
            cells=[CellStatistics(**cell) for cell in data["cells"]],
            continued=continued,
            noise_floor=NoiseFloor(**floor) if isinstance(floor, dict) else None,
            **payload,
        )  # before /4 every verdict was judged by the seeds it ranked: `judge` defaults to same-seed


@dataclass(frozen=True)
class StudyPlan:
    """What a study trains: every configuration at every (z, budget fraction), `seeds` times, and through every
    continued chain."""

    task: str
    configs: list[Config]
    trainable_layer_counts: tuple[int, ...]
    budget_fractions: tuple[float, ...]
    seeds: int = 1
    chains: tuple[Chain, ...] = ()
    judge_seeds: int = 0  # seeds after the study's, trained at full fidelity only: they judge the others

    @property
    def full_cell(self) -> GridCell:
        """(largest z, full budget): full training, the judge of every cell."""
        return max(self.trainable_layer_counts), max(self.budget_fractions)

    @property
    def folds(self) -> list[Fold]:
        """Who judges whom (`judging.judge_folds`): the judge-only seeds, else each seed the rest."""
        return judge_folds(range(self.seeds), range(self.seeds, self.seeds + self.judge_seeds))

    @property
    def trial_count(self) -> int:
        """Training runs in all: every configuration and seed at every cell and through every chain, and each
        judge seed at full fidelity."""
        cells = len(self.trainable_layer_counts) * len(self.budget_fractions) + len(self.chains)
        return len(self.configs) * (cells * self.seeds + self.judge_seeds)

    def trials(self) -> list[Trial]:
        """Cheap trials first, so that an interrupted study has its low rungs; the judge seeds' last."""
        z_full, full = self.full_cell
        return [
            *(
                Trial(index, z, fraction, seed)
                for z in sorted(self.trainable_layer_counts)
                for fraction in sorted(self.budget_fractions)
                for index in range(len(self.configs))
                for seed in range(self.seeds)
            ),
            *(
                Trial(index, z_full, full, seed)
                for index in range(len(self.configs))
                for seed in range(self.seeds, self.seeds + self.judge_seeds)
            ),
        ]

    def continued_trials(self) -> list[ContinuedTrial]:
        """One run per chain, configuration and seed, chain by chain."""
        return [
            ContinuedTrial(index, chain, seed)
            for chain in self.chains
            for index in range(len(self.configs))
            for seed in range(self.seeds)
        ]


def plan_chains(
    requests: Sequence[str], layer_counts: Sequence[int], fractions: Sequence[float], layer_count: int | None
) -> tuple[Chain, ...]:
    """The chains `--continue` asks for: named paths over the study's z values and budget fractions, or rungs
    like 1@0.25,3@0.5,6@1; then every later start of each (a Hyperband bracket starting at a higher rung trains
    from scratch to it and continues from there) that no chain already serves."""
    from layerprof.parsing import parse_rungs

    asked: list[Chain] = []
    for request in requests:
        if "@" in request:
            cells = tuple((z, match_fraction(f, fractions)) for z, f in parse_rungs(request, "--continue"))
            asked.append(_checked_chain(cells, request, layer_count))
            continue
        names = [name.strip() for name in request.split(",") if name.strip()]
        unknown = [name for name in names if name not in CONTINUED_PATHS]
        if unknown or not names:
            raise LayerprofError(
                f"--continue {request!r}: name paths ({', '.join(CONTINUED_PATHS)}) or give rungs like 1@0.25,3@0.5,6@1"
            )
        for path in study_paths(names, layer_counts, fractions, None)[0]:
            asked.append(_checked_chain(tuple(path.cells), path.name, layer_count))
    planned: list[Chain] = []
    for chain in asked:
        for start in range(len(chain) - 1):
            suffix = chain[start:]
            if not any(serving(other, suffix) is not None for other in planned):
                planned.append(suffix)
    return tuple(c for c in planned if not any(o != c and serving(o, c) is not None for o in planned))


def _checked_chain(cells: Chain, request: str, layer_count: int | None) -> Chain:
    beyond = [z for z, _ in cells if layer_count is not None and z > layer_count]
    if beyond:  # said first: `7@1` on a 3-layer task is a z the task lacks, whatever else is wrong with it
        raise LayerprofError(f"--continue {request}: z={beyond[0]}, but the task has {layer_count} layers")
    if len(cells) < 2:
        raise LayerprofError(f"--continue {request}: a continued run goes through two or more rungs")
    for (z, fraction), (next_z, next_fraction) in itertools.pairwise(cells):
        if next_z < z or next_fraction < fraction or (next_z, next_fraction) == (z, fraction):
            raise LayerprofError(
                f"--continue {request}: each rung must add layers or budget and take none away, "
                f"got {z}@{fraction:g} then {next_z}@{next_fraction:g}"
            )
    return cells


# `--layers` when none is given: 1, 2, 4 and full training, those of them the task has
DEFAULT_LAYER_COUNTS = (1, 2, 4)


def plan_study(
    task: str,
    layer_selection: LayerSelection | None,
    budget_fractions: Sequence[float],
    seeds: int = 1,
    grid: Path | None = None,
    grid_preset: str = "small",
    continued: Sequence[str] = (),
    judge_seeds: int = 0,
) -> StudyPlan:
    """The configurations (a grid file, or a preset for a built-in task), the cells a study covers, the chains
    it continues through (`continued`: what --continue was given) and the seeds trained at full fidelity only, to
    judge the others (`judge_seeds`)."""
    if judge_seeds < 0:
        raise LayerprofError(f"--judge-seeds must be 0 or more, got {judge_seeds}")
    from layerprof.fidelity.tasks import TASKS

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
    fractions = tuple(sorted(budget_fractions))
    chains: tuple[Chain, ...] = ()
    if continued:
        continuation_of(function, task)
        chains = plan_chains(continued, zs, fractions, count)
    plan = StudyPlan(task, expand_grid(space), zs, fractions, seeds, chains, judge_seeds)
    if plan.trial_count > MAX_TRIALS:
        raise LayerprofError(
            f"{plan.trial_count:,} trials ({len(plan.configs):,} configurations x {seeds:,} seed(s) x cells, "
            f"and {judge_seeds} judge seed(s)) is "
            f"beyond the {MAX_TRIALS:,} a study runs; fewer --seeds, configurations or cells"
        )
    return plan


Job = Trial | ContinuedTrial
JobResult = TrialResult | ContinuedResult


def _top_layers(job: Job) -> int:
    """The most layers a job trains at once (a continued run's last rung): what its GPU share must hold."""
    return max(z for z, _ in job.chain) if isinstance(job, ContinuedTrial) else job.trainable_layers


def interleaved(trials: Sequence[Trial], runs: Sequence[ContinuedTrial]) -> list[Job]:
    """The from-scratch trials with the continued runs spread evenly among them (a continued run after every
    len(trials)/len(runs) trials), so that both are recorded under the same load of the machine and a load that
    changes during the study does not price one way of running at another speed than the other."""
    jobs: list[Job] = []
    position = 0
    for number, run in enumerate(runs):
        upto = round((number + 1) * len(trials) / len(runs))
        jobs += [*trials[position:upto], run]
        position = upto
    return [*jobs, *trials[position:]]


def run_local(
    task_spec: str,
    configs: list[Config],
    jobs: list[Job],
    workers: int,
    on_result: Callable[[JobResult], None],
) -> None:
    """Worker processes (spawned, one torch thread each); results stream back as they finish."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait  # not at `layerprof --help`

    if workers <= 1:
        for job in jobs:
            on_result(run_job(task_spec, configs[job.config_index], job))
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: set[Future] = set()
        queue: Iterator[Job] = iter(jobs)
        try:
            for job in itertools.islice(queue, workers * 2):
                pending.add(pool.submit(run_job, task_spec, configs[job.config_index], job))
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    on_result(future.result())
                for job in itertools.islice(queue, len(done)):
                    pending.add(pool.submit(run_job, task_spec, configs[job.config_index], job))
        except BaseException:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def run_ray(
    task_spec: str,
    configs: list[Config],
    jobs: list[Job],
    on_result: Callable[[JobResult], None],
    address: str | None,
    gpu_fraction: Callable[[int], float] | None = None,
) -> None:
    """Each trial a Ray task asking for the GPU share its rung needs (memory-parallel halving, Figure 6b)."""
    from layerprof.measure.cluster import ray_session

    with ray_session(address) as ray:  # the one connection of profile, plan and correlate
        remote = ray.remote(run_job)
        futures = {}
        for job in jobs:
            options: dict[str, float] = {"num_cpus": 1}
            if gpu_fraction is not None:
                options["num_gpus"] = gpu_fraction(_top_layers(job))
            futures[remote.options(**options).remote(task_spec, configs[job.config_index], job)] = job
        remaining = list(futures)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            on_result(ray.get(done[0]))


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [value for value in values if value is not None]
    return sum(finite) / len(finite) if finite else None


def _scratch_means(
    plan: StudyPlan, results: dict[str, TrialResult], cell: GridCell, seeds: Sequence[int]
) -> list[float | None]:
    """Each configuration's loss in one cell, the mean over those of `seeds` that succeeded."""
    z, fraction = cell
    rows = []
    for index in range(len(plan.configs)):
        trials = (results.get(Trial(index, z, fraction, seed).key) for seed in seeds)
        rows.append(_mean([trial.loss for trial in trials if trial is not None]))
    return rows


def _judges(plan: StudyPlan, results: dict[str, TrialResult]) -> dict[Fold, list[float | None]]:
    """Per fold, the judging seeds' full-fidelity loss of each configuration."""
    return {fold: _scratch_means(plan, results, plan.full_cell, fold.judge) for fold in plan.folds}


def _over_folds(
    statistic: Callable[[Sequence[float], Sequence[float]], float],
    lows: dict[Fold, list[float | None]],
    judges: dict[Fold, list[float | None]],
) -> Callable[[Sequence[float], Sequence[float]], float]:
    """`statistic` on the configurations named (as floats, for the bootstrap), the mean over the folds."""

    def mean_statistic(indices: Sequence[float], _: Sequence[float]) -> float:
        values = []
        for fold, low in lows.items():
            pairs = [(low[int(i)], judges[fold][int(i)]) for i in indices]
            known = [(a, b) for a, b in pairs if a is not None and b is not None]
            if len(known) >= 2:
                value = statistic([a for a, _ in known], [b for _, b in known])
                if not math.isnan(value):
                    values.append(value)
        return sum(values) / len(values) if values else math.nan

    return mean_statistic


def summarise(plan: StudyPlan, results: dict[str, TrialResult]) -> list[CellStatistics]:
    """Per cell, rank statistics of the configurations' mean loss over the replayed seeds against the judging
    seeds' full training, the mean over folds (`judging`), with bootstrap intervals over configurations."""
    judges = _judges(plan, results)
    cells = []
    for z in sorted(plan.trainable_layer_counts):
        for fraction in sorted(plan.budget_fractions):
            lows = {fold: _scratch_means(plan, results, (z, fraction), fold.replay) for fold in plan.folds}
            counts = [
                sum(a is not None and b is not None for a, b in zip(low, judges[fold], strict=True))
                for fold, low in lows.items()
            ]
            cell = CellStatistics(z, fraction, min(counts), None, None, None, None, None, None, None)
            if min(counts) < 3:
                cell.note = f"rho undefined: {min(counts)} configuration(s) succeeded here and at full fidelity, need 3"
                cells.append(cell)
                continue
            rho, regret = _fold_rho_regret(lows, judges)
            everyone = [float(i) for i in range(len(plan.configs))]
            rank, tau = _over_folds(spearman, lows, judges), _over_folds(kendall_tau_b, lows, judges)
            cell.spearman, cell.kendall = rank(everyone, everyone), tau(everyone, everyone)
            cell.spearman_low, cell.spearman_high = bootstrap_interval(everyone, everyone, rank)
            cell.kendall_low, cell.kendall_high = bootstrap_interval(everyone, everyone, tau, repeats=300)
            cell.regret = regret.mean
            if len(plan.folds) > 1:
                cell.spearman_fold_low, cell.spearman_fold_high = rho.low, rho.high
            for name in ("spearman", "kendall", "spearman_low", "spearman_high", "kendall_low", "kendall_high"):
                if isinstance(getattr(cell, name), float) and math.isnan(getattr(cell, name)):
                    setattr(cell, name, None)
            if cell.spearman is None:
                cell.note = "rho undefined: every configuration has the same loss"
            cells.append(cell)
    return cells


def _fold_rho_regret(
    lows: dict[Fold, list[float | None]], judges: dict[Fold, list[float | None]]
) -> tuple[OverFolds, OverFolds]:
    """Rho and regret of each fold's low losses against its judge, over the folds."""
    pairs = [rank_and_regret(low, judges[fold]) for fold, low in lows.items()]
    return OverFolds.of([rho for rho, _ in pairs]), OverFolds.of([regret for _, regret in pairs])


def noise_floor(plan: StudyPlan, results: dict[str, TrialResult]) -> NoiseFloor | None:
    """Full training on the replayed seeds judged by the held-out seeds (None for a same-seed judge, where it is
    rho 1 and regret 0 by construction)."""
    if judge_mode(plan.folds) == "same-seed":
        return None
    lows = {fold: _scratch_means(plan, results, plan.full_cell, fold.replay) for fold in plan.folds}
    return NoiseFloor.of(*_fold_rho_regret(lows, _judges(plan, results)))


def summarise_continued(
    plan: StudyPlan,
    results: dict[str, TrialResult],
    continued: dict[str, ContinuedResult],
    cells: Sequence[CellStatistics],
) -> list[ContinuedStatistics]:
    """Per chain and rung: the continued losses (mean over the replayed seeds) ranked against the judging seeds'
    full fidelity from scratch, the mean over folds, beside the same cell's rho from scratch."""
    judges = _judges(plan, results)
    scratch = {(c.trainable_layers, c.budget_fraction): c.spearman for c in cells}
    summaries = []
    for chain in plan.chains:
        runs = {
            seed: [continued.get(continued_key(chain, index, seed)) for index in range(len(plan.configs))]
            for seed in range(plan.seeds)
        }
        rungs = []
        for position, (z, fraction) in enumerate(chain):

            def loss(run: ContinuedResult | None, at: int = position) -> float | None:
                return run.segments[at].loss if run is not None and len(run.segments) > at else None

            lows = {
                fold: _per_config_mean(
                    [[loss(runs[seed][index]) for seed in fold.replay] for index in range(len(plan.configs))]
                )
                for fold in plan.folds
            }
            counts = [
                sum(a is not None and b is not None for a, b in zip(low, judges[fold], strict=True))
                for fold, low in lows.items()
            ]
            rho, regret = _fold_rho_regret(lows, judges)
            rungs.append(ContinuedRung(z, fraction, min(counts), rho.mean, scratch.get((z, fraction)), regret.mean))
        failed = sum(1 for row in runs.values() for r in row if r is not None and r.error is not None)
        summaries.append(ContinuedStatistics([[z, f] for z, f in chain], rungs, failed))
    return summaries


def _per_config_mean(rows: list[list[float | None]]) -> list[float | None]:
    return [_mean(row) for row in rows]


def fingerprint(task: str, configs: list[Config]) -> str:
    """A digest of the task and the configurations: a resumed study must be the same study."""
    return hashlib.sha256(json.dumps([task, configs], sort_keys=True).encode()).hexdigest()[:16]


def run_study(
    plan: StudyPlan,
    directory: Path,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    on_result: Callable[[JobResult, int, int], None] | None = None,
    gpu_fraction: Callable[[int], float] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> CorrelationResult:
    """Run what is missing (from-scratch trials first, then continued runs), then summarise; every finished trial
    is on disk before the next is reported. `on_start(done, total)` hears, before the first trial runs, how many
    of the study's trials a resumed study already holds, so that a bar has its total from the start."""
    if len(plan.configs) < 3:
        raise LayerprofError(f"the grid has {len(plan.configs)} configuration(s); rank correlation needs at least 3")
    if any(not 0 < f <= 1 for f in plan.budget_fractions):
        raise LayerprofError("--budget-fractions must lie in (0, 1]")
    store = TrialStore(
        directory,
        {"task": plan.task, "configs": plan.configs, "fingerprint": fingerprint(plan.task, plan.configs)},
    )
    results, continued = store.load()
    planned: list[Job] = interleaved(plan.trials(), plan.continued_trials())
    missing = [job for job in planned if job.key not in results and job.key not in continued]
    done_before = len(planned) - len(missing)
    if on_start:
        on_start(done_before, len(planned))
    began = time.perf_counter()

    finished = done_before

    def record(result: JobResult) -> None:
        nonlocal finished
        store.append(result)
        if isinstance(result, ContinuedResult):
            continued[result.key] = result
        else:
            trial = Trial(result.config_index, result.trainable_layers, result.budget_fraction, result.seed)
            results[trial.key] = result
        finished += 1
        if on_result:
            on_result(result, finished, len(planned))

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
    result.continued = summarise_continued(plan, results, continued, result.cells)
    result.judge, result.judge_seeds = judge_mode(plan.folds), plan.judge_seeds
    result.noise_floor = noise_floor(plan, results)
    result.failed_trials = sum(1 for t in plan.trials() if results.get(t.key) and results[t.key].loss is None)
    result.failed_trials += sum(c.failed_runs for c in result.continued)
    if done_before:
        result.executor += f" (resumed: {done_before} of {len(planned)} trials were on disk)"
    return result


def load_result(path: Path) -> CorrelationResult:
    """Read a study's result.json back (for `ladder --correlation`); a bad file is an input error."""
    data = read_json(path, "correlation result", "a result.json written by `layerprof correlate`")
    return CorrelationResult.from_dict(data, source=repr(str(path)))
