"""Tables are views of a Profile: a pandas frame per batch size, rendered for the terminal or as Markdown."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from rich.table import Table

from layerprof.layers import Layer, trainable_params
from layerprof.profile import Profile

MIB = 2**20

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


def cell_frame(profile: Profile, batch_size: int) -> pd.DataFrame:
    """One row per z at this batch size, with ratios to full training (z = n) where that cell succeeded."""
    rows = profile.rows_for(batch_size)
    full = profile.row(batch_size, profile.layer_count)
    full_time = full.step_time_ms if full is not None and full.ok else None
    full_memory = full.peak_memory_bytes if full is not None and full.ok else None
    records = []
    for row in rows:
        records.append(
            {
                "trainable_layers": row.trainable_layers,
                "trainable_pct": None if row.trainable_fraction is None else 100 * row.trainable_fraction,
                "step_time_ms": row.step_time_ms,
                "time_vs_full": _ratio(row.step_time_ms, full_time),
                "peak_memory_mib": None if row.peak_memory_bytes is None else row.peak_memory_bytes / MIB,
                "memory_vs_full": _ratio(row.peak_memory_bytes, full_memory),
                "gflops": None if row.flops is None else row.flops / 1e9,
                "status": row.status if row.ok else f"{row.status}: {row.message or ''}".strip(": "),
            }
        )
    return pd.DataFrame.from_records(records, columns=list(COLUMNS))


def _ratio(value: float | None, full: float | None) -> float | None:
    if value is None or not full:
        return None
    return value / full


def _format(column: str, value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if column == "trainable_layers":
        return str(int(value))  # type: ignore[arg-type]
    if column in ("time_vs_full", "memory_vs_full"):
        return f"{value:.2f}×"
    if column == "trainable_pct":
        return f"{value:.1f}"
    if column in ("step_time_ms", "peak_memory_mib", "gflops"):
        number = float(value)  # type: ignore[arg-type]
        return f"{number:,.1f}" if number < 1000 else f"{number:,.0f}"
    return str(value)


def formatted(frame: pd.DataFrame) -> list[list[str]]:
    return [
        [_format(column, value) for column, value in zip(frame.columns, record, strict=True)]
        for record in frame.itertuples(index=False)
    ]


def rich_cell_table(profile: Profile, batch_size: int) -> Table:
    frame = cell_frame(profile, batch_size)
    title = f"{profile.model['spec']} · batch {batch_size} · {profile.environment.get('device_name', '')}"
    table = Table(title=title, title_justify="left", header_style="bold")
    for column, header in COLUMNS.items():
        table.add_column(header, justify="left" if column == "status" else "right", overflow="fold")
    for values in formatted(frame):
        style = None if values[-1] == "ok" else "yellow"
        table.add_row(*values, style=style)
    return table


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    right = right or [True] * len(headers)
    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---:" if r else "---" for r in right) + " |",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_cell_table(profile: Profile, batch_size: int) -> str:
    frame = cell_frame(profile, batch_size)
    heading = f"**{profile.model['spec']}**, batch {batch_size}, {profile.environment.get('device_name', '')}"
    headers = [header.strip() for header in COLUMNS.values()]
    return heading + "\n\n" + markdown_table(headers, formatted(frame), [c != "status" for c in COLUMNS])


# ---------------------------------------------------------------- layers


def layer_frame(layers: Sequence[Layer]) -> pd.DataFrame:
    """The split, with the z at which each layer turns trainable and the trainable share at that z."""
    n = len(layers)
    total = trainable_params(layers, n) or 1
    records = []
    for layer in layers:
        z = n - layer.index
        records.append(
            {
                "index": layer.index,
                "name": layer.name,
                "type": layer.type,
                "params": layer.params,
                "trainable_from_z": z,
                "trainable_pct_at_z": 100 * trainable_params(layers, z) / total,
                "shared_with": ", ".join(layer.shared_with),
            }
        )
    return pd.DataFrame.from_records(records)


LAYER_HEADERS = ("#", "layer", "type", "params", "z ≥", "trainable %", "tied with")
LAYER_CAPTION = "z ≥: the layer trains once z reaches this · trainable %: share of all parameters trained at that z"


def layer_rows(frame: pd.DataFrame) -> list[list[str]]:
    return [
        [
            str(r.index),
            r.name,
            r.type,
            f"{r.params:,}",
            str(r.trainable_from_z),
            f"{r.trainable_pct_at_z:.1f}",
            r.shared_with or "",
        ]
        for r in frame.itertuples(index=False)
    ]


def rich_layer_table(title: str, layers: Sequence[Layer]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold", caption=LAYER_CAPTION)
    for header in LAYER_HEADERS:
        textual = header in ("layer", "type", "tied with")
        table.add_column(header, justify="left" if textual else "right", no_wrap=header == "layer", overflow="fold")
    for values in layer_rows(layer_frame(layers)):
        table.add_row(*values)
    return table


def markdown_layer_table(layers: Sequence[Layer]) -> str:
    right = [h not in ("layer", "type", "tied with") for h in LAYER_HEADERS]
    return markdown_table(LAYER_HEADERS, layer_rows(layer_frame(layers)), right) + f"\n\n{LAYER_CAPTION}"
