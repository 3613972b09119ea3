"""The files a study leaves: `correlate`'s result, cell table and heatmap, `simulate`'s result and figure. The
studies themselves (`fidelity.correlate`, `fidelity.simulate`) return plain data; writing it is this module's."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from layerprof.errors import LayerprofError

if TYPE_CHECKING:
    from layerprof.fidelity.correlate import CorrelationResult
    from layerprof.fidelity.simulate import Simulation


def write_correlation(result: CorrelationResult, directory: Path) -> list[Path]:
    """result.json, cells.csv and heatmap.png in the study's folder."""
    from layerprof.outputs.figures import correlation_heatmap_png

    json_path = directory / "result.json"
    json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    csv_path = directory / "cells.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(result.cells[0])))
        writer.writeheader()
        for cell in result.cells:
            writer.writerow(asdict(cell))
    return [json_path, csv_path, correlation_heatmap_png(result, directory / "heatmap.png")]


def write_simulation(simulation: Simulation, directory: Path) -> list[Path]:
    """simulation-eta{eta}.json and .png (one file pair per eta, so that several sit side by side)."""
    from layerprof.outputs.figures import simulation_png

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LayerprofError(f"cannot create {str(directory)!r}: {error.strerror or error}") from None
    stem = directory / f"simulation-eta{simulation.eta:g}"
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(simulation.to_dict(), indent=2) + "\n")
    return [json_path, simulation_png(simulation, stem.with_suffix(".png"))]
