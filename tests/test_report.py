"""Reports: every expected file, valid images, overlays, and an index that links only to what exists."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli import app
from layerprof.profile import load_profile, save_profile
from tests.test_cli import FAST, TINY_LM, assert_one_line_error


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "tiny.json"
    result = CliRunner().invoke(
        app, ["profile", *TINY_LM, "--batch-sizes", "1,2", "--layers", "1,3,6,9", *FAST, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def linked_files(index: Path) -> list[str]:
    return re.findall(r"\]\(([^)]+)\)", index.read_text())


def test_report_writes_every_figure_and_an_index(measured: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(measured), "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = {"cost_curves.png", "params_flops.png", "memory_breakdown.png", "index.md"}
    assert {path.name for path in out.iterdir()} == expected
    for name in expected - {"index.md"}:
        width, height = png_size(out / name)
        assert 600 <= width <= 2500 and 400 <= height <= 1600
    links = linked_files(out / "index.md")
    assert sorted(links) == sorted(expected - {"index.md"})
    assert all((out / link).exists() for link in links)
    assert "| z | trainable %" in (out / "index.md").read_text()


def test_overlay_of_several_profiles_and_svg(measured: Path, tmp_path: Path) -> None:
    other = tmp_path / "other" / "tiny.json"
    other.parent.mkdir()
    other.write_text(measured.read_text())
    out = tmp_path / "overlay"
    result = CliRunner().invoke(app, ["report", str(measured), str(other), "--out", str(out), "--format", "svg"])
    assert result.exit_code == 0, result.output
    names = {path.name for path in out.iterdir()}
    assert {"cost_curves.svg", "params_flops.svg", "memory_breakdown_1.svg", "memory_breakdown_2.svg"} <= names
    assert (out / "cost_curves.svg").read_text().lstrip().startswith("<?xml")
    text = (out / "index.md").read_text()
    assert all((out / link).exists() for link in linked_files(out / "index.md"))
    assert "other/tiny" in text  # same file names are told apart by their folder


def test_all_failed_profile_draws_nothing_and_says_so(measured: Path, tmp_path: Path) -> None:
    profile = load_profile(measured)
    for row in profile.rows:
        row.status, row.message = "oom", "OutOfMemoryError: CUDA out of memory"
    failed = save_profile(profile, tmp_path / "failed.json")
    out = tmp_path / "failed-report"
    result = CliRunner().invoke(app, ["report", str(failed), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "every cell failed" in result.output
    assert [path.name for path in out.iterdir()] == ["index.md"]
    assert linked_files(out / "index.md") == []


def test_unwritable_output_directory(measured: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["report", str(measured), "--out", str(blocker / "sub")])
    assert_one_line_error(result, "cannot write")
    assert_one_line_error(CliRunner().invoke(app, ["report", str(tmp_path / "none.json")]), "does not exist")
