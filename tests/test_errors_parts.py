"""errors.py part by part (issue 40's mutation survivors): the exit status each error class gives, and a JSON
file's errors naming what it should be."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerprof.errors import CellsFailed, DeviceFailure, LayerprofError, read_json


def test_a_sweep_that_measured_nothing_or_lost_its_gpu_exits_1_bad_input_2() -> None:
    assert (LayerprofError.exit_code, CellsFailed.exit_code, DeviceFailure.exit_code) == (2, 1, 1)


def test_a_json_file_that_is_not_json_names_what_it_should_hold(tmp_path: Path) -> None:
    path = tmp_path / "fit.json"
    path.write_text("{not json")
    with pytest.raises(LayerprofError, match=r"^'.*fit\.json' is not JSON; expected the output of `fit --json`$"):
        read_json(path, "fit result", "the output of `fit --json`")
    with pytest.raises(LayerprofError, match=r"^fit result '.*missing\.json' does not exist$"):
        read_json(tmp_path / "missing.json", "fit result", "the output of `fit --json`")
