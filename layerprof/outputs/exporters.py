"""Runnable snippets that plug a ladder into NePS, Optuna, Ray Tune or SMAC3.

The libraries build their rungs themselves from a minimum, a maximum and eta. We hand them integer budget
indices 1, eta, eta^2, ... mapped to our trainable-layer counts, so their rungs are exactly ours. Where their
floating-point `log(max / min) / log(eta)` would fall just short of an integer (3^5 = 243 gives
4.999999999999999) and silently drop a rung, the maximum is raised by one: every library then still places
its rungs at (or, for top-down libraries, just above) 1, eta, eta^2, ..., and `layers_for_budget` maps each
budget to the largest rung not above it.

Each snippet says whether its library continues a trial at its next rung or restarts it, and continues where
the library lets it (`CONTINUE = True`): a promoted trial thaws more layers and trains on from the state its
previous rung returned, the rule `layerprof correlate --continue` records and `simulate` prices.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict

from layerprof.errors import LayerprofError
from layerprof.fidelity.ladder import Ladder

if TYPE_CHECKING:
    from layerprof.fidelity.plan import ClusterPlan
    from layerprof.fidelity.recipes import RecipeLadder


def library_max_budget(eta: int, rung_count: int) -> int:
    """The maximum budget to give a library so that its float log arithmetic yields `rung_count` rungs."""
    exact: int = eta ** (rung_count - 1)
    if rung_count == 1:
        return exact
    by_ratio = math.floor(math.log(exact) / math.log(eta)) + 1  # NePS, Ray, SMAC
    by_base = math.floor(math.log(exact, eta)) + 1  # Optuna
    return exact if by_ratio == by_base == rung_count else exact + 1


# The one contract of every exported script's training function (`ladder --export LIB --objective FILE.py:FN`,
# `plan --export ray --objective ...`); docs/api.md shows one written with layerprof's Python API.
EXPORT_CONTRACT = """train_and_evaluate(config, trainable_layers, steps, state) -> (loss, state)

config: the hyperparameters the library sampled (a dict: {"learning_rate": ...} in the exported search space).
trainable_layers: z, the rung's trainable-layer count: freeze all but the last z layers
    (layerprof.split_for_freezing, then layerprof.freeze).
steps: the rung's training steps on a joint ladder (`--budget-steps`), else None: your full budget.
state: None for a fresh run, or what this configuration's previous rung returned (continuation): keep its
    weights and the optimizer state of the layers it trained, thaw layers up to trainable_layers (their
    optimizer state starts fresh), and train on until `steps` steps in all (where steps is None, every rung's
    budget is the full one: train it again); keep the learning-rate schedule of the final budget, resumed at
    the step reached.
Returns the validation loss (lower is better) and the state a later rung continues from (picklable)."""

STAND_IN = '''def train_and_evaluate(config: dict, trainable_layers: int, steps, state=None) -> tuple:
    """Train and return (validation loss, state). `state` is None for a fresh run, or what this configuration's
    previous rung returned: then keep its weights and the optimizer state of the layers it trained, thaw layers
    up to `trainable_layers` (their optimizer state starts fresh), and train on until `steps` steps in all (where
    steps is None, every rung's budget is the full one: train it again); keep the learning-rate schedule of the
    final budget, resumed at the step reached."""
    # A stand-in so that this file runs as it is; replace it with real training (or export with --objective).
    loss = (math.log10(config["learning_rate"]) + 2.5) ** 2 + 1.0 / trainable_layers
    loss += abs(math.log2(config.get("batch_size", 64) / 64)) / 10
    continued_from = None if state is None else state["trainable_layers"]
    return loss, {"learning_rate": config["learning_rate"], "trainable_layers": trainable_layers,
                  "continued_from": continued_from, "batch_size": config.get("batch_size")}
'''


def _paragraph(text: str) -> str:
    """`text` wrapped for a generated file's docstring: at 110 columns, never inside a word or at a hyphen, so a
    path or command stays whole on its line for a user to copy."""
    return textwrap.fill(text, width=110, break_long_words=False, break_on_hyphens=False)


def _replace_note(objective: str | None) -> str:
    if objective is not None:
        return _paragraph(
            f"Training: your {objective}, called as `train_and_evaluate(config, trainable_layers, steps, state)` "
            "and returning (validation loss, state); it freezes all but the last `trainable_layers` layers with "
            "`layerprof.freeze`."
        )
    return _paragraph(
        "Replace `train_and_evaluate` with your training (or export with `--objective FILE.py:FN`): freeze all but "
        "the last `trainable_layers` layers (`layerprof.split_for_freezing`, `layerprof.freeze`), train for `steps` "
        "steps (None: your full budget), return the validation loss and what a later rung continues from."
    )


def parse_objective(spec: str) -> tuple[str, str]:
    """(target, function) of `--objective FILE.py:FN` or `package.module:FN`: the file (made absolute) or module
    and the function's name. Checked without running the user's code: the file exists and defines FN at its top
    level taking (config, trainable_layers, steps, state); a module can be found."""
    import ast
    import importlib.util

    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise LayerprofError(f"--objective {spec!r}: expected FILE.py:FUNCTION or package.module:FUNCTION")
    if not target.endswith(".py"):
        try:
            found = importlib.util.find_spec(target)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise LayerprofError(f"--objective {spec!r}: no module {target!r} to import (or give FILE.py:FUNCTION)")
        return target, name
    path = Path(target)
    if not path.is_file():
        raise LayerprofError(f"--objective {spec!r}: no file {target} (expected FILE.py:FUNCTION)")
    try:
        tree = ast.parse(path.read_text(), filename=target)
    except SyntaxError as error:
        raise LayerprofError(f"--objective {spec!r}: {target} is not valid Python (line {error.lineno})") from None
    functions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if name not in functions:
        listed = ", ".join(functions) or "none"
        raise LayerprofError(f"--objective {spec!r}: {target} defines no function {name} at its top level ({listed})")
    arguments = functions[name].args
    positional = len(arguments.posonlyargs) + len(arguments.args)
    if positional < 4 and arguments.vararg is None:
        raise LayerprofError(
            f"--objective {spec!r}: {name} takes {positional} positional argument(s); the contract is "
            f"{name}(config, trainable_layers, steps, state) -> (loss, state)"
        )
    return str(path.resolve()), name


def objective_source(spec: str) -> str:
    """The snippet's `train_and_evaluate`: the user's function named by `--objective`, loaded on its first call
    (in each process that calls it: Ray's workers too) with the standard library alone."""
    target, name = parse_objective(spec)
    return f'''# Your training function (--objective {spec}),
# loaded on its first call in every process that calls it.
OBJECTIVE = ({target!r}, {name!r})
_LOADED = {{}}


def train_and_evaluate(config: dict, trainable_layers: int, steps, state=None) -> tuple:
    """{name}(config, trainable_layers, steps, state) -> (validation loss, state), from OBJECTIVE."""
    if "function" not in _LOADED:
        import importlib
        import importlib.util
        import os
        import sys

        target, name = OBJECTIVE
        if target.endswith(".py"):
            sys.path.insert(0, os.path.dirname(target))  # the file's own imports of its neighbours
            spec = importlib.util.spec_from_file_location("layerprof_objective", target)
            module = importlib.util.module_from_spec(spec)
            sys.modules["layerprof_objective"] = module  # so that its classes pickle in a state
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        _LOADED["function"] = getattr(module, name)
    return _LOADED["function"](config, trainable_layers, steps, state)
'''


CONTINUATION = {
    "Optuna": "Optuna runs a trial in one objective call that reports every rung, so the trial continues: its "
    "state stays in the call.",
    "SMAC3": "SMAC3 restarts a configuration at every budget (it calls `train` anew); this snippet keeps each "
    "configuration's state at its highest budget so far and continues from it.",
    "NePS": "NePS restarts a promoted configuration as a new trial and names the trial it came from "
    "(`previous_pipeline_directory`); this snippet saves the state in each trial's directory and continues from it.",
    "Ray Tune": "Each rung is a Tune run, so Ray Tune restarts trials; a survivor restores the checkpoint its "
    "previous rung reported (Ray's own ASHA continues from checkpoints the same way, but keeps a trial's GPU "
    "share for its whole life).",
}


def _header(ladder: Ladder, library: str, objective: str | None = None) -> str:
    eta = int(ladder.eta)
    rungs = {rung.budget_index: rung.trainable_layers for rung in ladder.rungs}
    steps = {rung.budget_index: rung.steps for rung in ladder.rungs}
    fractions = {
        rung.budget_index: (round(1 / rung.parallel_slots, 4) if rung.parallel_slots else 1.0) for rung in ladder.rungs
    }
    max_batch = ladder.max_batch()
    limits_from = ladder.batch_limits_source or "none known: every batch is assumed to fit"
    continuation = _paragraph(
        f"Continuation: {CONTINUATION[library]} With CONTINUE = False every rung trains from scratch, as the paper "
        "evaluates layer freezing; `layerprof simulate` prices both ways on a study of your task."
    )
    training = STAND_IN if objective is None else objective_source(objective)
    return f'''"""{library} with layer freezing as the fidelity, from `layerprof ladder`.

Model {ladder.model}, batch {ladder.batch_size}, {ladder.device}; eta = {eta}, cost = {ladder.cost_kind}.
{ladder.fit_note}
{_replace_note(objective)}

{continuation}
"""

import math
import pickle
from pathlib import Path

ETA = {eta}
# budget index -> trainable layers z (the top rung is full training)
RUNGS = {rungs!r}
# budget index -> training steps (joint ladder), None where only layers vary
STEPS = {steps!r}
# budget index -> share of one GPU a trial of that rung needs (1 / parallel slots)
GPU_FRACTION = {fractions!r}
MAX_BUDGET = {library_max_budget(eta, len(rungs))}
# a promoted trial trains on from its previous rung instead of from scratch
CONTINUE = True
# budget index -> the largest batch that fits one GPU at that rung ({limits_from})
MAX_BATCH = {max_batch!r}
# the batch sizes searched where MAX_BATCH is known (some may fit no rung: the snippet never trains those)
BATCH_SIZES = {batch_sizes(max_batch)!r}


def fits(config: dict, budget: float) -> bool:
    """Whether the configuration's batch fits one GPU at the budget's rung; a trial that does not is never
    started (a configuration without a batch size, or a rung without a limit, fits)."""
    limit = MAX_BATCH.get(max(index for index in RUNGS if index <= budget + 1e-9))
    return limit is None or config.get("batch_size") is None or config["batch_size"] <= limit


def layers_for_budget(budget: float) -> int:
    """The rung a library's budget falls on: the largest budget index not above it."""
    return RUNGS[max(index for index in RUNGS if index <= budget + 1e-9)]


def steps_for_budget(budget: float):
    return STEPS[max(index for index in STEPS if index <= budget + 1e-9)]


{training}

def save_state(directory, state) -> None:
    """A rung's state where the next rung finds it (for a torch model: torch.save of the model's and the
    optimizer's state_dict, the step reached and the trainable-layer count)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / "layer_freezing_state.pkl").write_bytes(pickle.dumps(state))


def load_state(directory):
    """The state `save_state` left in `directory`, or None (nothing to continue from)."""
    path = Path(directory) / "layer_freezing_state.pkl" if directory else None
    return pickle.loads(path.read_bytes()) if path is not None and path.is_file() else None
'''


def export_optuna(ladder: Ladder, objective: str | None = None) -> str:
    """A runnable Optuna script: a HyperbandPruner over the ladder's rungs."""
    return (
        _header(ladder, "Optuna", objective)
        + """

# How it runs: each trial reports its loss at every rung (budget index) it trains and asks the pruner after
# every rung but the top one, continuing from the rung before (CONTINUE). HyperbandPruner gives each trial a
# bracket s, whose successive halving decides only at budgets ETA**s and above, so a trial starts at its
# bracket's first rung (from scratch) instead of training rungs its bracket ignores. The bracket comes from the
# pruner's own (private) `_get_bracket_id`; where an Optuna release lacks it, trials start at budget 1, as
# without brackets.

import optuna


def first_budget(trial: optuna.Trial) -> int:
    \"\"\"The lowest budget the trial's Hyperband bracket decides at (1 for plain successive halving).\"\"\"
    pruner = trial.study.pruner
    bracket_of = getattr(pruner, "_get_bracket_id", None)
    if not isinstance(pruner, optuna.pruners.HyperbandPruner) or bracket_of is None:
        return 1
    if not getattr(pruner, "_pruners", None):
        pruner._try_initialization(trial.study)  # the brackets exist once the pruner has seen the study
    return ETA ** bracket_of(trial.study, trial)


def objective(trial: optuna.Trial) -> float:
    config = {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)}
    if BATCH_SIZES:
        config["batch_size"] = trial.suggest_categorical("batch_size", BATCH_SIZES)
    start = first_budget(trial)
    state = None
    for budget in sorted(index for index in RUNGS if index >= start):
        if not fits(config, budget):  # its batch cannot fit this rung's z: pruned before it trains
            raise optuna.TrialPruned(f"batch {config['batch_size']} does not fit at budget {budget}")
        loss, state = train_and_evaluate(
            config, layers_for_budget(budget), steps_for_budget(budget), state if CONTINUE else None
        )
        trial.report(loss, step=budget)
        if budget == max(RUNGS):
            return loss  # full training is done: no pruning decision after the top rung
        if trial.should_prune():
            raise optuna.TrialPruned()
    return loss


def make_pruner(kind: str = "hyperband") -> optuna.pruners.BasePruner:
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=MAX_BUDGET, reduction_factor=ETA)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA, min_early_stopping_rate=0)


def main(n_trials: int = 50, pruner: str = "hyperband") -> optuna.Study:
    study = optuna.create_study(direction="minimize", pruner=make_pruner(pruner))
    study.optimize(objective, n_trials=n_trials)
    print("best", study.best_params)
    return study


if __name__ == "__main__":
    main()
"""
    )


def export_neps(ladder: Ladder, objective: str | None = None) -> str:
    """A runnable NePS script: the rungs as a fidelity parameter of the search space."""
    return (
        _header(ladder, "NePS", objective)
        + """

import inspect

import neps


# the loss NePS records for a configuration refused because its batch cannot fit the rung's z: finite and far
# above any loss, so that Hyperband never promotes it (a NePS error would stop the run or, with ignore_errors,
# hide real failures of the training function too)
REFUSED_LOSS = 1e6


class LayerFreezingSpace(neps.PipelineSpace):
    learning_rate = neps.Float(lower=1e-4, upper=1e-1, log=True)
    budget = neps.IntegerFidelity(lower=1, upper=MAX_BUDGET)  # a budget index, mapped to z below
    if BATCH_SIZES:
        batch_size = neps.Categorical(choices=tuple(BATCH_SIZES))


def evaluate_pipeline(
    pipeline_directory: Path, previous_pipeline_directory: Path | None, budget: int, **hyperparameters
) -> float | dict:
    \"\"\"NePS names this trial's directory and, for a promoted configuration, its previous trial's. A batch that
    cannot fit the budget's rung is refused before training, at no cost.\"\"\"
    config = dict(hyperparameters)
    if not fits(config, budget):
        refusal = f"batch {config['batch_size']} does not fit one GPU at budget {budget}"
        return {"objective_to_minimize": REFUSED_LOSS, "cost": 0.0, "info_dict": {"refused": refusal}}
    state = load_state(previous_pipeline_directory) if CONTINUE else None
    loss, state = train_and_evaluate(config, layers_for_budget(budget), steps_for_budget(budget), state)
    save_state(pipeline_directory, state)
    return loss


def evaluations(count: int) -> dict:
    \"\"\"The stopping argument under the name this NePS release takes (0.17 renamed it).\"\"\"
    accepted = inspect.signature(neps.run).parameters
    for name in ("total_evaluations_to_spend", "evaluations_to_spend", "max_evaluations_total"):
        if name in accepted:
            return {name: count}
    raise TypeError(f"this NePS release takes none of the known evaluation limits: {sorted(accepted)}")


def main(count: int = 50, root_directory: str = "neps_layer_freezing") -> None:
    neps.run(
        evaluate_pipeline=evaluate_pipeline,
        pipeline_space=LayerFreezingSpace(),
        root_directory=root_directory,
        optimizer=("hyperband", {"eta": ETA}),
        **evaluations(count),
    )


if __name__ == "__main__":
    main()
"""
    )


def export_ray(ladder: Ladder, objective: str | None = None) -> str:
    """A runnable Ray Tune script: memory-parallel successive halving, one Tune run per rung (the paper's Fig. 6b)."""
    return (
        _header(ladder, "Ray Tune", objective)
        + """
# Memory-parallel successive halving (the paper's Figure 6b). Each rung is one Tune run whose trials ask
# for GPU_FRACTION of a GPU, so that many low-rung trials share a GPU; the best 1/ETA move up a rung and
# restore the checkpoint they reported (CONTINUE). ASHA keeps a trial's resource request for its whole life,
# so a per-rung request needs rung-synchronous halving like this. On a cluster, checkpoints must be where every
# node can read them: give STORAGE a shared path (or a bucket URI).

import os
import tempfile

from ray import tune

STORAGE = os.path.abspath("layer_freezing_tune")


def train_rung(config: dict) -> None:
    budget = config["budget"]
    state = load_state(config["trial"]["checkpoint"]) if CONTINUE else None
    loss, state = train_and_evaluate(
        config["trial"]["hyperparameters"], layers_for_budget(budget), steps_for_budget(budget), state
    )
    with tempfile.TemporaryDirectory() as directory:
        save_state(directory, state)
        tune.report({"loss": loss}, checkpoint=tune.Checkpoint.from_directory(directory))


def memory_parallel_successive_halving(configs: list[dict]) -> dict:
    import ray

    if not ray.is_initialized():
        ray.init()
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0  # on a CPU-only cluster the GPU request is dropped
    survivors = [{"hyperparameters": config, "checkpoint": None} for config in configs]
    for budget in sorted(RUNGS):
        left_out = [s for s in survivors if not fits(s["hyperparameters"], budget)]
        if left_out:  # never launched: their batch cannot fit this rung's z
            print(f"rung budget {budget}: {len(left_out)} trial(s) left out, batch above {MAX_BATCH[budget]}",
                  flush=True)
            survivors = [s for s in survivors if fits(s["hyperparameters"], budget)]
        if not survivors:
            raise RuntimeError(f"no configuration's batch fits at z={RUNGS[budget]}: search smaller batches")
        continuing = sum(survivor["checkpoint"] is not None for survivor in survivors) if CONTINUE else 0
        print(f"rung budget {budget}: {len(survivors)} trial(s) at z={RUNGS[budget]}, "
              f"{continuing} continued from checkpoints", flush=True)
        resources = {"cpu": 1, "gpu": GPU_FRACTION[budget]} if has_gpu else {"cpu": 1}
        tuner = tune.Tuner(
            tune.with_resources(train_rung, resources),
            param_space={"budget": budget, "trial": tune.grid_search(survivors)},
            tune_config=tune.TuneConfig(metric="loss", mode="min"),
            run_config=tune.RunConfig(storage_path=STORAGE, name=f"rung-{budget}"),
        )
        results = sorted(tuner.fit(), key=lambda result: result.metrics["loss"])
        keep = max(1, len(survivors) // ETA) if budget != max(RUNGS) else 1
        following = min((index for index in RUNGS if index > budget), default=budget)
        # the best `keep` whose batch fits the next rung: one that cannot is passed over, never launched there
        eligible = [r for r in results if fits(r.config["trial"]["hyperparameters"], following)]
        if len(eligible) < len(results[:keep]) or eligible[:keep] != results[:keep]:
            print(f"rung budget {budget}: {len(results) - len(eligible)} trial(s) passed over, batch above "
                  f"{MAX_BATCH.get(following)} at budget {following}", flush=True)
        survivors = [
            {"hyperparameters": result.config["trial"]["hyperparameters"], "checkpoint": result.checkpoint.path}
            for result in (eligible or results)[:keep]
        ]
    return survivors[0]["hyperparameters"]


def main(seed: int | None = None) -> None:
    import random

    draw = random.Random(seed)
    candidates = [{"learning_rate": 10 ** draw.uniform(-4, -1)} for _ in range(ETA ** (len(RUNGS) - 1))]
    for candidate in candidates if BATCH_SIZES else []:
        candidate["batch_size"] = draw.choice(BATCH_SIZES)
    print("best", memory_parallel_successive_halving(candidates))


if __name__ == "__main__":
    main()
"""
    )


def export_smac(ladder: Ladder, objective: str | None = None) -> str:
    """A runnable SMAC3 script: its Hyperband intensifier with the ladder's rungs as budgets."""
    return (
        _header(ladder, "SMAC3", objective)
        + """

import hashlib
import json

from ConfigSpace import Categorical, Configuration, ConfigurationSpace, Float
from smac import MultiFidelityFacade, Scenario
from smac.intensifier.hyperband import Hyperband

space = ConfigurationSpace()
space.add(Float("learning_rate", (1e-4, 1e-1), log=True))
if BATCH_SIZES:
    space.add(Categorical("batch_size", BATCH_SIZES))
CHECKPOINTS = Path("smac3_output") / "layer_freezing_states"  # one directory per configuration and seed
# the cost SMAC records for a crashed trial (a batch refused because it cannot fit): finite, as SMAC's random
# forest cannot fit infinite costs; far above any loss, so that the model learns to avoid such batches
CRASH_COST = 1e6


def train(config: Configuration, seed: int = 0, budget: float = 1.0) -> float:
    \"\"\"SMAC asks for a configuration at a budget; continue from its state at a lower budget where there is one.
    A batch that cannot fit the budget's rung is refused before training: SMAC records the trial as crashed.\"\"\"
    if not fits(dict(config), budget):
        raise MemoryError(f"batch {config['batch_size']} does not fit one GPU at budget {budget}")
    key = hashlib.sha1(json.dumps([dict(config), seed], sort_keys=True, default=str).encode()).hexdigest()[:16]
    directory = CHECKPOINTS / key
    saved = load_state(directory) if CONTINUE else None
    state = saved["state"] if saved is not None and saved["budget"] < budget else None  # else: afresh
    loss, state = train_and_evaluate(dict(config), layers_for_budget(budget), steps_for_budget(budget), state)
    save_state(directory, {"budget": budget, "state": state})
    return loss


def main(n_trials: int = 50, output_directory: str = "smac3_output") -> None:
    global CHECKPOINTS
    CHECKPOINTS = Path(output_directory) / "layer_freezing_states"
    scenario = Scenario(
        space,
        n_trials=n_trials,
        min_budget=1,
        max_budget=MAX_BUDGET,
        deterministic=True,
        crash_cost=CRASH_COST,
        output_directory=Path(output_directory),
    )
    facade = MultiFidelityFacade(scenario, train, intensifier=Hyperband(scenario, eta=ETA), overwrite=True)
    print("best", facade.optimize())


if __name__ == "__main__":
    main()
"""
    )


def export_limits(ladder: Ladder, objective: str | None = None) -> str:
    """A plain JSON of each rung's limits for any other scheduler: z, steps, budget index, the largest batch that
    fits one GPU there and the share of a GPU a trial needs."""
    rungs = [
        {
            "budget_index": rung.budget_index,
            "trainable_layers": rung.trainable_layers,
            "steps": rung.steps,
            "max_batch_size": ladder.max_batch().get(rung.budget_index),
            "gpu_fraction": round(1 / rung.parallel_slots, 4) if rung.parallel_slots else 1.0,
            "memory_need_bytes": rung.memory_need_bytes,
        }
        for rung in ladder.rungs
    ]
    data = {
        "schema": "layerprof.limits/1",
        "model": ladder.model,
        "batch_size": ladder.batch_size,
        "eta": ladder.eta,
        "gpu_memory_bytes": ladder.gpu_memory_bytes,
        "max_batch_source": ladder.batch_limits_source,
        "rungs": rungs,
    }
    return json.dumps(data, indent=2) + "\n"


def batch_sizes(max_batch: dict[int, int]) -> list[int]:
    """The batch sizes a snippet searches where limits are known: five powers of two up to the first above the
    largest limit, so that the largest fit no rung and the next fit only the low ones; [] without limits."""
    if not max_batch:
        return []
    top = 1 << max(max_batch.values()).bit_length()
    return sorted({max(1, top >> shift) for shift in range(5)})


ExportName = Literal["neps", "optuna", "ray", "smac", "limits"]  # `ladder --export`: one entry each in EXPORTERS
EXPORTERS: dict[ExportName, Callable[[Ladder, str | None], str]] = {
    "neps": export_neps,
    "optuna": export_optuna,
    "ray": export_ray,
    "smac": export_smac,
    "limits": export_limits,
}


def export(ladder: Ladder | RecipeLadder, library: str, objective: str | None = None) -> str:
    """The snippet for `ladder --export LIBRARY`, training with the user's `--objective FILE.py:FN` (the contract
    is EXPORT_CONTRACT) or a stand-in; an unknown library is an input error."""
    if library not in EXPORTERS:
        raise LayerprofError(f"--export {library!r}: choose one of {', '.join(EXPORTERS)}")
    if not isinstance(ladder, Ladder):  # a ladder across recipes
        raise LayerprofError("--export takes one PROFILE: export the ladder of the recipe you will train with")
    if not float(ladder.eta).is_integer():
        raise LayerprofError(f"--export needs an integer eta (the libraries take one), got {ladder.eta:g}")
    if len(ladder.rungs) < 2:
        raise LayerprofError("the ladder has a single rung; there is nothing for a multi-fidelity optimiser to use")
    return EXPORTERS[library](ladder, objective)


# ---------------------------------------------------------------- a cluster plan as a Ray script


def _ray_resources(gpu_name: str) -> dict[str, float]:
    """The resource a trial asks for to land on that GPU kind: Ray's accelerator_type, or (MIG slices) a custom
    resource named after the slice, which its nodes must declare."""
    from layerprof.devices import GPU_KINDS

    gpu = GPU_KINDS[gpu_name]
    return {f"accelerator_type:{gpu.ray_accelerator}" if gpu.ray_accelerator else gpu.name: 0.001}


class RayShare(TypedDict):
    """One GPU kind's part of a rung in the Ray export: its trials and the resources each asks for."""

    gpu: str
    trials: int
    num_gpus: float
    resources: dict[str, float]


class RayRung(TypedDict):
    """One rung of the Ray export's schedule."""

    trainable_layers: int
    steps: int
    configs: int
    shares: list[RayShare]


def export_plan_ray(plan: ClusterPlan, objective: str | None = None) -> str:
    """Successive halving over the plan's ladder on a Ray cluster: each rung's trials ask for the rung's GPU kind
    and 1/(trials per GPU) of a GPU, so that Ray packs them as the plan does. Training is the user's
    `--objective` (EXPORT_CONTRACT; every rung from scratch: the plan restarts trials) or a stand-in."""
    schedule = plan.schedule("ladder", "successive halving")
    rungs: list[RayRung] = [
        {
            "trainable_layers": p.trainable_layers,
            "steps": p.steps,
            "configs": p.configs,
            "shares": [
                {
                    "gpu": share.gpu,
                    "trials": share.trials,
                    "num_gpus": math.floor(10_000 / share.trials_per_gpu) / 10_000,  # rounded down: they still fit
                    "resources": _ray_resources(share.gpu),
                }
                for share in p.shares
            ],
        }
        for p in schedule.brackets[0]
    ]
    custom = sorted(
        {name for rung in rungs for share in rung["shares"] for name in share["resources"] if ":" not in name}
    )
    declare = (
        f"\nMIG slices have no Ray label: start their nodes with --resources declaring {', '.join(custom)} "
        "(one per slice).\n"
        if custom
        else ""
    )
    listed = "\n".join(f"    {rung!r}," for rung in rungs)
    training = STAND_IN if objective is None else objective_source(objective)
    return f'''"""Successive halving with layer freezing on a Ray cluster, rungs placed by `layerprof plan`.

Model {plan.model}, batch {plan.batch_size}; eta = {plan.eta:g}, {plan.configs} configurations,
{plan.budget_steps} steps at the full budget. Planned makespan {schedule.makespan_seconds / 3600:.3g} h,
{schedule.gpu_hours:.3g} GPU-hours.{declare}
{_replace_note(objective)}
Every rung trains from scratch (state None). Run: python this.py [ADDRESS]
"""

import math
import random
import sys

import ray

ETA = {plan.eta:g}
# per rung: trainable layers, steps, trials, and how the trials are shared among GPU kinds: how many run on
# each kind, the share of a GPU each asks for, and the resource that puts it on that kind
RUNGS = [
{listed}
]


{training}

def sample_config(rng: random.Random) -> dict:
    return {{"learning_rate": 10 ** rng.uniform(-4, -1)}}


def trial(config: dict, trainable_layers: int, steps: int) -> float:
    loss, _state = train_and_evaluate(config, trainable_layers, steps, None)
    return loss


def main(address: str | None = None, seed: int = 0) -> dict:
    """Sample the configurations, run each rung on its GPU kind, keep the best 1/ETA; the winner is returned."""
    if not ray.is_initialized():
        ray.init(address=address)
    remote = ray.remote(trial)
    rng = random.Random(seed)
    survivors = [sample_config(rng) for _ in range(RUNGS[0]["configs"])]
    for rung in RUNGS:
        survivors = survivors[: rung["configs"]]
        kinds = [share for share in rung["shares"] for _ in range(share["trials"])]  # the plan's split
        futures = [
            remote.options(num_cpus=1, num_gpus=share["num_gpus"], resources=share["resources"]).remote(
                config, rung["trainable_layers"], rung["steps"]
            )
            for config, share in zip(survivors, kinds)
        ]
        losses = ray.get(futures)
        order = sorted(range(len(survivors)), key=lambda i: losses[i])
        survivors = [survivors[i] for i in order]
        where = ", ".join(f"{{share['trials']}} on {{share['gpu']}}" for share in rung["shares"])
        print(f"z={{rung['trainable_layers']}}: {{len(losses)}} trials ({{where}}), best loss {{losses[order[0]]:.4g}}")
    return survivors[0]


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else None))
'''
