"""Reports: every expected file, valid images, overlays, and an index that links only to what exists."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.profile import MemoryCategory, load_profile, save_profile
from tests.cli.test_cli import FAST, TINY_LM, assert_one_line_error


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


def lines_by_label(axes) -> dict[str, tuple[list[float], list[float]]]:
    return {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
        for line in axes.get_lines()
        if not line.get_label().startswith("_")
    }


def test_cost_curves_show_the_profile_figures(measured: Path) -> None:
    from layerprof.fidelity.ladder import build_ladder
    from layerprof.outputs.figures import cost_curves_figure

    profile = load_profile(measured)
    figure = cost_curves_figure([("tiny", profile)])
    (time_axes, memory_axes), (time_relative, memory_relative) = figure.axes[0:2], figure.axes[2:4]
    for batch_size in (1, 2):
        rows = profile.rows_for(batch_size)
        zs = [row.trainable_layers for row in rows]
        full = profile.row(batch_size, 9)
        label = f"batch {batch_size}"
        assert lines_by_label(time_axes)[label] == (zs, pytest.approx([row.step_time_ms for row in rows]))
        peaks_mib = [row.peak_memory_bytes / 2**20 for row in rows]
        assert lines_by_label(memory_axes)[label] == (zs, pytest.approx(peaks_mib))
        relative = [row.step_time_ms / full.step_time_ms for row in rows]
        assert lines_by_label(time_relative)[label] == (zs, pytest.approx(relative))
        relative = [row.peak_memory_bytes / full.peak_memory_bytes for row in rows]
        assert lines_by_label(memory_relative)[label] == (zs, pytest.approx(relative))
    # the dotted verticals are the recommended rungs
    rungs = [rung.trainable_layers for rung in build_ladder(profile).rungs]
    dotted = sorted({line.get_xdata()[0] for line in time_axes.get_lines() if line.get_linestyle() == ":"})
    assert dotted == rungs


def test_cost_curves_ring_the_step_times_other_work_disturbed(measured: Path) -> None:
    from layerprof.outputs.figures import DISTURBED_LABEL, cost_curves_figure

    profile = load_profile(measured)
    for row in profile.rows:
        if (row.batch_size, row.trainable_layers) in ((1, 3), (2, 3), (2, 9)):
            row.disturbed = True
    time_axes, memory_axes, time_relative, memory_relative = cost_curves_figure([("tiny", profile)]).axes
    rings = [line for line in time_axes.get_lines() if line.get_markeredgecolor() == "red"]
    assert [(list(r.get_xdata()), list(r.get_ydata())) for r in rings] == [
        ([3], [profile.row(1, 3).step_time_ms]),
        ([3, 9], [profile.row(2, 3).step_time_ms, profile.row(2, 9).step_time_ms]),
    ]
    assert [r.get_label() for r in rings] == [DISTURBED_LABEL, "_nolegend_"]  # named once
    assert DISTURBED_LABEL in [t.get_text() for t in time_axes.get_legend().get_texts()]
    assert len([line for line in time_relative.get_lines() if line.get_markeredgecolor() == "red"]) == 2
    for axes in (memory_axes, memory_relative):  # memory is not disturbed by load
        assert not [line for line in axes.get_lines() if line.get_markeredgecolor() == "red"]


def test_parameter_and_flop_panels_show_the_profile_figures(measured: Path) -> None:
    from layerprof.outputs.figures import params_flops_figure

    profile = load_profile(measured)
    left, right = params_flops_figure([("tiny", profile)]).axes
    rows = profile.rows_for(1)
    zs = [row.trainable_layers for row in rows]
    (params_line,) = left.get_lines()
    assert list(params_line.get_xdata()) == zs
    assert list(params_line.get_ydata()) == pytest.approx([row.trainable_params / 1e6 for row in rows])
    flops = lines_by_label(right)
    for figure in ("forward_flops", "backward_flops", "flops"):
        label = f"{figure.replace('_', ' ')}, batch 1"
        assert flops[label] == (zs, pytest.approx([getattr(row, figure) / 1e9 for row in rows]))


def test_memory_breakdown_bars_stack_the_tracker_categories(measured: Path) -> None:
    from layerprof.outputs.figures import memory_breakdown_figure

    profile = load_profile(measured)
    (axes,) = memory_breakdown_figure("tiny", profile).axes
    rows = profile.rows_for(2)  # the largest batch size
    stacks = {container.get_label(): container for container in axes.containers}
    assert list(stacks) == [category.description for category in MemoryCategory]
    bottom = [0.0] * len(rows)
    for category in MemoryCategory:
        bars = stacks[category.description].patches
        assert [bar.get_x() + bar.get_width() / 2 for bar in bars] == [row.trainable_layers for row in rows]
        heights = [row.memory(category) / 2**20 for row in rows]
        assert [bar.get_height() for bar in bars] == pytest.approx(heights), category
        assert [bar.get_y() for bar in bars] == pytest.approx(bottom), category
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    # the stack's top is the cell's peak: on the CPU the tracker's, with no workspace
    assert bottom == pytest.approx([row.peak_memory_bytes / 2**20 for row in rows])
    assert all(row.memory_workspace_bytes == 0 for row in rows)
