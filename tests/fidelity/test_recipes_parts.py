"""Parts of fidelity/recipes.py that the end-to-end tests leave unpinned (issue 40: mutants that survived)."""

from __future__ import annotations

from layerprof.fidelity.plan import DeadlineAnswer
from layerprof.fidelity.recipes import (
    RECIPES_SCHEMA,
    RecipeDeadline,
    RecipeFailure,
    RecipeFit,
    RecipePlan,
    nothing_answered,
)


def test_a_recipe_plans_json_names_each_part() -> None:
    answer = DeadlineAnswer(3600.0, "asha", True, [{"gpu": "L4", "count": 2}], makespan_seconds=1800.0)
    plan = RecipePlan("m", [], "bf16", "fp32", [], [RecipeDeadline("bf16", answer, cheapest=True)])
    assert plan.to_dict() == {
        "schema": RECIPES_SCHEMA,
        "decision": "plan",
        "model": "m",
        "chosen": "bf16",
        "most_trials": "fp32",
        "recipes": [],
        "deadlines": [
            {
                "recipe": "bf16",
                "deadline_seconds": 3600.0,
                "algorithm": "asha",
                "met": True,
                "gpus": [{"gpu": "L4", "count": 2}],
                "makespan_seconds": 1800.0,
                "usd_held": None,
                "usd": None,
                "gpu_hours": None,
                "compositions_tried": 0,
                "reason": "",
                "cheapest": True,
            }
        ],
        "deadline_cheapest": {"recipe": "bf16", "algorithm": "asha"},
        "failures": [],
        "plans": [],
    }


def test_a_recipe_that_failed_whole_shows_its_own_reason_in_the_fits_json() -> None:
    failures = [
        RecipeFailure("fp32", "options", 2, "z=2 does not fit"),  # one z of a recipe that answers otherwise
        RecipeFailure("bf16", "precision=bf16", None, "bf16 needs a GPU"),
        RecipeFailure("fp16", "precision=fp16", None, "fp16 needs a GPU too"),
    ]
    fit = RecipeFit("m", 1024, ["bf16", "fp16"], ["options", "precision=fp16"], [], "bf16", [None, None], failures)
    assert fit.to_dict()["fits"] == [
        {"recipe": "bf16", "error": "bf16 needs a GPU"},
        {"recipe": "fp16", "error": "fp16 needs a GPU too"},
    ]


def test_when_no_recipe_answers_a_reason_they_share_is_the_whole_error() -> None:
    one = [RecipeFailure("fp32", "options", None, "no GPU memory given")]
    assert str(nothing_answered("no recipe can be fitted", one)) == "no GPU memory given"
    two = [*one, RecipeFailure("bf16", "precision=bf16", None, "bf16 needs a GPU")]
    assert str(nothing_answered("no recipe can be fitted", two)) == (
        "no recipe can be fitted (options: no GPU memory given; precision=bf16: bf16 needs a GPU)"
    )
