"""The Profile file format: round trip, schema check, clear errors for foreign files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerprof.errors import LayerprofError
from layerprof.profile import ROW_FIELDS, SCHEMA, Profile, Row, ensure_writable, load_profile, save_profile
from tests.conftest import bare_profile


def small_profile() -> Profile:
    rows = [
        Row(2, 1, "ok", trainable_params=10, step_time_ms=1.5, peak_memory_bytes=100, flops=7),
        Row(2, 2, "oom", message="OutOfMemoryError: CUDA out of memory"),
    ]
    return bare_profile(rows, 2, spec="m")


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    path = save_profile(small_profile(), tmp_path / "p.json")
    loaded = load_profile(path)
    assert loaded.to_dict() == small_profile().to_dict()
    assert loaded.schema == SCHEMA
    header = (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == ROW_FIELDS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.json"]  # no temporary files left


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    data = small_profile().to_dict()
    data["schema"] = "layerprof.profile/99"
    path = tmp_path / "future.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LayerprofError, match="schema 'layerprof.profile/99'"):
        load_profile(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [("not json at all", "is not JSON"), ('{"rows": []}', "not a layerprof profile"), ("[1, 2]", "not a layerprof")],
)
def test_foreign_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "foreign.json"
    path.write_text(content)
    with pytest.raises(LayerprofError, match=message):
        load_profile(path)


def test_missing_and_damaged_files(tmp_path: Path) -> None:
    with pytest.raises(LayerprofError, match="does not exist"):
        load_profile(tmp_path / "absent.json")
    data = small_profile().to_dict()
    del data["workload"]
    (tmp_path / "damaged.json").write_text(json.dumps(data))
    with pytest.raises(LayerprofError, match="damaged"):
        load_profile(tmp_path / "damaged.json")


def test_unwritable_output_is_caught_before_measuring(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LayerprofError, match="cannot write"):
        ensure_writable(blocker / "sub" / "p.json")
    with pytest.raises(LayerprofError, match="end in .json"):
        ensure_writable(tmp_path / "p.txt")
    with pytest.raises(LayerprofError, match="is a directory"):
        ensure_writable(tmp_path)


DATA = Path(__file__).parent / "data"


def test_schema_1_measured_profile_loads_and_upgrades(tmp_path: Path) -> None:
    from layerprof.outputs.check import compare
    from layerprof.profile import SCHEMA_V1

    original = json.loads((DATA / "profile-v1-measured.json").read_text())
    assert original["schema"] == SCHEMA_V1 and original["workload"]["dtype"] == "bfloat16"
    profile = load_profile(DATA / "profile-v1-measured.json")
    assert profile.settings.precision == "bf16-true" and profile.settings.optimizer == "adamw"
    assert profile.settings.mode == "measure" and profile.settings.trainable_layer_counts == (1, 5, 9)
    assert profile.settings.batch_sizes == (1, 2) and profile.settings.max_steps == 3
    assert profile.workload.seq_len == 16 and profile.workload.item_name == "tokens"
    assert [layer.name for layer in profile.model.layers][-1] == "lm_head" and profile.layer_count == 9
    assert profile.environment.device_kind == "cpu" and profile.environment.torch_version
    assert [row.key for row in profile.rows] == [(b, z) for b in (1, 2) for z in (1, 5, 9)]
    for raw, row in zip(original["rows"], profile.rows, strict=True):
        assert {name: getattr(row, name) for name in raw} == raw  # every figure kept
    # written again, it is a /2 profile with the same content, and the gate compares the two
    upgraded = load_profile(save_profile(profile, tmp_path / "v2.json"))
    assert json.loads((tmp_path / "v2.json").read_text())["schema"] == SCHEMA
    assert upgraded.to_dict() == profile.to_dict()
    result = compare(upgraded, profile)
    assert result.exit_code == 0 and result.cells_compared == 6


def test_schema_1_estimate_loads_with_its_target() -> None:
    profile = load_profile(DATA / "profile-v1-estimate.json")
    assert profile.is_estimate and profile.settings.target == "cpu"
    assert profile.settings.precision == "32-true" and profile.environment.estimated
    assert all(row.memory_source == "estimate-cpu" and row.memory_parameters_bytes for row in profile.rows)


def test_schema_2_interrupted_profile_loads_and_says_it_is_incomplete() -> None:
    from layerprof.profile import SCHEMA_V2

    original = json.loads((DATA / "profile-v2-interrupted.json").read_text())
    assert original["schema"] == SCHEMA_V2 and original["complete"] is False
    profile = load_profile(DATA / "profile-v2-interrupted.json")
    assert profile.schema == SCHEMA_V2 and not profile.settings.eval_frozen and profile.model.order == "forward"
    assert all(layer.calls == 1 for layer in profile.model.layers)
    # /2 had no unfinished rows: the cells never reached are what the settings planned and the rows lack
    assert profile.unfinished_cells() == [(4, 2), (4, 3)]
    reason = profile.incomplete_reason()
    assert reason is not None and "2 of 6 cells unfinished (batch 4 z=2, batch 4 z=3)" in reason
    assert "an older layerprof wrote it" in reason


def test_unfinished_rows_round_trip_and_the_incomplete_reason_names_them(tmp_path: Path) -> None:
    from tests.conftest import bare_profile

    rows = [Row(2, z, "ok", step_time_ms=1.0, flops=10) for z in (1, 2)] + [Row(2, 3, "unfinished", message="x")]
    profile = bare_profile(rows, 3)
    assert profile.incomplete_reason() is None  # complete
    profile.complete = False
    loaded = load_profile(save_profile(profile, tmp_path / "p.json"))
    assert json.loads((tmp_path / "p.json").read_text())["schema"] == "layerprof.profile/3"
    assert [row.finished for row in loaded.rows] == [True, True, False]
    assert loaded.unfinished_cells() == [(2, 3)]
    assert loaded.incomplete_reason() == "the sweep was interrupted: 1 of 3 cells unfinished (batch 2 z=3)"
    assert loaded.failure_summary() is None  # unfinished is not failed


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("trainable_layers", "two", "row 0 field 'trainable_layers' ('two', expected int)"),
        ("step_time_ms", "fast", "row 0 field 'step_time_ms' ('fast', expected float)"),
        ("batch_size", None, "row 0 field 'batch_size' (None, expected int)"),
        ("batch_size", True, "row 0 field 'batch_size' (True, expected int)"),
        ("status", "done", "row 0 status 'done' (expected one of ok, oom, error, skipped, unfinished)"),
        ("visit_medians_ms", 3.0, "row 0 field 'visit_medians_ms' (3.0, expected list)"),
    ],
)
def test_rows_of_the_wrong_type_are_damage(tmp_path: Path, field: str, value: object, fragment: str) -> None:
    from tests.conftest import bare_profile

    data = bare_profile([Row(2, 1, "ok", step_time_ms=1.5, visit_medians_ms=[1.5])], 1).to_dict()
    data["rows"][0][field] = value
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(LayerprofError, match="damaged layerprof profile") as caught:
        load_profile(tmp_path / "bad.json")
    assert fragment in str(caught.value)


def test_an_integer_where_a_float_is_declared_is_a_float(tmp_path: Path) -> None:
    from tests.conftest import bare_profile

    data = bare_profile([Row(2, 1, "ok", step_time_ms=1.5)], 1).to_dict()
    data["rows"][0]["step_time_ms"] = 2
    (tmp_path / "good.json").write_text(json.dumps(data))
    assert load_profile(tmp_path / "good.json").rows[0].step_time_ms == 2
