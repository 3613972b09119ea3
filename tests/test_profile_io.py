"""The Profile file format: round trip, schema check, clear errors for foreign files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerprof.errors import LayerprofError
from layerprof.profile import ROW_FIELDS, SCHEMA, Profile, Row, ensure_writable, load_profile, save_profile


def small_profile() -> Profile:
    profile = Profile(
        model={"spec": "m", "layers": [{"index": 0}, {"index": 1}]},
        workload={"family": "causal-lm"},
        environment={"device_kind": "cpu"},
        settings={"warmup_steps": 1},
        rows=[
            Row(2, 1, "ok", trainable_params=10, step_time_ms=1.5, peak_memory_bytes=100, flops=7),
            Row(2, 2, "oom", message="OutOfMemoryError: CUDA out of memory"),
        ],
        complete=True,
    )
    return profile


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
