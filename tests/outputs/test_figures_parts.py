"""outputs/figures.py part by part (issue 40's mutation survivors): each figure drawn from a few hand-made rows,
and what it shows read back from its artists: lines' data, bars, labels, scales, limits, legends, texts, sizes."""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib.pyplot as plt
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from layerprof.fidelity import simulate
from layerprof.fidelity.correlate import CellStatistics, CorrelationResult
from layerprof.outputs import figures
from layerprof.outputs.figures import (
    DISTURBED_LABEL,
    correlation_heatmap_png,
    cost_curves_figure,
    has_step_times,
    memory_breakdown_figure,
    params_flops_figure,
    regret_cost_figure,
    simulation_figure,
    simulation_png,
)
from layerprof.profile import MemoryCategory, Profile, Row
from tests.conftest import bare_profile

MIB = 2**20
XLABEL = "trainable layers z (counted from the output)"


@pytest.fixture
def closing() -> Iterator[list[Figure]]:
    """The figures a test draws, closed after it (and only those)."""
    drawn: list[Figure] = []
    yield drawn
    for figure in drawn:
        plt.close(figure)


def ok(batch: int, z: int, step: float | None, peak_mib: float | None, **fields: Any) -> Row:
    peak = None if peak_mib is None else int(peak_mib * MIB)
    return Row(batch, z, "ok", step_time_ms=step, peak_memory_bytes=peak, **fields)


def lines(axes: Axes, rungs: bool = True) -> list[tuple[str, list[float], list[float]]]:
    """Every line (but the dotted rungs and the line at 1 where `rungs`): its label, x and y."""
    return [
        (line.get_label(), list(line.get_xdata()), list(line.get_ydata()))
        for line in axes.get_lines()
        if not rungs or (line.get_linestyle() != ":" and line.get_color() != "black")
    ]


def legend_texts(axes: Axes) -> list[str] | None:
    legend = axes.get_legend()
    return None if legend is None else [text.get_text() for text in legend.get_texts()]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def anchor(axes: Axes) -> tuple[float, float]:
    """Where the legend is anchored, in the axes' coordinates."""
    box = axes.get_legend().get_bbox_to_anchor()
    x, y = axes.transAxes.inverted().transform((box.x0, box.y0))
    return round(float(x), 6), round(float(y), 6)


def assert_laid_out(figure: Figure) -> None:
    """What the figure's tight layout is for: nothing drawn lies outside the figure (a title, a label or a legend
    beside the plot clipped), no margin is wasted (the layout's pad, 1.08 font sizes: 0.15 inch, on every side),
    and no panel's labels run into another panel."""
    if not hasattr(figure.canvas, "get_renderer"):  # closed by pyplot: a canvas to draw it on again
        FigureCanvasAgg(figure)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    drawn = figure.get_tightbbox(renderer)  # inches
    width, height = figure.get_size_inches()
    margins = (drawn.x0, width - drawn.x1, drawn.y0, height - drawn.y1)
    assert all(0 <= margin <= 0.3 for margin in margins), margins
    boxes = [axes.get_tightbbox(renderer) for axes in figure.axes]
    assert not [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes) if i < j and a.overlaps(b)]


def grid_alpha(gridlines: list) -> tuple[bool, float | None]:
    return gridlines[0].get_visible(), gridlines[0].get_alpha()


def main_profile() -> Profile:
    """n = 3: batch 2 failed (with a time and a peak that must not show), batch 4 without z = n (no relative curve),
    batch 8 complete; batch 4's z=1 and batch 8's z=2 disturbed; peaks 1-32 MiB (wide: log), times 5-40 ms."""
    rows = [
        Row(2, 1, "oom", step_time_ms=99.0, peak_memory_bytes=99 * MIB),
        ok(4, 1, 5.0, 1, disturbed=True),
        ok(4, 2, 8.0, 2),
        ok(8, 1, 10.0, 8),
        ok(8, 2, 20.0, 16, disturbed=True),
        ok(8, 3, 40.0, 32),
    ]
    return bare_profile(rows, 3)


# ---------------------------------------------------------------- the parts


def test_a_series_keeps_ok_rows_with_the_figure_scaled(closing: list[Figure]) -> None:
    profile = bare_profile(
        [ok(8, 1, 10.0, None), ok(8, 2, None, 1), Row(8, 3, "failed", step_time_ms=7.0), ok(8, 4, 30.0, 1)], 4
    )
    assert figures._series(profile, 8, "step_time_ms", 2.0) == ([1, 4], [5.0, 15.0])
    assert figures._series(profile, 8, "peak_memory_bytes", MIB) == ([2, 4], [1.0, 1.0])
    assert figures._series(profile, 4, "step_time_ms") == ([], [])


def test_disturbed_points_are_the_drawn_points_of_disturbed_ok_rows() -> None:
    rows = [ok(8, 1, 1.0, 1, disturbed=True), ok(8, 2, 2.0, 1), Row(8, 3, "oom", disturbed=True), ok(8, 4, 4.0, 1)]
    profile = bare_profile(rows, 4)
    assert figures._disturbed_points(profile, 8, [1, 2, 4], [0.5, 1.0, 2.0]) == [(1, 0.5)]
    assert figures._disturbed_points(profile, 8, [2, 4], [1.0, 2.0]) == []


@pytest.mark.parametrize(
    ("values", "scale"),
    [
        ([2.0, 40.0], "linear"),  # exactly 20 times: not wide
        ([2.0, 42.0], "log"),  # 21 times
        ([0.0, 1.0, 2.0], "linear"),  # zero left out (no division by it)
        ([-5.0, 0.0], "linear"),  # nothing positive
        ([], "linear"),
        ([0.5, -100.0, 10.5], "log"),  # the positive ones: 21 times
    ],
)
def test_a_y_axis_goes_log_where_its_positive_values_span_more_than_20_times(
    values: list[float], scale: str, closing: list[Figure]
) -> None:
    figure, axes = plt.subplots(figsize=(2, 2))
    closing.append(figure)
    figures._log_if_wide(axes, values)
    assert axes.get_yscale() == scale


def test_finish_titles_labels_and_limits_a_panel_to_integer_z(closing: list[Figure]) -> None:
    figure, axes = plt.subplots(figsize=(6, 2))  # wide enough for matplotlib's own ticks to fall between z
    closing.append(figure)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a grid turned off and styled at once warns (and is drawn anyway)
        figures._finish(axes, "The title", "the unit", 4)
    assert (axes.get_title(), axes.get_xlabel(), axes.get_ylabel()) == ("The title", XLABEL, "the unit")
    assert axes.get_xlim() == (0.5, 4.5)
    locator = axes.xaxis.get_major_locator()
    assert isinstance(locator, MaxNLocator)
    assert all(float(tick).is_integer() for tick in locator.tick_values(0.5, 2.5))  # never z = 1.5
    assert grid_alpha(axes.get_xgridlines()) == (True, 0.3)
    assert grid_alpha(axes.get_ygridlines()) == (True, 0.3)


def test_has_step_times_where_any_ok_row_has_one() -> None:
    timed = bare_profile([ok(8, 1, None, 1), ok(8, 2, 3.0, 1)], 2)
    untimed = bare_profile([ok(8, 1, None, 1), Row(8, 2, "oom", step_time_ms=3.0)], 2)
    assert has_step_times([("a", untimed), ("b", timed)])
    assert not has_step_times([("a", untimed)])


# ---------------------------------------------------------------- the report's figures


def test_cost_curves_draw_each_batch_absolute_and_relative_with_rings_and_rungs(closing: list[Figure]) -> None:
    figure = cost_curves_figure([("tiny", main_profile())])
    closing.append(figure)
    assert tuple(figure.get_size_inches()) == (13.0, 8.5)
    assert figure.get_suptitle() == "Cost of training only the last z layers (dotted: recommended ladder rungs, η = 3)"
    time_axes, memory_axes, time_relative, memory_relative = figure.axes
    assert [a.get_subplotspec().get_geometry() for a in figure.axes] == [(2, 2, i, i) for i in range(4)]
    assert lines(time_axes) == [
        ("batch 4", [1, 2], [5.0, 8.0]),
        (DISTURBED_LABEL, [1], [5.0]),
        ("batch 8", [1, 2, 3], [10.0, 20.0, 40.0]),
        ("_nolegend_", [2], [20.0]),
    ]
    assert lines(memory_axes) == [("batch 4", [1, 2], [1.0, 2.0]), ("batch 8", [1, 2, 3], [8.0, 16.0, 32.0])]
    assert lines(time_relative) == [("batch 8", [1, 2, 3], [0.25, 0.5, 1.0]), (DISTURBED_LABEL, [2], [0.5])]
    assert lines(memory_relative) == [("batch 8", [1, 2, 3], [0.25, 0.5, 1.0])]
    curve = time_axes.get_lines()[0]
    assert (curve.get_marker(), curve.get_markersize()) == ("o", 3)
    ring = time_axes.get_lines()[1]
    assert (ring.get_marker(), ring.get_linestyle(), ring.get_markeredgecolor()) == ("o", "None", "red")
    # memory spans 32 times: log; step times 8 times, and every relative panel, linear
    assert [a.get_yscale() for a in figure.axes] == ["linear", "log", "linear", "linear"]
    titles = [(a.get_title(), a.get_ylabel()) for a in figure.axes]
    assert titles == [
        ("Step time per training step", "step time (ms)"),
        ("Peak memory per training step", "peak memory (MiB)"),
        ("Step time relative to full training", "× full training (z = n)"),
        ("Peak memory relative to full training", "× full training (z = n)"),
    ]
    for axes in figure.axes:
        assert axes.get_xlim() == (0.5, 3.5) and axes.get_xlabel() == XLABEL
        rungs = [line for line in axes.get_lines() if line.get_linestyle() == ":"]
        assert [list(line.get_xdata()) for line in rungs] == [[1, 1], [2, 2], [3, 3]]  # the ladder's rungs
        assert {(line.get_color(), line.get_linewidth()) for line in rungs} == {("grey", 1)}
    for axes in (time_relative, memory_relative):
        (one,) = [line for line in axes.get_lines() if line.get_color() == "black"]
        assert (list(one.get_ydata()), one.get_linewidth()) == ([1.0, 1.0], 0.8)
    assert [legend_texts(a) for a in figure.axes] == [
        ["batch 4", DISTURBED_LABEL, "batch 8"],
        ["batch 4", "batch 8"],
        ["batch 8", DISTURBED_LABEL],
        ["batch 8"],
    ]
    assert_laid_out(figure)


def test_cost_curves_of_several_profiles_without_times_name_each_and_span_the_longest(
    closing: list[Figure],
) -> None:
    short = bare_profile([ok(8, 1, None, 1), ok(8, 3, None, 2)], 3)
    long = bare_profile([ok(8, 1, None, 2), ok(8, 4, None, 3)], 5)  # no z = 5: no relative curve
    figure = cost_curves_figure([("short", short), ("long", long)])
    closing.append(figure)
    assert tuple(figure.get_size_inches()) == (6.5, 8.5)  # one column: memory only
    absolute, relative = figure.axes
    assert lines(absolute) == [("short, batch 8", [1, 3], [1.0, 2.0]), ("long, batch 8", [1, 4], [2.0, 3.0])]
    assert lines(relative) == [("short, batch 8", [1, 3], [0.5, 1.0])]
    assert [a.get_xlim() for a in figure.axes] == [(0.5, 5.5)] * 2
    assert [a.get_title() for a in figure.axes] == [
        "Peak memory per training step",
        "Peak memory relative to full training",
    ]
    assert legend_texts(relative) == ["short, batch 8"]


def test_cost_curves_leave_a_panel_with_nothing_named_without_a_legend(closing: list[Figure]) -> None:
    profile = bare_profile([ok(8, 1, 4.0, 1)], 3)  # no z = n: the relative panels stay empty
    figure = cost_curves_figure([("tiny", profile)])
    closing.append(figure)
    assert [legend_texts(a) for a in figure.axes] == [["batch 8"], ["batch 8"], None, None]


def test_params_and_flops_of_one_profile_at_its_smallest_batch(closing: list[Figure]) -> None:
    rows = [
        Row(4, 1, "ok", trainable_params=1_000_000, forward_flops=2 * 10**9, backward_flops=4 * 10**9, flops=6 * 10**9),
        Row(4, 2, "ok", trainable_params=5_000_000, forward_flops=3 * 10**9, backward_flops=6 * 10**9, flops=9 * 10**9),
        Row(8, 1, "ok", trainable_params=7_000_000, flops=60 * 10**9),
    ]
    figure = params_flops_figure([("tiny", bare_profile(rows, 2))])
    closing.append(figure)
    assert tuple(figure.get_size_inches()) == (13.0, 4.8)
    left, right = figure.axes
    (params,) = left.get_lines()  # unnamed: one profile needs no legend
    assert (params.get_label()[0], list(params.get_xdata()), list(params.get_ydata())) == ("_", [1, 2], [1.0, 5.0])
    assert lines(right, rungs=False) == [
        ("forward flops, batch 4", [1, 2], [2.0, 3.0]),
        ("backward flops, batch 4", [1, 2], [4.0, 6.0]),
        ("flops, batch 4", [1, 2], [6.0, 9.0]),
    ]
    assert [line.get_linestyle() for line in right.get_lines()] == ["--", ":", "-"]
    assert {(line.get_marker(), line.get_markersize()) for line in [*left.get_lines(), *right.get_lines()]} == {
        ("o", 3)
    }
    assert [a.get_yscale() for a in figure.axes] == ["linear", "linear"]
    assert [(a.get_title(), a.get_ylabel(), a.get_xlim()) for a in figure.axes] == [
        ("Trainable parameters", "trainable parameters (millions)", (0.5, 2.5)),
        ("FLOPs per training step (matmul, conv, attention)", "GFLOPs", (0.5, 2.5)),
    ]
    assert (legend_texts(left), legend_texts(right)) == (
        None,
        ["forward flops, batch 4", "backward flops, batch 4", "flops, batch 4"],
    )
    assert_laid_out(figure)


def test_params_and_flops_of_several_profiles_name_each_and_go_log_when_wide(closing: list[Figure]) -> None:
    empty = bare_profile([], 2)  # no rows: skipped, not the end
    rows = [Row(8, 1, "ok", trainable_params=100_000, flops=10**9), Row(8, 4, "ok", trainable_params=3_000_000)]
    wide = bare_profile([*rows, Row(8, 3, "ok", flops=50 * 10**9)], 4)
    figure = params_flops_figure([("empty", empty), ("wide", wide)])
    closing.append(figure)
    left, right = figure.axes
    assert [(line.get_label(), list(line.get_ydata())) for line in left.get_lines()] == [("wide", [0.1, 3.0])]
    assert lines(right) == [("wide: flops, batch 8", [1, 3], [1.0, 50.0])]
    assert [a.get_yscale() for a in figure.axes] == ["log", "log"]
    assert [a.get_xlim() for a in figure.axes] == [(0.5, 4.5)] * 2
    assert (legend_texts(left), legend_texts(right)) == (["wide"], ["wide: flops, batch 8"])


def breakdown_row(batch: int, z: int, mib: float, **fields: Any) -> Row:
    """A row whose every category holds `mib` MiB, but for the ones given (in MiB, None for none)."""
    memory = {category.row_field: int(mib * MIB) for category in MemoryCategory}
    memory.update({f"memory_{name}_bytes": None if v is None else int(v * MIB) for name, v in fields.items()})
    return Row(batch, z, "ok", tracked_peak_bytes=1, **memory)


def test_memory_breakdown_stacks_the_largest_batchs_categories(closing: list[Figure]) -> None:
    rows = [
        breakdown_row(4, 1, 9.0),
        breakdown_row(8, 2, 1.0, workspace=None),  # no workspace: a bar of 0
        breakdown_row(8, 1, 2.0, activations=3.0),
        Row(16, 1, "oom", tracked_peak_bytes=1),  # failed: not drawn, even at the largest batch
        Row(32, 1, "ok"),  # nothing tracked: not drawn
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = memory_breakdown_figure("tiny", bare_profile(rows, 2))
    assert figure is not None
    closing.append(figure)
    assert tuple(figure.get_size_inches()) == (6.5, 4.8)
    (axes,) = figure.axes
    assert axes.get_title() == "tiny: memory at the step's peak by category, batch 8"
    assert (axes.get_xlabel(), axes.get_ylabel()) == (XLABEL, "MiB")
    stacks = [(c.get_label(), [(b.get_x() + b.get_width() / 2, b.get_y(), b.get_height()) for b in c.patches])
              for c in axes.containers]  # fmt: skip
    assert stacks == [
        ("parameters", [(1, 0.0, 2.0), (2, 0.0, 1.0)]),
        ("gradients", [(1, 2.0, 2.0), (2, 1.0, 1.0)]),
        ("optimizer state", [(1, 4.0, 2.0), (2, 2.0, 1.0)]),
        ("optimizer temporaries", [(1, 6.0, 2.0), (2, 3.0, 1.0)]),
        ("activations", [(1, 8.0, 3.0), (2, 4.0, 1.0)]),
        ("inputs", [(1, 11.0, 2.0), (2, 5.0, 1.0)]),
        ("workspace", [(1, 13.0, 2.0), (2, 6.0, 0.0)]),
    ]
    assert {bar.get_width() for bar in axes.patches} == {0.75}
    assert isinstance(axes.xaxis.get_major_locator(), MaxNLocator)
    assert all(float(tick).is_integer() for tick in axes.xaxis.get_major_locator().tick_values(0.6, 2.4))
    assert legend_texts(axes) == [category.description for category in MemoryCategory]
    assert anchor(axes) == (1.01, 1.0)  # beside the bars
    assert grid_alpha(axes.get_ygridlines()) == (True, 0.3)
    assert not axes.get_xgridlines()[0].get_visible()
    assert_laid_out(figure)  # the legend beside the bars too


def test_memory_breakdown_widens_with_many_zs_and_is_none_without_tracked_rows(closing: list[Figure]) -> None:
    figure = memory_breakdown_figure("wide", bare_profile([breakdown_row(8, z, 1.0) for z in range(1, 9)], 8))
    assert figure is not None
    closing.append(figure)
    assert tuple(figure.get_size_inches()) == pytest.approx((0.45 * 8 + 3, 4.8))  # 6.6: past the least 6.5
    assert memory_breakdown_figure("none", bare_profile([ok(8, 1, 1.0, 1)], 1)) is None


# ---------------------------------------------------------------- correlate and simulate


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch, closing: list[Figure]) -> list[Figure]:
    """The figures pyplot.subplots makes (those a function saves and closes itself too)."""
    subplots = plt.subplots

    def recording(*args: Any, **kwargs: Any) -> Any:
        figure, axes = subplots(*args, **kwargs)
        closing.append(figure)
        return figure, axes

    monkeypatch.setattr(plt, "subplots", recording)
    return closing


def test_the_heatmap_shows_rho_per_z_and_budget_and_is_saved_and_closed(tmp_path: Path, drawn: list[Figure]) -> None:
    cells = [
        CellStatistics(1, 0.25, 3, -0.5, None, None, None, None, None, None),
        CellStatistics(1, 1.0, 3, 0.5, None, None, None, None, None, None),
        CellStatistics(3, 0.25, 3, None, None, None, None, None, None, None),
        CellStatistics(3, 1.0, 3, 0.7, None, None, None, None, None, None),
    ]
    configs: list[Any] = [{"lr": 0.1}, {"lr": 0.2}, {"lr": 0.3}]
    result = CorrelationResult("tasks:fit", configs, [1, 3], [0.25, 1.0], seeds=1, cells=cells)
    path = tmp_path / "rho.png"
    open_before = set(plt.get_fignums())
    assert correlation_heatmap_png(result, path) == path
    assert set(plt.get_fignums()) == open_before  # closed
    assert png_size(path) == (672, 408)  # (1.3·2 + 3) × (0.6·2 + 2.2) inches at 120 dpi
    (figure,) = drawn
    assert tuple(figure.get_size_inches()) == pytest.approx((5.6, 3.4))
    axes, colorbar = figure.axes
    (image,) = axes.get_images()
    assert image.get_clim() == (-1, 1) and image.get_cmap().name == "viridis"
    grid = image.get_array()
    assert grid.tolist() == [[-0.5, 0.5], [None, 0.7]]  # None: masked, not a number
    texts = [(t.get_position(), t.get_text(), t.get_color()) for t in axes.texts]
    assert texts == [
        ((0, 0), "-0.50", "white"),  # dark cells: white text
        ((1, 0), "0.50", "black"),
        ((0, 1), "n/a", "black"),
        ((1, 1), "0.70", "black"),
    ]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["0.25", "1"]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["1", "3"]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("training budget (fraction of full)", "trainable layers z")
    assert axes.get_title() == "Spearman's ρ against full fidelity\ntasks:fit, 3 configurations"
    assert axes.title.get_fontsize() == 10
    assert colorbar.get_ylabel() == "Spearman's ρ"
    assert_laid_out(figure)


def series(path: str, runs: str, cost: list[float], median: list[float], configs: list[int]) -> dict[str, Any]:
    """A curve whose band runs from half its median to twice it."""
    return {
        "path": path,
        "runs": runs,
        "cost": cost,
        "median": median,
        "low": [m / 2 for m in median],
        "high": [m * 2 for m in median],
        "configs": configs,
    }


CURVES = {
    "layers": series("layers", "scratch", [1.0, 10.0], [0.5, 0.25], [3, 9]),
    "budget": series("budget", "scratch", [2.0, 20.0], [0.4, 0.2], [3, 9]),
    "budget, continued": series("budget", "continued", [1.5], [0.3], [27]),
}


def test_regret_against_cost_draws_a_line_per_curve_with_its_band_labels_and_a_wrapped_title(
    closing: list[Figure],
) -> None:
    title = "x" * 84 + " abcd-efgh\n" + "y" * 85 + " abcde"  # a hyphen is no place to break; 90 characters a line
    figure = regret_cost_figure(CURVES, ["layers", "budget"], "cost (s)", title)
    closing.append(figure)
    assert tuple(figure.get_size_inches()) == (9.5, 5.0)
    (axes,) = figure.axes
    assert axes.get_title() == "x" * 84 + "\nabcd-efgh\n" + "y" * 85 + "\nabcde"
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("cost (s)", "regret: full-fidelity loss above the best")
    assert axes.get_xscale() == "log" and isinstance(axes.xaxis.get_major_formatter(), FuncFormatter)
    curves = [container.lines[0] for container in axes.containers]
    drawn = [(c.get_label(), list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata())) for c in axes.containers]
    assert drawn == [
        ("layers", [1.0, 10.0], [0.5, 0.25]),
        ("budget", [2.0, 20.0], [0.4, 0.2]),
        ("budget, continued", [1.5], [0.3]),
    ]
    assert [(line.get_color(), line.get_linestyle(), line.get_marker()) for line in curves] == [
        ("C0", "-", "o"),
        ("C1", "-", "o"),
        ("C1", "--", "s"),  # the path's colour, dashed
    ]
    bands = [[(low[1], high[1]) for low, high in c.lines[2][0].get_segments()] for c in axes.containers]
    assert bands == [[(0.25, 1.0), (0.125, 0.5)], [(0.2, 0.8), (0.1, 0.4)], [(0.15, 0.6)]]
    assert [(t.get_text(), t.xy) for t in axes.texts] == [
        ("3", (1.0, 0.5)),
        ("9", (10.0, 0.25)),
        ("3", (2.0, 0.4)),
        ("9", (20.0, 0.2)),
        ("27", (1.5, 0.3)),
    ]
    legend = axes.get_legend()
    assert legend.get_title().get_text() == "path"
    assert legend_texts(axes) == ["layers", "budget", "budget, continued"]
    assert anchor(axes) == (1.01, 1.0)  # beside the curves
    assert_laid_out(figure)


def stand_in_simulation(monkeypatch: pytest.MonkeyPatch, curves: dict[str, Any], priced: bool, **fields: Any) -> Any:
    """A simulation with only what the figure reads, its curves given (simulate's own tests check those)."""
    monkeypatch.setattr(simulate, "curve_series", lambda _: curves)
    monkeypatch.setattr(simulate, "priced_curves", lambda _: priced)
    monkeypatch.setattr(simulate, "repeats_text", lambda _: "5 repeats")
    paths = [SimpleNamespace(name="layers"), SimpleNamespace(name="budget")]
    settings = {"task": "/home/me/tasks.py:objective", "eta": 3.0, "device": "H100", "seconds_used": "total"}
    return SimpleNamespace(paths=paths, **{**settings, **fields})


def flat(title: str) -> str:
    return " ".join(title.split())


def test_the_simulation_figure_names_its_cost_and_says_which_runs_are_dashed(
    monkeypatch: pytest.MonkeyPatch, closing: list[Figure]
) -> None:
    figure = simulation_figure(stand_in_simulation(monkeypatch, CURVES, priced=True))
    closing.append(figure)
    (axes,) = figure.axes
    assert axes.get_xlabel() == "seconds on H100 (profile)"
    assert flat(axes.get_title()) == (
        "Successive halving on tasks.py:objective, eta=3: median regret and its 5-95% range over 5 repeats "
        "(numbers: starting configurations; dashed: continued runs)"
    )
    assert legend_texts(axes) == ["layers", "budget", "budget, continued"]
    scratch = {label: curve for label, curve in CURVES.items() if curve["runs"] == "scratch"}
    for used, recorded in (("training", "training seconds"), ("total", "seconds, set-up included")):
        simulation = stand_in_simulation(monkeypatch, scratch, priced=False, seconds_used=used, task="pkg.tasks:fit")
        figure = simulation_figure(simulation)
        closing.append(figure)
        (axes,) = figure.axes
        assert axes.get_xlabel() == f"{recorded} (the study's trials)"
        assert flat(axes.get_title()).endswith("on pkg.tasks:fit, eta=3: median regret and its 5-95% range over "
                                               "5 repeats (numbers: starting configurations)")  # fmt: skip


def test_the_simulation_png_is_at_120_dpi_and_closed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    open_before = set(plt.get_fignums())
    path = tmp_path / "sim.png"
    assert simulation_png(stand_in_simulation(monkeypatch, CURVES, priced=True), path) == path
    assert set(plt.get_fignums()) == open_before
    assert png_size(path) == (1140, 600)  # 9.5 × 5 inches


@pytest.mark.parametrize(
    ("task", "shown"),
    [
        ("/home/me/tasks.py:objective", "tasks.py:objective"),
        ("experiments/tasks.py:objective", "tasks.py:objective"),
        ("pkg.tasks:objective", "pkg.tasks:objective"),
        ("objective", "objective"),
    ],
)
def test_a_task_in_a_title_names_its_file_without_its_folder(task: str, shown: str) -> None:
    assert figures._task_name(task) == shown
