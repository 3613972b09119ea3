"""outputs/report.py part by part (issue 40's mutation survivors), on the committed test profiles: which figures
and notes a report holds, their size, the index's lines, a failed report's folder, and names by file stem."""

from __future__ import annotations

import shutil
import struct
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from layerprof.errors import LayerprofError
from layerprof.outputs import report
from layerprof.outputs.report import report_profiles, write_report
from layerprof.profile import load_profile

DATA = Path(__file__).parents[1] / "data"


def png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_a_measured_profiles_report_its_figures_at_120_dpi_and_its_index(tmp_path: Path) -> None:
    measured = load_profile(DATA / "profile-v1-measured.json")
    open_before = set(plt.get_fignums())  # figures an earlier test of this process drew and kept are not the report's
    written = write_report([("measured", measured)], tmp_path / "out")
    names = ["cost_curves.png", "params_flops.png", "memory_breakdown.png", "index.md"]
    assert ([path.name for path in written.files], written.notes) == (names, [])
    assert png_size(tmp_path / "out" / "params_flops.png") == (1560, 576)  # 13 x 4.8 inches at 120 dpi
    assert set(plt.get_fignums()) - open_before == set()  # every figure the report drew closed once saved
    lines = (tmp_path / "out" / "index.md").read_text().splitlines()
    assert lines[:2] == ["# layerprof report", ""] and lines[3:6] == ["", "![cost curves](cost_curves.png)", ""]
    assert lines[2].startswith(f"- **measured**: {measured.model.spec} on {measured.environment.device_name}")


def test_what_a_report_cannot_draw_is_a_note(tmp_path: Path) -> None:
    measured = load_profile(DATA / "profile-v1-measured.json")
    estimate = load_profile(DATA / "profile-v1-estimate.json")
    one_failed = replace(measured, rows=[replace(measured.rows[0], status="oom"), *measured.rows[1:]])
    all_failed = replace(measured, rows=[replace(row, status="oom") for row in measured.rows])
    untracked = replace(estimate, rows=[replace(row, tracked_peak_bytes=None) for row in estimate.rows])
    interrupted = load_profile(DATA / "profile-v2-interrupted.json")
    unfinished = replace(interrupted, rows=[replace(row, status="unfinished") for row in interrupted.rows])
    profiles = [("estimate", untracked), ("one-failed", one_failed), ("failed", all_failed), ("cut", unfinished)]
    written = write_report(profiles, tmp_path / "out")
    assert [note.split(" (")[0] for note in written.notes] == [
        "cut is incomplete",
        "failed: every cell failed",
        "cut: no cell finished",
        "estimate: no memory breakdown in the profile",
    ]
    assert written.notes[1:3] == [
        "failed: every cell failed (oom); nothing to plot",
        "cut: no cell finished (unfinished); nothing to plot",
    ]
    assert [path.name for path in written.files] == [
        "cost_curves.png",
        "params_flops.png",
        "memory_breakdown_2.png",
        "index.md",
    ]  # the estimate has no breakdown: the next drawable profile still has its own
    estimates_only = write_report([("estimate", estimate)], tmp_path / "estimate")
    assert estimates_only.notes == ["no step times in these profiles (estimates): time curves not drawn"]


def test_a_report_that_fails_removes_only_a_folder_it_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object) -> None:
        raise LayerprofError("half-way")

    monkeypatch.setattr(report, "_draw", fail)
    with pytest.raises(LayerprofError, match="half-way"):
        write_report([], tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(LayerprofError, match="half-way"):
        write_report([], tmp_path / "mine")  # an existing folder is a folder to write into
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_profiles_are_named_by_their_stem_with_their_folder_where_stems_repeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "write_report", lambda named, *_: [name for name, _ in named])  # no drawing
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(DATA / "profile-v1-measured.json", tmp_path / folder / "run.json")
    shutil.copy(DATA / "profile-v1-estimate.json", tmp_path / "a" / "estimate.json")
    paths = [tmp_path / "a" / "run.json", tmp_path / "b" / "run.json", tmp_path / "a" / "estimate.json"]
    assert report_profiles(paths, tmp_path / "out") == ["a/run", "b/run", "estimate"]
