"""Sweeps of cells, and the jobs that run them: planning, resuming, the timed rounds, saving after each cell.

A sweep runs the (batch size, trainable layers) cells of `layerprof.measure.cells`: within a batch size, z rises;
once a z runs out of memory, larger z are skipped. Then timed rounds visit the unsettled cells in a new order
each. `plan_profile` builds a `SweepJob` (the model built and split, every setting resolved, the output checked,
an interrupted profile of the same sweep to resume); `SweepJob.run` runs it with its planner's runner.
"""

from __future__ import annotations

import gc
import json
import math
import random
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypedDict

import torch

from layerprof.errors import DeviceWarning, FreezingWarning, LayerprofError
from layerprof.measure.cells import (
    CellContext,
    CellFailure,
    CellRunner,
    VisitPlan,
    failed_row,
    first_visit,
    new_row,
    next_visit,
    prepared_cell,
    record_timing,
    torch_dtype,
)
from layerprof.measure.environment import (
    ProcessSettings,
    busy_machine_reason,
    describe_environment,
    device_slug,
    resolve_device,
)
from layerprof.measure.instruments import (
    reference_workload_ms,
)
from layerprof.measure.rounds import CellTiming, slow_rounds
from layerprof.parsing import LayerSelection
from layerprof.profile import (
    EnvironmentInfo,
    OutputLock,
    Profile,
    Row,
    SweepMode,
    SweepSettings,
    SweepTiming,
    ensure_writable,
    load_profile,
    save_profile,
    user_frozen_params,
)
from layerprof.sources.layers import Layer, batchnorm_layers, total_params
from layerprof.sources.models import LoadedModel, ModelOptions, build_model, model_slug
from layerprof.sources.workloads import Workload

if TYPE_CHECKING:  # for the type checker only: measure never imports predict
    from typing_extensions import Unpack

    from layerprof.measure.layertimes import LayerTimes
    from layerprof.predict.timemodel import TimeModel


class SweepObserver(Protocol):
    """What a progress display hears from a sweep: cells starting and finishing, rounds ending."""

    def cell_started(self, batch_size: int, trainable_layers: int, position: int, total: int) -> None:
        """A cell (the `position`-th of `total` still to run) starts."""

    def cell_finished(self, row: Row) -> None:
        """A cell's first visit (or its one call, for an estimate) ended with `row`."""

    def round_finished(self, round_index: int, unsettled: int) -> None:
        """A timed round ended with `unsettled` cells still to visit."""

    # Optional (an observer without them hears the three above): `round_started(round_index, cells,
    # seconds_left)` as a timed round begins, with the time the visits left are expected to take from the steps
    # measured so far (None before any); `visit_finished(round_index, done, cells)` after each visit in it;
    # `machine_busy(reason)` the first time a round runs slow against the reference workload.


def tell(observer: object | None, event: str, *args: object) -> None:
    """Call an observer's `event` where it has one (the optional events of SweepObserver)."""
    handler = getattr(observer, event, None)
    if handler is not None:
        handler(*args)


# ---------------------------------------------------------------- the sweep


def new_profile(
    loaded: LoadedModel,
    layers: Sequence[Layer],
    settings: SweepSettings,
    environment: EnvironmentInfo,
) -> Profile:
    """An empty profile of this sweep: the model, workload, environment and settings, no rows yet."""
    return Profile(
        model=loaded.describe(layers),
        workload=loaded.workload.describe(),
        environment=environment,
        settings=settings,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def profile_model(
    loaded: LoadedModel,
    layers: Sequence[Layer],
    settings: SweepSettings,
    device: torch.device,
    *,
    observer: SweepObserver | None = None,
    save: Callable[[Profile], object] | None = None,
    cell_runner: CellRunner | None = None,
    environment: EnvironmentInfo | None = None,
    resume: Profile | None = None,
) -> Profile:
    """Run every cell; `save(profile)` runs after each cell and round, and at the end (also on Ctrl-C).

    Measured: a first round visits the cells in order (z rising, so that out-of-memory skips larger z), then
    timed rounds visit the unsettled cells in a new order each, until all settle or --steps, --max-time run
    out. `cell_runner` (a `CellRunner`, called with this sweep's `CellContext`) replaces the measured cells by one
    call each (`layerprof estimate`, on fake tensors), and there are no timed rounds.
    `resume` (an interrupted profile of the same sweep) keeps its finished cells and runs the others. A sweep
    that does not end (Ctrl-C, a GPU that fails) marks every cell it leaves unfinished (`mark_unfinished`).
    """
    context = CellContext(loaded, layers, settings, device)
    profile = new_profile(loaded, layers, settings, environment or describe_environment(device))
    before = SweepTiming()
    if resume is not None:
        profile.rows = [row for row in resume.rows if row.finished]
        profile.created_at, before = resume.created_at, resume.timing
    began = time.perf_counter()
    in_steps = [0.0]
    timings: dict[tuple[int, int], CellTiming] = {}
    guard = torch.cuda.device(device) if device.type == "cuda" else nullcontext()

    def checkpoint() -> None:
        wall = before.sweep_wall_s + time.perf_counter() - began
        profile.timing = SweepTiming(wall, before.in_steps_s + in_steps[0])
        profile.rows.sort(key=lambda row: row.key)
        if save:
            save(profile)

    def first_visits(context: CellContext, batch_size: int, trainable_layers: int) -> tuple[Row, float]:
        """The measured sweep's cell runner: a cell's first visit, its timing kept for the timed rounds."""
        row, visit, seconds = first_visit(context, batch_size, trainable_layers)
        if visit is not None:
            timings[row.key] = CellTiming([visit])
            record_timing(row, timings[row.key], settings, device, loaded.workload.items_per_batch(batch_size))
        return row, seconds

    runner = cell_runner or first_visits

    def one_cell(batch_size: int, trainable_layers: int) -> Row:
        row, seconds = runner(context, batch_size, trainable_layers)
        in_steps[0] += seconds
        return row

    with guard:
        try:
            if device.type == "cuda":  # the first cell starts from an empty cache, as every later one does
                gc.collect()
                torch.cuda.empty_cache()
            _cells_in_order(profile, layers, settings, one_cell, observer, checkpoint)
            if cell_runner is None:
                reference = [reference_workload_ms(device)]
                rounds = TimedRounds(context, profile, timings, reference, began)
                in_steps[0] += rounds.run(observer, checkpoint)
            profile.complete = True
        finally:
            if not profile.complete:
                mark_unfinished(profile, layers, unsettled(timings, settings))
            checkpoint()
    return profile


def unsettled(timings: dict[tuple[int, int], CellTiming], settings: SweepSettings) -> list[tuple[int, int]]:
    """Cells whose visits have not settled and may still be visited (disturbed visits are measured again, up to a
    point): what a timed round visits, and what an interrupt leaves unfinished."""
    plan = VisitPlan.of(settings)
    return [
        key
        for key, timing in timings.items()
        if not timing.settled(plan.min_visits, settings.median_tolerance)
        and len(timing.clean()) < plan.max_visits
        and len(timing.visits) < 2 * plan.max_visits
    ]


def mark_unfinished(profile: Profile, layers: Sequence[Layer], settling: Sequence[tuple[int, int]]) -> None:
    """An interrupted sweep's profile: cells still settling become `unfinished` (their figures kept, from fewer
    visits than the protocol asks), and every planned cell the sweep never reached gets an `unfinished` row, so
    that the profile says which cells a rerun must measure (and `ladder`, `check`, `report` see it)."""
    for key in settling:
        row = profile.row(*key)
        if row is not None and row.status == "ok":
            row.status = "unfinished"
            row.message = (
                f"interrupted after {len(row.visit_medians_ms or ()) or 1} visit(s), before its step time settled; the "
                "figures are "
                "provisional: resume the sweep to measure it"
            )
    present = {row.key for row in profile.rows}
    for batch_size, trainable_layers in profile.planned_cells():
        if (batch_size, trainable_layers) not in present:
            profile.rows.append(
                failed_row(
                    new_row(layers, batch_size, trainable_layers),
                    "unfinished",
                    "not measured: the sweep was interrupted before this cell",
                )
            )


def _cells_in_order(
    profile: Profile,
    layers: Sequence[Layer],
    settings: SweepSettings,
    one_cell: Callable[[int, int], Row],
    observer: SweepObserver | None,
    checkpoint: Callable[[], None],
) -> None:
    """Batch size by batch size, z rising; once a z runs out of memory, larger z at that batch size are skipped.
    Cells the profile already holds finished (a resumed sweep) are kept as they are."""
    kept = {row.key: row for row in profile.rows}
    total = sum(key not in kept for key in profile.planned_cells())
    position = 0
    for batch_size in settings.batch_sizes:
        out_of_memory_at: int | None = None
        for trainable_layers in settings.trainable_layer_counts:
            done = kept.get((batch_size, trainable_layers))
            if done is not None:
                if done.status == "oom":
                    out_of_memory_at = trainable_layers
                continue
            position += 1
            if observer:
                observer.cell_started(batch_size, trainable_layers, position, total)
            if out_of_memory_at is not None:
                row = failed_row(
                    new_row(layers, batch_size, trainable_layers),
                    "skipped",
                    f"skipped: z={out_of_memory_at} already ran out of memory at this batch size",
                )
            else:
                row = one_cell(batch_size, trainable_layers)
                if row.status == "oom":
                    out_of_memory_at = trainable_layers
            profile.rows.append(row)
            checkpoint()
            if observer:
                observer.cell_finished(row)


@dataclass
class TimedRounds:
    """The timed rounds after the first: every unsettled cell once per round, in a new order each round."""

    context: CellContext
    profile: Profile
    timings: dict[tuple[int, int], CellTiming]
    reference_ms: list[float]  # the reference workload after every round, the first included
    began: float

    def unsettled(self) -> list[tuple[int, int]]:
        """The cells a next round visits (`unsettled`)."""
        return unsettled(self.timings, self.context.settings)

    def out_of_time(self) -> bool:
        """Whether --max-time has run out since the sweep began."""
        limit = self.context.settings.max_time_s
        return limit is not None and time.perf_counter() - self.began >= limit

    def run(self, observer: SweepObserver | None, checkpoint: Callable[[], None]) -> float:
        """Returns the seconds spent inside training steps."""
        shuffle = random.Random(0)
        seconds = 0.0
        round_index = 1
        overhead = 1.0  # wall time of a round over its visits' step time, once a round has measured it
        told_busy = False
        while (pending := self.unsettled()) and not self.out_of_time():
            shuffle.shuffle(pending)
            tell(observer, "round_started", round_index, len(pending), self.seconds_left(overhead))
            began = time.perf_counter()
            for done, (batch_size, trainable_layers) in enumerate(pending, 1):
                try:
                    visit = next_visit(self.context, batch_size, trainable_layers, round_index)
                except CellFailure as failure:
                    self._fail((batch_size, trainable_layers), failure, round_index)
                else:
                    self.timings[(batch_size, trainable_layers)].visits.append(visit)
                tell(observer, "visit_finished", round_index, done, len(pending))
            wall = time.perf_counter() - began
            seconds += wall
            stepped = self.visit_seconds([key for key in pending if key in self.timings])
            overhead = wall / stepped if stepped > 0 else overhead
            self.reference_ms.append(reference_workload_ms(self.context.device))
            self._mark_slow_rounds()
            self._update_rows()
            checkpoint()
            if not told_busy and (reason := self.busy_reason()) is not None:
                told_busy = True
                tell(observer, "machine_busy", reason)
            if observer:
                observer.round_finished(round_index, len(self.unsettled()))
            round_index += 1
        return seconds

    def visit_seconds(self, keys: Sequence[tuple[int, int]]) -> float:
        """What one more visit of each cell in `keys` takes in training steps (re-warm-up and timed steps), from
        the median step time each has measured so far."""
        plan = VisitPlan.of(self.context.settings)
        per_visit = max(1, plan.rewarm_steps) + plan.steps_per_visit
        return sum(
            per_visit * statistics.median(visit.median_ms for visit in self.timings[key].visits) / 1000
            for key in keys
            if self.timings[key].visits
        )

    def seconds_left(self, overhead: float = 1.0) -> float | None:
        """The time the visits still allowed to the unsettled cells take at most (each up to --steps), from the
        steps measured so far and the last round's wall time per step second (`overhead`); capped by what
        --max-time leaves. None before any cell has a measured step."""
        plan = VisitPlan.of(self.context.settings)
        total = 0.0
        measured = False
        for key in self.unsettled():
            timing = self.timings[key]
            left = min(plan.max_visits - len(timing.clean()), 2 * plan.max_visits - len(timing.visits))
            if timing.visits:
                measured = True
                total += max(0, left) * self.visit_seconds([key]) * overhead
        if not measured:
            return None
        limit = self.context.settings.max_time_s
        if limit is not None:
            total = min(total, max(0.0, limit - (time.perf_counter() - self.began)))
        return total

    def busy_reason(self) -> str | None:
        """Why other work is slowing the sweep, once a round's reference workload ran slow; None until then."""
        slow = slow_rounds(self.reference_ms)
        if not any(slow):
            return None
        worst = max(self.reference_ms) / min(self.reference_ms)
        return (
            f"other work is slowing this machine: the reference workload ran {worst:.1f}x slower in some rounds; "
            "their visits are measured again (the sweep takes longer), and cells that stay disturbed are marked"
        )

    def _fail(self, key: tuple[int, int], failure: CellFailure, round_index: int) -> None:
        """A cell whose later visit failed keeps the figures of its earlier visits, takes the failure's status
        (a cell that ran out of memory once is not a cell to plan on) and is visited no more."""
        self.timings.pop(key)
        row = self.profile.row(*key)
        assert row is not None, key  # a cell with timings has its row
        row.status = failure.status
        row.message = (
            f"failed in timed round {round_index} ({failure.message}); the figures are those of its earlier visits"
        )

    def _mark_slow_rounds(self) -> None:
        """A timed round is slow when the reference workload ran slow just before it or just after it."""
        slow = slow_rounds(self.reference_ms)
        for timing in self.timings.values():
            for visit in timing.visits:
                index = visit.round_index
                visit.slow_round = index > 0 and (slow[index - 1] or slow[index])

    def _update_rows(self) -> None:
        settings, device = self.context.settings, self.context.device
        for key, timing in self.timings.items():
            row = self.profile.row(*key)
            assert row is not None, key  # a cell with timings has its row
            items = self.context.loaded.workload.items_per_batch(key[0])
            record_timing(row, timing, settings, device, items)


# ---------------------------------------------------------------- a sweep ready to run


class FixedSettings(TypedDict, total=False):
    """What a planner fixes in the settings it resolves: the mode, the target."""

    mode: SweepMode
    target: str | None


def resolve_settings(
    settings: SweepSettings,
    workload: Workload,
    layer_count: int,
    layer_selection: LayerSelection,
    **fixed: Unpack[FixedSettings],
) -> SweepSettings:
    """The sweep's settings with every default filled in once, by every planner (profile, estimate, cluster): the
    family's batch sizes where none are given, the z values the selection names for this split, and `fixed`
    (the mode, the target). Adapters in every layer (`--adapter-layers all`, plain LoRA) are one cell per batch
    size, z = n: no layer is frozen without them."""
    every_layer = settings.adapter != "none" and settings.adapter_layers == "all"
    return replace(
        settings,
        batch_sizes=tuple(settings.batch_sizes or workload.default_batch_sizes),
        trainable_layer_counts=(layer_count,) if every_layer else layer_selection.resolve(layer_count),
        **fixed,
    )


# How a job runs its cells, handed to it by its planner: measured here (`measure_job`), or on fake tensors
# (`layerprof.predict.jobs.run_estimate_job`); it saves the profile with `save` after each cell.
SweepRunner = Callable[["SweepJob", "SweepObserver | None", Callable[[Profile], None]], Profile]


def measure_job(job: SweepJob, observer: SweepObserver | None, save: Callable[[Profile], None]) -> Profile:
    """The measured sweep's runner: every cell timed on the device, then (--per-layer) each layer's times."""
    assert job.loaded is not None
    profile = profile_model(
        job.loaded,
        job.layers,
        job.settings,
        job.device,
        observer=observer,
        save=save,
        environment=job.environment,
        resume=job.resume,
    )
    if job.per_layer:
        context = CellContext(job.loaded, job.layers, profile.settings, job.device)
        profile.layer_times = [times.to_dict() for times in layer_times(context, profile)]
        save(profile)
    return profile


@dataclass(frozen=True)
class SweepJob:
    """A sweep ready to run: the model built and split, every setting resolved, the output path checked."""

    spec: str
    options: ModelOptions
    layers: list[Layer]
    settings: SweepSettings
    device: torch.device
    environment: EnvironmentInfo
    path: Path
    loaded: LoadedModel | None = None  # measured sweeps; an estimate builds its own model on fake tensors
    order: tuple[str, str] = ("forward", "")  # the split's order and, for registration order, why
    resume: Profile | None = None  # an interrupted profile of this sweep at `path`: its finished cells are kept
    time_model: TimeModel | None = None  # estimates: what predicts their step times
    per_layer: bool = False  # measured sweeps: also time each layer's forward and backward in full training
    runner: SweepRunner = measure_job  # handed over by the planner: the job never asks which kind it is
    process: ProcessSettings = ProcessSettings()  # threads, CPUs and TF32, in force only while the job runs

    def run(self, observer: SweepObserver | None = None) -> Profile:
        """Run every cell with the planner's runner, saving the profile (JSON and CSV) after each, under the
        job's process settings (restored afterwards)."""
        with OutputLock(self.path) as lock, self.process.applied():
            lock.refuse_if_held()  # another run with this --out started since the job was planned

            def save(profile: Profile) -> None:
                save_profile(profile, self.path)

            return self.runner(self, observer, save)


def resumable_profile(path: Path, planned: Profile, restart: bool = False) -> Profile | None:
    """The interrupted profile at PATH that this sweep resumes (its finished cells kept, the others measured), or
    None to measure every cell: nothing there, a complete profile of the same model (measured anew), or `restart`
    (--restart, --force). Anything else at PATH (another model's finished profile, another sweep's interrupted
    one, a file that is no profile) is refused rather than replaced."""
    if restart or not path.exists():
        return None
    try:
        existing = load_profile(path)
    except LayerprofError as error:
        raise LayerprofError(
            f"--out {str(path)!r} holds a file this cannot resume ({error}); give another --out, or --restart to "
            "replace it"
        ) from None
    if existing.complete:
        if existing.model.spec != planned.model.spec:  # a typo in --out must not destroy another model's long run
            raise LayerprofError(
                f"--out {str(path)!r} holds a finished profile of another model ({existing.model.spec}); give "
                "another --out, or --force to replace it"
            )
        return None
    difference = sweep_difference(existing, planned)
    if difference:
        raise LayerprofError(
            f"--out {str(path)!r} holds an interrupted profile of another sweep ({difference}); run that sweep to "
            "resume it, give another --out, or --restart to replace it"
        )
    return existing


def sweep_difference(existing: Profile, planned: Profile) -> str | None:
    """The first thing that makes `existing` a profile of another sweep than `planned` (None: the same sweep)."""

    def plain(value: object) -> object:  # as a profile file holds it (tuples become lists)
        return json.loads(json.dumps(value, default=str))

    pairs: list[tuple[str, object, object]] = [
        ("model", existing.model.spec, planned.model.spec),
        ("--set", existing.model.overrides, planned.model.overrides),
        ("--unwrap", existing.model.unwrap, planned.model.unwrap),
        ("layers", [layer.name for layer in existing.model.layers], [layer.name for layer in planned.model.layers]),
        ("device", existing.environment.device_name, planned.environment.device_name),
        ("numeric settings", existing.environment.numerics, planned.environment.numerics),
    ]
    workload = planned.workload.to_dict()
    pairs += [(f"workload {key}", value, workload.get(key)) for key, value in existing.workload.to_dict().items()]
    settings = planned.settings.to_dict()
    pairs += [(key, value, settings.get(key)) for key, value in existing.settings.to_dict().items()]
    for name, before, after in pairs:
        if plain(before) != plain(after):
            return f"{name}: {plain(before)!r} there, {plain(after)!r} now"
    return None


def warn_freezing(model: torch.nn.Module, layers: Sequence[Layer], settings: SweepSettings) -> None:
    """Say which parameters the model's own code froze (they stay frozen at every z), and when layers the sweep
    freezes hold BatchNorm running statistics that train mode keeps updating."""
    frozen = user_frozen_params(layers)
    if frozen:
        names = list(dict.fromkeys(name for layer in layers for name in layer.frozen_names))
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        warnings.warn(
            f"the model's own code froze {frozen:,} of {total_params(layers):,} parameters ({shown}): they stay "
            "frozen at every z, and every row counts only what trains",
            FreezingWarning,
            stacklevel=3,
        )
    if settings.eval_frozen or not settings.trainable_layer_counts:
        return
    frozen_layers = layers[: len(layers) - min(settings.trainable_layer_counts)]
    held = batchnorm_layers(model, frozen_layers)
    if held:
        named = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        warnings.warn(
            f"frozen layers with BatchNorm ({named}) still update their running statistics in train mode; "
            "--eval-frozen runs frozen layers in eval mode (statistics kept, dropout off), which changes both "
            "results and cost",
            FreezingWarning,
            stacklevel=3,
        )


def layer_times(context: CellContext, profile: Profile) -> list[LayerTimes]:
    """`profile --per-layer`: each layer's forward and backward time in full training, at every batch size whose
    full-training cell ran."""
    from layerprof.measure.layertimes import measure_layer_times

    layers, device = context.layers, context.device
    measured = []
    guard = torch.cuda.device(device) if device.type == "cuda" else nullcontext()
    with guard:
        for batch_size in profile.batch_sizes():
            full = profile.row(batch_size, len(layers))
            if full is None or not full.ok:
                continue
            with prepared_cell(context, batch_size, len(layers)) as cell:
                for _ in range(context.settings.warmup_steps):
                    cell.step()
                measured.append(measure_layer_times(cell, layers, device))
    return measured


def validate_settings(settings: SweepSettings) -> None:
    """Refuse settings no sweep can run (no warm-up, --min-steps above --steps, a bad --max-time)."""
    if settings.warmup_steps < 1:
        raise LayerprofError(
            f"--warmup {settings.warmup_steps}: at least 1 warm-up step is needed (the first step allocates the "
            "optimizer state, which a measured step must not include)"
        )
    if settings.steps_per_visit < 1:
        raise LayerprofError(f"--steps-per-visit must be at least 1, got {settings.steps_per_visit}")
    if settings.max_time_s is not None and not (math.isfinite(settings.max_time_s) and settings.max_time_s > 0):
        raise LayerprofError(f"--max-time must be a positive number of seconds, got {settings.max_time_s:g}")
    if settings.min_steps > settings.max_steps:
        raise LayerprofError(
            f"--min-steps {settings.min_steps} exceeds --steps {settings.max_steps}; use --min-steps <= --steps"
        )


def plan_profile(
    spec: str,
    options: ModelOptions,
    settings: SweepSettings,
    layer_selection: LayerSelection,
    device_name: str = "auto",
    out: Path | None = None,
    tf32: bool | None = None,
    threads: int | None = None,
    cpus: tuple[int, ...] | None = None,
    restart: bool = False,
    *,
    per_layer: bool = False,
) -> SweepJob:
    """Build MODEL on the device and resolve the cells; `settings.batch_sizes` empty means the family's default.
    The default output is profiles/MODEL-DEVICE.json; `tf32` sets TensorFloat-32 (None: PyTorch's defaults);
    `threads` and `cpus` set torch's threads and the CPUs the process may use. Warns when other work keeps the
    machine visibly busy. An interrupted profile of the same sweep at the output is resumed (`resumable_profile`)
    unless `restart`. `per_layer` (--per-layer): after the sweep, time each layer's forward and backward in full
    training. The job comes back complete: nothing is set on it afterwards (it is frozen)."""
    validate_settings(settings)
    device = resolve_device(device_name)
    process = ProcessSettings(threads, cpus, tf32)
    with process.applied():  # the environment records them; the job sets them again while it runs
        busy = busy_machine_reason(device)
        if busy:
            warnings.warn(busy, DeviceWarning, stacklevel=2)
        environment = describe_environment(device)
        path = ensure_writable(out or Path("profiles") / f"{model_slug(spec)}-{device_slug(environment)}.json")
        loaded = build_model(spec, options, device=device, dtype=torch_dtype(settings.precision))
        layers = loaded.split()
    settings = resolve_settings(settings, loaded.workload, len(layers), layer_selection, mode="measure")
    warn_freezing(loaded.model, layers, settings)
    order = (loaded.order, loaded.order_reason)
    resume = resumable_profile(path, new_profile(loaded, layers, settings, environment), restart)
    return SweepJob(
        spec,
        options,
        layers,
        settings,
        device,
        environment,
        path,
        loaded,
        order,
        resume,
        per_layer=per_layer,
        runner=measure_job,
        process=process,
    )
