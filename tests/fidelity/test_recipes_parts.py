"""Parts of fidelity/recipes.py that the end-to-end tests leave unpinned (issue 40: mutants that survived)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from layerprof.errors import LayerprofError
from layerprof.fidelity.plan import DeadlineAnswer
from layerprof.fidelity.recipes import (
    RECIPES_SCHEMA,
    RecipeDeadline,
    RecipeFailure,
    RecipeFit,
    RecipeOption,
    RecipePlan,
    RecipeRung,
    _most_trials,
    best_option,
    nothing_answered,
    recipe_ladder,
)
from layerprof.profile import Profile, Row
from tests.conftest import bare_profile


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


def test_without_slots_or_needs_the_quicker_step_wins_by_step_time_where_every_option_has_one() -> None:
    quick = RecipeOption("fp32", 10.0, 100, None, None, None)
    light = RecipeOption("bf16", 20.0, 50, None, None, None)
    assert best_option([light, quick]) == (quick, "the lowest step time")
    untimed = RecipeOption("bf16", None, 50, None, None, None)
    assert best_option([quick, untimed]) == (untimed, "the lowest FLOPs per step")


def test_the_recipe_with_most_trials_counts_slots_before_the_rungs_it_gives() -> None:
    rungs = [
        RecipeRung(0, 1, [RecipeOption("a", None, None, None, None, 1), RecipeOption("b", None, None, None, None, 3)],
                   "a", "given"),
        RecipeRung(1, 2, [RecipeOption("a", None, None, None, None, 1)], "a", "given"),
    ]  # fmt: skip
    assert _most_trials(["a", "b"], rungs) == "b"  # 3 slots against 2, though a gives both rungs
    assert _most_trials(["a", "b"], rungs[1:]) == "a"


def test_two_profiles_of_one_recipe_are_refused_by_their_names() -> None:
    rows = [Row(8, z, "ok", step_time_ms=1.0) for z in (1, 2)]
    other = bare_profile(rows, 2)
    other = replace(other, settings=replace(other.settings, precision="bf16"))  # another recipe, not named
    named = [("one.json", bare_profile(rows, 2)), ("bf16.json", other), ("two.json", bare_profile(rows, 2))]
    with pytest.raises(LayerprofError, match=r"^one.json, two.json train with one recipe \(.*\); give one profile"):
        recipe_ladder(named)


def test_each_rungs_options_count_recompute_flops_only_where_recorded() -> None:
    from layerprof.fidelity.ladder import build_ladder
    from layerprof.fidelity.recipes import _options

    def profile(recompute: int | None, precision: str) -> Profile:
        rows = [
            Row(8, z, "ok", trainable_fraction=z / 3, step_time_ms=3.0 ** (z - 1), flops=1000 * z,
                recompute_flops=None if recompute is None else recompute * z, peak_memory_bytes=100 * z)
            for z in (1, 2, 3)
        ]  # fmt: skip
        made = bare_profile(rows, 3)
        made.settings.precision = precision
        return made

    plain, checkpointed = profile(None, "32-true"), profile(500, "bf16-mixed")
    ladder = build_ladder(plain, eta=3)
    options = _options([plain, checkpointed], ladder)
    assert list(options) == [1, 2, 3]
    assert [(o.recipe, o.flops, o.step_time_ms, o.peak_memory_bytes) for o in options[2]] == [
        (plain.settings.recipe_label, 2000, 3.0, 200),
        (checkpointed.settings.recipe_label, 3000, 3.0, 200),  # 2,000 + 1,000 recomputed
    ]


def test_a_rung_goes_by_slots_only_where_every_option_has_them() -> None:
    slotted = RecipeOption("a", 10.0, 100, 900, 1000, 3)
    unslotted = RecipeOption("b", 10.0, 100, 400, 500, None)
    assert best_option([slotted, unslotted]) == (unslotted, "the smallest memory need, then the lowest step time")
    both = RecipeOption("b", 10.0, 100, 400, 500, 2)
    assert best_option([slotted, both]) == (slotted, "most trials per GPU (3), then the lowest step time")


def test_recipes_of_one_adapter_setting_have_no_adapter_note() -> None:
    rows = [Row(8, z, "ok", trainable_fraction=z / 3, step_time_ms=3.0 ** (z - 1)) for z in (1, 2, 3)]
    plain, half = bare_profile(rows, 3), bare_profile(rows, 3)
    half.settings.precision = "bf16-mixed"
    assert recipe_ladder([("plain.json", plain), ("half.json", half)], eta=3).notes == []
    half.settings.adapter = "lora"
    (note,) = recipe_ladder([("plain.json", plain), ("half.json", half)], eta=3).notes
    assert note.startswith("adapters train other parameters than full training")


def test_a_recipe_named_twice_is_named_in_the_refusal() -> None:
    from layerprof.fidelity.recipes import fit_recipes
    from layerprof.profile import SweepSettings

    settings = SweepSettings(batch_sizes=(8,), trainable_layer_counts=(1,))
    twice = [{"precision": "bf16-mixed"}, {"precision": "bf16-mixed"}]
    label = replace(settings, precision="bf16-mixed").recipe_label
    with pytest.raises(LayerprofError) as refused:
        fit_recipes("m", None, settings, twice)  # type: ignore[arg-type]
    assert str(refused.value) == f"--recipe names one recipe twice ({label}); give each recipe once"
