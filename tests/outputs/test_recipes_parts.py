"""outputs/recipes.py part by part (issue 40's mutation survivors): the rows of the ladder, plan, deadline and fit
tables across recipes, built from hand-made results (the tables read nothing else)."""

from __future__ import annotations

from layerprof.fidelity.plan import DeadlineAnswer
from layerprof.fidelity.recipes import (
    RecipeDeadline,
    RecipeFailure,
    RecipeFit,
    RecipeFitChoice,
    RecipeLadder,
    RecipeOption,
    RecipePlan,
    RecipePlanSummary,
    RecipeRung,
)
from layerprof.outputs.recipes import deadline_tables, fit_tables, ladder_tables, plan_tables, recipe_views

MIB = 2**20


def a_ladder() -> RecipeLadder:
    full = RecipeOption("full", 12.345, 3 * 10**9, 5 * MIB, 7 * MIB, 4, 32)
    unknown = RecipeOption("lora", None, None, None, None, None)  # nothing known of it at this rung
    rung = RecipeRung(1, 2, [full, unknown], "full", "cheapest")
    # `ladder` (the reference recipe's own ladder) is not read by the tables
    return RecipeLadder("tiny", 8, 3.0, "time", "full", ["full", "lora"], None, [rung], "lora", None)  # type: ignore[arg-type]


def test_a_ladder_tables_rows_mark_the_chosen_recipe_and_dash_what_is_unknown() -> None:
    (_, _, chosen), (_, headers, rows) = ladder_tables(a_ladder())
    assert chosen == [["1", "2", "full", "cheapest"]]
    assert headers == ["budget", "z", "recipe", "step ms", "GFLOPs", "peak MiB", "need MiB", "slots", "max B"]
    assert rows == [
        ["1", "2", "full *", "12.3", "3.0", "5", "7", "4", "32"],
        ["1", "2", "lora", "—", "—", "—", "—", "—", "—"],
    ]


def test_every_recipe_view_folds_its_long_values() -> None:
    views = recipe_views(a_ladder())
    assert [view.fold for view in views] == [True, True]
    assert views[0].heading == f"**{views[0].title}**"


def a_plan(deadlines: list[RecipeDeadline]) -> RecipePlan:
    summaries = [
        RecipePlanSummary("full", [1, 3], [1, 2], 7200.0, 4.5, None),
        RecipePlanSummary("lora", [2], [4], 3600.0, 1.25, 2.5),
    ]
    return RecipePlan("tiny", summaries, "lora", "lora", [], deadlines)


def test_a_plan_tables_rows_mark_the_recipe_that_ends_soonest() -> None:
    ((_, headers, rows),) = plan_tables(a_plan([]))
    assert headers == ["recipe", "rungs (z)", "trials per GPU", "makespan", "GPU-hours", "$"]
    assert [row[:5] for row in rows] == [
        ["full", "1, 3", "1, 2", "2.00 h", "4.50"],
        ["lora *", "2", "4", "1.00 h", "1.25"],
    ]


def test_the_deadline_tables_title_names_the_cheapest_answer_or_none() -> None:
    answer = DeadlineAnswer(3600.0, "asha", True, [{"gpu": "L4", "count": 2}])
    ((title, _, _),) = deadline_tables(
        a_plan([RecipeDeadline("full", answer), RecipeDeadline("lora", answer, cheapest=True)])
    )
    assert title.endswith("(* the cheapest of all: lora, asha)")
    ((title, _, _),) = deadline_tables(a_plan([RecipeDeadline("full", answer)]))
    assert title.endswith("(* the cheapest of all: none meets it)")


def test_a_fit_tables_cells_say_failed_only_where_the_recipe_failed_there() -> None:
    fit = RecipeFit(
        "tiny",
        64 * MIB,
        ["full", "lora", "dora"],
        ["options", "lora", "dora"],
        [RecipeFitChoice(1, {"full": 8}, "full"), RecipeFitChoice(2, {}, None)],
        "full",
        [None, None, None],
        [RecipeFailure("lora", "lora", None, "cannot build"), RecipeFailure("dora", "dora", 2, "out of memory")],
    )
    (title, headers, rows), (_, _, failures) = fit_tables(fit)
    assert title == "tiny: largest batch in 64 MiB per recipe (options: full) · the most per GPU over every z: options"
    assert headers == ["z", "options", "lora", "dora", "largest"]
    # lora failed as a whole, dora at z=2 only: at z=1 dora has no answer and no failure
    assert rows == [["1", "8", "failed", "—", "options"], ["2", "—", "failed", "failed", "—"]]
    assert failures == [["lora", "every z", "cannot build"], ["dora", "2", "out of memory"]]
