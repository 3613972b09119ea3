"""`plan`'s step times on GPU kinds nobody measured: predicted by the time model calibrated on the model's own
measured profile."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from layerprof.cli.commands import app
from tests.predict.test_timemodel import measured_like


def test_plan_predicts_the_kinds_nobody_measured(tmp_path: Path) -> None:
    runner = CliRunner()
    measured = measured_like(tmp_path, "h100", "NVIDIA H100 80GB HBM3", 1.0)
    result = runner.invoke(app, ["plan", str(measured), "--cluster", "1xH100,2xL4", "--configs", "9", "--json"])
    assert result.exit_code == 0, result.output
    sources = {
        source
        for schedule in json.loads(result.output)["schedules"]
        for bracket in schedule["brackets"]
        for placement in bracket
        for share in placement["shares"]
        for source in [share["time_source"]]
    }
    assert "measured on H100" in sources
    assert "predicted for L4 (calibrated on its H100 profile)" in sources
    assert not any(source.startswith("scaled") for source in sources)
