"""Decisions across training recipes of one model: which (recipe, z) gives each rung of a ladder, which recipe
fits the most trials on a GPU, which recipe a cluster plan finishes soonest with, and which fits the largest batch.

Each decision calls the one-recipe function (`build_ladder`, `plan_cluster`, `fit_model`) once per recipe and
compares the answers; nothing here measures or traces on its own.

- `ladder` over several profiles: the rungs (their z) are spaced on the first profile's recipe, the reference (the
  recipe the final model trains with); each rung's z is then offered under every recipe whose profile has that cell,
  and the rung goes to the recipe that fits the most trials on one GPU, then to the quicker step (measured or
  predicted step time where every recipe has one, else FLOPs with any recompute). Without a GPU memory (`--gpu`,
  `--gpu-memory`, a measured CUDA profile) the smaller need wins, which is the same order on any GPU.
- `plan` over profiles of several recipes: one plan per recipe (its profiles grouped by recipe), the recipe whose
  successive halving over the ladder ends soonest (then the fewest GPU-hours) chosen; with a deadline, every
  recipe's cheapest cluster per algorithm, the cheapest of all marked.
- `fit` over several recipes: one fit per recipe, and per z the recipe with the largest batch.

A recipe, or a z of one, without an answer (a cell it cannot build, a rung its profile lacks, a plan that cannot be
made) is a `RecipeFailure` with its reason, and the others answer: an error only where nothing answers.

A recipe with adapters trains other parameters than full training does: the rung it wins is a different fidelity
whose rank correlation with the reference is worth measuring (`layerprof correlate`); checkpointing, the optimizer's
implementation and compile change cost, not what is learned (8-bit states approximately).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerprof.errors import LayerprofError
from layerprof.fidelity.ladder import Ladder, build_ladder, default_cost, ladder_for, rungs_at
from layerprof.profile import RECIPE_SETTINGS, JsonDict, Profile, SweepSettings, load_profile

if TYPE_CHECKING:
    from layerprof.devices import InventoryItem
    from layerprof.fidelity.correlate import CorrelationResult
    from layerprof.fidelity.plan import ClusterPlan, DeadlineAnswer
    from layerprof.predict.fit import FitReport
    from layerprof.sources.names import ModelOptions

RECIPES_SCHEMA = "layerprof.recipes/1"


def recipe_key(settings: SweepSettings) -> tuple[object, ...]:
    """What makes two profiles one recipe: their `RECIPE_SETTINGS`."""
    return tuple(getattr(settings, key) for key in RECIPE_SETTINGS)


def one_model(profiles: Sequence[Profile]) -> None:
    """Refuse profiles of different models (or of one model split differently) in one line."""
    first = profiles[0]
    for profile in profiles[1:]:
        if profile.model.spec != first.model.spec or profile.layer_count != first.layer_count:
            raise LayerprofError(
                f"the profiles are of different models ({first.model.spec}, {first.layer_count} layers; "
                f"{profile.model.spec}, {profile.layer_count} layers): give profiles of one model, one per recipe"
            )


def by_recipe(profiles: Sequence[Profile]) -> list[list[Profile]]:
    """The profiles of one model grouped by recipe, in the order each recipe first appears."""
    one_model(profiles)
    groups: dict[tuple[object, ...], list[Profile]] = {}
    for profile in profiles:
        groups.setdefault(recipe_key(profile.settings), []).append(profile)
    return list(groups.values())


@dataclass
class RecipeFailure:
    """A recipe, or one z of it, that has no answer (a rung of a ladder, a plan, a fit), and why: its cell cannot be
    built, traced or fitted, or its profile has none."""

    recipe: str  # SweepSettings.recipe_label
    name: str  # how the command was given it: a profile's path, "options" or a --recipe as given
    trainable_layers: int | None  # None: the whole recipe (every z)
    reason: str


# ---------------------------------------------------------------- ladder


@dataclass
class RecipeOption:
    """One recipe's cell at a rung's z: what a trial of it costs and holds."""

    recipe: str  # SweepSettings.recipe_label
    step_time_ms: float | None  # measured, or predicted by an estimate's time model
    flops: int | None  # forward + backward + recompute (checkpointing) per step
    peak_memory_bytes: int | None
    memory_need_bytes: int | None  # on a GPU: the peak plus the context reserve (NVML's figure where measured)
    parallel_slots: int | None  # trials of it that fit on one GPU at once
    largest_batch_size: int | None = None


@dataclass
class RecipeRung:
    """One rung: its z (the reference ladder's), every recipe's cell there, and the recipe that gives it."""

    budget_index: int
    trainable_layers: int
    options: list[RecipeOption]
    chosen: str  # the recipe label of the option that gives the rung
    reason: str  # why that one


@dataclass
class RecipeLadder:
    """`ladder` over profiles of several recipes of one model."""

    model: str
    batch_size: int
    eta: float
    cost_kind: str
    reference: str  # the recipe the rungs are spaced on (the first profile's)
    recipes: list[str]
    gpu_memory_bytes: int | None
    rungs: list[RecipeRung]
    most_trials: str  # the recipe that fits the most trials per GPU, over the rungs together
    ladder: Ladder  # the reference recipe's own ladder
    notes: list[str] = field(default_factory=list)
    failures: list[RecipeFailure] = field(default_factory=list)  # each (recipe, rung's z) not offered, and why

    def to_dict(self) -> JsonDict:
        """The JSON form, with its schema."""
        return {"schema": RECIPES_SCHEMA, "decision": "ladder", **asdict(self)}


def _options(profiles: Sequence[Profile], ladder: Ladder) -> dict[int, list[RecipeOption]]:
    """Each rung's z under every recipe that has the cell (`rungs_at`), in the profiles' order."""
    zs = [rung.trainable_layers for rung in ladder.rungs]
    by_z: dict[int, list[RecipeOption]] = {z: [] for z in zs}
    for profile in profiles:
        rungs = rungs_at(profile, zs, ladder.batch_size, ladder.eta, ladder.gpu_memory_bytes,
                         ladder.context_reserve_bytes)  # fmt: skip
        for z, rung in rungs.items():
            row = profile.row(ladder.batch_size, z)
            assert row is not None  # rungs_at makes rungs of successful cells only
            flops = None if row.flops is None else row.flops + (row.recompute_flops or 0)
            by_z[z].append(
                RecipeOption(profile.settings.recipe_label, rung.step_time_ms, flops, rung.peak_memory_bytes,
                             rung.memory_need_bytes, rung.parallel_slots, rung.largest_batch_size)
            )  # fmt: skip
    return by_z


def best_option(options: Sequence[RecipeOption]) -> tuple[RecipeOption, str]:
    """The option that fits the most trials on a GPU (without a GPU memory: the smallest need), then the quicker
    step (by step time where every option has one, else by FLOPs); and the reason in words."""
    timed = all(option.step_time_ms is not None for option in options)

    def speed(option: RecipeOption) -> float:
        value = option.step_time_ms if timed else option.flops
        return float("inf") if value is None else float(value)

    step = "step time" if timed else "FLOPs per step"
    if all(option.parallel_slots is not None for option in options):
        best = min(options, key=lambda o: (-(o.parallel_slots or 0), speed(o)))
        return best, f"most trials per GPU ({best.parallel_slots}), then the lowest {step}"
    if all(option.memory_need_bytes is not None for option in options):
        best = min(options, key=lambda o: (o.memory_need_bytes or 0, speed(o)))
        return best, f"the smallest memory need, then the lowest {step}"
    return min(options, key=speed), f"the lowest {step}"


def recipe_ladder(named: Sequence[tuple[str, Profile]], **options: Any) -> RecipeLadder:
    """The ladder over profiles of several recipes of one model (`options` as for `build_ladder`): the reference
    ladder is the first profile's, and each of its rungs goes to the recipe that fits the most trials per GPU."""
    profiles = [profile for _, profile in named]
    groups = by_recipe(profiles)
    for group in groups:
        if len(group) > 1:
            paths = ", ".join(name for name, profile in named if any(profile is other for other in group))
            raise LayerprofError(
                f"{paths} train with one recipe ({group[0].settings.recipe_label}); give one profile per recipe"
            )
    reference = profiles[0]
    if options.get("cost_kind") is None:
        options["cost_kind"] = default_cost(reference)
    ladder = build_ladder(reference, **options)
    by_z = _options(profiles, ladder)
    rungs = []
    for rung in ladder.rungs:
        best, reason = best_option(by_z[rung.trainable_layers])
        rungs.append(RecipeRung(rung.budget_index, rung.trainable_layers, by_z[rung.trainable_layers], best.recipe,
                                reason))  # fmt: skip
    recipes = [profile.settings.recipe_label for profile in profiles]
    failures = [
        RecipeFailure(profile.settings.recipe_label, name, z, _no_cell(profile, ladder.batch_size, z))
        for name, profile in named
        for z in by_z
        if not any(option.recipe == profile.settings.recipe_label for option in by_z[z])
    ]
    notes: list[str] = []
    if any(profile.settings.adapter != reference.settings.adapter for profile in profiles):
        notes.append(
            "adapters train other parameters than full training: a rung given to another adapter setting is another "
            "fidelity; measure its rank correlation (`layerprof correlate`) before relying on it"
        )
    return RecipeLadder(
        model=reference.model.spec,
        batch_size=ladder.batch_size,
        eta=ladder.eta,
        cost_kind=ladder.cost_kind,
        reference=recipes[0],
        recipes=recipes,
        gpu_memory_bytes=ladder.gpu_memory_bytes,
        rungs=rungs,
        most_trials=_most_trials(recipes, rungs),
        ladder=ladder,
        notes=notes,
        failures=failures,
    )


def _no_cell(profile: Profile, batch_size: int, z: int) -> str:
    """Why a profile offers no cell at a rung: the cell's own failure, or what the profile lacks."""
    rows = {row.trainable_layers: row for row in profile.rows if row.batch_size == batch_size}
    full = rows.get(profile.layer_count)
    if full is None or not full.ok:
        return f"no successful full-training cell (z={profile.layer_count}) at batch {batch_size}: its ladder needs one"
    row = rows.get(z)
    if row is None:
        return f"no cell at batch {batch_size}, z={z} in the profile"
    return f"the cell failed ({row.status}): {row.message or 'no message'}"


def _most_trials(recipes: Sequence[str], rungs: Sequence[RecipeRung]) -> str:
    """The recipe with the most trials per GPU over the rungs together (a rung it lacks counts none); without a
    GPU memory, the one that gives the most rungs."""

    def total(recipe: str) -> tuple[int, int]:
        slots = sum(o.parallel_slots or 0 for rung in rungs for o in rung.options if o.recipe == recipe)
        return slots, sum(rung.chosen == recipe for rung in rungs)

    return max(recipes, key=total)  # the first of equals: the reference where it ties


def ladder_for_paths(
    paths: Sequence[Path], correlation: CorrelationResult | None = None, **options: Any
) -> tuple[Ladder | RecipeLadder, list[str]]:
    """`ladder`'s answer: one profile's ladder (`ladder_for`), or over several profiles of one model the
    `RecipeLadder` (a correlation result and --batch-limits are for one recipe's ladder: refused then)."""
    if len(paths) == 1:
        return ladder_for(paths[0], correlation, **options)
    if correlation is not None or options.pop("batch_limits", None) is not None:
        raise LayerprofError("--correlation and --batch-limits take one PROFILE; give one recipe's profile")
    if options.pop("budget_steps", None) is not None:
        raise LayerprofError("--budget-steps takes one PROFILE; give one recipe's profile")
    options.pop("prices", None)  # --gpu gives the GPU's memory here; its dollars are one recipe's ladder's
    result = recipe_ladder([(str(path), load_profile(path)) for path in paths], **options)
    return result, result.notes


# ---------------------------------------------------------------- plan


@dataclass
class RecipePlanSummary:
    """One recipe's plan in a line: its rungs, the most trials a GPU holds at each, and what the ladder takes."""

    recipe: str
    rungs: list[int]
    trials_per_gpu: list[int]  # per rung: the most trials one GPU of the inventory holds at once
    makespan_seconds: float
    gpu_hours: float
    usd: float | None


@dataclass
class RecipeDeadline:
    """`plan --deadline` for one recipe and algorithm: the cheapest cluster that meets the deadline (the recipe's own
    plan's `DeadlineAnswer`), and whether it is the cheapest of every recipe and algorithm."""

    recipe: str
    answer: DeadlineAnswer
    cheapest: bool = False  # the lowest dollars held of every answer that meets the deadline (then the soonest)

    def to_dict(self) -> JsonDict:
        """The JSON form: the answer's fields beside the recipe."""
        return {"recipe": self.recipe, **asdict(self.answer), "cheapest": self.cheapest}


@dataclass
class RecipePlan:
    """`plan` over profiles of several recipes of one model: a plan per recipe and the one that ends soonest."""

    model: str
    recipes: list[RecipePlanSummary]
    chosen: str  # the recipe whose successive halving over the ladder ends soonest, then uses fewest GPU-hours
    most_trials: str  # the recipe whose GPUs hold the most trials at once over the rungs together
    plans: list[ClusterPlan]
    deadlines: list[RecipeDeadline] = field(default_factory=list)  # with --deadline: per recipe and algorithm
    failures: list[RecipeFailure] = field(default_factory=list)  # each recipe that has no plan, and why

    @property
    def best(self) -> ClusterPlan:
        """The chosen recipe's plan."""
        return next(plan for plan in self.plans if plan.recipe == self.chosen)

    @property
    def cheapest_deadline(self) -> RecipeDeadline | None:
        """The deadline's cheapest answer over every recipe and algorithm (None: no deadline, or none meets it)."""
        return next((deadline for deadline in self.deadlines if deadline.cheapest), None)

    def to_dict(self) -> JsonDict:
        """The JSON form, with its schema: the summaries, the deadline's answers, the failures and every recipe's
        whole plan."""
        cheapest = self.cheapest_deadline
        return {
            "schema": RECIPES_SCHEMA,
            "decision": "plan",
            "model": self.model,
            "chosen": self.chosen,
            "most_trials": self.most_trials,
            "recipes": [asdict(summary) for summary in self.recipes],
            "deadlines": [deadline.to_dict() for deadline in self.deadlines],
            "deadline_cheapest": None if cheapest is None else {"recipe": cheapest.recipe,
                                                                "algorithm": cheapest.answer.algorithm},
            "failures": [asdict(failure) for failure in self.failures],
            "plans": [plan.to_dict() for plan in self.plans],
        }  # fmt: skip


def plan_recipes(
    profiles: Sequence[Profile], inventory: Sequence[InventoryItem], **options: Any
) -> ClusterPlan | RecipePlan:
    """`plan`'s answer: the plan of one recipe's profiles (`plan_cluster`), or over several recipes of one model a
    plan per recipe (`options` for each) and the `RecipePlan` comparing them; with a deadline, each recipe's
    cheapest cluster per algorithm and the cheapest of all marked. A recipe that cannot be planned (a rung its
    profiles lack, a trial no GPU holds) is a failure with its reason and the others answer; an error only when no
    recipe can be planned."""
    from layerprof.fidelity.plan import plan_cluster

    if not profiles:
        raise LayerprofError("give at least one profile or estimate of the model")
    groups = by_recipe(profiles)
    if len(groups) == 1:
        return plan_cluster(profiles, inventory, **options)
    plans, failures = [], []
    for group in groups:
        label = group[0].settings.recipe_label
        try:
            plans.append(plan_cluster(group, inventory, **options))
        except LayerprofError as error:
            failures.append(RecipeFailure(label, label, None, str(error)))
    if not plans:
        raise nothing_answered("no recipe can be planned", failures)
    summaries = []
    for plan in plans:
        ladder = plan.schedule("ladder", "successive halving")
        most = [max(share.slots_per_gpu for share in placement.shares) for placement in ladder.brackets[0]]
        summaries.append(RecipePlanSummary(plan.recipe, plan.rungs, most, ladder.makespan_seconds, ladder.gpu_hours,
                                           ladder.usd))  # fmt: skip
    chosen = min(summaries, key=lambda s: (s.makespan_seconds, s.gpu_hours))
    most_trials = max(summaries, key=lambda s: sum(s.trials_per_gpu))
    deadlines = [RecipeDeadline(plan.recipe, answer) for plan in plans for answer in plan.deadlines]
    met = [deadline for deadline in deadlines if deadline.answer.met]
    if met:
        cheapest = min(met, key=lambda d: (d.answer.usd_held or 0.0, d.answer.makespan_seconds or 0.0,
                                           sum(int(item["count"]) for item in d.answer.gpus)))  # fmt: skip
        cheapest.cheapest = True
    return RecipePlan(plans[0].model, summaries, chosen.recipe, most_trials.recipe, plans, deadlines, failures)


def nothing_answered(what: str, failures: Sequence[RecipeFailure]) -> LayerprofError:
    """The one-line error where no recipe answers: the reason itself where every recipe failed for the same one
    (an input error), else each recipe's."""
    reasons = [failure.reason for failure in failures]
    if len(set(reasons)) == 1:
        return LayerprofError(reasons[0])
    return LayerprofError(f"{what} ({'; '.join(f'{f.name}: {f.reason}' for f in failures)})")


def chosen_plan(result: ClusterPlan | RecipePlan) -> ClusterPlan:
    """The plan to export: the one recipe's, or the chosen recipe's of a `RecipePlan`."""
    return result.best if isinstance(result, RecipePlan) else result


# ---------------------------------------------------------------- fit


@dataclass
class RecipeFitChoice:
    """At one z: each recipe's largest batch, and the recipe with the largest."""

    trainable_layers: int
    largest_batch_sizes: dict[str, int]  # recipe label -> largest batch (0: not even the smallest fits)
    chosen: str | None  # None: no recipe answers at this z


@dataclass
class RecipeFit:
    """`fit` over several recipes of one model: a fit per recipe, and per z the recipe with the largest batch."""

    model: str
    memory_bytes: int
    recipes: list[str]
    names: list[str]  # short names: "options" (the command's own recipe), then each --recipe as given
    choices: list[RecipeFitChoice]
    most_trials: str  # the recipe with the largest batches over every z together (most samples per GPU)
    fits: list[FitReport | None]  # per recipe, in `recipes`' order; None: the recipe failed as a whole
    failures: list[RecipeFailure] = field(default_factory=list)  # each recipe or (recipe, z) without an answer

    def to_dict(self) -> JsonDict:
        """The JSON form, with its schema: the choices, the failures and every recipe's whole fit."""
        return {
            "schema": RECIPES_SCHEMA,
            "decision": "fit",
            "model": self.model,
            "memory_bytes": self.memory_bytes,
            "recipes": self.recipes,
            "names": self.names,
            "most_trials": self.most_trials,
            "choices": [asdict(choice) for choice in self.choices],
            "failures": [asdict(failure) for failure in self.failures],
            "fits": [
                {"recipe": recipe, **(fit.to_dict() if fit is not None else {"error": self._whole_failure(recipe)})}
                for recipe, fit in zip(self.recipes, self.fits, strict=True)
            ],
        }

    def _whole_failure(self, recipe: str) -> str:
        return next(f.reason for f in self.failures if f.recipe == recipe and f.trainable_layers is None)


def fit_recipes(
    spec: str,
    options: ModelOptions,
    settings: SweepSettings,
    variants: Sequence[dict[str, Any]],  # --recipe KEY=VALUE: values of any settings field
    *args: Any,
    **kwargs: Any,
) -> FitReport | RecipeFit:
    """`fit`'s answer: `fit_model(spec, options, settings, *args, **kwargs)` alone without `variants`; with them,
    one fit per recipe — the settings' own first, then each variant's fields over them — and the `RecipeFit`
    comparing them. A recipe, or a z of one, that cannot be built or fitted (LoRA at a z whose layers hold no
    target module) is a failure with its reason and the others answer; an error only when nothing answers."""
    from layerprof.predict.fit import fit_model

    if not variants:
        return fit_model(spec, options, settings, *args, **kwargs)
    recipes = [settings, *(SweepSettings(**{**asdict_settings(settings), **variant}) for variant in variants)]
    labels = [recipe.recipe_label for recipe in recipes]
    if len(set(labels)) < len(labels):
        twice = next(label for label in labels if labels.count(label) > 1)
        raise LayerprofError(f"--recipe names one recipe twice ({twice}); give each recipe once")
    names = ["options", *(",".join(f"{key}={value}" for key, value in variant.items()) for variant in variants)]
    fits: list[FitReport | None] = []
    failures: list[RecipeFailure] = []
    kwargs["keep_failures"] = True  # a z a recipe cannot build is a failure of its own
    for recipe, label, name in zip(recipes, labels, names, strict=True):
        try:
            report = fit_model(spec, options, recipe, *args, **kwargs)
        except LayerprofError as error:
            fits.append(None)
            failures.append(RecipeFailure(label, name, None, str(error)))
            continue
        fits.append(report)
        failures += [RecipeFailure(label, name, r.trainable_layers, r.error) for r in report.results if r.error]
    answered = [(label, fit) for label, fit in zip(labels, fits, strict=True) if fit is not None]
    if not answered:
        raise nothing_answered("no recipe can be fitted", failures)
    choices = []
    zs = sorted({result.trainable_layers for _, report in answered for result in report.results})
    for z in zs:
        batches = {
            label: result.largest_batch_size
            for label, report in answered
            for result in report.results
            if result.trainable_layers == z and result.error is None
        }
        chosen = max(batches, key=lambda label: batches[label]) if batches else None
        choices.append(RecipeFitChoice(z, batches, chosen))
    most = max(labels, key=lambda label: sum(choice.largest_batch_sizes.get(label, 0) for choice in choices))
    model, memory = answered[0][1].model, answered[0][1].memory_bytes
    return RecipeFit(model, memory, labels, names, choices, most, fits, failures)


def asdict_settings(settings: SweepSettings) -> dict[str, Any]:
    """The settings' fields as keyword arguments of `SweepSettings` (tuples kept)."""
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}
