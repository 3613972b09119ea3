"""Parts of predict/fit.py that the end-to-end tests leave unpinned (issue 40: mutants that survived): the search's
steps on scripted needs (each probe in order), the composition of a run of alike z from its anchors, the report's
edges, and the CPU branch on a real (tiny) model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from types import SimpleNamespace

import pytest

import layerprof.predict.fit as fit
from layerprof.errors import LayerprofError
from layerprof.parsing import MAX_BATCH_SIZE, LayerSelection
from layerprof.predict.fit import FitResult, FitSearch, fit_model
from layerprof.profile import SweepSettings
from layerprof.sources.models import ModelOptions
from tests.predict.test_estimate import EXAMPLE, settings


def test_a_search_limited_to_the_smallest_batch_probes_nothing_more() -> None:
    search = FitSearch.__new__(FitSearch)  # the search alone: no model to trace, the needs given
    search.smallest_batch = 1
    probed: list[int] = []

    def need(batch_size: int) -> int:
        probed.append(batch_size)
        return 10 * batch_size

    assert search._from_smallest(need, {1: need(1)}, 100, limit=1) == 1
    assert probed == [1]  # the smallest batch is the limit: known already, not traced again
    probed.clear()
    assert search._from_smallest(need, {1: need(1)}, 100, limit=3) == 3
    assert probed == [1, 3]  # one probe at the limit, which fits


class Scripted(FitSearch):
    """The search on a scripted need per (z, batch): no model, every probe recorded in order."""

    def __init__(self, need: Callable[[int], int], slope: float | None = None) -> None:
        self.need, self.probes, self.needs, self.traces = need, [], {}, {}
        self.smallest_batch = 1
        self.time_model = None
        self.need_lines = {}
        self.slope = slope

    def need_bytes(self, trainable_layers: int, batch_size: int) -> int:
        self.probes.append(batch_size)
        return self.need(batch_size)

    def _next_probe(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        self._looked()
        return FitSearch._next_probe(*args, **kwargs)  # type: ignore[arg-type]

    def _line_guess(self, known: dict[int, int], budget_bytes: int) -> int | None:
        self._looked()
        return super()._line_guess(known, budget_bytes)

    def _looked(self) -> None:  # a search that goes on without tracing anything new fails at once, not hangs
        self.looks = getattr(self, "looks", 0) + 1
        assert self.looks < 40 + 2 * len(self.probes), "the search goes on at batches it knows"


def affine(batch_size: int) -> int:
    return 1000 + 10 * batch_size  # 5005 bytes: batch 400 needs 5,000 and fits, 401 needs 5,010


@pytest.mark.parametrize(
    ("near", "slope", "probes"),
    [
        (None, None, [1, 64, 400, 401]),  # 1 and 1 + 63, then the line's crossing floor(64 + 3365 / 10), the next
        (390, None, [390, 391, 400, 401]),  # one point and no slope: the next batch, then the line through both
        (390, 10.0, [390, 400, 401]),  # the last z's slope gives the line from one point
        (10, 10.0, [10, 400, 401]),
        (500, 10.0, [500, 400, 401]),  # from above: down the line
        (1000, None, [1000, 999, 400, 401]),  # from above without a slope: the batch below, then the line
        (399, None, [399, 400, 402, 401]),  # the line through 399 and 400 says 400: strides 1, 2, then the bracket
        (401, None, [401, 400]),  # the first probe fails, the one below fits: bracketed at once
        (1, None, [1, 2, 400, 401]),
    ],
)
def test_the_search_probes_each_batch_in_order(near: int | None, slope: float | None, probes: list[int]) -> None:
    search = Scripted(affine, slope)
    result = search.largest_batch(3, 5005, near=near)
    assert (result.largest_batch_size, result.need_at_largest_bytes) == (400, 5000)
    assert search.probes[:-1] == probes and search.probes[-1] == 400  # the answer's need, asked once more
    assert search.slope == 10.0 and search.need_lines == {3: (1000.0, 10.0)}  # the line beside the boundary
    assert (result.predicted_step_time_ms, result.composed, result.error) == (None, False, None)


def test_a_curved_need_is_bisected_from_a_seed_above_it() -> None:
    search = Scripted(lambda b: b * b)
    assert search.largest_batch(3, 10**6 + 5, near=5000).largest_batch_size == 1000
    assert search.probes[:-1] == [5000, 4999, 2599, 1841, 1302, 1080, 1010, 1000, 1001]


def test_a_curved_need_is_bisected_from_the_smallest_batch() -> None:
    search = Scripted(lambda b: b * b)
    assert search.largest_batch(3, 10**6 + 5).largest_batch_size == 1000
    assert search.probes[:-1] == [1, 64, 15385, 128, 7756, 252, 4004, 472, 2238, 758, 1498, 946, 1222, 994, 1108,
                                  999, 1053, 1000, 1026, 1001]  # fmt: skip


@pytest.mark.parametrize("near", [None, 50])
def test_nothing_fits_answers_zero_with_the_smallest_batchs_need(near: int | None) -> None:
    search = Scripted(affine)
    result = search.largest_batch(3, 1009, near=near)  # batch 1 needs 1,010
    assert (result.trainable_layers, result.largest_batch_size, result.need_at_largest_bytes) == (3, 0, 1010)
    assert search.need_lines == {} and search.slope is None
    assert search.probes == ([1] if near is None else [50, 49, 1])


def test_the_last_good_budget_fits_batch_one() -> None:
    search = Scripted(affine)
    assert search.largest_batch(3, 1010).largest_batch_size == 1
    assert search.probes == [1, 64, 2, 1]  # 64 fails, the line through 1 and 64 says 1: confirm 2


def test_a_flat_need_draws_no_line_and_a_traced_answer_gets_its_step_time() -> None:
    search = Scripted(lambda b: 1000)  # everything fits up to the limit
    search.time_model = SimpleNamespace(predict=lambda trace: SimpleNamespace(step_ms=trace * 2.0))
    search.traces = {(40, 3): 1.25}
    result = search.largest_batch(3, 5000, limit=40)
    assert result.largest_batch_size == 40 and result.predicted_step_time_ms == 2.5
    assert search.slope is None and search.need_lines == {}  # no failing batch: no line beside the boundary


@pytest.mark.parametrize(
    ("known", "fits", "fails", "budget", "bisect", "confirm", "probe"),
    [
        ({1: 1010, 64: 1640}, 64, None, 5005, False, True, 400),  # the line through the two largest: 1 + 3995 / 10
        ({1: 1010, 64: 1640}, 64, None, 10**9, False, True, 1 << 24),  # beyond the limit: the limit
        ({1: 1000, 64: 1000}, 64, None, 5005, False, True, 128),  # a flat line: twice the largest fitting
        ({100: 2000, 200: 3000}, 100, 200, 2205, False, True, 120),  # inside the bracket: 100 + 205 / 10
        ({100: 2000, 200: 3000}, 100, 200, 2205, True, True, 150),  # stalled: its middle
        ({100: 2000, 200: 3000}, 100, 200, 2005, True, True, 101),  # the line says 100: confirm 101 first
        ({100: 2000, 200: 3000}, 100, 200, 2005, True, False, 150),  # once confirmed: the middle
        ({100: 2000, 200: 3000}, 100, 200, 2005, False, False, 101),
        ({100: 2000, 120: 2200}, 100, 120, 4000, False, True, 110),  # the line overshoots the bracket: its middle
        ({100: 2000, 120: 2200}, 100, 120, 2199, False, True, 119),  # the last batch inside the bracket
        ({100: 2000, 102: 2020}, 100, 102, 2011, False, True, 101),
    ],
)
def test_the_next_probe(
    known: dict[int, int], fits: int, fails: int | None, budget: int, bisect: bool, confirm: bool, probe: int
) -> None:
    assert FitSearch._next_probe(known, fits, fails, budget, 1 << 24, bisect, confirm) == probe


@pytest.mark.parametrize(
    ("known", "slope", "guess"),
    [
        ({1: 1010, 64: 1640}, None, 400),  # floor(1 + 3995 / 10)
        ({1: 1010, 64: 1640, 400: 5010, 900: 99_000}, None, 399),  # the two nearest the budget: 64 and 400
        ({64: 1640}, 10.0, 400),  # one point: the last z's slope
        ({64: 1640}, None, None),
        ({64: 1640}, 0.0, None),
        ({1: 2000, 64: 1640}, None, None),  # a falling line meets nothing
        ({1: 1000, 64: 1000}, 10.0, None),  # a flat one neither (two points: the last z's slope unused)
    ],
)
def test_the_line_guess(known: dict[int, int], slope: float | None, guess: int | None) -> None:
    search = Scripted(affine, slope)
    assert search._line_guess(known, 5005) == guess


def lines_search(lines: dict[int, tuple[float, float]], smallest: int = 1) -> FitSearch:
    search = FitSearch.__new__(FitSearch)
    search.need_lines, search.smallest_batch = lines, smallest
    return search


def test_the_predicted_boundary_interpolates_the_two_nearest_known_lines() -> None:
    # z=3 halfway between z=2 (1,000 + 10 b) and z=4 (2,000 + 20 b): 1,500 + 15 b meets 3,000 at b = 100; z=1 and
    # z=7 are farther and left out, z=3's own line (were it known) too
    lines = {1: (0.0, 1.0), 2: (1000.0, 10.0), 3: (9.0, 9.0), 4: (2000.0, 20.0), 7: (0.0, 1.0)}
    search = lines_search(lines)
    assert search.predicted_boundary(3, [1, 2, 3, 4, 5, 6, 7], 3000) == (100, 15.0)
    assert search.predicted_boundary(3, [1, 2, 3, 4, 5, 6, 7], 3014) == (100, 15.0)
    assert search.predicted_boundary(3, [1, 2, 3, 4, 5, 6, 7], 3015) == (101, 15.0)
    # beyond the lines' z: extrapolated from the two nearest, 4 and 7 (2,000 + 20 b and 0 + 1 b); z=5: 1,333.3 + 13.7 b
    boundary, slope = search.predicted_boundary(5, [2, 4, 5, 7], 3000)
    assert boundary == 121 and slope == pytest.approx(41 / 3)
    assert search.predicted_boundary(3, [3, 4], 3000) is None  # one other z known
    assert search.predicted_boundary(3, [2, 3, 4], 1000) == (1, 15.0)  # below the smallest batch: the smallest
    assert lines_search(lines, smallest=2).predicted_boundary(3, [2, 3, 4], 1000) == (2, 15.0)
    assert search.predicted_boundary(3, [2, 3, 4], 10**12) == (MAX_BATCH_SIZE, 15.0)
    assert lines_search({2: (0.0, 1.0), 4: (0.0, -1.0)}).predicted_boundary(3, [2, 3, 4], 10**6) is None  # slope 0


class Composed(FitSearch):
    """`_composed_largest` on scripted needs per (z, batch): the anchors' batch lines given."""

    def __init__(self, need: Callable[[int, int], int]) -> None:
        self.need, self.asked, self.batches = need, [], []
        self.smallest_batch, self.time_model, self.traces, self.slope = 1, None, {}, None

    def replayed_need(self, trainable_layers: int, batch_size: int) -> int:
        self.asked.append(trainable_layers)
        self.batches.append(batch_size)
        return self.need(trainable_layers, batch_size)


def test_a_run_on_one_line_composes_each_z_from_its_anchors() -> None:
    search = Composed(lambda z, b: 1000 + z * (50 + 10 * b))  # z=5: 1,250 + 50 b; 6,255 bytes hold batch 100
    result = search._composed_largest(5, 6255, (1, 2, 9, 10), near=50)
    assert result == FitResult(5, 100, 6250, composed=True)
    assert set(search.asked) == {1, 2, 9, 10}  # the anchors only: z=5 is not traced
    assert search.batches[:4] == [50] * 4  # the search starts at the batch it was seeded with
    search = Composed(lambda z, b: 1000 + z * (50 + 10 * b))
    assert search._composed_largest(5, 1299, (1, 2, 9, 10), near=0) == FitResult(5, 0, 1300, composed=True)


def test_a_run_with_a_kink_composes_each_side_on_its_own_line() -> None:
    # 10 bytes per sample for each of the first 4 layers, 2 for each after: the first anchors step 10 b, the last
    # 2 b, the lines cross at z=4, checked at z=4 and 5
    def need(z: int, b: int) -> int:
        return 1000 + 10 * b * min(z, 4) + 2 * b * max(z - 4, 0)

    for z, per_sample in ((3, 30), (4, 40), (6, 44)):
        search = Composed(need)
        result = search._composed_largest(z, 1000 + per_sample * 100 + per_sample - 1, (1, 2, 9, 10), near=7)
        assert (result.largest_batch_size, result.need_at_largest_bytes) == (100, 1000 + per_sample * 100)
        assert set(search.asked) == {1, 2, 9, 10, 4, 5}


@pytest.mark.parametrize(
    "need",
    [
        lambda z, b: 1000 + 10 * b * z + (7 if z >= 9 else 0),  # equal steps at both ends, off the chord
        lambda z, b: 1000 + 10 * b * min(z, 4) + 2 * b * max(z - 4, 0) + (1 if z == 4 else 0),  # off at the kink
        lambda z, b: 1000 + 10 * b * min(z, 4) + 2 * b * max(z - 4, 0) + (1 if z == 5 else 0),  # off after it
    ],
)
def test_anchors_that_do_not_step_alike_leave_the_z_to_its_own_search(need: Callable[[int, int], int]) -> None:
    assert Composed(need)._composed_largest(6, 10**6, (1, 2, 9, 10), near=7) is None


def test_a_composed_step_time_interpolates_the_anchors_beside_it() -> None:
    search = FitSearch.__new__(FitSearch)
    search.time_model = SimpleNamespace(predict=lambda trace: SimpleNamespace(step_ms=trace))
    search.traces = {(100, 2): 99.0, (100, 3): 10.0, (100, 7): 30.0, (100, 8): 99.0}
    assert search.composed_step_ms(4, 100, (2, 3, 7, 8)) == 15.0  # 10 + 20 * (4 - 3) / (7 - 3)
    assert search.composed_step_ms(6, 100, (2, 3, 7, 8)) == 25.0
    assert search.composed_step_ms(4, 0, (2, 3, 7, 8)) is None  # nothing fits
    assert search.composed_step_ms(4, 101, (2, 3, 7, 8)) is None  # no trace at that batch, none to scale
    search.time_model = None
    assert search.composed_step_ms(4, 100, (2, 3, 7, 8)) is None


def test_a_replayed_need_is_the_batch_lines_peak_plus_workspace_and_reserve_once_per_batch() -> None:
    search = FitSearch.__new__(FitSearch)
    search.replayed, search.reserve, search.allocation_size = {}, 7, int
    lines: list[tuple[int, int]] = []
    line = SimpleNamespace(peak_bytes=lambda b, size: None if b > 50 else size(100 * b))

    def line_of(z: int, b: int) -> tuple[object, int] | None:
        lines.append((z, b))
        return None if z == 9 else (line, 5)

    search.line_of = line_of
    assert search.replayed_need(3, 2) == 212 and search.replayed_need(3, 2) == 212  # 100 * 2 + 5 + 7
    assert lines == [(3, 2)]  # once
    assert search.replayed_need(3, 50) == 5012
    for z, b in ((3, 1), (3, 51), (9, 2), (9, 2)):  # below the line's first batch, beyond its peaks, no line
        with pytest.raises(fit._NotComposable):
            search.replayed_need(z, b)
    assert lines == [(3, 2), (3, 50), (3, 51), (9, 2)]  # a missing line is remembered too


# ---------------------------------------------------------------- largest_batches: the order of the search


class Ordered(FitSearch):
    """`largest_batches` over a scripted `largest_batch`: which z were searched, in order, and from where."""

    def __init__(self, answers: dict[int, int], signatures: list[object] | None = None, fails: Sequence[int] = ()):
        self.answers, self.fails, self.searched = answers, fails, []
        self.layers = [None] * 8
        self.signatures = signatures
        self.need_lines, self.smallest_batch, self.slope = {}, 1, None

    def largest_batch(
        self, trainable_layers: int, budget_bytes: int, limit: int = MAX_BATCH_SIZE, near: int | None = None
    ) -> FitResult:
        self.searched.append((trainable_layers, near))
        if trainable_layers in self.fails:
            raise LayerprofError(f"z={trainable_layers} cannot be traced")
        return FitResult(trainable_layers, self.answers[trainable_layers], 10 * self.answers[trainable_layers])

    def _composed_largest(self, z: int, budget_bytes: int, anchors: Sequence[int], near: int) -> FitResult | None:
        self.searched.append((z, "composed", tuple(anchors), near))
        return None if z == 4 else FitResult(z, 100 - z, 1000, composed=True)


def test_seeded_searches_start_at_the_last_answer_and_unseeded_from_nothing() -> None:
    answers = {1: 50, 2: 40, 3: 0, 5: 30}
    search = Ordered(answers)
    heard: list[tuple[int, int]] = []
    results = search.largest_batches([5, 1, 3, 2, 1], 999, progress=lambda done, total: heard.append((done, total)))
    assert [r.trainable_layers for r in results] == [5, 1, 3, 2, 1]  # in the order asked, each z searched once
    assert search.searched == [(1, None), (2, 50), (3, 40), (5, None)]  # a z that fits nothing seeds nothing
    assert heard == [(1, 4), (2, 4), (3, 4), (4, 4)]
    search = Ordered(answers)
    search.largest_batches([5, 1, 3, 2], 999, seeded=False)
    assert search.searched == [(1, None), (2, None), (3, None), (5, None)]


def test_a_failed_z_is_kept_as_its_error_and_seeds_nothing() -> None:
    search = Ordered({1: 50, 2: 40, 3: 30}, fails=(1, 2))
    with pytest.raises(LayerprofError, match="z=1 cannot be traced"):
        search.largest_batches([1, 2, 3], 999)
    search = Ordered({1: 50, 2: 40, 3: 30}, fails=(1, 2))
    results = search.largest_batches([1, 2, 3], 999, keep_failures=True)
    assert [(r.largest_batch_size, r.error) for r in results] == [
        (0, "z=1 cannot be traced"),
        (0, "z=2 cannot be traced"),
        (30, None),
    ]
    assert search.searched == [(1, None), (2, None), (3, None)]


def test_a_run_of_alike_z_is_searched_at_its_anchors_and_composed_between() -> None:
    answers = {z: 100 - z for z in range(1, 9)}
    search = Ordered(answers, signatures=["same"] * 8)  # layers 1-8 alike: z=1..8 one run
    results = search.largest_batches(range(1, 9), 999)
    assert search.searched == [
        (1, None),
        (2, 99),
        (7, 98),  # before z=3 is composed: the anchors it needs, each seeded by the last answer
        (8, 93),
        (3, "composed", (1, 2, 7, 8), 92),
        (4, "composed", (1, 2, 7, 8), 97),
        (4, 97),  # not composable: on its own
        (5, "composed", (1, 2, 7, 8), 96),
        (6, "composed", (1, 2, 7, 8), 95),
    ]
    assert [r.composed for r in results] == [False, False, True, False, True, True, False, False]
    short = Ordered(answers, signatures=["same"] * 4 + ["other"] * 4)  # runs 1-4 and 5-8: too short to compose
    short.largest_batches(range(1, 9), 999)
    assert [entry[0] for entry in short.searched] == list(range(1, 9)) and all(len(e) == 2 for e in short.searched)


# ---------------------------------------------------------------- fit_model: the report's edges


class Standin:
    """The search `fit_model` builds, on given answers: the report's assembly alone."""

    made: list[tuple[object, ...]] = []
    answers: list[FitResult] = []

    def __init__(self, spec, options, settings, time_model, reuse):  # noqa: ANN001
        Standin.made.append((spec, settings.target, time_model, reuse))
        self.settings = replace(settings, target=settings.target or "cuda")
        self.layers = [None] * 6
        self.smallest_batch = 2
        self.time_model = SimpleNamespace(label="stand-in constants")
        self.needs = {(1, 1): 0, (2, 1): 0, (3, 1): 0}
        self.gpus: list[tuple[int, int]] = []

    def largest_batches(self, zs, budget, seeded, progress, keep_failures):  # noqa: ANN001
        assert (budget, seeded, keep_failures) == (2**30, True, False)
        by_z = {result.trainable_layers: result for result in Standin.answers}
        return [replace(by_z[z]) for z in zs]

    def smallest_gpu(self, z: int, batch_size: int) -> str:
        return f"gpu for z={z}, batch {batch_size}"

    def cheapest_gpu(self, z: int, batch_size: int, prices: object) -> tuple[object, object] | None:
        return None if z == 6 else (SimpleNamespace(name=f"cheap{z}"), SimpleNamespace(label=f"${z}/h ({prices})"))


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> type[Standin]:
    monkeypatch.setattr(fit, "FitSearch", Standin)
    Standin.made = []
    Standin.answers = [FitResult(z, MAX_BATCH_SIZE - 2 + z // 3, 5 * 2**30) for z in range(1, 7)]
    return Standin


PLAIN = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1,))


def fit_standin(layers: str = "1,3,6", **kwargs: object) -> fit.FitReport:
    return fit_model("m", ModelOptions(), PLAIN, 2**30, LayerSelection(layers), **kwargs)


def test_the_report_marks_answers_at_the_search_limit_and_names_gpus_for_a_given_batch(standin: type) -> None:
    report = fit_standin(batch_size=MAX_BATCH_SIZE, prices="book")
    assert standin.made == [("m", None, None, True)]
    assert (report.model, report.target, report.memory_bytes, report.batch_size) == ("m", "cuda", 2**30, 1 << 24)
    assert (report.smallest_batch_size, report.time_model, report.traces) == (2, "stand-in constants", 3)
    assert [(r.trainable_layers, r.largest_batch_size, r.at_search_limit) for r in report.results] == [
        (1, MAX_BATCH_SIZE - 2, False),
        (3, MAX_BATCH_SIZE - 1, False),
        (6, MAX_BATCH_SIZE, True),
    ]
    assert [(r.smallest_gpu, r.cheapest_gpu, r.cheapest_price) for r in report.results] == [
        ("gpu for z=1, batch 16777216", "cheap1", "$1/h (book)"),
        ("gpu for z=3, batch 16777216", "cheap3", "$3/h (book)"),
        ("gpu for z=6, batch 16777216", None, None),  # no priced GPU holds it
    ]
    report = fit_standin()  # no batch: no GPU
    assert [(r.smallest_gpu, r.cheapest_gpu) for r in report.results] == [(None, None)] * 3
    report = fit_standin(batch_size=4)  # no prices: the smallest GPU only
    assert [(r.smallest_gpu, r.cheapest_gpu) for r in report.results][0] == ("gpu for z=1, batch 4", None)


def test_a_batch_beyond_the_largest_is_refused(standin: type) -> None:
    with pytest.raises(LayerprofError, match=r"^--batch-size 16,777,217 is beyond the largest this takes, 16,777,216$"):
        fit_standin(batch_size=MAX_BATCH_SIZE + 1)
    assert standin.made == []


def test_plain_lora_fits_one_cell_and_progress_hears_the_count_first(standin: type) -> None:
    heard: list[tuple[int, int]] = []
    lora = replace(PLAIN, adapter="lora", adapter_layers="all", target="cpu")
    report = fit_model("m", ModelOptions(), lora, 2**30, LayerSelection("1,3"), progress=lambda *a: heard.append(a))
    assert [r.trainable_layers for r in report.results] == [6] and heard == [(0, 1)]
    assert report.target == "cpu"
    heard.clear()
    report = fit_model("m", ModelOptions(), replace(lora, adapter_layers="trainable"), 2**30, LayerSelection("3,1"),
                       progress=lambda *a: heard.append(a))  # fmt: skip
    assert [r.trainable_layers for r in report.results] == [1, 3] and heard == [(0, 2)]


def test_fit_refuses_where_no_z_answers_or_none_fits(standin: type) -> None:
    standin.answers = [FitResult(z, 0, None, error=f"z={z} broke") for z in range(1, 7)]
    with pytest.raises(LayerprofError, match=r"^no z can be fitted: z=1 broke$"):
        fit_standin()
    standin.answers = [FitResult(z, 0, (z + 2) * 2**28) for z in range(1, 7)]
    standin.answers[0] = FitResult(1, 0, None, error="z=1 broke")  # a failed z's need is left out
    with pytest.raises(LayerprofError) as refused:
        fit_standin()
    assert str(refused.value) == (
        "no z fits in 1.00 GiB even at batch 2; the smallest need is 1.25 GiB (z=1, context reserve included)"
    )
    standin.answers[2] = FitResult(3, 1, 2**29)  # one z fits: an answer
    assert [r.largest_batch_size for r in fit_standin().results] == [0, 1, 0]


# ---------------------------------------------------------------- the CPU branch, on a real tiny model

TINY = ModelOptions(input_shape=(4,), num_classes=3, overrides={"width": 8, "depth": 2, "features": 4, "classes": 3})


@pytest.fixture(scope="module")
def tiny_cpu() -> FitSearch:
    return FitSearch(f"{EXAMPLE}:mlp", TINY, settings(1, target="cpu"))


def test_fit_on_a_cpu_target_needs_the_traced_peak_alone(tiny_cpu: FitSearch) -> None:
    # a residual MLP 4 -> 8, two blocks of 8 (LayerNorm + Linear), 8 -> 3: 243 float32 parameters, 972 bytes. z=1
    # trains the head (27 parameters, 108 bytes): Adam's two moments of it and two 4-byte step counts, 224 bytes; a
    # batch of one, 16 bytes of features and 8 of its label: 1,220 bytes, and 300 more at the step's peak (the
    # head's 108 bytes of gradients and the activations): 1,520 bytes, no CUDA context (768 MiB) on a CPU
    assert tiny_cpu.reserve == 0 and tiny_cpu.settings.target == "cpu" and tiny_cpu.allocation_size is int
    assert tiny_cpu.need_bytes(1, 1) == 1520
    assert tiny_cpu.need_bytes(1, 2) == 1544 and tiny_cpu.need_bytes(1, 3) == 1568  # 24 bytes per sample
    assert tiny_cpu.workspace[(1, 1)] == 0  # no cuBLAS workspace on a CPU
    result = tiny_cpu.largest_batch(1, 2156, near=8)  # batch 8 needs 2,156 bytes
    assert (result.largest_batch_size, result.need_at_largest_bytes) == (8, 2156)
    assert tiny_cpu.largest_batch(1, 2155, near=8).largest_batch_size == 7


def test_a_batch_line_on_cpu_replays_each_traced_need_to_the_byte(tiny_cpu: FitSearch) -> None:
    line = tiny_cpu.line_of(1, 16)
    assert line is not None and line[1] == 0
    for b in (2, 3, 4, 8, 16):
        assert tiny_cpu.replayed_need(1, b) == tiny_cpu.need_bytes(1, b)
    assert tiny_cpu.replayed_need(1, 40) == tiny_cpu.need_bytes(1, 40)  # beyond the traced batches


def test_a_batch_line_is_traced_around_the_batch_asked_and_checked_on_one_more(tiny_cpu: FitSearch) -> None:
    # z=2 and z=3 traced nowhere else in this file: from nothing, the batch asked and the next, then one more below
    # (half the lower) that the line must reproduce; from one traced batch (5), the batch asked, then half of 5 is 2
    assert tiny_cpu.line_of(3, 16) is not None
    assert sorted(b for b, z in tiny_cpu.needs if z == 3) == [8, 16, 17]
    tiny_cpu.need_bytes(2, 5)
    assert tiny_cpu.line_of(2, 16) is not None
    assert sorted(b for b, z in tiny_cpu.needs if z == 2) == [2, 5, 16]
    assert tiny_cpu.replayed_need(2, 40) == tiny_cpu.need_bytes(2, 40)


class Bounded(dict):  # type: ignore[type-arg]
    """The search's known needs, refusing a search that keeps looking without tracing anything new."""

    def __contains__(self, key: object) -> bool:
        self.looks = getattr(self, "looks", 0) + 1
        assert self.looks < 100, "the search goes on at batches it knows"
        return super().__contains__(key)


def test_a_seeded_search_that_fits_up_to_the_limit_stops_there() -> None:
    search = Scripted(lambda b: 1000)
    assert search._search(lambda b: search.need_bytes(3, b), Bounded(), 10, 5000, 40) == 40
    assert search.probes == [10, 11, 13, 17, 25, 40]  # strides 1, 2, 4, 8, then the limit


def test_a_seeded_search_stops_once_the_boundary_is_bracketed() -> None:
    search = Scripted(affine)
    assert search._search(lambda b: search.need_bytes(3, b), Bounded(), 390, 5005, 1 << 24) == 400
    assert search.probes == [390, 391, 400, 401]  # 400 fits and 401 does not: no batch left to look at


def test_the_smallest_and_cheapest_gpu_hold_the_need_of_z_at_the_batch() -> None:
    search = FitSearch.__new__(FitSearch)
    search.need_bytes = lambda z, b: (z * 1000 + b) * 2**20  # z=3, batch 40: 3,040 MiB; z=40, batch 3: 40,003 MiB
    assert search.smallest_gpu(3, 40) == "1g.5gb"
    assert search.smallest_gpu(40, 3) == "3g.40gb"
    assert search.smallest_gpu(3, 3) == "1g.5gb" and search.smallest_gpu(3, 40_000) == "L40"  # 43,000 MiB
    book = SimpleNamespace(find=lambda gpu: SimpleNamespace(usd_per_hour=gpu.memory_mib, label="by memory"))
    gpu, price = search.cheapest_gpu(3, 40, book)
    assert (gpu.name, price.label) == ("1g.5gb", "by memory")
    assert search.cheapest_gpu(40, 3, book)[0].name == "3g.40gb"
    assert search.cheapest_gpu(3, 40_000, book)[0].name == "L40"


def test_a_batch_line_needs_two_traced_batches_from_2_up(tiny_cpu: FitSearch) -> None:
    tiny_cpu.need_bytes(4, 3)
    tiny_cpu.need_bytes(4, 1)  # a batch of one runs other operations: no point of a line
    assert tiny_cpu.batch_line(4) is None


def test_a_batch_of_one_that_cannot_train_moves_the_search_to_two(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = {
        1: SimpleNamespace(ok=False, message="Expected more than 1 value per channel when training"),
        2: SimpleNamespace(ok=True, message=None, peak_memory_bytes=100, memory_workspace_bytes=None),
        3: SimpleNamespace(ok=False, message="Expected more than 1 value per channel when training"),
    }
    traced: list[tuple[int, int]] = []

    def estimate_cell(context: object, batch_size: int, trainable_layers: int, **_kwargs: object):  # noqa: ANN202
        traced.append((batch_size, trainable_layers))
        row = rows[batch_size]
        row.memory_workspace_bytes = getattr(row, "memory_workspace_bytes", None)
        return row, 0.0

    monkeypatch.setattr(fit, "estimate_cell", estimate_cell)
    search = FitSearch.__new__(FitSearch)
    search.mode, search.context, search.signatures, search.reserve = nullcontext(), None, [], 7
    search.needs, search.workspace, search.smallest_batch = {}, {}, 1
    search.traces = search.primed = search.timelines = search.blocks = None
    with pytest.raises(fit._SingleSampleError):
        search.need_bytes(3, 1)  # z=3: any z's batch of one
    assert search.smallest_batch == 2 and search.workspace == {(1, 3): 0}
    assert search.need_bytes(3, 2) == 107 and search.need_bytes(3, 2) == 107  # the peak and the reserve, traced once
    assert traced == [(1, 3), (2, 3)]
    with pytest.raises(LayerprofError, match=r"^z=1, batch 3: Expected more than 1 value per channel"):
        search.need_bytes(1, 3)  # beyond a batch of one: an error of the cell
