"""Tables of the decisions across recipes (`layerprof.fidelity.recipes`): each rung's (recipe, z), each recipe's
plan in a line, each z's largest batch per recipe; as `TableView`s, for a terminal or Markdown alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from layerprof.outputs.tables import PLAN_DEADLINE_HEADERS, TableView, dollars, plan_deadline_rows

if TYPE_CHECKING:
    from layerprof.fidelity.recipes import RecipeFailure, RecipeFit, RecipeFitChoice, RecipeLadder, RecipePlan

MIB = 2**20

Tables = list[tuple[str, list[str], list[list[str]]]]


def _mib(value: int | None) -> str:
    return "—" if value is None else f"{value / MIB:,.0f}"


def ladder_tables(result: RecipeLadder) -> Tables:
    """A `RecipeLadder`: per rung the recipe that gives it, then every recipe's cell at each rung."""
    memory = f" · {result.gpu_memory_bytes / 2**30:.1f} GiB GPU" if result.gpu_memory_bytes else ""
    title = (
        f"ladder across recipes · {result.model} · batch {result.batch_size} · η={result.eta:g} · rungs spaced "
        f"on {result.reference}{memory}"
    )
    chosen = [[str(rung.budget_index), str(rung.trainable_layers), rung.chosen, rung.reason] for rung in result.rungs]
    headers = ["budget", "z", "recipe", "step ms", "GFLOPs", "peak MiB", "need MiB", "slots", "max B"]
    rows = []
    for rung in result.rungs:
        for option in rung.options:
            mark = " *" if option.recipe == rung.chosen else ""
            rows.append(
                [
                    str(rung.budget_index),
                    str(rung.trainable_layers),
                    option.recipe + mark,
                    "—" if option.step_time_ms is None else f"{option.step_time_ms:,.1f}",
                    "—" if option.flops is None else f"{option.flops / 1e9:,.1f}",
                    _mib(option.peak_memory_bytes),
                    _mib(option.memory_need_bytes),
                    "—" if option.parallel_slots is None else str(option.parallel_slots),
                    "—" if option.largest_batch_size is None else str(option.largest_batch_size),
                ]
            )
    return [
        (title, ["budget", "z", "given by", "why"], chosen),
        (f"every recipe at each rung (* gives it) · most trials per GPU: {result.most_trials}", headers, rows),
        *failure_tables(result.failures),
    ]


def failure_tables(failures: Sequence[RecipeFailure]) -> Tables:
    """Each recipe, or (recipe, z), without an answer: a row each with its reason (none where all answered)."""
    if not failures:
        return []
    rows = [
        [failure.name, "every z" if failure.trainable_layers is None else str(failure.trainable_layers), failure.reason]
        for failure in failures
    ]
    return [("no answer: these recipes or z could not be built, fitted or placed", ["recipe", "z", "why"], rows)]


def plan_tables(result: RecipePlan) -> Tables:
    """A `RecipePlan`: each recipe's rungs, trials per GPU, makespan, GPU-hours and dollars; with a deadline, each
    recipe's cheapest cluster per algorithm; each recipe without a plan and why."""
    headers = ["recipe", "rungs (z)", "trials per GPU", "makespan", "GPU-hours", "$"]
    rows = [
        [
            summary.recipe + (" *" if summary.recipe == result.chosen else ""),
            ", ".join(map(str, summary.rungs)),
            ", ".join(map(str, summary.trials_per_gpu)),
            f"{summary.makespan_seconds / 3600:,.2f} h",
            f"{summary.gpu_hours:,.2f}",
            dollars(summary.usd),
        ]
        for summary in result.recipes
    ]
    title = (
        f"plans across recipes · {result.model} · successive halving over each recipe's ladder (* ends "
        f"soonest) · most trials per GPU: {result.most_trials}"
    )
    return [(title, headers, rows), *deadline_tables(result), *failure_tables(result.failures)]


def deadline_tables(result: RecipePlan) -> Tables:
    """A `RecipePlan` with a deadline: per recipe and algorithm the cheapest cluster that meets it (the rows of
    `plan --deadline` for each recipe's plan), the cheapest of all marked."""
    if not result.deadlines:
        return []
    rows = []
    for plan in result.plans:
        marks = [" *" if deadline.cheapest else "" for deadline in result.deadlines if deadline.recipe == plan.recipe]
        rows += [[plan.recipe + mark, *row] for mark, row in zip(marks, plan_deadline_rows(plan), strict=True)]
    cheapest = result.cheapest_deadline
    best = "none meets it" if cheapest is None else f"{cheapest.recipe}, {cheapest.answer.algorithm}"
    title = f"the cheapest cluster that meets the deadline, per recipe and algorithm (* the cheapest of all: {best})"
    return [(title, ["recipe", *PLAN_DEADLINE_HEADERS], rows)]


def fit_tables(result: RecipeFit) -> Tables:
    """A `RecipeFit`: per z each recipe's largest batch and the recipe with the largest; then each recipe or
    (recipe, z) without an answer, a row each with its reason."""
    name = dict(zip(result.recipes, result.names, strict=True))
    headers = ["z", *result.names, "largest"]
    failed = {(failure.recipe, failure.trainable_layers) for failure in result.failures}

    def cell(recipe: str, choice: RecipeFitChoice) -> str:
        if recipe in choice.largest_batch_sizes:
            return str(choice.largest_batch_sizes[recipe])
        return "failed" if {(recipe, None), (recipe, choice.trainable_layers)} & failed else "—"

    rows = [
        [
            str(choice.trainable_layers),
            *(cell(r, choice) for r in result.recipes),
            "—" if choice.chosen is None else name[choice.chosen],
        ]
        for choice in result.choices
    ]
    title = (
        f"{result.model}: largest batch in {result.memory_bytes / MIB:,.0f} MiB per recipe (options: "
        f"{result.recipes[0]}) · the most per GPU over every z: {name[result.most_trials]}"
    )
    return [(title, headers, rows), *failure_tables(result.failures)]


LEFT = ("recipe", "given by", "why", "algorithm", "cheapest cluster")  # the text columns


def recipe_views(result: RecipeLadder | RecipePlan | RecipeFit) -> list[TableView]:
    """The tables of a `RecipeLadder`, `RecipePlan` or `RecipeFit`, each with its title as its Markdown heading."""
    from layerprof.fidelity.recipes import RecipeFit, RecipeLadder

    if isinstance(result, RecipeLadder):
        tables = ladder_tables(result)
    elif isinstance(result, RecipeFit):
        tables = fit_tables(result)
    else:
        tables = plan_tables(result)
    return [
        TableView(title, headers, rows, left=LEFT, heading=f"**{title}**", fold=True) for title, headers, rows in tables
    ]
