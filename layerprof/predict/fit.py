"""What fits: for each z, the largest batch whose estimated need fits a memory budget (`layerprof fit`), found
by a search over fake-tensor traces (`FitSearch`), with its predicted step time and the smallest and cheapest GPU
that runs a given batch."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from layerprof.devices import (
    CUDA_CONTEXT_RESERVE_BYTES,
    GpuKind,
    GpuPrice,
    PriceBook,
    cheapest_gpu_for,
    smallest_gpu_for,
)
from layerprof.errors import LayerprofError
from layerprof.measure.cells import CellContext
from layerprof.measure.instruments import StepTrace
from layerprof.parsing import MAX_BATCH_SIZE, LayerSelection
from layerprof.predict.calibration import default_time_model
from layerprof.predict.estimate import (
    ESTIMATE_DEVICE,
    PrimedStates,
    allocation_size_for,
    build_fake_model,
    estimate_cell,
    refuse_compile,
)
from layerprof.predict.reuse import BlockRecords
from layerprof.predict.timemodel import TimeModel
from layerprof.profile import SweepSettings
from layerprof.sources.models import ModelOptions, split_without_memory

if TYPE_CHECKING:
    from collections.abc import Hashable

    from layerprof.predict.compose import BatchLine, LayerCall, Timeline

ExactLine = tuple["BatchLine", int]  # a z's batch line and its cuBLAS workspace bytes


@dataclass
class FitResult:
    """For one z: the largest batch that fits the budget, and the memory it needs."""

    trainable_layers: int
    largest_batch_size: int  # 0: not even the smallest batch fits
    need_at_largest_bytes: int | None
    smallest_gpu: str | None = None  # for the requested batch size, the smallest listed GPU that runs it
    cheapest_gpu: str | None = None  # for the requested batch size, the priced GPU with the lowest price per hour
    cheapest_price: str | None = None  # its price and where it comes from
    predicted_step_time_ms: float | None = None  # at the largest batch, by the time model (not measured)
    # composed from its run's anchors (layerprof.predict.compose): the batch and need exact, the step time from
    # the anchors' traces scaled to its batch
    composed: bool = False
    # the search stops at MAX_BATCH_SIZE: a larger batch may fit too, so the answer is a lower bound
    at_search_limit: bool = False
    # why this z has no answer (`fit_model(..., keep_failures=True)`): its cell cannot be built or traced
    error: str | None = None


@dataclass
class FitReport:
    """`fit`'s answer for every z, with the budget and, for a given batch, the smallest GPU."""

    model: str
    target: str
    memory_bytes: int  # the budget
    batch_size: int | None  # the batch the smallest GPUs were found for, if asked
    results: list[FitResult]
    smallest_batch_size: int = 1  # 2 where a batch of 1 cannot train (BatchNorm)
    time_model: str | None = None  # what the predicted step times stand on
    traces: int = 0  # fake-tensor steps the search ran

    def to_dict(self) -> dict[str, object]:
        """The report as plain data, for `fit --json`."""
        return asdict(self)


def fit_model(
    spec: str,
    options: ModelOptions,
    settings: SweepSettings,
    memory_bytes: int,
    layer_selection: LayerSelection,
    batch_size: int | None = None,
    time_model: TimeModel | None = None,
    seeded: bool = True,
    prices: PriceBook | None = None,
    progress: Callable[[int, int], None] | None = None,
    keep_failures: bool = False,
    reuse: bool = True,
) -> FitReport:
    """For each selected z, the largest batch whose estimated need fits `memory_bytes` (context reserve included
    for CUDA), its step time predicted by `time_model` (the target's defaults when None) and, given `batch_size`,
    the smallest listed GPU that runs it and, with `prices`, the cheapest per hour. `seeded`: each z's search starts
    from the z before it (False: from the smallest batch, the search before 0.x; the same answers, more traces).
    `progress(done, total)` hears each z as its answer is found (the model's split first, as 0 of the z).
    `keep_failures`: a z whose cell cannot be built or traced (LoRA with no target module in its layers) becomes a
    result with its `error` and the others answer; an error only when no z answers. `reuse`: frozen layers alike to
    one already traced are replayed from its record (`layerprof.predict.reuse`; the same needs to the byte).
    Every recipe is searched alike:
    seeded, and runs of alike z composed from their anchors (checkpointing and adapters add the same operations
    with each alike layer, and every composed need is checked to the byte as for full training)."""
    if batch_size is not None and batch_size > MAX_BATCH_SIZE:
        raise LayerprofError(f"--batch-size {batch_size:,} is beyond the largest this takes, {MAX_BATCH_SIZE:,}")
    refuse_compile(settings)
    search = FitSearch(spec, options, settings, time_model, reuse=reuse)
    zs = layer_selection.resolve(len(search.layers))
    if settings.adapter != "none" and settings.adapter_layers == "all":  # plain LoRA: one cell, z = n
        zs = (len(search.layers),)
    if progress is not None:
        progress(0, len(set(zs)))
    results = search.largest_batches(zs, memory_bytes, seeded, progress, keep_failures)
    failed = [result for result in results if result.error is not None]
    if failed and len(failed) == len(results):
        raise LayerprofError(f"no z can be fitted: {failed[0].error}")
    for result in results:
        result.at_search_limit = result.largest_batch_size >= MAX_BATCH_SIZE
    if batch_size is not None:
        for result in results:
            if result.error is not None:
                continue
            result.smallest_gpu = search.smallest_gpu(result.trainable_layers, batch_size)
            cheapest = None if prices is None else search.cheapest_gpu(result.trainable_layers, batch_size, prices)
            if cheapest is not None:
                result.cheapest_gpu, result.cheapest_price = cheapest[0].name, cheapest[1].label
    answered = [result for result in results if result.error is None]
    if all(result.largest_batch_size == 0 for result in answered):
        lowest = min(result.need_at_largest_bytes or 0 for result in answered)
        raise LayerprofError(
            f"no z fits in {memory_bytes / 2**30:.2f} GiB even at batch {search.smallest_batch}; the smallest need "
            f"is {lowest / 2**30:.2f} GiB (z={min(zs)}, context reserve included)"
        )
    return FitReport(
        spec,
        search.settings.target or "cuda",
        memory_bytes,
        batch_size,
        results,
        search.smallest_batch,
        search.time_model.label,
        len(search.needs),
    )


# batch lines (the fit's need at any batch size from two traced ones) hold from this batch size up
LINE_FROM_BATCH = 2
# the errors a model raises for a batch of one in training (BatchNorm needs two values per channel)
SINGLE_SAMPLE_ERRORS = ("more than 1 value per channel",)


class FitSearch:
    """Largest batch per z under a memory budget. A step's memory is affine in the batch size at a given z (the
    parameters, gradients and optimizer state are fixed, activations grow per sample), up to the allocator's
    block rounding: two traces give the line, its crossing with the budget is checked exactly, and secant steps
    (bisection where they stall) from the nearest known batches close the gap. The answer fits and the next
    batch does not, exactly; a z typically costs four traces."""

    def __init__(
        self,
        spec: str,
        options: ModelOptions,
        settings: SweepSettings,
        time_model: TimeModel | None = None,
        reuse: bool = True,
    ) -> None:
        self.settings = replace(settings, mode="estimate", target=settings.target or "cuda")
        self.time_model = time_model or default_time_model(self.settings)
        self.mode, self.loaded = build_fake_model(spec, options, settings.precision)
        self.reserve = CUDA_CONTEXT_RESERVE_BYTES if self.settings.target == "cuda" else 0
        _, self.layers = split_without_memory(spec, options)  # the split every command uses, traced where it can
        self.context = CellContext(self.loaded, self.layers, self.settings, ESTIMATE_DEVICE)
        self.needs: dict[tuple[int, int], int] = {}
        self.traces: dict[tuple[int, int], StepTrace] = {}
        self.smallest_batch = 1
        self.primed: PrimedStates = {}  # optimizer state per parameter (`prime_optimizer`)
        self.blocks = BlockRecords() if reuse else None  # frozen layers' forwards, replayed (`predict.reuse`)
        self.timelines: dict[tuple[int, int], Timeline] = {}  # (batch, z) -> its traced timeline
        self.workspace: dict[tuple[int, int], int] = {}  # (batch, z) -> the modelled cuBLAS workspaces
        self.replayed: dict[tuple[int, int], int | None] = {}  # (z, batch) -> its batch line's need
        self.z_lines: dict[int, ExactLine | None] = {}  # z -> its batch line and workspace (`line_of`)
        self.signatures: list[Hashable] | None = None  # the layers' (layerprof.predict.compose.layer_signatures)
        self.allocation_size = allocation_size_for(self.settings.target or "cuda")
        self.slope: float | None = None  # bytes per sample near the last z's boundary: where the next z starts
        # z -> the line through its two traced batches beside its boundary (need at batch 0, bytes per sample)
        self.need_lines: dict[int, tuple[float, float]] = {}

    def need_bytes(self, trainable_layers: int, batch_size: int) -> int:
        """The cell's estimated need (context reserve included), traced once; a cell that cannot run is an error."""
        key = (batch_size, trainable_layers)
        if key not in self.needs:
            from layerprof.predict.compose import layer_signatures, recorded_shapes

            shapes: AbstractContextManager[list[list[LayerCall]]] = (
                recorded_shapes(self.loaded.model, self.layers) if self.signatures is None else nullcontext([])
            )
            with self.mode, shapes as calls:
                row, _ = estimate_cell(
                    self.context,
                    batch_size,
                    trainable_layers,
                    traces=self.traces,
                    primed=self.primed,
                    timelines=self.timelines,
                    blocks=self.blocks,
                )
            if row.ok and self.signatures is None:
                self.signatures = layer_signatures(self.loaded.model, self.layers, calls)
            self.workspace[key] = int(row.memory_workspace_bytes or 0)
            if not row.ok:
                if batch_size == 1 and any(marker in (row.message or "") for marker in SINGLE_SAMPLE_ERRORS):
                    self.smallest_batch = 2
                    raise _SingleSampleError
                raise LayerprofError(f"z={trainable_layers}, batch {batch_size}: {row.message}")
            self.needs[key] = int(row.peak_memory_bytes or 0) + self.reserve
        return self.needs[key]

    def largest_batch(
        self, trainable_layers: int, budget_bytes: int, limit: int = MAX_BATCH_SIZE, near: int | None = None
    ) -> FitResult:
        """The largest batch that fits and the next that does not, both traced. `near` (the answer of a similar
        z) is probed first, then along the line of the last z's slope; without it the search starts at the
        smallest batch and 63 above it."""

        def need(batch_size: int) -> int:
            return self.need_bytes(trainable_layers, batch_size)

        if near is None:
            try:
                first_need = need(self.smallest_batch)
            except _SingleSampleError:
                first_need = need(self.smallest_batch)
            known = {self.smallest_batch: first_need}
            fits = self._from_smallest(need, known, budget_bytes, limit)
        else:
            known = {}
            fits = self._search(need, known, max(self.smallest_batch, min(limit, near)), budget_bytes, limit)
        if fits is None:
            return FitResult(trainable_layers, 0, known[self.smallest_batch])
        low, high = max((b for b in known if b <= fits), default=fits), min((b for b in known if b > fits), default=0)
        if high and known[high] > known[low]:
            self.slope = (known[high] - known[low]) / (high - low)
            self.need_lines[trainable_layers] = (known[low] - self.slope * low, self.slope)
        result = FitResult(trainable_layers, fits, need(fits))
        trace = self.traces.get((fits, trainable_layers))
        if trace is not None:
            result.predicted_step_time_ms = self.time_model.predict(trace).step_ms
        return result

    def _from_smallest(
        self, need: Callable[[int], int], known: dict[int, int], budget_bytes: int, limit: int
    ) -> int | None:
        """The search from the smallest batch (`known`) and 63 above it: the line through the two largest fitting
        batches while nothing fails, then secant steps (bisection where they stall) inside the bracket."""
        first = self.smallest_batch
        if known[first] > budget_bytes:
            return None
        fits, fails = first, None  # the largest batch known to fit, the smallest known not to
        probe, width = min(limit, first + 63), None
        previous: int | None
        while probe > fits:
            known[probe] = need(probe)
            if known[probe] <= budget_bytes:
                fits = probe
            else:
                fails = probe
            if (fails is not None and fails - fits <= 1) or (fails is None and fits >= limit):
                break
            previous, width = width, (None if fails is None else fails - fits)
            stalled = previous is not None and width is not None and width > previous // 2
            probe = self._next_probe(known, fits, fails, budget_bytes, limit, bisect=stalled, confirm=False)
        return fits

    def _search(
        self, need: Callable[[int], int], known: dict[int, int], probe: int, budget_bytes: int, limit: int
    ) -> int | None:
        """The bracket search from `known` needs, first probing `probe`: the largest fitting batch (None: not even
        the smallest). Unbracketed steps follow the line (the last z's slope where one point is known); where the
        line points back at the known batches, steps of 1, 2, 4, ... so that a poor slope never makes it crawl;
        once bracketed, secant steps with bisection where they stall."""
        first = self.smallest_batch
        fits = max((b for b, n in known.items() if n <= budget_bytes), default=None)
        fails = min((b for b, n in known.items() if n > budget_bytes), default=None)
        if fails == first:
            return None
        stride, width, confirmed = 1, None, False
        while True:
            if probe not in known:
                try:
                    known[probe] = need(probe)
                except _SingleSampleError:  # batch 1 cannot train: the smallest batch is 2
                    first, probe = self.smallest_batch, max(probe, self.smallest_batch)
                    continue
            if known[probe] <= budget_bytes:
                fits = probe if fits is None else max(fits, probe)
            else:
                fails = probe if fails is None else min(fails, probe)
            if fits is None and fails == first:
                return None
            if fits is not None and ((fails is not None and fails - fits <= 1) or (fails is None and fits >= limit)):
                return fits
            if fits is not None and fails is not None:
                previous, width = width, fails - fits
                stalled = previous is not None and width > previous // 2
                probe = self._next_probe(known, fits, fails, budget_bytes, limit, stalled, not confirmed)
                confirmed = stalled and probe == fits + 1
                continue
            guess = self._line_guess(known, budget_bytes)
            if fits is not None:  # everything so far fits: up to where the line meets the budget
                if guess is None or guess <= fits:  # the line says here: confirm the next (strides double)
                    probe, stride = min(limit, fits + stride), stride * 2
                else:
                    probe, stride = min(limit, guess), 1
            else:  # nothing so far fits: down to where the line meets the budget
                assert fails is not None
                if guess is None or guess >= fails:
                    probe, stride = max(first, fails - stride), stride * 2
                else:
                    probe, stride = max(first, guess), 1

    def _line_guess(self, known: dict[int, int], budget_bytes: int) -> int | None:
        """The batch where the need reaches the budget: on the line through the two known batches nearest to it,
        or through the one known batch with the last z's slope."""
        points = sorted(known.items(), key=lambda item: abs(item[1] - budget_bytes))[:2]
        if len(points) == 2 and points[0][0] != points[1][0]:
            (b1, n1), (b2, n2) = points
            slope = (n2 - n1) / (b2 - b1)
        elif self.slope:
            (b1, n1), slope = points[0], self.slope
        else:
            return None
        return math.floor(b1 + (budget_bytes - n1) / slope) if slope > 0 else None

    @staticmethod
    def _next_probe(
        known: dict[int, int],
        fits: int,
        fails: int | None,
        budget_bytes: int,
        limit: int,
        bisect: bool,
        confirm: bool = True,
    ) -> int:
        """Where the line through the bracket's ends (the two largest fitting batches while nothing failed) meets
        the budget, strictly inside the bracket; its middle where the last step did not halve it (the
        allocator's rounding bends the line), so that the search never takes more than a bisection's steps; but
        where the line says the boundary is right above `fits` and `confirm`, that next batch first (the caller
        allows it once in a row, so the bisection's bound holds within a factor of two)."""
        upper = limit + 1 if fails is None else fails
        if fails is not None:
            (b1, n1), (b2, n2) = (fits, known[fits]), (fails, known[fails])
        else:
            (b1, n1), (b2, n2) = sorted(known.items())[-2:]
        slope = (n2 - n1) / (b2 - b1) if b2 != b1 else 0.0
        guess = math.floor(b1 + (budget_bytes - n1) / slope) if slope > 0 else 2 * fits
        guess = max(guess, fits + 1)  # the line says the boundary is here: confirm with the next batch
        if bisect and fails is not None and (not confirm or guess != fits + 1):
            return (fits + fails) // 2
        if guess >= upper:
            guess = (fits + upper) // 2 if fails is not None else limit
        return guess

    def largest_batches(
        self,
        zs: Sequence[int],
        budget_bytes: int,
        seeded: bool = True,
        progress: Callable[[int, int], None] | None = None,
        keep_failures: bool = False,
    ) -> list[FitResult]:
        """`largest_batch` for every z. Seeded: each z's search starts at the answer of the z before it, and a
        run of alike z (`layerprof.predict.compose`) is searched at its four anchors only, the z between them on the
        need composed from the anchors' batch lines (exact, or the z is searched on its own traces).
        `progress(done, total)` hears each z as its answer is found. `keep_failures`: a z whose cell cannot be
        built or traced is a result with its `error` (else the error is raised)."""
        from layerprof.predict.compose import MIN_COMPOSED_RUN, anchors_of, z_runs

        results: dict[int, FitResult] = {}
        last: list[FitResult] = []
        wanted = set(zs)

        def told() -> None:
            if progress is not None:
                progress(len(wanted & set(results)), len(wanted))

        def searched(z: int, run: Sequence[int] = ()) -> FitResult:
            if z not in results:
                near = last[-1].largest_batch_size if seeded and last and last[-1].largest_batch_size else None
                predicted = self.predicted_boundary(z, run, budget_bytes)
                if predicted is not None:  # from two alike z's lines: a better first probe and slope
                    near, self.slope = predicted
                try:
                    results[z] = self.largest_batch(z, budget_bytes, near=near)
                except LayerprofError as error:
                    if not keep_failures:
                        raise
                    results[z] = FitResult(z, 0, None, error=str(error))
                told()
            if results[z].error is None:  # a failed z seeds nothing
                last.append(results[z])
            return results[z]

        ordered = sorted(set(zs))
        if not seeded:
            return [searched(z) for z in ordered]
        for z in ordered:  # the first trace also records the layers' signatures
            if searched(z).error is None or self.signatures is not None:
                break
        for run in z_runs(self.signatures or [("unique", i) for i in range(len(self.layers))], ordered):
            if len(run) < MIN_COMPOSED_RUN:
                for z in run:
                    searched(z, run)
                continue
            anchors = anchors_of(run[0], run[-1])
            for z in run:
                if z in anchors or z in results:  # searched on its own traces
                    searched(z, run)
                    continue
                for a in anchors:
                    if a not in results:
                        searched(a, run)
                composed = None
                if all(results[a].error is None for a in anchors):  # else the z is searched on its own
                    try:
                        composed = self._composed_largest(z, budget_bytes, anchors, last[-1].largest_batch_size)
                    except LayerprofError:  # a cell of the kink or a batch line cannot be traced: on its own
                        composed = None
                if composed is None:
                    searched(z)
                    continue
                results[z] = composed
                told()
                last.append(results[z])
        return [results[z] for z in zs]

    def predicted_boundary(self, z: int, run: Sequence[int], budget_bytes: int) -> tuple[int, float] | None:
        """Where z's search starts, and the slope it starts with: the need on the line through the needs of the
        two z of its run nearest to it whose boundaries are known (`need_lines`; alike z add alike costs), where it
        meets the budget. Only a first probe: the search finds the exact boundary from it on z's own traces. None
        where fewer than two z of the run are known or the lines do not grow with the batch."""
        known = sorted((y for y in run if y != z and y in self.need_lines), key=lambda y: (abs(y - z), y))[:2]
        if len(known) < 2:
            return None
        (y1, y2), ((a1, s1), (a2, s2)) = known, (self.need_lines[known[0]], self.need_lines[known[1]])
        share = (z - y1) / (y2 - y1)
        intercept, slope = a1 + (a2 - a1) * share, s1 + (s2 - s1) * share
        if slope <= 0:
            return None
        return max(self.smallest_batch, min(MAX_BATCH_SIZE, math.floor((budget_bytes - intercept) / slope))), slope

    def batch_line(self, trainable_layers: int) -> ExactLine | None:
        """The z's need at any batch size (`layerprof.predict.compose.BatchLine`) through its two largest traced batch
        sizes, checked to reproduce every other traced batch size of the z to the byte (one more is traced where
        there is none); None where it does not."""
        from layerprof.predict.compose import BatchLine

        # a batch of one often runs another sequence of operations (a squeeze, a broadcast): lines start at 2
        traced = sorted(b for b, z in self.timelines if z == trainable_layers and b >= LINE_FROM_BATCH)
        if len(traced) < 2:
            return None
        workspaces = {self.workspace[(b, trainable_layers)] for b in traced}
        b1, b2 = traced[-2:]
        line = BatchLine.through(
            (b1, self.timelines[(b1, trainable_layers)]), (b2, self.timelines[(b2, trainable_layers)])
        )
        if line is None or len(workspaces) != 1:
            return None
        others = traced[:-2]
        if not others:
            extra = max(self.smallest_batch, LINE_FROM_BATCH, b1 // 2)
            if extra in (b1, b2):
                extra = b2 + 1
            self.need_bytes(trainable_layers, extra)
            others = [extra]
        workspace = workspaces.pop()
        for b in others:
            if self.workspace[(b, trainable_layers)] != workspace:
                return None
            peak = line.peak_bytes(b, self.allocation_size)
            if peak is None or peak + workspace + self.reserve != self.needs[(b, trainable_layers)]:
                return None
        return (line, workspace)

    def line_of(self, trainable_layers: int, batch_size: int) -> ExactLine | None:
        """The z's batch line and workspace (`batch_line`), its batches traced around `batch_size` where the z has
        fewer than two; None where there is no exact line."""
        if trainable_layers not in self.z_lines:
            traced = [b for b, z in self.timelines if z == trainable_layers and b >= LINE_FROM_BATCH]
            around = max(batch_size, LINE_FROM_BATCH)
            for extra in (around, around + 1):
                if len(traced) < 2 and extra not in traced:
                    self.need_bytes(trainable_layers, extra)
                    traced.append(extra)
            self.z_lines[trainable_layers] = self.batch_line(trainable_layers)
        return self.z_lines[trainable_layers]

    def replayed_need(self, trainable_layers: int, batch_size: int) -> int:
        """The z's need at the batch size from its batch line (raises _NotComposable where it has none)."""
        key = (trainable_layers, batch_size)
        if batch_size < LINE_FROM_BATCH:
            raise _NotComposable
        if key not in self.replayed:
            line = self.line_of(trainable_layers, batch_size)
            peak = None if line is None else line[0].peak_bytes(batch_size, self.allocation_size)
            self.replayed[key] = None if line is None or peak is None else peak + line[1] + self.reserve
        need = self.replayed[key]
        if need is None:
            raise _NotComposable
        return need

    def _composed_largest(self, z: int, budget_bytes: int, anchors: Sequence[int], near: int) -> FitResult | None:
        """The largest batch of a z between its run's anchors on the need composed from theirs (None: search it
        on its own traces). At each batch size the anchors' needs lie on one line, or on two (the first two
        anchors', the last two's) that meet at a kink of the convex peak, checked at the z on each side of it."""
        first, second, before_last, last = anchors

        def need(batch_size: int) -> int:
            v0, v1, v2, v3 = (self.replayed_need(a, batch_size) for a in anchors)
            slope_first, slope_last = v1 - v0, v3 - v2
            if slope_first == slope_last and v3 - v0 == slope_first * (last - first):
                return v0 + slope_first * (z - first)
            if slope_first == slope_last:
                raise _NotComposable
            crossing = (v3 - v0 + slope_first * first - slope_last * last) / (slope_first - slope_last)
            k = min(max(int(crossing // 1), first), last - 1)
            if self.replayed_need(k, batch_size) != v0 + slope_first * (k - first):
                raise _NotComposable
            if self.replayed_need(k + 1, batch_size) != v3 + slope_last * (k + 1 - last):
                raise _NotComposable
            return v0 + slope_first * (z - first) if z <= k else v3 + slope_last * (z - last)

        known: dict[int, int] = {}
        try:
            fits = self._search(
                need, known, max(self.smallest_batch, near or self.smallest_batch), budget_bytes, 1 << 24
            )
        except _NotComposable:
            return None
        if fits is None:
            return FitResult(z, 0, known[self.smallest_batch], composed=True)
        step_ms = self.composed_step_ms(z, fits, anchors)
        return FitResult(z, fits, known[fits], predicted_step_time_ms=step_ms, composed=True)

    def composed_step_ms(self, z: int, batch_size: int, anchors: Sequence[int]) -> float | None:
        """A composed z's predicted step time at `batch_size`: the anchors on either side of it priced on their
        traces scaled per operation to that batch (`layerprof.predict.compose.trace_at_batch`), interpolated at z;
        None without a time model or where an anchor has no two traces that scale."""
        from layerprof.predict.compose import trace_at_batch

        if self.time_model is None or not batch_size:
            return None
        below, above = max(a for a in anchors if a < z), min(a for a in anchors if a > z)
        times = []
        for anchor in (below, above):
            trace = trace_at_batch(self.traces, anchor, batch_size)
            if trace is None:
                return None
            times.append(self.time_model.predict(trace).step_ms)
        return times[0] + (times[1] - times[0]) * (z - below) / (above - below)

    def smallest_gpu(self, trainable_layers: int, batch_size: int) -> str | None:
        """The smallest listed GPU whose memory holds the cell's need (None: none does)."""
        return smallest_gpu_for(self.need_bytes(trainable_layers, batch_size))

    def cheapest_gpu(
        self, trainable_layers: int, batch_size: int, prices: PriceBook
    ) -> tuple[GpuKind, GpuPrice] | None:
        """The listed GPU with the lowest price per hour that holds the cell's need (None: no priced one does)."""
        return cheapest_gpu_for(self.need_bytes(trainable_layers, batch_size), prices)


class _NotComposable(Exception):
    """The anchors' needs do not step alike at this batch size: the z is searched on its own traces."""


class _SingleSampleError(Exception):
    """Batch 1 cannot train this model; the search starts at 2."""
