"""errors.py part by part (issue 40's mutation survivors): the exit status each error class gives, and a JSON
file's errors naming what it should be."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerprof.errors import CellsFailed, DeviceFailure, LayerprofError, read_json


def test_a_bad_file_exits_2_a_sweep_that_measured_nothing_or_lost_its_gpu_1(tmp_path: Path) -> None:
    path = tmp_path / "fit.json"
    path.write_text("{not json")
    with pytest.raises(LayerprofError) as raised:
        read_json(path, "fit result", "the output of `fit --json`")
    assert str(raised.value).endswith("fit.json' is not JSON; expected the output of `fit --json`")
    assert (raised.value.exit_code, CellsFailed.exit_code, DeviceFailure.exit_code) == (2, 1, 1)


def test_a_json_file_says_what_it_should_hold_only_where_told(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text("[1,")
    with pytest.raises(LayerprofError, match=r"^'.*result\.json' is not JSON$"):
        read_json(path, "result")
    with pytest.raises(LayerprofError, match=r"^result '.*missing\.json' does not exist$"):
        read_json(tmp_path / "missing.json", "result")
