"""Tables are views of a Profile: a pandas frame per batch size, rendered for the terminal or as Markdown (the
terminal's cell table from the frame's records, so that a command that prints one never imports pandas)."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rich import box
from rich.console import Console
from rich.table import Table

from layerprof.devices import MIB
from layerprof.fidelity.ladder import Bracket, Ladder
from layerprof.profile import JsonDict, Layer, MemoryCategory, Profile, Row, ratio, total_params, trainable_params

if TYPE_CHECKING:
    import pandas as pd

    from layerprof.fidelity.correlate import CellStatistics, CorrelationResult
    from layerprof.fidelity.granularity import SplitReport
    from layerprof.fidelity.judging import NoiseFloor
    from layerprof.fidelity.plan import ClusterPlan, Schedule
    from layerprof.fidelity.simulate import ContinuedPath, Outcome, PathResult, RungResult, Simulation
    from layerprof.predict.audit import AuditReport
    from layerprof.predict.fit import FitReport
    from layerprof.predict.layercosts import LayerCost, LayerCostTable
    from layerprof.predict.timemodel import PredictionCheck, TimeModel

COLUMNS = {
    "trainable_layers": "z",
    "trainable_pct": "trainable %",
    "step_time_ms": "step ms",
    "time_vs_full": "× full",
    "peak_memory_mib": "peak MiB",
    "memory_vs_full": "× full ",
    "gflops": "GFLOPs",
    "status": "status",
}


def cell_columns(profile: Profile) -> dict[str, str]:
    """The cell table's headers: step times say when they are predicted."""
    return {**COLUMNS, "step_time_ms": "pred. step ms"} if profile.predicts_time else COLUMNS


def cell_frame(profile: Profile, batch_size: int) -> pd.DataFrame:
    """One row per z at this batch size, with ratios to full training (z = n) where that cell succeeded; step
    times measured, or predicted for an estimate with a time model."""
    import pandas as pd

    return pd.DataFrame.from_records(cell_records(profile, batch_size), columns=list(COLUMNS))


def cell_records(profile: Profile, batch_size: int) -> list[dict[str, object]]:
    """The cell frame's rows (`cell_frame`) as plain records, one per z, keyed by COLUMNS."""
    rows = profile.rows_for(batch_size)
    full = profile.row(batch_size, profile.layer_count)
    full_time = profile.step_time_ms(full) if full is not None and full.ok else None
    full_memory = full.peak_memory_bytes if full is not None and full.ok else None
    records: list[dict[str, object]] = []
    for row in rows:
        records.append(
            {
                "trainable_layers": row.trainable_layers,
                "trainable_pct": None if row.trainable_fraction is None else 100 * row.trainable_fraction,
                "step_time_ms": profile.step_time_ms(row),
                "time_vs_full": ratio(profile.step_time_ms(row), full_time),
                "peak_memory_mib": None if row.peak_memory_bytes is None else row.peak_memory_bytes / MIB,
                "memory_vs_full": ratio(row.peak_memory_bytes, full_memory),
                "gflops": None if row.flops is None else row.flops / 1e9,
                "status": _status(row),
            }
        )
    return records


def time_model_label(profile: Profile) -> str:
    """`times predicted for H200 (default constants)`: what stands behind an estimate's step times."""
    model = profile.time_model or {}
    peaks, constants = model.get("peaks", {}), model.get("constants", {})
    how = "calibrated" if str(constants.get("source", "")).startswith("calibrated") else "default constants"
    return f"times predicted for {peaks.get('name', '?')} ({how})"


def _status(row: Row) -> str:
    if not row.ok:
        return f"{row.status}: {row.message or ''}".strip(": ")
    return "disturbed" if row.disturbed else "ok"


def _format(column: str, value: float | str | None) -> str:  # a cell of the table's frame
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if column == "trainable_layers":
        return str(int(value))
    if column in ("time_vs_full", "memory_vs_full"):
        return f"{value:.2f}×"
    if column == "trainable_pct":
        return f"{value:.1f}"
    if column in ("step_time_ms", "peak_memory_mib", "gflops"):
        number = float(value)
        return f"{number:,.1f}" if number < 1000 else f"{number:,.0f}"
    return str(value)


def formatted(records: Sequence[dict[str, object]]) -> list[list[str]]:
    """The cell records' values as the tables show them (units, thousands separators, blanks for None)."""
    return [[_format(column, record[column]) for column in COLUMNS] for record in records]  # type: ignore[arg-type]


# How a table looks in a terminal: `lined` (Rich's box, a bold header, the title on the left), `compact` (a rule
# under the header, no padding at the edges: the ladder), `plain` (Rich's defaults, the title centred) or `narrow`
# (without --wide only the NARROW_COLUMNS, long headers stacked, no outer edge).
TableLook = Literal["lined", "compact", "plain", "narrow"]


@dataclass
class TableView:
    """One table as data (a title, headers and rows of text) and its two renderings: `.rich()` for a terminal,
    `.markdown()` for a report. Text columns (`left`) align left, figures right."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    left: Collection[str] = ()  # the headers whose columns align left
    caption: str | None = None  # under the terminal's table
    heading: str | None = None  # above the Markdown table (None: nothing)
    notes: str | None = None  # under the Markdown table (None: nothing)
    styles: Sequence[str | None] | None = None  # a Rich style per row
    look: TableLook = "lined"
    fold: bool = False  # a value too long for its column folds onto the next line (else Rich's ellipsis)
    no_wrap: Collection[str] = ()  # the headers whose columns never wrap
    fitted: bool = False  # every column at least as wide as its widest value and header word (the ladder)

    def rich(self, wide: bool = True) -> Table:
        """The table for a terminal (a `narrow` one without `wide`: only the NARROW_COLUMNS, headers stacked)."""
        narrow = self.look == "narrow" and not wide
        headers, rows = narrowed(self.headers, self.rows, not narrow)
        if self.look == "plain":
            table = Table(title=self.title, caption=self.caption)
        elif self.look == "narrow":
            table = narrow_table(self.title, wide)
        elif self.look == "compact":
            table = Table(
                title=self.title,
                title_justify="left",
                header_style="bold",
                caption=self.caption,
                box=box.SIMPLE_HEAVY,
                pad_edge=False,
                collapse_padding=True,
            )
        else:
            table = Table(title=self.title, title_justify="left", header_style="bold", caption=self.caption)
        for position, header in enumerate(headers):
            widest = max([len(values[position]) for values in rows] + [len(word) for word in header.split()])
            table.add_column(
                STACKED_HEADERS.get(header, header) if narrow else header,
                justify="left" if header in self.left else "right",
                no_wrap=header in self.no_wrap or narrow,
                overflow="fold" if self.fold else "ellipsis",
                min_width=widest if self.fitted else None,
            )
        for index, values in enumerate(rows):
            table.add_row(*values, style=self.styles[index] if self.styles is not None else None)
        return table

    def markdown(self) -> str:
        """The table as Markdown, with its heading above and its notes below where it has them."""
        headers = [header.strip() for header in self.headers]  # a trailing space keeps two terminal headers apart
        table = markdown_table(headers, self.rows, [header not in self.left for header in self.headers])
        return "\n\n".join(part for part in (self.heading, table, self.notes) if part is not None)


def cell_view(profile: Profile, batch_size: int) -> TableView:
    """The cells of one batch size."""
    title = f"{profile.model.spec} · batch {batch_size} · {profile.environment.device_name}"
    if profile.settings.recipe_text:  # beyond full training of the last z layers, eager: say which recipe
        title += f" · {profile.settings.recipe_text}"
    heading = f"**{profile.model.spec}**, batch {batch_size}, {profile.environment.device_name}"
    if profile.predicts_time:
        title += f" · {time_model_label(profile)}"
        heading += f", {time_model_label(profile)}"
    rows = formatted(cell_records(profile, batch_size))
    return TableView(
        title,
        list(cell_columns(profile).values()),
        rows,
        left=("status",),
        heading=heading,
        styles=[None if values[-1] == "ok" else "yellow" for values in rows],
        fold=True,
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """A Markdown table; `right` says which columns align right."""
    right = right or [True] * len(headers)
    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---:" if r else "---" for r in right) + " |",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- models


def print_model_names(console: Console, names: dict[str, list[str]], descriptions: dict[str, str]) -> None:
    """Each source with its names: described ones (the presets) one per line with their description, the others in
    columns."""
    from rich.columns import Columns

    for group, members in names.items():
        console.print(f"[bold]{group}[/] ({len(members)})")
        if any(name in descriptions for name in members):
            for name in members:
                console.print(f"  {name:26s} {descriptions.get(name, '')}", highlight=False)
        else:
            console.print(Columns(members, padding=(0, 2)), highlight=False)
        console.print()
    console.print("Also accepted: path/to/file.py:factory and package.module:factory (see docs/models.md).")


# ---------------------------------------------------------------- layers


def layer_frame(layers: Sequence[Layer]) -> pd.DataFrame:
    """The split, with the z at which each layer turns trainable and the trainable share at that z."""
    import pandas as pd

    n = len(layers)
    total = total_params(layers) or 1
    records = []
    for layer in layers:
        z = n - layer.index
        records.append(
            {
                "index": layer.index,
                "name": layer.name or "(the model itself)",
                "type": layer.type if layer.calls == 1 else f"{layer.type} (runs {layer.calls}x)",
                "params": layer.params,
                "frozen_params": layer.frozen_params,
                "trainable_from_z": z,
                "trainable_pct_at_z": 100 * trainable_params(layers, z) / total,
                "shared_with": ", ".join(layer.shared_with),
            }
        )
    return pd.DataFrame.from_records(records)


LAYER_HEADERS = ("#", "layer", "type", "params", "z ≥", "trainable %", "tied with")
LAYER_CAPTION = (
    "z ≥: the layer trains once z reaches this · trainable %: share of all parameters trained at that z · "
    "frozen: parameters the model's own code froze, never trained"
)


def layer_rows(frame: pd.DataFrame) -> list[list[str]]:
    """The split's rows as the tables show them."""
    return [
        [
            str(r.index),
            r.name,
            r.type,
            f"{r.params:,}" + (f" ({r.frozen_params:,} frozen)" if r.frozen_params else ""),
            str(r.trainable_from_z),
            f"{r.trainable_pct_at_z:.1f}",
            r.shared_with or "",
        ]
        for r in frame.itertuples(index=False)
    ]


def layer_view(title: str, layers: Sequence[Layer]) -> TableView:
    """The split (`title` above it in a terminal)."""
    rows = layer_rows(layer_frame(layers))
    return TableView(
        title,
        list(LAYER_HEADERS),
        rows,
        left=("layer", "type", "tied with"),
        caption=LAYER_CAPTION,
        notes=LAYER_CAPTION,
        fold=True,
        no_wrap=("layer",),
    )


# ---------------------------------------------------------------- ladder


def ladder_headers(ladder: Ladder) -> list[str]:
    """The ladder table's columns (memory and time columns only where the profile has them)."""
    headers = [
        "z",
        "train %",
        "pred. step ms" if ladder.times_predicted else "step ms",
        "peak MiB",
        "mem × full",
        "cost × full",
        "cost × prev",
        "budget",
    ]
    if ladder.gpu_memory_bytes is not None:
        headers += ["slots"]
        if any(rung.largest_batch_size is not None for rung in ladder.rungs):
            headers += ["max B"]
    if ladder.joint is not None:
        headers += ["steps"]
    if any(rung.spearman is not None for rung in ladder.rungs):
        headers += ["ρ"]
    if ladder.price is not None:
        headers += [f"$/trial ({ladder.gpu})"]
    return headers


def ladder_rows(ladder: Ladder) -> list[list[str]]:
    """One row per rung."""
    show_batch = any(rung.largest_batch_size is not None for rung in ladder.rungs)
    rows = []
    for rung in ladder.rungs:
        values = [
            str(rung.trainable_layers),
            f"{100 * rung.trainable_fraction:.1f}",
            _format("step_time_ms", rung.step_time_ms),
            _format("peak_memory_mib", None if rung.peak_memory_bytes is None else rung.peak_memory_bytes / MIB),
            _format("memory_vs_full", rung.memory_vs_full),
            _format("time_vs_full", rung.cost_vs_full),
            "—" if rung.cost_vs_previous is None else f"{rung.cost_vs_previous:.2f}×",
            str(rung.budget_index),
        ]
        if ladder.gpu_memory_bytes is not None:
            values.append("—" if rung.parallel_slots is None else str(rung.parallel_slots))
            if show_batch:
                values.append("—" if rung.largest_batch_size is None else str(rung.largest_batch_size))
        if ladder.joint is not None:
            values.append(str(rung.steps))
        if any(r.spearman is not None for r in ladder.rungs):
            values.append("—" if rung.spearman is None else f"{rung.spearman:.2f}")
        if ladder.price is not None:
            values.append(dollars(rung.usd_per_trial))
        rows.append(values)
    return rows


def ladder_summary_lines(ladder: Ladder) -> list[str]:
    """Plain sentences under the ladder table: the fit, disturbed rungs, the memory basis, brackets, the joint
    ladder."""
    lines = [ladder.fit_note]
    if ladder.price is not None:
        halving = ""
        if ladder.successive_halving_usd is not None:
            halving = (
                f"; successive halving from {ladder.configs} configurations: {dollars(ladder.successive_halving_usd)}"
            )
        lines.append(
            f"$/trial: one trial alone on a {ladder.gpu} for {ladder.priced_steps}, step times "
            f"{ladder.priced_time_source}, at {ladder.price}{halving}"
        )
    if ladder.times_predicted:
        lines.append(
            "step times are predicted by the time model (an estimate, see the profile's time_model), not measured: "
            "measure the chosen rungs (`layerprof profile`) before relying on the time ratios"
        )
    disturbed = [rung for rung in ladder.rungs if rung.disturbed]
    if disturbed:
        lines.append(
            "rungs z = "
            + ", ".join(str(rung.trainable_layers) for rung in disturbed)
            + " rest on cells other work disturbed while they were timed: re-measure them on a quiet machine "
            "before relying on this ladder"
        )
    if ladder.gpu_memory_bytes is not None:
        lines.append(
            f"slots: trials of a rung that fit at once in {ladder.gpu_memory_bytes / 2**30:.1f} GiB, each needing its "
            f"measured peak plus {ladder.context_reserve_bytes / MIB:.0f} MiB for the CUDA context "
            "(NVML's per-process figure where the profile has it)"
        )
    if ladder.successive_halving is not None:
        sh = ladder.successive_halving
        flow = " → ".join(str(c) for c in sh.configs_per_rung)
        zs = ", ".join(str(r.trainable_layers) for r in ladder.rungs)
        lines.append(
            f"successive halving, {ladder.configs} configs: {flow} at z = {zs}: "
            f"{sh.cost_full_equivalents:.2f} full-training equivalents"
        )
        if ladder.budget_successive_halving:
            budget = ladder.budget_successive_halving
            lines.append(
                "the same halving on training budget alone (z = n, budget ÷ η per rung down): "
                f"{budget['from_scratch_full_equivalents']:.2f} from scratch, "
                f"{budget['with_continuation_full_equivalents']:.2f} resuming checkpoints"
            )
    if ladder.hyperband:
        library = "as SMAC3 and NePS run them" if not ladder.hyperband_neps else "Li et al., as SMAC3 runs them"
        lines.append(
            f"hyperband brackets ({library}; configs per rung, full-training equivalents): "
            + _brackets_text(ladder, ladder.hyperband)
        )
    if ladder.hyperband_neps:
        lines.append("NePS's hyperband starts fewer: " + _brackets_text(ladder, ladder.hyperband_neps))
    if ladder.joint is not None:
        joint = ladder.joint
        lines.append(
            f"joint ladder over {joint['budget_steps']} steps (z and steps rise together): "
            f"{joint['joint_total_ms'] / 1000:.1f} s of training vs {joint['steps_only_total_ms'] / 1000:.1f} s "
            f"for halving on steps alone ({joint['saving']:.0%} saved); lowest-rung peak "
            f"{(joint['joint_lowest_peak_memory_bytes'] or 0) / MIB:.0f} MiB vs "
            f"{(joint['steps_only_peak_memory_bytes'] or 0) / MIB:.0f} MiB"
        )
    return lines


def _brackets_text(ladder: Ladder, brackets: list[Bracket]) -> str:
    return "; ".join(
        f"s={len(ladder.rungs) - 1 - b.first_rung}: {'→'.join(map(str, b.configs_per_rung))} "
        f"({b.cost_full_equivalents:.2f})"
        for b in brackets
    )


def ladder_view(ladder: Ladder) -> TableView:
    """The ladder: its rungs, the summary lines under the Markdown table."""
    title = (
        f"ladder · {ladder.model} · batch {ladder.batch_size} · η={ladder.eta:g} · cost={ladder.cost_kind} · "
        f"{ladder.device}" + (f" · {ladder.recipe}" if ladder.recipe else "")
    )
    caption = f"cost: {'median step time' if ladder.cost_kind == 'time' else 'FLOPs per step'} · "
    caption += "budget: the index an HPO library sees"
    if ladder.gpu_memory_bytes is not None:
        caption += " · slots: trials per GPU at once"
    heading = f"**Ladder** for {ladder.model}, batch {ladder.batch_size}, η={ladder.eta:g}, cost={ladder.cost_kind}"
    heading += f" · recipe: {ladder.recipe}" if ladder.recipe else ""
    notes = "\n".join(f"- {line}" for line in ladder_summary_lines(ladder))
    return TableView(
        title,
        ladder_headers(ladder),
        ladder_rows(ladder),
        caption=caption,
        heading=heading,
        notes=notes,
        look="compact",
        fitted=True,
    )


# ---------------------------------------------------------------- memory by category

# every category at the tracker's peak, the cell's peak (the allocator's on CUDA, or the estimate), and the
# activations' own peak during forward and backward
BREAKDOWN = (
    {category.row_field: category.label for category in MemoryCategory}
    | {"peak_memory_bytes": "peak"}
    | {"peak_activations_bytes": "act pk"}
)
BREAKDOWN_CAPTION = (
    "at the step's peak: optim = optimizer state, opt tmp = the optimizer step's temporaries, "
    "wkspace = cuBLAS/cuDNN workspaces · act pk: the activations' own peak in forward and backward"
)


def breakdown_unit(profile: Profile, batch_size: int) -> tuple[str, int]:
    """MiB, or GiB where a peak reaches 10 GiB, so that the table fits a terminal."""
    peaks = [row.peak_memory_bytes or 0 for row in profile.rows_for(batch_size) if row.ok]
    return ("GiB", 2**30) if peaks and max(peaks) >= 10 * 2**30 else ("MiB", MIB)


def breakdown_rows(profile: Profile, batch_size: int) -> list[list[str]]:
    """An estimate's memory by category, one row per z."""
    unit, scale = breakdown_unit(profile, batch_size)
    digits = 2 if unit == "GiB" else 1
    rows = []
    for row in profile.rows_for(batch_size):
        if not row.ok or row.tracked_peak_bytes is None:
            continue
        values = [f"{(getattr(row, field) or 0) / scale:,.{digits}f}" for field in BREAKDOWN]
        rows.append([str(row.trainable_layers), *values])
    return rows


def breakdown_view(profile: Profile, batch_size: int) -> TableView:
    """An estimate's memory by category at one batch size."""
    unit = breakdown_unit(profile, batch_size)[0]
    headers = ["z", *BREAKDOWN.values()]
    return TableView(
        f"memory by category, {unit} · batch {batch_size}",
        headers,
        breakdown_rows(profile, batch_size),
        caption=BREAKDOWN_CAPTION,
        heading=f"Memory by category ({unit}), batch {batch_size}",
        notes=BREAKDOWN_CAPTION,
        look="compact",
        no_wrap=headers,
    )


# ---------------------------------------------------------------- fit


def fit_headers(fit: FitReport) -> list[str]:
    """`fit`'s columns."""
    extra = [f"smallest GPU for batch {fit.batch_size}"] if fit.batch_size else []
    if fit.batch_size and any(result.cheapest_price for result in fit.results):
        extra.append(f"cheapest GPU for batch {fit.batch_size}")
    return ["z", "largest batch", "need GiB", "pred. step ms", *extra]


def fit_rows(fit: FitReport) -> list[list[str]]:
    """`fit`'s rows, one per z."""
    rows = []
    for result in fit.results:
        values = [
            f"{result.trainable_layers}{'*' if result.composed else ''}",
            f"≥{result.largest_batch_size:,}" if result.at_search_limit else str(result.largest_batch_size),
            f"{(result.need_at_largest_bytes or 0) / 2**30:.2f}",
            _format("step_time_ms", result.predicted_step_time_ms),
        ]
        if fit.batch_size:
            values.append(result.smallest_gpu or "none listed")
            if any(other.cheapest_price for other in fit.results):
                values.append(
                    f"{result.cheapest_gpu} at {result.cheapest_price}" if result.cheapest_gpu else "none priced"
                )
        rows.append(values)
    return rows


def fit_view(fit: FitReport) -> TableView:
    """`fit`'s answer."""
    title = f"{fit.model}: largest batch in {fit.memory_bytes / 2**30:.1f} GiB ({fit.target})"
    caption = f"pred. step ms: {fit.time_model}, at the largest batch" if fit.time_model else None
    if fit.smallest_batch_size > 1:
        caption = (caption + "; " if caption else "") + "a batch of 1 cannot train this model (BatchNorm): from 2"
    if any(result.at_search_limit for result in fit.results):
        limit = max(result.largest_batch_size for result in fit.results)
        caption = (caption + "; " if caption else "") + f"≥: the search stops at {limit:,}, a larger batch may fit too"
    if any(result.composed for result in fit.results):
        composed = "z*: composed from its run's anchors (exact; no step of its own traced, so no predicted time)"
        caption = (caption + "; " if caption else "") + composed
    return TableView(title, fit_headers(fit), fit_rows(fit), caption=caption)


# ---------------------------------------------------------------- audit


def _bytes(value: float) -> str:
    """Bytes in the unit that leaves 1 to 1023 (B, KiB, MiB, GiB)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


AUDIT_HEADERS = ("finding", "where", "peak memory", "FLOPs", "step ms", "fails")


def audit_rows(report: AuditReport) -> list[list[str]]:
    """One row per finding: its kind, where, what it costs (the step as written less the step with it fixed)."""
    return [
        [
            finding.kind,
            ", ".join(finding.where[:3]) + (f" (+{len(finding.where) - 3})" if len(finding.where) > 3 else ""),
            _bytes(finding.cost_bytes),
            _flops(finding.cost_flops),
            f"{finding.cost_ms:.2f}",
            "yes" if finding.fails else "no",
        ]
        for finding in report.findings
    ]


def audit_view(report: AuditReport) -> TableView:
    """`audit`'s findings."""
    caption = (
        "cost: the step as written less the same step with that one thing fixed (costs may overlap) · fails: beyond "
        f"--tolerance {report.tolerance:g} of the step's peak memory or FLOPs, or nothing trains as meant"
    )
    title = f"audit · {report.spec} · batch {report.batch_size} · {report.device}"
    return TableView(
        title, list(AUDIT_HEADERS), audit_rows(report), left=("finding", "where", "fails"), caption=caption
    )


def audit_summary(report: AuditReport) -> list[str]:
    """The bottom line: what the set-up as written saves against full training, of what layerprof's freezing of
    the same trained parameters would."""
    line = report.bottom_line
    lines = [
        f"trains {report.trained_params:,} of {report.total_params:,} parameters; layerprof's freezing of the same "
        f"parameters: z={line.trainable_layers} of {line.layer_count} layers"
    ]
    for metric, show in (("peak_bytes", _bytes), ("flops", _flops), ("step_time_ms", lambda v: f"{v:.2f} ms")):
        saved, could = line.saved(metric)
        name = {"peak_bytes": "peak memory", "flops": "FLOPs", "step_time_ms": "step time"}[metric]
        lines.append(
            f"{name}: you save {show(saved)} of the {show(could)} you could (full training "
            f"{show(getattr(line.full, metric))}, as written {show(getattr(line.as_written, metric))}, "
            f"layerprof {show(getattr(line.ideal, metric))})"
        )
    lines.append("step times were measured on this machine: other work running skews them")
    return lines


# ---------------------------------------------------------------- correlate


def correlation_cell_text(cell: CellStatistics | None, markup: bool = True) -> str:
    """One cell's rho with its interval (coloured by strength where `markup`)."""
    if cell is None or cell.spearman is None:
        return "n/a"
    interval = ""
    if cell.spearman_low is not None and cell.spearman_high is not None:
        interval = f" [{cell.spearman_low:.2f},{cell.spearman_high:.2f}]"
    if not markup:
        return f"{cell.spearman:.2f}{interval}"
    colour = "green" if cell.spearman >= 0.85 else "yellow" if cell.spearman >= 0.6 else "red"
    return f"[{colour}]{cell.spearman:.2f}[/]{interval}"


def correlation_view(result: CorrelationResult) -> TableView:
    """Spearman's rho per (z, budget), highest z on top as in the paper's Figure 5 (coloured: a terminal's)."""
    full = max(result.trainable_layer_counts)
    folds = result.seeds if result.judge_seeds == 0 else result.judge_seeds
    judge = judge_text(result.judge, folds, result.noise_floor)
    title = f"Spearman's rho vs full fidelity (z={full}, budget 1) · 95% bootstrap interval · {judge}"
    headers = ["z \\ budget", *(f"{fraction:g}" for fraction in result.budget_fractions)]
    rows = [
        [str(z), *(correlation_cell_text(result.cell(z, f)) for f in result.budget_fractions)]
        for z in reversed(result.trainable_layer_counts)
    ]
    return TableView(title, headers, rows, look="plain")


def continued_rows(result: CorrelationResult) -> list[list[str]]:
    """One row per rung of each continued chain: rho from scratch beside rho continued."""

    def rho(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    rows = []
    floor = rho(None if result.noise_floor is None else result.noise_floor.spearman)
    for chain in result.continued:
        label = " ".join(f"{z:g}@{f:.3g}" for z, f in chain.chain)
        for position, rung in enumerate(chain.rungs):
            rows.append(
                [
                    label if position == 0 else "",
                    f"{rung.trainable_layers}@{rung.budget_fraction:.3g}",
                    rho(rung.spearman_scratch),
                    rho(rung.spearman),
                    floor,
                    "-" if rung.regret is None else _short(rung.regret),
                    str(rung.configs),
                ]
            )
    return rows


CONTINUED_HEADERS = ["continued run", "rung", "ρ scratch", "ρ continued", "ρ floor", "regret continued", "configs"]


def continued_view(result: CorrelationResult) -> TableView:
    """The continued chains' rho per rung."""
    title = "Continued runs: Spearman's rho of each rung vs full fidelity (trained from scratch)"
    return TableView(title, CONTINUED_HEADERS, continued_rows(result), left=("continued run", "rung"), look="plain")


# ---------------------------------------------------------------- simulate

ALGORITHMS = {"successive_halving": "Successive halving", "hyperband": "Hyperband", "asha": "ASHA"}


def _short(value: float) -> str:
    """Three significant figures without exponent noise for losses and ratios."""
    if value == 0:
        return "0"
    return f"{value:.3g}" if abs(value) >= 1e-3 else f"{value:.1e}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _flops(value: float | None) -> str:
    """1.23 TFLOP: the prefix that leaves 1 to 999."""
    if value is None:
        return "-"
    prefixes = ["", "k", "M", "G", "T", "P", "E"]
    power = min(len(prefixes) - 1, max(0, int(math.log10(value) // 3))) if value > 0 else 0
    return f"{value / 1000**power:.3g} {prefixes[power]}FLOP"


def _memory_by_rung(values: list[int | None]) -> str:
    """`0.4 1.5 2.2 MiB`: one unit for the row, the largest value's."""
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    scale, unit = (2**30, "GiB") if max(known) >= 2**30 else (MIB, "MiB")
    return " ".join("-" if v is None else f"{v / scale:.3g}" for v in values) + f" {unit}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


SIMULATION_HEADERS = [
    "path",
    "runs",
    "rungs z@budget",
    "ρ per rung",
    "configs",
    "regret median [90%]",
    "MC interval of median",
    "MC intervals of [90%]",
    "regret mean [folds]",
    "best",
    "trial s",
    "× budget",
    "repeats",
]
PRICE_HEADERS = [
    "path",
    "runs",
    "device s",
    "× budget",
    "$",
    "FLOPs",
    "memory per trial by rung",
    "slots per rung",
    "wall s (slots)",
    "× budget ",
]
SLOT_COLUMNS = 3  # the last price columns need --gpu-memory (or a CUDA profile)
DOLLAR_COLUMN = PRICE_HEADERS.index("$")  # needs --gpu
# The columns a terminal shows without --wide: each row on one line of 100 columns (--wide and --json: all of them)
NARROW_COLUMNS = frozenset(
    {
        "path",
        "runs",
        "rungs z@budget",
        "regret median [90%]",
        "best",
        "trial s",
        "train s",
        "train+eval s",
        "× budget",
        "device s",
        "FLOPs",
        "wall s (slots)",
        "× budget ",
        "rung",
        "z",
        "steps",
        "trials",
        "GPU",
        "at once/GPU (fit)",
        "trial",
        "rung time",
        "GPU-h",
        "schedule",
        "algorithm",
        "makespan",
        "× ladder",
        "× ladder ",
        "deadline",
        "cheapest cluster",
        "$ held",
    }
)


# without --wide, long headers take two lines so that a column is as wide as its figures
STACKED_HEADERS = {
    "regret median [90%]": "regret median\n[90%]",
    "rungs z@budget": "rungs\nz@budget",
    "at once/GPU (fit)": "at once/GPU\n(fit)",
    "GPUs per rung": "GPUs per\nrung",
    "train+eval s": "train+eval\ns",
}


def narrow_table(title: str, wide: bool) -> Table:
    """A table for a terminal: without `wide`, no outer edge (two columns more for the figures)."""
    return Table(title=title, title_justify="left", header_style="bold", show_edge=wide)


def narrowed(headers: list[str], rows: list[list[str]], wide: bool) -> tuple[list[str], list[list[str]]]:
    """The table's columns a terminal shows: all with `wide`, else those in NARROW_COLUMNS."""
    if wide:
        return headers, rows
    kept = [index for index, header in enumerate(headers) if header in NARROW_COLUMNS]
    return [headers[i] for i in kept], [[row[i] for i in kept] for row in rows]


LEFT = ("path", "runs", "rungs z@budget")
SECONDS_HEADERS = {"training": "train+eval s", "total": "trial s"}  # which recorded seconds price the trials


def _brackets(outcome: Outcome) -> str:
    return " | ".join("·".join(map(str, b["configs_per_rung"])) for b in outcome.brackets)


def _outcomes(simulation: Simulation, algorithm: str) -> list[tuple[PathResult, str, list[RungResult], Outcome]]:
    """(path, runs, the rungs of those runs, outcome) for every path the algorithm ran on: from scratch, then
    continued where the study allows (Hyperband may fit neither)."""
    rows = []
    for path in simulation.paths:
        if getattr(path, algorithm) is not None:
            rows.append((path, "scratch", path.rungs, getattr(path, algorithm)))
        continued = path.continued
        if continued is not None and getattr(continued, algorithm) is not None:
            rows.append((path, continued.runs_label, continued.rungs, getattr(continued, algorithm)))
    return rows


def simulation_headers(simulation: Simulation) -> list[str]:
    """The simulation table's columns."""
    return [SECONDS_HEADERS.get(simulation.seconds_used, h) if h == "trial s" else h for h in SIMULATION_HEADERS]


LOPSIDED = 0.5  # an interval is shown as ±d while its shorter side is at least this share of its longer one
LOPSIDED_MARK = "~"  # a figure whose interval the narrow table leaves to --wide and --json


def interval_text(value: float, interval: tuple[float, float] | None, show: Callable[[float], str]) -> str:
    """A figure's 95% Monte-Carlo interval as a table prints it: `±0.033` (the larger side) where it is about
    symmetric, `[0, 0.0887]` where it is lopsided (a quantile on a jump of the distribution: not ±0.0887), and
    nothing where it would not change the digits shown."""
    if interval is None or show(interval[0]) == show(value) == show(interval[1]):
        return ""
    below, above = max(0.0, value - interval[0]), max(0.0, interval[1] - value)
    if min(below, above) >= LOPSIDED * max(below, above):
        return f"±{show(max(below, above))}"
    return f"[{show(interval[0])}, {show(interval[1])}]"


def with_uncertainty(
    value: float, interval: tuple[float, float] | None, show: Callable[[float], str], compact: bool = False
) -> str:
    """The figure and its interval (`interval_text`): `0.127±0.033`, `0.0887 [0, 0.0887]`, or with `compact` (a
    narrow terminal table) a lopsided one only marked, `0.0887~`."""
    text = interval_text(value, interval, show)
    if not text or text.startswith("±"):
        return f"{show(value)}{text}"
    return f"{show(value)}{LOPSIDED_MARK}" if compact else f"{show(value)} {text}"


REGRET_FIGURES = ("regret_median", "regret_low", "regret_high")


def _sampled(outcome: Outcome, name: str, show: Callable[[float], str], compact: bool) -> str:
    """One sampled figure of an outcome with its Monte-Carlo interval (`with_uncertainty`)."""
    return with_uncertainty(getattr(outcome, name), outcome.uncertainty.get(name), show, compact)


def regret_cells(outcome: Outcome, compact: bool = False) -> tuple[str, str, str]:
    """The regret's three columns: `0.0268 [0, 0.31]` (the median and the 5% and 95% quantiles over repeats, each
    figure marked ~ with `compact` where its Monte-Carlo interval would change its digits), the median's interval
    (`±0.0148`, `[0, 0.0389]` or nothing) and the quantiles' (`95% [0.31, 1.17]`): never an interval inside the
    quantiles' brackets."""
    from layerprof.fidelity.simulate import REGRET_QUANTILES

    shown = {name: _short(getattr(outcome, name)) for name in REGRET_FIGURES}
    moving = {name: interval_text(getattr(outcome, name), outcome.uncertainty.get(name), _short) for name in shown}

    def figure(name: str) -> str:
        return shown[name] + (LOPSIDED_MARK if compact and moving[name] else "")

    ends = zip(REGRET_FIGURES[1:], REGRET_QUANTILES, strict=True)
    return (
        f"{figure('regret_median')} [{figure('regret_low')}, {figure('regret_high')}]",
        moving["regret_median"],
        " · ".join(f"{quantile:.0%} {moving[name]}" for name, quantile in ends if moving[name]),
    )


def _percent(value: float) -> str:
    return f"{value:.0%}"


def simulation_rows(simulation: Simulation, algorithm: str, compact: bool = False) -> list[list[str]]:
    """One row per path and way of running it: its rungs, their rho, the regret and recorded cost (vs budget),
    each sampled figure with its Monte-Carlo uncertainty where it shows (`compact`: for a narrow terminal, the
    regret figures whose interval shows and the lopsided intervals of the others only marked)."""
    rows = []
    for path, runs, rungs, outcome in _outcomes(simulation, algorithm):
        cells = " ".join(f"{r.trainable_layers}@{r.budget_fraction:.3g}" for r in rungs)
        rho = " ".join("n/a" if r.spearman is None else f"{r.spearman:.2f}" for r in rungs)
        if simulation.noise_floor is not None and simulation.noise_floor.spearman is not None:
            rho += f" | floor {simulation.noise_floor.spearman:.2f}"
        judged = span(outcome.regret_mean, outcome.regret_fold_low, outcome.regret_fold_high, _short)
        rows.append(
            [
                path.name,
                runs,
                cells,
                rho,
                _brackets(outcome),
                *regret_cells(outcome, compact),
                judged,
                _sampled(outcome, "best_found_share", _percent, compact),
                _sampled(outcome, "recorded_seconds", _seconds, compact),
                _times(outcome.recorded_seconds_vs_budget),
                f"{outcome.repeats:,}",
            ]
        )
    return rows


def price_rows(simulation: Simulation, algorithm: str) -> list[list[str]]:
    """One row per path and way of running it: what the algorithm's trials cost on the profiled GPU."""
    rows = []
    for path, runs, rungs, outcome in _outcomes(simulation, algorithm):
        slots = " ".join(
            "-" if r.price is None or r.price.parallel_slots is None else str(r.price.parallel_slots) for r in rungs
        )
        rows.append(
            [
                path.name,
                runs,
                _seconds(outcome.gpu_seconds),
                _times(outcome.gpu_seconds_vs_budget),
                dollars(outcome.usd),
                _flops(outcome.flops),
                _memory_by_rung([None if r.price is None else r.price.memory_need_bytes for r in rungs]),
                slots,
                _seconds(outcome.slot_wall_seconds),
                _times(outcome.slot_wall_vs_budget),
            ]
        )
    rows = [row if simulation.gpu else row[:DOLLAR_COLUMN] + row[DOLLAR_COLUMN + 1 :] for row in rows]
    return [row if simulation.gpu_memory_bytes else row[:-SLOT_COLUMNS] for row in rows]


def simulation_title(simulation: Simulation, algorithm: str, priced: bool = False) -> str:
    """The title of one algorithm's simulation table."""
    seeds = f"{simulation.seeds} seeds" if simulation.seeds > 1 else "1 seed"
    start = f", {simulation.starting_configs} starting configurations" if algorithm == "successive_halving" else ""
    if priced:
        on = (
            f"; $ on {simulation.gpu} at {simulation.price}, times {simulation.priced_time_source}"
            if simulation.gpu
            else ""
        )
        return (
            f"{ALGORITHMS[algorithm]}, eta={simulation.eta:g}: cost on {simulation.device} ({simulation.profile}){on}"
        )
    return (
        f"{ALGORITHMS[algorithm]} on {simulation.task} ({simulation.configs} configurations, {seeds}), "
        f"eta={simulation.eta:g}{start}, "
        + (f"{simulation.repeats:,} repeats" if simulation.repeats else "repeats until stable")
        + f" · {judge_text(simulation.judge, simulation.judge_folds, simulation.noise_floor)}"
    )


def judge_text(judge: str, folds: int, floor: NoiseFloor | None) -> str:
    """`held-out judge (3 rotations) · noise floor ρ 0.80 [0.75, 0.85], regret 0.03 [0, 0.05]`, or
    `same-seed judge`: who judged the verdicts, and what full training scores judged the same way."""
    if judge == "same-seed":
        return "same-seed judge"
    text = f"held-out judge ({folds} rotation{'s' if folds != 1 else ''})"
    if floor is not None:
        rho = span(floor.spearman, floor.spearman_low, floor.spearman_high, lambda v: f"{v:.2f}")
        text += f" · noise floor ρ {rho}, regret {span(floor.regret, floor.regret_low, floor.regret_high, _short)}"
    return text


def span(mean: float | None, low: float | None, high: float | None, show: Callable[[float], str]) -> str:
    """`0.80 [0.75, 0.85]`: a value and its range (over folds), the range left out where it shows as the value."""
    if mean is None:
        return "n/a"
    if low is None or high is None or show(low) == show(high) == show(mean):
        return show(mean)
    return f"{show(mean)} [{show(low)}, {show(high)}]"


WALL_HEADERS = [
    "path",
    "runs",
    "halving wall s",
    "Hyperband wall s",
    "ASHA wall s",
    "ASHA × halving",
    "ASHA trials per rung",
]


def wall_rows(simulation: Simulation) -> list[list[str]]:
    """One row per path and way of running it: the recorded seconds until the pick on the simulation's workers,
    synchronous (halving, Hyperband) against asynchronous (ASHA)."""
    rows = []
    ways: list[tuple[PathResult, str, PathResult | ContinuedPath]] = [(p, "scratch", p) for p in simulation.paths]
    ways += [(path, path.continued.runs_label, path.continued) for path in simulation.paths if path.continued]
    for path, runs, way in ways:
        asha = way.asha
        if asha is None:
            continue
        halving = way.successive_halving.wall_seconds
        hyperband = way.hyperband.wall_seconds if way.hyperband else None
        ratio = None if not halving or asha.wall_seconds is None else asha.wall_seconds / halving
        trials = "·".join(f"{count:g}" for count in asha.trials_per_rung or [])
        rows.append(
            [
                path.name,
                runs,
                _seconds(halving),
                _seconds(hyperband),
                _seconds(asha.wall_seconds),
                _times(ratio),
                trials,
            ]
        )
    return rows


def _simulation_parts(simulation: Simulation, compact: bool) -> list[tuple[str, list[str], list[list[str]]]]:
    parts = []
    for algorithm in ALGORITHMS:
        rows = simulation_rows(simulation, algorithm, compact)
        if not rows:
            continue
        parts.append((simulation_title(simulation, algorithm), simulation_headers(simulation), rows))
        if simulation.profile is not None:
            parts.append(
                (
                    simulation_title(simulation, algorithm, True),
                    [
                        h
                        for h in PRICE_HEADERS[: None if simulation.gpu_memory_bytes else -SLOT_COLUMNS]
                        if h != "$" or simulation.gpu
                    ],
                    price_rows(simulation, algorithm),
                )
            )
    if rows := wall_rows(simulation):
        title = (
            f"Wall time on {simulation.workers} workers (recorded seconds): synchronous rungs against ASHA "
            f"(promotion on arrival, {simulation.promotion_rule}'s rule)"
        )
        parts.append((title, WALL_HEADERS, rows))
    return parts


def simulation_views(simulation: Simulation, wide: bool = True) -> list[TableView]:
    """A simulation's tables, one per algorithm (and its prices), then the wall times; without `wide` (a narrow
    terminal) a lopsided Monte-Carlo interval is only marked (`LOPSIDED_MARK`), to fit 100 columns."""
    return [
        TableView(title, headers, rows, left=LEFT, heading=f"**{title}**", look="narrow")
        for title, headers, rows in _simulation_parts(simulation, compact=not wide)
    ]


def simulation_legend(simulation: Simulation) -> str:
    """What the simulation tables' columns mean."""
    full = simulation.full_fidelity
    text = (
        f"regret: full-fidelity loss (z={full['trainable_layers']:g}, budget {full['budget_fraction']:g}) of the "
        f"pick minus the best ({simulation.best_full_loss:.4g}; a pick that failed in full training counts as the "
        "worst configuration); regret median [90%]: the median over repeats and the 5% and 95% quantiles; MC "
        "interval of median, MC intervals of [90%]: their 95% Monte-Carlo intervals where they would change the "
        f"digits shown (without --wide such a figure is marked {LOPSIDED_MARK}) · best: share of repeats that "
        "found the best · ±d or [lo, hi] after a figure: its 95% Monte-Carlo interval where it would change the "
        f"digits shown, [lo, hi] where it is lopsided ({LOPSIDED_MARK} without --wide) · repeats: repeats sampled · "
        "configs: per rung (Hyperband: per bracket) · "
        "runs: scratch, every trial trains anew at its rung; continued, a promoted trial trains on from its previous "
        "rung (the study's continued runs); assumed, continued as it trained from scratch (same losses, seconds cut "
        "to the steps it adds) · "
        + (
            "train+eval s: the study's recorded seconds of training, one evaluation per trial per rung and a "
            "continued run's checkpoint save and restore (set-up left out)"
            if simulation.seconds_used == "training"
            else "trial s: the study's recorded seconds of whole trials (set-up included: the study did not record "
            "it apart)"
        )
        + " · × budget: cost relative to the budget path run the same way · "
        + (
            "same-seed judge: the pick and ρ are judged by full training of the seeds the replay draws from (the "
            "full rung scores ρ 1 by construction)"
            if simulation.judge == "same-seed"
            else "held-out judge: the pick and ρ are judged by full training of a seed the replay does not draw "
            "from, rotated over the seeds; regret mean [folds]: the mean and the lowest and highest rotation's; "
            "noise floor: full training judged the same way (ρ of its losses; regret of picking the best drawn "
            "configuration by full training alone)"
        )
    )
    if simulation.profile is not None:
        text += (
            f" · device s, FLOPs, memory: the profile of {simulation.profile} on {simulation.device} at batch "
            f"{simulation.batch_size}, {simulation.full_steps} steps at budget 1; memory per trial: its peak (on "
            "CUDA the allocator's reservation plus the context)"
        )
        if simulation.gpu_memory_bytes:
            text += (
                f" · slots: trials of a rung side by side in {simulation.gpu_memory_bytes / 2**30:g} GiB · wall s "
                "(slots): the rungs' trials in waves of that many, assuming they do not slow each other"
            )
    return text


# ---------------------------------------------------------------- plan


def duration(seconds: float) -> str:
    """12 s, 4.5 min, 3.2 h, 2.1 d."""
    for limit, scale, unit in ((120, 1, "s"), (7200, 60, "min"), (172800, 3600, "h")):
        if seconds < limit:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 86400:.3g} d"


PLAN_RUNG_HEADERS = [
    "rung",
    "z",
    "steps",
    "trials",
    "GPU",
    "GPUs",
    "trials here",
    "at once/GPU (fit)",
    "waves",
    "trial",
    "rung time",
    "GPU-h",
    "GiB/trial",
    "step time from",
]


def dollars(amount: float | None) -> str:
    """`$12.34`, `$0.0042` (three figures below a dollar), `—` where there is no price."""
    if amount is None:
        return "—"
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.3g}"


def plan_rung_rows(schedule: Schedule) -> list[list[str]]:
    """Every rung of every bracket, a line per GPU kind it runs on: where, how many at once, for how long, and
    (priced) what its busy time costs."""
    rows = []
    for number, bracket in enumerate(schedule.brackets):
        for placement in bracket:
            label = str(placement.rung + 1) if len(schedule.brackets) == 1 else f"{number + 1}.{placement.rung + 1}"
            for position, share in enumerate(placement.shares):
                rung_columns = [label, str(placement.trainable_layers), str(placement.steps), str(placement.configs)]
                totals = [duration(placement.makespan_seconds), f"{placement.gpu_hours:.3g}"]
                if position:
                    rung_columns, totals = [""] * 4, ["", ""]
                rows.append(
                    [
                        *rung_columns,
                        share.gpu,
                        str(share.gpus),
                        str(share.trials),
                        f"{share.trials_per_gpu} ({share.slots_per_gpu})",
                        str(share.waves),
                        duration(share.trial_seconds),
                        *totals,
                        f"{share.memory_need_bytes / 2**30:.2f}",
                        share.time_source,
                        *([dollars(share.usd)] if schedule.usd is not None else []),
                    ]
                )
    return rows


PLAN_SUMMARY_HEADERS = ["schedule", "algorithm", "GPUs per rung", "makespan", "× ladder", "GPU-h", "× ladder "]


def plan_summary_rows(plan: ClusterPlan) -> list[list[str]]:
    """One row per schedule: makespan and GPU-hours against the ladder's."""
    rows = []
    for schedule in plan.schedules:
        where = " → ".join("+".join(f"{s.gpus}×{s.gpu}" for s in p.shares) for p in schedule.brackets[0])
        if len(schedule.brackets) > 1:
            where += f" (+{len(schedule.brackets) - 1} brackets)"
        name = f"{schedule.name} ({schedule.gpus})" if schedule.gpus else schedule.name
        rows.append(
            [
                name,
                schedule.algorithm,
                where,
                duration(schedule.makespan_seconds),
                _times(schedule.makespan_vs_ladder),
                f"{schedule.gpu_hours:.3g}",
                _times(schedule.gpu_hours_vs_ladder),
                *([dollars(schedule.usd), dollars(schedule.usd_held)] if plan.prices else []),
            ]
        )
    return rows


PLAN_DEADLINE_HEADERS = ["algorithm", "deadline", "cheapest cluster", "makespan", "$ held", "$ busy", "GPU-h", "tried"]


def plan_deadline_rows(plan: ClusterPlan) -> list[list[str]]:
    """`plan --deadline`'s answers, one per algorithm: the cheapest composition that meets it, or (empty cluster)
    why none does."""
    rows = []
    for answer in plan.deadlines:
        algorithm = "ASHA" if answer.algorithm == "asha" else answer.algorithm
        if not answer.met:
            rows.append(
                [
                    algorithm,
                    duration(answer.deadline_seconds),
                    "none meets it",
                    "",
                    "",
                    "",
                    "",
                    str(answer.compositions_tried),
                ]
            )
            continue
        gpus = ", ".join(f"{item['count']}×{item['gpu']}" for item in answer.gpus)
        rows.append(
            [
                algorithm,
                duration(answer.deadline_seconds),
                gpus,
                duration(answer.makespan_seconds or 0.0),
                dollars(answer.usd_held),
                dollars(answer.usd),
                f"{answer.gpu_hours or 0.0:.3g}",
                str(answer.compositions_tried),
            ]
        )
    return rows


def plan_price_lines(plan: ClusterPlan) -> list[str]:
    """Where every dollar figure of a plan comes from, a line per GPU kind; and the deadline's reason."""
    lines = [f"price of {gpu}: {label}" for gpu, label in plan.prices.items()]
    if plan.prices:
        lines.append(
            "$ busy: each GPU's busy time at its price; $ held: every GPU the schedule may use, rented for its makespan"
        )
    lines += [answer.reason for answer in plan.deadlines if answer.reason]
    return lines


def _plan_title(plan: ClusterPlan) -> str:
    inventory = ", ".join(f"{item['count']}×{item['gpu']}" for item in plan.inventory)
    return (
        f"{plan.model}, batch {plan.batch_size} on {inventory}: eta={plan.eta:g}, {plan.configs} configurations, "
        f"{plan.budget_steps} steps at full budget" + (f" · recipe: {plan.recipe}" if plan.recipe else "")
    )


def plan_tables(plan: ClusterPlan) -> list[tuple[str, list[str], list[list[str]]]]:
    """A plan's tables (title, headers, rows), for either format."""
    ladder = plan.schedule("ladder", "successive halving")
    priced = bool(plan.prices)
    tables = [
        (
            f"Successive halving over the ladder · {_plan_title(plan)}",
            PLAN_RUNG_HEADERS + ["$"] * priced,
            plan_rung_rows(ladder),
        ),
        (
            "Against every rung on the best single kind of GPU and halving on training steps alone",
            PLAN_SUMMARY_HEADERS + ["$ busy", "$ held"] * priced,
            plan_summary_rows(plan),
        ),
    ]
    if plan.deadlines:
        tables.append(
            (
                "The cheapest cluster that meets the deadline, per algorithm over the ladder",
                PLAN_DEADLINE_HEADERS,
                plan_deadline_rows(plan),
            )
        )
    return tables


PLAN_LEFT_COLUMNS = ("GPU", "schedule", "algorithm", "GPUs per rung", "step time from", "cheapest cluster")


def plan_views(plan: ClusterPlan) -> list[TableView]:
    """A plan's tables: the ladder's schedule, against the alternatives, the cheapest cluster for a deadline."""
    return [
        TableView(title, headers, rows, left=PLAN_LEFT_COLUMNS, heading=f"**{title}**", look="narrow")
        for title, headers, rows in plan_tables(plan)
    ]


def markdown_views(views: Sequence[TableView]) -> str:
    """Several tables as one Markdown text, a blank line between them."""
    return "\n\n".join(view.markdown() for view in views)


# ---------------------------------------------------------------- check

# ---------------------------------------------------------------- the time model


def calibration_lines(time_model: TimeModel | None) -> list[str]:
    """What stands behind predicted step times: the peaks, the constants, and a calibration's residuals."""
    if time_model is None:
        return []
    peaks, constants = time_model.peaks, time_model.constants
    lines = [
        f"step times predicted for {peaks.name}: roofline over every traced operation ({peaks.source}; "
        f"fp32 {peaks.fp32_tflops:g}, tf32 {peaks.tf32_tflops:g}, bf16 {peaks.bf16_tflops:g} TFLOP/s, "
        f"{peaks.memory_gbps:,.0f} GB/s), {constants.source}: efficiency gemm {constants.gemm_efficiency:.2f}, "
        f"conv {constants.conv_efficiency:.2f}, attention {constants.attention_efficiency:.2f}, memory "
        f"{constants.memory_efficiency:.2f}; {constants.kernel_us:.1f} us per kernel; host "
        f"{constants.forward_dispatch_us:.1f} / {constants.backward_dispatch_us:.1f} / "
        f"{constants.optimizer_dispatch_us:.1f} us per forward / backward / optimizer operation"
    ]
    if time_model.residuals:
        errors = sorted(abs(r["error"]) for r in time_model.residuals)
        median = errors[len(errors) // 2]
        worst = max(time_model.residuals, key=lambda r: abs(r["error"]))
        lines.append(
            f"calibration fit: {len(errors)} measured cells, median |error| {median:.1%}, worst {worst['error']:+.1%} "
            f"({worst['cell']}: {worst['predicted_ms']:.2f} ms predicted, {worst['measured_ms']:.2f} ms measured)"
        )
    elif not time_model.calibrated:
        lines.append(
            "default constants, not calibrated: expect errors of tens of per cent in step time; --calibrate with "
            "measured profiles of this device kind narrows them"
        )
    return lines


PREDICTION_HEADERS = [
    "batch",
    "z",
    "measured ms",
    "predicted ms",
    "error",
    "× full measured",
    "× full predicted",
    "ratio error",
]


def prediction_rows(checks: Sequence[PredictionCheck]) -> list[list[str]]:
    """Predicted beside measured step times, one row per cell."""

    def share(value: float | None) -> str:
        return "—" if value is None else f"{value:+.1%}"

    return [
        [
            str(c.batch_size),
            str(c.trainable_layers),
            f"{c.measured_ms:,.2f}",
            f"{c.predicted_ms:,.2f}",
            share(c.error),
            _format("time_vs_full", c.measured_vs_full),
            _format("time_vs_full", c.predicted_vs_full),
            share(c.ratio_error),
        ]
        for c in checks
    ]


def prediction_view(checks: Sequence[PredictionCheck], device: str) -> TableView:
    """Predicted beside measured step times."""
    errors = sorted(abs(c.error) for c in checks)
    title = f"predicted against measured on {device} · median |error| {errors[len(errors) // 2]:.1%}"
    return TableView(title, PREDICTION_HEADERS, prediction_rows(checks))


# ---------------------------------------------------------------- per-layer costs

LAYER_COST_HEADERS = [
    "#",
    "layer",
    "params",
    "adapter params",
    "trains +MiB",
    "optim B/param",
    "fwd GF",
    "bwd weight GF",
    "bwd inside GF",
    "bwd down GF",
    "recompute GF",
    "saves MiB",
    "output MiB",
]
LAYER_COST_CAPTION = (
    "one full-training step under the recipe · adapter params: LoRA's, which train instead of the layer's own · "
    "trains +: gradients and optimizer state its trainable parameters add when it trains · optim B/param: optimizer "
    "state bytes per trainable parameter · bwd weight: its parameters' gradients · bwd inside: activation gradients "
    "inside the layer · bwd down: the gradient it passes to the layer below (not when it is the lowest trainable "
    "layer) · recompute: its forward run again in backward (--checkpointing) · saves: what its forward keeps for "
    "backward when it trains"
)


def layer_cost_headers(table: LayerCostTable) -> list[str]:
    """The columns of `layers --costs`: adapter parameters only under LoRA, recompute FLOPs only with
    checkpointing."""
    left_out = set()
    if not any(cost.adapter_params for cost in table.layers):
        left_out.add("adapter params")
    if not table.checkpointing:
        left_out.add("recompute GF")
    return [header for header in LAYER_COST_HEADERS if header not in left_out]


def layer_cost_rows(table: LayerCostTable) -> list[list[str]]:
    """One row per layer of `layers --costs` (the columns of `layer_cost_headers`), then the total."""

    def gflops(value: int) -> str:
        return f"{value / 1e9:,.2f}"

    def mib(value: int) -> str:
        return f"{value / MIB:,.1f}"

    def per_param(state: int, params: int) -> str:
        return f"{state / params:,.2f}" if params else "—"

    def values(index: str, name: str, costs: list[LayerCost], output: str) -> dict[str, str]:
        def total(key: str) -> int:
            return sum(getattr(cost, key) for cost in costs)

        return {
            "#": index,
            "layer": name,
            "params": f"{total('params'):,}",
            "adapter params": f"{total('adapter_params'):,}",
            "trains +MiB": mib(total("trainable_bytes")),
            "optim B/param": per_param(total("optimizer_state_bytes"), total("trainable_params")),
            "fwd GF": gflops(total("forward_flops")),
            "bwd weight GF": gflops(total("backward_weight_flops")),
            "bwd inside GF": gflops(total("backward_internal_flops")),
            "bwd down GF": gflops(total("backward_input_flops")),
            "recompute GF": gflops(total("recompute_flops")),
            "saves MiB": mib(total("saved_activation_bytes")),
            "output MiB": output,
        }

    headers = layer_cost_headers(table)
    rows = []
    for cost in table.layers:
        row = values("—" if cost.index < 0 else str(cost.index), cost.name, [cost], mib(cost.output_bytes))
        rows.append([row[header] for header in headers])
    total = values("", "total", table.layers, "")
    rows.append([total[header] for header in headers])
    return rows


def layer_costs_view(table: LayerCostTable) -> TableView:
    """What each layer costs, the total in bold."""
    title = f"{table.model}: per-layer costs · batch {table.batch_size} · {table.precision} · {table.target}"
    title += f" · {table.recipe}" if table.recipe and table.recipe != "adamw" else ""
    rows = layer_cost_rows(table)
    styles = ["bold" if values[1] == "total" else None for values in rows]
    return TableView(
        title,
        layer_cost_headers(table),
        rows,
        left=("layer",),
        caption=LAYER_COST_CAPTION,
        notes=LAYER_COST_CAPTION,
        styles=styles,
        fold=True,
    )


# ---------------------------------------------------------------- split granularity

SPLIT_HEADERS = ["depth", "layers", "--unwrap", "rungs (z)", "FLOPs × full at each rung", "close to η", "distance"]


def split_rows(report: SplitReport) -> list[list[str]]:
    """One row per depth of `ladder --split auto`."""
    rows = []
    for choice in report.choices:
        full = choice.flops_by_z[choice.layer_count]
        shares = " → ".join(f"{choice.flops_by_z[z] / full:.2f}" for z in choice.rungs)
        rows.append(
            [
                f"{choice.depth}{' *' if choice.chosen else ''}",
                str(choice.layer_count),
                ",".join(choice.unwrap) or "—",
                ", ".join(map(str, choice.rungs)),
                shares,
                "yes" if choice.close_to_eta else "no",
                "—" if math.isinf(choice.distance_from_eta) else f"{choice.distance_from_eta:.2f}",
            ]
        )
    return rows


def split_view(report: SplitReport) -> TableView:
    """The splits at every depth."""
    title = f"splits at other depths · {report.model} · batch {report.batch_size} · η={report.eta:g} (* chosen)"
    caption = "rungs chosen on each split's FLOP staircase, composed from one per-layer trace"
    return TableView(
        title, SPLIT_HEADERS, split_rows(report), left=("--unwrap", "rungs (z)"), caption=caption, fold=True
    )


# ---------------------------------------------------------------- measured per-layer times

LAYER_TIME_HEADERS = ["#", "layer", "forward ms", "backward ms", "share of the marked step"]


def layer_time_rows(times: JsonDict) -> list[list[str]]:
    """One row per layer of `profile --per-layer`."""
    step = times["marked_step_ms"] or 1.0
    return [
        [
            str(t["index"]),
            t["name"],
            f"{t['forward_ms']:,.3f}",
            f"{t['backward_ms']:,.3f}",
            f"{(t['forward_ms'] + t['backward_ms']) / step:.1%}",
        ]
        for t in times["layers"]
    ]


def layer_times_view(times: JsonDict, model: str) -> TableView:
    """Each layer's forward and backward time."""
    title = f"{model}: time per layer in full training · batch {times['batch_size']} · {times['device']}"
    caption = (
        f"median of marked steps ({times['source']}), {times['marked_step_ms']:,.2f} ms each with the marks; the "
        "rest of the step is the loss, the optimizer and the marks themselves"
    )
    return TableView(title, LAYER_TIME_HEADERS, layer_time_rows(times), left=("layer",), caption=caption, fold=True)
