"""Parts of cli/render.py that the end-to-end tests leave unpinned (issue 40: mutants that survived)."""

from __future__ import annotations

from layerprof.cli.render import short_range


def test_a_run_of_three_or_more_consecutive_values_is_shown_as_a_range() -> None:
    assert short_range((1, 2, 3, 4)) == "1..4"
    assert short_range((5, 6, 7)) == "5..7"
    assert short_range((1, 2, 4)) == "1,2,4"
    assert short_range((3, 4)) == "3,4"  # two values: a range would say no less
    assert short_range((2,)) == "2"
