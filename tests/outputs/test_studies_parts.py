"""outputs/studies.py part by part (issue 40's mutation survivors): a correlate study's files, from a hand-made
result (the end-to-end study runs Ray and is left out of quick runs)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from layerprof.fidelity.correlate import CellStatistics, CorrelationResult
from layerprof.outputs.studies import write_correlation


def cell(z: int, fraction: float, rho: float | None) -> CellStatistics:
    return CellStatistics(z, fraction, 8, rho, None, None, None, None, None, 0.01)


def test_a_correlation_leaves_its_result_its_cells_table_and_heatmap(tmp_path: Path) -> None:
    cells = [cell(1, 0.5, 0.25), cell(2, 1.0, None)]
    result = CorrelationResult("tiny", [], [1, 2], [0.5, 1.0], 2, cells=cells)
    files = write_correlation(result, tmp_path)
    assert files == [tmp_path / "result.json", tmp_path / "cells.csv", tmp_path / "heatmap.png"]
    assert json.loads(files[0].read_text())["cells"][0]["spearman"] == 0.25
    with files[1].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [list(row) for row in rows] == [list(asdict(cells[0]))] * 2
    assert [(row["trainable_layers"], row["spearman"], row["regret"]) for row in rows] == [
        ("1", "0.25", "0.01"),
        ("2", "", "0.01"),
    ]
    assert files[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "one").mkdir()  # a study of one cell: its header from that cell
    one = CorrelationResult("tiny", [], [1], [1.0], 2, cells=[cell(1, 1.0, 1.0)])
    assert write_correlation(one, tmp_path / "one")[1].read_text().count("\n") == 2  # the header and the cell
