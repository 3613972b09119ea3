"""The gate's edges one at a time, with hand-picked figures: who is named baseline and current, a missing baseline
file, the floating-noise edge of deterministic figures, the step-sample rule for improvements and its edges, the
disturbed note's list of six, and the table's alignment. Written for the mutants `make mutate` left alive in
layerprof/outputs/check.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerprof.errors import LayerprofError
from layerprof.outputs.check import (
    RELATIVE_NOISE,
    CheckResult,
    DisturbedCell,
    check_files,
    compare,
    rich_check_table,
)
from layerprof.profile import save_profile
from tests.outputs.test_check import measured_like_profile, one_visit


def test_the_result_names_each_side_as_given(tmp_path: Path) -> None:
    result = compare(measured_like_profile(), measured_like_profile(), current_name="new", baseline_name="old")
    assert (result.current, result.baseline) == ("new", "old")
    current, baseline = tmp_path / "current.json", tmp_path / "baseline.json"
    save_profile(measured_like_profile(), current)
    save_profile(measured_like_profile(), baseline)
    files = check_files(current, baseline)
    assert (files.current, files.baseline) == (str(current), str(baseline))


def test_a_missing_baseline_file_is_named_with_the_fix(tmp_path: Path) -> None:
    current = tmp_path / "current.json"
    save_profile(measured_like_profile(), current)
    with pytest.raises(LayerprofError, match=r"baseline '.*missing\.json' does not exist; create it with"):
        check_files(current, tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("before", "after", "verdict"),
    [
        (0, RELATIVE_NOISE, "pass"),  # exactly the floating noise allowed around 0: no change
        (0, 1.5 * RELATIVE_NOISE, "regression"),  # beyond it (the scale never drops below 1)
        (10**12, 10**12 + 999, "pass"),  # relative to the figure: 1e-9 of 1e12 is 1,000
        (10**12, 10**12 + 1001, "regression"),
    ],
)
def test_deterministic_figures_change_beyond_floating_noise(before: float, after: float, verdict: str) -> None:
    baseline, current = measured_like_profile(), measured_like_profile()
    baseline.row(8, 1).forward_flops, current.row(8, 1).forward_flops = before, after  # type: ignore[assignment]
    findings = [f for f in compare(current, baseline).findings if f.figure == "forward_flops"]
    assert [f.verdict for f in findings if f.trainable_layers == 1] == [verdict]


@pytest.mark.parametrize(
    ("current_spread", "verdict"),
    [
        ((9.0, 9.9), "improvement"),  # p90 9.9 under the baseline's p10 (19.6) x (1 - 10%) = 17.64
        ((9.0, 17.64), "pass"),  # the edge: 17.64 is not under 17.64
        ((9.0, 19.0), "pass"),  # under the p10 itself, but not by the tolerance
    ],
)
def test_a_speed_up_with_one_visit_is_decided_by_its_steps(current_spread: tuple[float, float], verdict: str) -> None:
    """Current about 2x faster (median 10 against 20), one visit each, 5 steps each."""
    baseline = one_visit(measured_like_profile(), 2, 20.0, (19.6, 20.6))
    current = one_visit(measured_like_profile(), 2, 10.0, current_spread)
    assert compare(current, baseline).cell_verdict(8, 2) == verdict


def test_a_slowdown_under_the_grown_spread_is_inconclusive_not_a_regression() -> None:
    """+50%: the current p10 (25) is above the baseline's p90 (20.6) but not above it grown by 30% (26.78)."""
    baseline = one_visit(measured_like_profile(), 2, 20.0, (19.6, 20.6))
    slower = one_visit(measured_like_profile(), 2, 30.0, (25.0, 31.0))
    assert compare(slower, baseline, time_tolerance=0.3).cell_verdict(8, 2) == "inconclusive"


def test_without_visit_medians_touching_spreads_decide_nothing() -> None:
    """Profiles from before visits were recorded: a slowdown whose p10 equals the baseline's p90 is not apart."""
    baseline, current = measured_like_profile(), measured_like_profile()  # z=2: p10-p90 19.4-20.6 ms
    row = current.row(8, 2)
    row.step_time_ms, row.step_time_p10_ms, row.step_time_p90_ms = 30.0, 20.6, 31.0
    assert compare(current, baseline).cell_verdict(8, 2) == "inconclusive"
    row.step_time_p10_ms = 20.61
    assert compare(current, baseline).cell_verdict(8, 2) == "regression"


def test_the_disturbed_note_names_six_cells_and_counts_the_rest() -> None:
    def note(count: int) -> str:
        cells = [DisturbedCell(8, z, "current") for z in range(1, count + 1)]
        result = CheckResult(current="c", baseline="b", disturbed=cells)
        assert result.disturbed_note is not None
        return result.disturbed_note

    six = note(6)
    assert "batch 8 z=6 (current)" in six and "more" not in six
    seven = note(7)
    assert "batch 8 z=6 (current) and 1 more;" in seven and "z=7" not in seven


def test_the_terminal_table_right_aligns_batch_and_z_only() -> None:
    table = rich_check_table(compare(measured_like_profile(), measured_like_profile()))
    justified = {str(column.header): column.justify for column in table.columns}
    assert justified["batch"] == justified["z"] == "right"
    assert {justify for header, justify in justified.items() if header not in ("batch", "z")} == {"left"}


def test_a_measured_current_against_an_estimated_baseline_keeps_the_memory_tolerance() -> None:
    """Only two estimates are compared exactly; a measured peak 1% above an estimated one is inside the 2%."""
    baseline, current = measured_like_profile(), measured_like_profile()
    baseline.row(8, 1).memory_source = "estimate"
    current.row(8, 1).peak_memory_bytes = 11 * 2**20 * 101 // 100  # 11 MiB -> +1%
    [peak] = [
        f for f in compare(current, baseline).findings if f.figure == "peak_memory_bytes" and f.trainable_layers == 1
    ]
    assert (peak.verdict, peak.detail) == ("pass", "+1.0%")


@pytest.mark.parametrize(
    ("composed", "note"),
    [
        ("baseline", " (baseline composed from traced cells)"),
        ("current", " (current composed from traced cells)"),
        ("both", " (baseline and current composed from traced cells)"),
    ],
)
def test_a_changed_estimate_names_the_side_composed_from_traced_cells(composed: str, note: str) -> None:
    baseline, current = measured_like_profile(), measured_like_profile()
    for side, profile in (("baseline", baseline), ("current", current)):
        row = profile.row(8, 1)
        row.memory_source = "estimate"
        row.estimate_basis = "composed" if composed in (side, "both") else "traced"
    current.row(8, 1).peak_memory_bytes = 22 * 2**20  # 11 MiB -> 22 MiB
    [peak] = [
        f for f in compare(current, baseline).findings if f.figure == "peak_memory_bytes" and f.trainable_layers == 1
    ]
    assert (peak.verdict, peak.detail) == ("regression", f"estimate changed by +100.00%{note}")
