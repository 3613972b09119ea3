"""The time model an estimate predicts with: fitted to measured profiles, reused from an estimate, refused with one
line for bad calibration input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from layerprof.cli.commands import app
from tests.cli.test_cli import assert_one_line_error
from tests.predict.test_timemodel import TINY_LM, measured_like


def test_estimate_predicts_labels_and_checks_against_measurements(tmp_path: Path) -> None:
    runner = CliRunner()
    measured = measured_like(tmp_path, "measured", "NVIDIA H100 80GB HBM3", 1.5)
    out = tmp_path / "calibrated.json"
    result = runner.invoke(app, ["estimate", *TINY_LM, "--batch-sizes", "2", "--layers", "1,5,9", "--gpu", "H100",
                                 "--calibrate", str(measured), "--against", str(measured),
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "calibration fit: 3 measured cells" in text and "predicted against measured" in text
    assert "times predicted for H100 (calibrated)" in text and "pred. step" in text
    profile = json.loads(out.read_text())
    assert profile["time_model"]["constants"]["source"].startswith("calibrated on 3 cells of pythia-14m")
    for row in profile["rows"]:
        assert row["step_time_ms"] is None and row["predicted_step_time_ms"] > 0  # never shown as measured
    # the fitted model is reused from the estimate that holds it
    reused = runner.invoke(app, ["estimate", *TINY_LM, "--batch-sizes", "2", "--layers", "9", "--gpu", "H100",
                                 "--calibrate", str(out), "--out", str(tmp_path / "reused.json")])  # fmt: skip
    assert reused.exit_code == 0, reused.output
    again = json.loads((tmp_path / "reused.json").read_text())
    assert again["time_model"]["constants"] == profile["time_model"]["constants"]
    default = runner.invoke(app, ["estimate", *TINY_LM, "--batch-sizes", "2", "--layers", "9",
                                  "--out", str(tmp_path / "default.json")])  # fmt: skip
    assert "default constants, not calibrated" in " ".join(default.output.split())


def test_bad_calibration_input_is_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    on_a100 = measured_like(tmp_path, "a100", "NVIDIA A100-SXM4-80GB", 1.0)
    base = ["estimate", *TINY_LM, "--batch-sizes", "2", "--layers", "9", "--gpu", "H100", "--out",
            str(tmp_path / "x.json")]  # fmt: skip
    assert_one_line_error(runner.invoke(app, [*base, "--calibrate", str(on_a100)]), "not on H100", "--gpu NAME")
    data = json.loads(on_a100.read_text())
    data["environment"]["device_name"] = "NVIDIA H100 80GB HBM3"
    for row in data["rows"]:
        row["status"], row["step_time_ms"] = "oom", None
    failed = tmp_path / "failed.json"
    failed.write_text(json.dumps(data))
    assert_one_line_error(runner.invoke(app, [*base, "--calibrate", str(failed)]), "no cell", "ran")
    assert_one_line_error(runner.invoke(app, [*base, "--calibrate", str(tmp_path / "missing.json")]), "missing.json")
    plain = tmp_path / "plain.json"
    plain.write_text("[1, 2]")
    assert_one_line_error(runner.invoke(app, [*base, "--calibrate", str(plain)]), "not a layerprof profile")
