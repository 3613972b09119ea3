"""A sampled figure's 95% Monte-Carlo interval as the simulate tables print it: `±d` where it is about symmetric,
its ends where it is lopsided (a quantile on a jump of the regret distribution: [0, 0.0887] is not ±0.0887), and
in the narrow terminal table only a mark, so that every row still fits 100 columns. The regret's quantiles and
their intervals sit in columns of their own: `0.0268 [0, 0.31]`, then `95% [0.31, 1.17]`, never an interval
inside the quantiles' brackets."""

from __future__ import annotations

from pathlib import Path

from layerprof.fidelity.simulate import Outcome, simulate
from layerprof.outputs.tables import (
    SIMULATION_HEADERS,
    interval_text,
    markdown_views,
    regret_cells,
    simulation_rows,
    simulation_views,
    with_uncertainty,
)
from tests.fidelity.test_simulate import one_best, rendered_lines, write_study

REGRET = SIMULATION_HEADERS.index("regret median [90%]")
MEDIAN_MC = SIMULATION_HEADERS.index("MC interval of median")
ENDS_MC = SIMULATION_HEADERS.index("MC intervals of [90%]")


def three(value: float) -> str:
    return f"{value:.3g}"


def test_a_symmetric_interval_is_a_plus_minus_and_a_lopsided_one_its_ends() -> None:
    assert with_uncertainty(0.127, (0.1, 0.16), three) == "0.127±0.033"  # sides 0.027 and 0.033
    assert with_uncertainty(0.0887, (0.0, 0.0887), three) == "0.0887 [0, 0.0887]"  # was 0.0887±0.0887
    assert with_uncertainty(0.0887, (0.0, 0.0887), three, compact=True) == "0.0887~"
    assert with_uncertainty(0.2, (0.19, 0.3), three) == "0.2 [0.19, 0.3]"  # sides 0.01 and 0.1
    assert with_uncertainty(0.2, (0.15, 0.3), three) == "0.2±0.1"  # sides 0.05 and 0.1: half, still symmetric
    assert with_uncertainty(0.127, (0.1271, 0.1272), three, compact=True) == "0.127"  # digits unchanged: no interval
    assert interval_text(0.2, (0.15, 0.3), three) == "±0.1"
    assert interval_text(0.0887, (0.0, 0.0887), three) == "[0, 0.0887]"
    assert interval_text(0.127, (0.1271, 0.1272), three) == "" and interval_text(0.127, None, three) == ""


def outcome_of(**figures: tuple[float, tuple[float, float]]) -> Outcome:
    """An outcome whose regret median, 5% and 95% quantiles have these values and Monte-Carlo intervals."""
    values = {name: value for name, (value, _) in figures.items()}
    return Outcome(
        brackets=[],
        regret_mean=0.1,
        best_found_share=0.4,
        recorded_seconds=1.0,
        uncertainty={name: interval for name, (_, interval) in figures.items()},
        **values,
    )


def test_the_regret_cell_never_nests_an_interval_inside_the_quantiles() -> None:
    """The digits table's `0.0268 [0, 0.31 [0.31, 1.17]]`: the 95% quantile sits on a jump of the regret
    distribution, 0.31 or 1.17. Wide, the figures stand alone and the interval is in its own column, named by its
    quantile; narrow, the figure is marked."""
    on_a_jump = outcome_of(
        regret_median=(0.0268, (0.0268, 0.0268)), regret_low=(0.0, (0.0, 0.0)), regret_high=(0.31, (0.31, 1.17))
    )
    assert regret_cells(on_a_jump) == ("0.0268 [0, 0.31]", "", "95% [0.31, 1.17]")
    assert regret_cells(on_a_jump, compact=True)[0] == "0.0268 [0, 0.31~]"
    # the first study's `0.136±0.0148 [0.00615±0.0025, 0.476±0.0141]`: each interval symmetric, one per column
    symmetric = outcome_of(
        regret_median=(0.136, (0.1212, 0.1508)),
        regret_low=(0.00615, (0.00365, 0.00865)),
        regret_high=(0.476, (0.4619, 0.4901)),
    )
    assert regret_cells(symmetric) == ("0.136 [0.00615, 0.476]", "±0.0148", "5% ±0.0025 · 95% ±0.0141")
    assert regret_cells(symmetric, compact=True)[0] == "0.136~ [0.00615~, 0.476~]"
    settled = outcome_of(
        regret_median=(0.0389, (0.0389, 0.0389)), regret_low=(0, (0, 0)), regret_high=(1.21, (1.21, 1.21))
    )
    assert regret_cells(settled) == regret_cells(settled, compact=True) == ("0.0389 [0, 1.21]", "", "")


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
    assert (wide_row[REGRET], wide_row[MEDIAN_MC], wide_row[ENDS_MC]) == (f"{median} [0, 1]", "[0, 1]", "")
    assert narrow_row[REGRET] == f"{median}~ [0, 1]"
    markdown = markdown_views(simulation_views(result)).splitlines()
    header = next(line for line in markdown if line.startswith("| path |"))
    (row,) = [line for line in markdown if line.startswith("| layers |")]
    cells = dict(zip(header.strip("| ").split(" | "), row.strip("| ").split(" | "), strict=True))
    assert (cells["regret median [90%]"], cells["MC interval of median"]) == (f"{median} [0, 1]", "[0, 1]")
    narrow = simulation_views(result, wide=False)[0].rich(wide=False)
    lines = rendered_lines(narrow, width=100)
    assert all(len(line) <= 100 for line in lines)
    assert not any("MC interval" in line for line in lines)  # the interval columns are --wide's
    (row,) = [line for line in lines if line.lstrip().startswith("layers")]
    assert f" {median}~ [0, 1] " in row and f"{median}±1" not in row and "48%±10%" in row
    assert len(row.rstrip()) < 100  # the row's own width, not cut to the console's
    wide = rendered_lines(simulation_views(result, wide=True)[0].rich(wide=True), width=220)
    (row,) = [line for line in wide if "layers" in line]
    assert f" {median} [0, 1] " in row and " [0, 1] " in row.split(f"{median} [0, 1]", 1)[1]
