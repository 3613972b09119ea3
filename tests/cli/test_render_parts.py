"""Parts of cli/render.py that the end-to-end tests leave unpinned (issue 40: mutants that survived)."""

from __future__ import annotations

import io
import time

from rich.console import Console

from layerprof.cli.render import SweepProgress, short_range


def test_a_run_of_three_or_more_consecutive_values_is_shown_as_a_range() -> None:
    assert short_range((1, 2, 3, 4)) == "1..4"
    assert short_range((5, 6, 7)) == "5..7"
    assert short_range((1, 2, 4)) == "1,2,4"
    assert short_range((3, 4)) == "3,4"  # two values: a range would say no less
    assert short_range((2,)) == "2"


def test_the_sweeps_bar_names_the_cell_of_round_1_and_counts_later_rounds_from_1() -> None:
    progress = SweepProgress(Console(file=io.StringIO()))
    progress.cell_started(8, 3, 1, 5)  # batch 8, z=3: the second of 5 cells
    (task,) = progress._progress.tasks
    assert (task.description, task.total) == ("round 1 · batch 8, z=3", 5)
    before = time.monotonic()
    progress.round_started(1, 4, 100.0)  # the second round, 4 cells unsettled, their visits 100 s
    after = time.monotonic()
    (task,) = progress._progress.tasks
    assert (task.description, task.total, task.completed) == ("round 2 · 4 cell(s) settling", 4, 0)
    assert before + 100.0 <= task.fields["deadline"] <= after + 100.0  # counted down from the call, at any load
    assert progress.events == [("cell_started", 8, 3, 1, 5), ("round_started", 1, 4, 100.0)]
