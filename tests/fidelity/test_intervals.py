"""A sampled figure's 95% Monte-Carlo interval as the simulate tables print it: `±d` where it is about symmetric,
its ends where it is lopsided (a quantile on a jump of the regret distribution: [0, 0.0887] is not ±0.0887), and
in the narrow terminal table only a mark, so that every row still fits 100 columns."""

from __future__ import annotations

from pathlib import Path

from layerprof.fidelity.simulate import simulate
from layerprof.outputs.tables import markdown_views, simulation_rows, simulation_views, with_uncertainty
from tests.fidelity.test_simulate import one_best, rendered_lines, write_study


def three(value: float) -> str:
    return f"{value:.3g}"


def test_a_symmetric_interval_is_a_plus_minus_and_a_lopsided_one_its_ends() -> None:
    assert with_uncertainty(0.127, (0.1, 0.16), three) == "0.127±0.033"  # sides 0.027 and 0.033
    assert with_uncertainty(0.0887, (0.0, 0.0887), three) == "0.0887 [0, 0.0887]"  # was 0.0887±0.0887
    assert with_uncertainty(0.0887, (0.0, 0.0887), three, compact=True) == "0.0887~"
    assert with_uncertainty(0.2, (0.19, 0.3), three) == "0.2 [0.19, 0.3]"  # sides 0.01 and 0.1
    assert with_uncertainty(0.2, (0.15, 0.3), three) == "0.2±0.1"  # sides 0.05 and 0.1: half, still symmetric
    assert with_uncertainty(0.127, (0.1271, 0.1272), three, compact=True) == "0.127"  # digits unchanged: no interval


def test_the_narrow_table_fits_100_columns_and_wide_and_markdown_print_the_interval(tmp_path: Path) -> None:
    """Ten configurations, one best; halving from five finds it about half the time, so the median regret sits on
    the jump between 0 and 1 and its interval is [0, 1] whichever value the median takes."""
    study = write_study(tmp_path / "s", 10, one_best, zs=(1,), fractions=(1.0,))
    result = simulate(study, starting_configs=5, paths=["layers"], repeats=100)
    outcome = result.path("layers").successive_halving
    assert outcome.uncertainty["regret_median"] == (0, 1)
    median = f"{outcome.regret_median:g}"
    (wide_row,) = simulation_rows(result, "successive_halving")
    (narrow_row,) = simulation_rows(result, "successive_halving", compact=True)
    assert wide_row[5] == f"{median} [0, 1] [0, 1]"
    assert narrow_row[5] == f"{median}~ [0, 1]"
    assert f"| {median} [0, 1] [0, 1] |" in markdown_views(simulation_views(result))
    narrow = simulation_views(result, wide=False)[0].rich(wide=False)
    lines = rendered_lines(narrow, width=100)
    assert all(len(line) <= 100 for line in lines)
    (row,) = [line for line in lines if line.lstrip().startswith("layers")]
    assert f" {median}~ [0, 1] " in row and f"{median}±1" not in row and "48%±10%" in row
    assert len(row.rstrip()) < 100  # the row's own width, not cut to the console's
