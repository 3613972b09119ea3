"""Every figure layerprof draws, with matplotlib: the report's (cost curves, parameters and FLOPs, memory by
category, from Profile data), `correlate`'s heatmap of rho and `simulate`'s regret against cost. Each report
function returns a Figure, so that what it shows can be checked from its own data."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import matplotlib

matplotlib.use("Agg")  # never open a window; this runs on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from layerprof.devices import MIB  # noqa: E402
from layerprof.errors import LayerprofError  # noqa: E402
from layerprof.profile import MemoryCategory, Profile  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from layerprof.fidelity.correlate import CorrelationResult
    from layerprof.fidelity.simulate import Simulation


def _series(profile: Profile, batch_size: int, attribute: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    points = [
        (row.trainable_layers, getattr(row, attribute) / scale)
        for row in profile.rows_for(batch_size)
        if row.ok and getattr(row, attribute) is not None
    ]
    return [z for z, _ in points], [value for _, value in points]


DISTURBED_LABEL = "disturbed while timed: re-measure"


class LineStyle(TypedDict, total=False):
    """How a figure draws a series' line and markers (matplotlib's keyword arguments)."""

    marker: str
    markersize: float
    markerfacecolor: str
    markeredgecolor: str
    linestyle: str


class ErrorbarStyle(TypedDict):
    """How a figure draws error bars."""

    capsize: float
    alpha: float


class LabelStyle(TypedDict):
    """How a figure labels a point."""

    fontsize: float
    alpha: float
    xytext: tuple[float, float]
    textcoords: str


DISTURBED_STYLE: LineStyle = {  # a red ring
    "marker": "o",
    "markersize": 9,
    "linestyle": "none",
    "markerfacecolor": "none",
    "markeredgecolor": "red",
}


def _disturbed_points(profile: Profile, batch_size: int, zs: list[int], values: list[float]) -> list[tuple[int, float]]:
    """The drawn points of cells other work disturbed while they were timed (step times only: memory is not
    disturbed by load)."""
    disturbed = {row.trainable_layers for row in profile.rows_for(batch_size) if row.ok and row.disturbed}
    return [(z, value) for z, value in zip(zs, values, strict=True) if z in disturbed]


def _label(name: str, batch_size: int, several: bool) -> str:
    return f"{name}, batch {batch_size}" if several else f"batch {batch_size}"


def _log_if_wide(axes: Axes, values: list[float]) -> None:
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:
        axes.set_yscale("log")


def _ladder_rungs(profile: Profile) -> list[int]:
    from layerprof.fidelity.ladder import build_ladder, default_cost

    try:
        return [rung.trainable_layers for rung in build_ladder(profile, cost_kind=default_cost(profile)).rungs]
    except LayerprofError:
        return []


def _finish(axes: Axes, title: str, ylabel: str, n: int) -> None:
    axes.set_title(title)
    axes.set_xlabel("trainable layers z (counted from the output)")
    axes.set_ylabel(ylabel)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlim(0.5, n + 0.5)
    axes.grid(True, alpha=0.3)


def _curves(
    profiles: list[tuple[str, Profile]], attribute: str, scale: float, relative: bool, axes: Axes, rungs: bool
) -> list[float]:
    several = len(profiles) > 1
    drawn: list[float] = []
    for name, profile in profiles:
        full_z = profile.layer_count
        for batch_size in profile.batch_sizes():
            zs, values = _series(profile, batch_size, attribute, scale)
            if not zs:
                continue
            if relative:
                full = dict(zip(zs, values, strict=True)).get(full_z)
                if not full:
                    continue
                values = [v / full for v in values]
            axes.plot(zs, values, marker="o", markersize=3, label=_label(name, batch_size, several))
            drawn.extend(values)
            ringed = _disturbed_points(profile, batch_size, zs, values) if attribute == "step_time_ms" else []
            if ringed:  # a red ring around each point other work disturbed, named once in the legend
                named = DISTURBED_LABEL not in axes.get_legend_handles_labels()[1]
                label = DISTURBED_LABEL if named else "_nolegend_"
                axes.plot([z for z, _ in ringed], [v for _, v in ringed], label=label, **DISTURBED_STYLE)
        if rungs:
            for z in _ladder_rungs(profile):
                axes.axvline(z, color="grey", linestyle=":", linewidth=1)
    return drawn


def has_step_times(profiles: list[tuple[str, Profile]]) -> bool:
    """Whether any profile holds step times (measured or predicted) to draw."""
    return any(row.step_time_ms for _, profile in profiles for row in profile.rows if row.ok)


def cost_curves_figure(profiles: list[tuple[str, Profile]]) -> plt.Figure:
    """Step time and peak memory against z, absolute (top) and relative to full training (bottom)."""
    n = max(profile.layer_count for _, profile in profiles)
    panels = [("step_time_ms", 1.0, "step time (ms)", "Step time")] if has_step_times(profiles) else []
    panels.append(("peak_memory_bytes", MIB, "peak memory (MiB)", "Peak memory"))
    figure, grid = plt.subplots(2, len(panels), figsize=(6.5 * len(panels), 8.5), squeeze=False)
    for column, (attribute, scale, unit, title) in enumerate(panels):
        values = _curves(profiles, attribute, scale, False, grid[0][column], rungs=True)
        _log_if_wide(grid[0][column], values)
        _finish(grid[0][column], f"{title} per training step", unit, n)
        _curves(profiles, attribute, scale, True, grid[1][column], rungs=True)
        grid[1][column].axhline(1.0, color="black", linewidth=0.8)
        _finish(grid[1][column], f"{title} relative to full training", "× full training (z = n)", n)
        for axes in (grid[0][column], grid[1][column]):
            if axes.get_legend_handles_labels()[0]:
                axes.legend(loc="best", fontsize="small")
    figure.suptitle("Cost of training only the last z layers (dotted: recommended ladder rungs, η = 3)")
    figure.tight_layout()
    return figure


def params_flops_figure(profiles: list[tuple[str, Profile]]) -> plt.Figure:
    """Trainable parameters (left) and forward / backward / total FLOPs (right) against z."""
    n = max(profile.layer_count for _, profile in profiles)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    several = len(profiles) > 1
    all_params: list[float] = []
    all_flops: list[float] = []
    for name, profile in profiles:
        batch_size = profile.batch_sizes()[0] if profile.batch_sizes() else None
        if batch_size is None:
            continue
        zs, params = _series(profile, batch_size, "trainable_params", 1e6)
        if zs:
            left.plot(zs, params, marker="o", markersize=3, label=name if several else None)
            all_params.extend(params)
        for attribute, style in (("forward_flops", "--"), ("backward_flops", ":"), ("flops", "-")):
            zs, flops = _series(profile, batch_size, attribute, 1e9)
            if zs:
                all_flops.extend(flops)
                label = f"{attribute.replace('_', ' ')}, batch {batch_size}"
                right.plot(
                    zs, flops, linestyle=style, marker="o", markersize=3, label=f"{name}: {label}" if several else label
                )
    _log_if_wide(left, all_params)
    _log_if_wide(right, all_flops)
    _finish(left, "Trainable parameters", "trainable parameters (millions)", n)
    _finish(right, "FLOPs per training step (matmul, conv, attention)", "GFLOPs", n)
    if several:
        left.legend(loc="upper left", fontsize="small")
    if right.get_legend_handles_labels()[0]:
        right.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    return figure


def memory_breakdown_figure(name: str, profile: Profile) -> plt.Figure | None:
    """Stacked bars of the tracker's categories at the peak, per z, at the profile's largest batch size."""
    rows = [row for row in profile.rows if row.ok and row.tracked_peak_bytes is not None]
    if not rows:
        return None
    batch_size = max(row.batch_size for row in rows)
    rows = sorted((r for r in rows if r.batch_size == batch_size), key=lambda r: r.trainable_layers)
    zs = [row.trainable_layers for row in rows]
    figure, axes = plt.subplots(figsize=(max(6.5, 0.45 * len(zs) + 3), 4.8))
    bottom = [0.0] * len(rows)
    for category in MemoryCategory:
        values = [(row.memory(category) or 0) / MIB for row in rows]
        axes.bar(zs, values, bottom=bottom, label=category.description, width=0.75)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes.set_title(f"{name}: memory at the step's peak by category, batch {batch_size}")
    axes.set_xlabel("trainable layers z (counted from the output)")
    axes.set_ylabel("MiB")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside the bars, never on them
    axes.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------- correlate and simulate


def correlation_heatmap_png(result: CorrelationResult, path: Path) -> Path:
    """Draw the cells' rho as a heatmap (z by budget fraction) and return the file written."""
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


FIGURE_SIZE = (9.5, 5.0)  # the plot plus the legend beside it
TITLE_CHARACTERS = 90  # a title line wraps here, so that none is clipped at the figure's width
ERRORBAR_STYLE: ErrorbarStyle = {"capsize": 3, "alpha": 0.85}
SCRATCH_STYLE: LineStyle = {"marker": "o", "linestyle": "-"}
CONTINUED_STYLE: LineStyle = {"marker": "s", "linestyle": "--"}  # continued or assumed runs: dashed
LABEL_STYLE: LabelStyle = {"fontsize": 7, "alpha": 0.7, "xytext": (3, 3), "textcoords": "offset points"}


def regret_cost_figure(
    series_by_label: dict[str, dict[str, Any]], path_names: list[str], x_label: str, title: str
) -> plt.Figure:
    """`simulate`'s figure: median regret (error bars: its 5-95% range) against cost, one line per path and
    kind of run (continued runs dashed), each point labelled with its starting configurations."""
    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    colours = {name: f"C{index % 10}" for index, name in enumerate(path_names)}
    for label, series in series_by_label.items():
        costs, medians = series["cost"], series["median"]
        below = [m - low for m, low in zip(medians, series["low"], strict=True)]
        above = [high - m for m, high in zip(medians, series["high"], strict=True)]
        style = SCRATCH_STYLE if series["runs"] == "scratch" else CONTINUED_STYLE
        axes.errorbar(
            costs, medians, yerr=[below, above], label=label, color=colours[series["path"]], **style, **ERRORBAR_STYLE
        )
        for cost, median, configs in zip(costs, medians, series["configs"], strict=True):
            axes.annotate(str(configs), (cost, median), **LABEL_STYLE)
    axes.set_xscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel("regret: full-fidelity loss above the best")
    wrapped = "\n".join(textwrap.fill(part, TITLE_CHARACTERS, break_on_hyphens=False) for part in title.split("\n"))
    axes.set_title(wrapped, fontsize="medium")
    axes.legend(title="path", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never on the curves
    _tidy(figure, axes)
    return figure


def simulation_png(simulation: Simulation, path: Path) -> Path:
    """The figure (`simulation_figure`) as a PNG."""
    figure = simulation_figure(simulation)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def simulation_figure(simulation: Simulation) -> Figure:
    """Median regret (90% band) against cost, one line per path: successive halving from more and more
    configurations. Cost is GPU seconds where a profile priced the trials, else their recorded seconds."""
    from layerprof.fidelity.simulate import curve_series, priced_curves, repeats_text

    priced = priced_curves(simulation)
    series_by_label = curve_series(simulation)
    recorded = "training seconds" if simulation.seconds_used == "training" else "seconds, set-up included"
    dashed = "; dashed: continued runs" if any(s["runs"] != "scratch" for s in series_by_label.values()) else ""
    return regret_cost_figure(
        series_by_label,
        [path.name for path in simulation.paths],
        x_label=f"seconds on {simulation.device} (profile)" if priced else f"{recorded} (the study's trials)",
        title=f"Successive halving on {_task_name(simulation.task)}, eta={simulation.eta:g}: median regret and its "
        f"5-95% range over {repeats_text(simulation)}\n(numbers: starting configurations{dashed})",
    )


def _task_name(task: str) -> str:
    """A task as a title names it: `tasks.py:objective` for a file's function (the full path is in the JSON)."""
    file, colon, function = task.rpartition(":")
    return f"{Path(file).name}:{function}" if colon and ("/" in file or "\\" in file) else task


def _tidy(figure: Figure, axes: Axes) -> None:  # pragma: no mutate - tick marks, grid and margins only
    axes.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.grid(True, alpha=0.3, which="both")
    figure.tight_layout()
