"""Every exported snippet, run as a user runs it against the HPO library's real release: every budget the
library asks for maps onto a ladder rung, one rung per distinct budget, and every rung is asked for; and a
promoted trial continues from its own configuration's state at a lower rung (with CONTINUE), or never.

Optuna, SMAC3 and Ray Tune share layerprof's environment (the dev extra); NePS, whose pins clash with
layerprof's, runs in an environment of its own (tests/hpo/environments.py).
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from layerprof.fidelity.ladder import Ladder, build_ladder
from layerprof.outputs.exporters import export, export_plan_ray
from tests.conftest import bare_profile
from tests.fidelity.test_ladder import geometric_ladder
from tests.hpo.environments import EnvironmentUnavailable, python_for

RUNNER = Path(__file__).parents[1] / "hpo" / "snippet_runner.py"


@pytest.fixture(scope="session")
def neps_python() -> Path:
    try:
        return python_for("neps")
    except EnvironmentUnavailable as error:
        pytest.skip(str(error))


def snippet_job(
    library: str, rung_count: int, folder: Path, continued: bool = True, limits: list[int] | None = None,
    objective: str | None = None, eta: int = 3, ladder: Ladder | None = None, **arguments: object,
) -> dict:  # fmt: skip
    """The snippet of `ladder` (default `geometric_ladder(rung_count, eta)`) written into `folder`, as a job of
    tests/hpo/snippet_runner.py: its `main(**arguments)` runs in `folder` and its record goes to
    `folder/record.json`. `limits`: each rung's largest batch (lowest rung first), as `ladder --batch-limits`
    attaches them."""
    ladder = ladder or geometric_ladder(rung_count, eta)
    for rung, limit in zip(ladder.rungs, limits or [], strict=False):
        rung.batch_limit = limit
    folder.mkdir(parents=True, exist_ok=True)
    snippet = folder / f"{library}_snippet.py"
    snippet.write_text(export(ladder, library, objective))
    record = folder / "record.json"
    return {"snippet": str(snippet), "record": str(record), "cwd": str(folder), "arguments": arguments,
            "continue": continued}  # fmt: skip


def run_jobs(python: Path | str, jobs: list[dict], ray_address: str | None = None) -> list[dict]:
    """Each job's record (budgets asked, training calls and, under "stdout", what the run printed), the jobs run one
    after another in one process of `python`. `ray_address`: the Ray cluster the snippets' `ray.init()` join
    (RAY_ADDRESS), as a user's would on a cluster."""
    listed = Path(jobs[0]["cwd"]) / "jobs.json"
    listed.write_text(json.dumps(jobs))
    environment = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    if ray_address:
        environment["RAY_ADDRESS"] = ray_address
    done = subprocess.run([str(python), str(RUNNER), str(listed)], capture_output=True, text=True, timeout=900,
                          env=environment)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return [json.loads(Path(job["record"]).read_text()) for job in jobs]


def run_snippet(
    python: Path | str, library: str, rung_count: int, tmp_path: Path, ray_address: str | None = None,
    **options: object,
) -> dict:  # fmt: skip
    """The record of one snippet run in a process of its own (`snippet_job`'s options)."""
    return run_jobs(python, [snippet_job(library, rung_count, tmp_path, **options)], ray_address)[0]


def assert_budgets_are_the_rungs(record: dict) -> None:
    rungs = {int(index): z for index, z in record["rungs"].items()}
    budgets = sorted({budget for budget, _ in record["asked"]})
    asked_layers = [z for _, z in sorted({(b, z) for b, z in record["asked"]})]
    # one distinct budget per rung, none dropped or merged (243 must not look like less than 3^5)...
    assert len(budgets) == len(rungs), budgets
    # ...each the rung's index or just above it, as top-down libraries compute them...
    for budget, index in zip(budgets, sorted(rungs), strict=True):
        assert index <= budget < index * 3, (budget, index)
    # ...and every rung trained
    assert asked_layers == [rungs[index] for index in sorted(rungs)]


def assert_promotions_continue(record: dict, from_the_rung_below: bool = False) -> list:
    """Some training calls continue, each from a state of the same configuration at a lower rung; the
    continued calls are returned."""
    continued = [call for call in record["trained"] if call[1] is not None]
    assert continued, record["trained"]
    below = dict(itertools.pairwise(sorted(record["rungs"].values())))  # z -> the next z up
    for z, previous, same_configuration in continued:
        assert same_configuration is True and previous < z, (z, previous)
        if from_the_rung_below:
            assert below[previous] == z, (z, previous)
    return continued


@pytest.mark.parametrize(("rung_count", "trials"), [(3, 30), (6, 60)])
def test_optuna_snippet(tmp_path: Path, rung_count: int, trials: int) -> None:
    record = run_snippet(sys.executable, "optuna", rung_count, tmp_path, n_trials=trials)
    assert_budgets_are_the_rungs(record)
    # one objective call per trial, which starts afresh once and continues through every later rung it trains
    continued = assert_promotions_continue(record, from_the_rung_below=True)
    assert len(record["trained"]) - len(continued) == trials


def test_optuna_snippet_restarts_every_rung_without_continue(tmp_path: Path) -> None:
    record = run_snippet(sys.executable, "optuna", 3, tmp_path, continued=False, n_trials=30)
    assert_budgets_are_the_rungs(record)
    assert all(previous is None for _, previous, _ in record["trained"])
    assert len(record["trained"]) > 30  # some trials were promoted, and trained their next rung from scratch


# 3 rungs, 40 trials, past the end of SMAC's first Hyperband bracket (9 + 3 + 1): every budget SMAC asks for is a
# rung's, and promotions continue. 6 rungs (3^5 = 243 looks like less than five powers of 3 to a float log): the
# budgets SMAC derives for its brackets (test_smac_derives_one_budget_per_rung_at_six_rungs); running to the top rung
# took 370 trials (its first bracket: 243 + 81 + 27 + 9 + 3 + 1), 21 s, and runs the same code as 3 rungs.
@pytest.mark.parametrize(("rung_count", "trials"), [(3, 40)])
def test_smac_snippet(tmp_path: Path, rung_count: int, trials: int) -> None:
    record = run_snippet(sys.executable, "smac", rung_count, tmp_path, n_trials=trials, output_directory="smac")
    assert_budgets_are_the_rungs(record)
    assert_promotions_continue(record)


def test_smac_derives_one_budget_per_rung_at_six_rungs(tmp_path: Path) -> None:
    """A run of the 6-rung snippet for one trial: SMAC's Hyperband logs, as it starts, the budgets of every bracket's
    stages, the ones it asks trials at (`_budgets_in_stage`); its first bracket's are one per ladder rung (244 / 3^k,
    MAX_BUDGET being 243 + 1), each mapped onto its rung's z by the snippet's layers_for_budget. That maps a budget to
    the largest whole budget index not above it, so a budget maps as its whole part does (the runner's table)."""
    record = run_snippet(sys.executable, "smac", 6, tmp_path, n_trials=1, output_directory="smac")
    logged = re.search(r"Budgets in stage:\n[^\n]*--- Bracket 0: \[([^\]]+)\]", record["stdout"])
    assert logged, record["stdout"][-3000:]
    budgets = [float(budget) for budget in logged.group(1).split(",")]
    assert budgets == pytest.approx([244 / 3**k for k in range(5, -1, -1)])
    asked = [[budget, record["layers_for_budget"][str(int(budget + 1e-9))]] for budget in budgets]
    assert_budgets_are_the_rungs({"rungs": record["rungs"], "asked": asked})
    assert "--- Bracket 0: [243, 81, 27, 9, 3, 1]" in record["stdout"]  # configurations per stage: 364 trials


NEPS_RUNG_COUNTS = (3, 5, 6)


def neps_ladder(rung_count: int):  # noqa: ANN201
    """A ladder of `rung_count` rungs at eta 3 whose brackets the configs table shows."""
    costs = {z: 3.0 ** (z - 1) for z in range(1, rung_count + 1)}
    return build_ladder(bare_profile_from(costs), eta=3, configs=27)


@pytest.fixture(scope="session")
def neps_runs(neps_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every NePS run of this module, one after another in one process of NePS's environment (importing NePS is most
    of a short run): name -> its record, with the folder it ran in under "folder". The tests of each run say what
    it is for."""
    root = tmp_path_factory.mktemp("neps-runs")
    objective, _ = user_objective(root / "objective")
    jobs = {
        "snippet": snippet_job("neps", 3, root / "snippet", count=30, root_directory="neps"),
        "refuses": snippet_job("neps", 3, root / "refuses", limits=LIMITS, count=40, root_directory="neps"),
        "objective": snippet_job("neps", 3, root / "objective", objective=objective, count=30, root_directory="neps"),
        **{
            f"derived-{rung_count}": snippet_job("neps", rung_count, root / f"derived-{rung_count}",
                                                 ladder=neps_ladder(rung_count), count=1, root_directory="neps")
            for rung_count in NEPS_RUNG_COUNTS
        },
    }  # fmt: skip
    records = run_jobs(neps_python, list(jobs.values()))
    return {
        name: {**record, "folder": Path(job["cwd"])} for (name, job), record in zip(jobs.items(), records, strict=True)
    }


# 3 rungs, 30 evaluations: NePS's three Hyperband brackets (9 + 3 + 1, 3 + 1 and 3 evaluations, each ending on
# the top rung) and ten of the next: every budget NePS asks for is a rung's, and each promotion continues from the
# rung below. Deeper ladders (6 rungs: 3^5 = 243 looks like less than five powers of 3 to a float log) are checked
# on the budgets NePS derives for them (test_neps_derives_one_budget_per_rung): the same code asks for them, and
# the promotions run the same code as here. A 6-rung run to its top rung took 364 evaluations (243 + 81 + 27 + 9 +
# 3 + 1), 50 s of NePS's own bookkeeping, which grows with every trial.
def test_neps_snippet(neps_runs: dict[str, dict]) -> None:
    record = neps_runs["snippet"]
    assert_budgets_are_the_rungs(record)
    assert_promotions_continue(record, from_the_rung_below=True)


def neps_derived(run: dict) -> dict:
    """What NePS recorded of the run it set up (optimizer_info.yaml, "derived": the rung budgets and the bracket
    layouts its Hyperband works with), each rung's budget with the z the snippet maps it to under "asked"."""
    import yaml

    derived = yaml.safe_load((run["folder"] / "neps" / "optimizer_info.yaml").read_text())["derived"]
    budgets = derived["rung_to_fidelity"]
    return {
        "rungs": run["rungs"],
        "asked": [[float(budgets[rung]), run["layers_for_budget"][str(budgets[rung])]] for rung in sorted(budgets)],
        "rung_to_fidelity": {str(rung): budget for rung, budget in budgets.items()},
        "brackets": [[layout[rung] for rung in sorted(layout)] for layout in derived["bracket_layouts"]],
    }


@pytest.mark.parametrize("rung_count", NEPS_RUNG_COUNTS)
def test_neps_derives_one_budget_per_rung(neps_runs: dict[str, dict], rung_count: int) -> None:
    """A run of the exported snippet for one evaluation: the budgets NePS's Hyperband samples and promotes at are
    the ones it derives when the run starts (NePS sets a trial's fidelity to its rung's budget), one per ladder rung,
    each mapped onto its rung's z by the snippet's own layers_for_budget, none dropped by NePS's float log (6 rungs:
    MAX_BUDGET 244 is 243 + 1)."""
    answer = neps_derived(neps_runs[f"derived-{rung_count}"])
    assert_budgets_are_the_rungs(answer)
    if rung_count == 6:  # int(244 / 3^k), k = 5 .. 0; NePS's first bracket holds 364 evaluations
        assert answer["rung_to_fidelity"] == {"0": 1, "1": 3, "2": 9, "3": 27, "4": 81, "5": 244}
        assert answer["brackets"][0] == [243, 81, 27, 9, 3, 1]


def test_ray_snippet(ray_cluster, tmp_path: Path) -> None:
    """Ray runs the trials in worker processes: the snippet's own report says which rungs it trained, and the
    checkpoints each rung reported say what each trial continued from. Three rungs at eta 2 (budgets 1, 2, 4): 4
    trials, the best 2 continued, the best of those continued again; every Tune trial starts a worker process, and
    eta 3 took 9 + 3 + 1 of them for the same halving."""
    output = run_snippet(sys.executable, "ray", 3, tmp_path, ray_address=ray_cluster.address, eta=2)["stdout"]
    rungs = re.findall(r"rung budget (\d+): (\d+) trial\(s\) at z=(\d+), (\d+) continued from checkpoints", output)
    assert rungs == [("1", "4", "1", "0"), ("2", "2", "2", "2"), ("4", "1", "3", "1")], output
    states = {
        rung: sorted(
            pickle.loads(path.read_bytes())["continued_from"] or 0
            for path in (tmp_path / "layer_freezing_tune" / f"rung-{rung}").rglob("layer_freezing_state.pkl")
        )
        for rung in (1, 2, 4)
    }
    assert states == {1: [0] * 4, 2: [1, 1], 4: [2]}, states


@pytest.mark.parametrize("rung_count", NEPS_RUNG_COUNTS)
def test_configs_table_shows_the_brackets_neps_runs(neps_runs: dict[str, dict], rung_count: int) -> None:
    """The ladder's NePS brackets are the layout NePS runs for the snippet exported from it."""
    ladder = neps_ladder(rung_count)
    ours = [b.configs_per_rung for b in (ladder.hyperband_neps or ladder.hyperband)]
    assert ours == neps_derived(neps_runs[f"derived-{rung_count}"])["brackets"]


def bare_profile_from(costs: dict[int, float]):  # noqa: ANN201
    from layerprof.profile import Row

    rows = [
        Row(8, z, "ok", trainable_params=z, step_time_ms=c, flops=int(c * 1e9), peak_memory_bytes=z)
        for z, c in costs.items()
    ]
    return bare_profile(rows, max(costs))


# ---------------------------------------------------------------- what the snippets hold (no library runs)


def snippet_value(source: str, name: str) -> object:
    """The literal a snippet binds to NAME at the top level."""
    import ast

    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == [name]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"the snippet binds no {name}")


def test_gpu_fraction_is_one_over_the_slots_to_four_places() -> None:
    """z=1 needs 1 + 0.75 GiB (the context reserve): 3 fit in 5.25 GiB (a third of the GPU each); z=2 needs
    3.75 GiB: one; z=3 (7.75 GiB) does not fit and asks for a whole GPU."""
    from tests.fidelity.test_ladder import GIB, synthetic_profile

    profile = synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0}, memory={1: GIB, 2: 3 * GIB, 3: 7 * GIB})
    ladder = build_ladder(profile, eta=3, gpu_memory=5 * GIB + GIB // 4)
    assert [r.parallel_slots for r in ladder.rungs] == [3, 1, 0]
    assert snippet_value(export(ladder, "ray"), "GPU_FRACTION") == {1: 0.3333, 3: 1.0, 9: 1.0}
    ladder = build_ladder(profile, eta=3, gpu_memory=16 * GIB)  # 9, 4 and 2 slots
    assert snippet_value(export(ladder, "optuna"), "GPU_FRACTION") == {1: 0.1111, 3: 0.25, 9: 0.5}


def test_two_rungs_are_enough_to_export() -> None:
    source = export(build_ladder(bare_profile_from({1: 1.0, 2: 3.0}), eta=3), "optuna")
    assert snippet_value(source, "RUNGS") == {1: 1, 3: 2} and snippet_value(source, "MAX_BUDGET") == 3


def test_plan_script_shares_a_gpu_among_the_trials_the_plan_puts_on_it() -> None:
    """3 trials busy 20% of their step share one H100 (tests/measure/test_cluster.py): each asks for 1/3 of it,
    rounded down to 0.3333 so that three still fit, and for the H100's Ray accelerator label."""
    from layerprof.fidelity.plan import plan_cluster
    from layerprof.measure.cluster import parse_inventory
    from tests.measure.test_cluster import h100_profile

    plan = plan_cluster([h100_profile(0.2)], parse_inventory("2xH100"), eta=3, configs=3, budget_steps=1000)
    source = export_plan_ray(plan)
    on_h100 = {"resources": {"accelerator_type:H100": 0.001}}
    assert snippet_value(source, "RUNGS") == [
        {"trainable_layers": 1, "steps": 1000, "configs": 3,
         "shares": [{"gpu": "H100", "trials": 3, "num_gpus": 0.3333, **on_h100}]},
        {"trainable_layers": 3, "steps": 1000, "configs": 1,
         "shares": [{"gpu": "H100", "trials": 1, "num_gpus": 1.0, **on_h100}]},
    ]  # fmt: skip
    assert "MIG slices" not in source  # a labelled GPU needs no custom resource


def test_plan_script_asks_mig_slices_for_a_resource_their_nodes_declare() -> None:
    from layerprof.fidelity.plan import plan_cluster
    from layerprof.measure.cluster import parse_inventory
    from tests.measure.test_cluster import H100_NAME, gpu_profile

    profile = gpu_profile(H100_NAME, 79.6, {1: 10.0, 2: 20.0, 3: 30.0}, {1: 1.0, 2: 2.0, 3: 3.0})
    plan = plan_cluster([profile], parse_inventory("1xH100-1g.10gb"), eta=3, configs=3, budget_steps=100)
    source = export_plan_ray(plan)
    shares = [share for rung in snippet_value(source, "RUNGS") for share in rung["shares"]]
    assert [share["resources"] for share in shares] == [{"H100-1g.10gb": 0.001}] * 2
    assert "start their nodes with --resources declaring H100-1g.10gb (one per slice)" in source


# ---------------------------------------------------------------- batches that cannot fit are never trained

LIMITS = [300, 200, 100]  # the largest batch at z = 1, 2, 3: the snippets search 32, 64, 128, 256 and 512


def assert_no_batch_beyond_its_rung(record: dict) -> None:
    limit_of = {record["rungs"][index]: limit for index, limit in record["max_batch"].items()}
    assert record["batches"], record
    for z, batch in record["batches"]:
        assert batch is not None and batch <= limit_of[z], (z, batch)


def test_optuna_never_trains_a_batch_that_cannot_fit_its_rung(tmp_path: Path) -> None:
    """The study's space holds batches of 512 (fits no rung) and 256 (z=1 only); Optuna suggests them, and the
    snippet prunes those trials before they train: no training call above its rung's limit."""
    record = run_snippet(sys.executable, "optuna", 3, tmp_path, limits=LIMITS, n_trials=40, pruner="sh")
    assert record["max_batch"] == {"1": 300, "3": 200, "9": 100}
    assert_no_batch_beyond_its_rung(record)
    suggested = {batch for batch, _ in record["suggested"]}
    assert suggested == {32, 64, 128, 256, 512}
    assert all(state == "PRUNED" for batch, state in record["suggested"] if batch == 512)
    assert 512 not in {batch for _, batch in record["batches"]}


def test_ray_never_launches_a_batch_that_cannot_fit_its_rung(ray_cluster, tmp_path: Path) -> None:
    """Memory-parallel halving on Ray Tune over two rungs (batch limits 300 at z=1, 100 at z=2). Seed 5 draws
    batches 512, 32 and 256: the 512 is left out of the first rung's Tune run, and only the 32 may go on to z=2
    (the 256 is passed over there whatever its loss). Every checkpoint holds a batch within its rung's limit."""
    output = run_snippet(sys.executable, "ray", 2, tmp_path, limits=[300, 100], seed=5,
                         ray_address=ray_cluster.address)["stdout"]  # fmt: skip
    assert "rung budget 1: 1 trial(s) left out, batch above 300" in output, output
    assert "rung budget 1: 2 trial(s) at z=1" in output and "rung budget 3: 1 trial(s) at z=2" in output, output
    tune = tmp_path / "layer_freezing_tune"
    states = [pickle.loads(path.read_bytes()) for path in tune.rglob("layer_freezing_state.pkl")]
    assert sorted((s["trainable_layers"], s["batch_size"]) for s in states) == [(1, 32), (1, 256), (2, 32)]


def test_smac_refuses_a_batch_that_cannot_fit_as_a_crashed_trial(tmp_path: Path) -> None:
    record = run_snippet(sys.executable, "smac", 3, tmp_path, limits=LIMITS, n_trials=20, output_directory="smac")
    assert_no_batch_beyond_its_rung(record)


def test_neps_refuses_a_batch_that_cannot_fit_before_it_trains(neps_runs: dict[str, dict]) -> None:
    """NePS samples batches of 512 (fits no rung) and 256 (z=1 only) from the space; the objective refuses them at
    the rungs they cannot fit, with a loss Hyperband never promotes, and trains only batches within the limit. (3
    rungs, batch limits LIMITS, 40 evaluations.)"""
    record = neps_runs["refuses"]
    assert record["max_batch"] == {"1": 300, "3": 200, "9": 100}
    assert_no_batch_beyond_its_rung(record)
    refused = {batch for batch, _, fits in record["checked"] if not fits}
    assert 512 in refused, record["checked"]
    assert 512 not in {batch for _, batch in record["batches"]}
    assert {batch for batch, _, _ in record["checked"]} <= {32, 64, 128, 256, 512}
    assert len(record["checked"]) == len(record["trained"]) + sum(1 for *_, fits in record["checked"] if not fits)


def test_the_limits_export_is_plain_json_per_rung() -> None:
    ladder = geometric_ladder(3, 3)
    for rung, limit in zip(ladder.rungs, LIMITS, strict=True):
        rung.batch_limit = limit
    data = json.loads(export(ladder, "limits"))
    assert data["schema"] == "layerprof.limits/1"
    assert [(r["budget_index"], r["trainable_layers"], r["max_batch_size"]) for r in data["rungs"]] == [
        (1, 1, 300), (3, 2, 200), (9, 3, 100),
    ]  # fmt: skip


def test_ladder_takes_each_rungs_batch_limit_from_fits_answers(tmp_path: Path) -> None:
    """`ladder --batch-limits FIT_JSON`: a rung's limit is fit's answer at its z, else at the nearest larger z fit
    searched (that batch fits the rung too); a rung above every z searched is refused."""
    from typer.testing import CliRunner

    from layerprof.cli.commands import app
    from layerprof.profile import save_profile
    from tests.cli.test_cli import assert_one_line_error
    from tests.measure.test_cluster import h100_profile

    profile = save_profile(h100_profile(), tmp_path / "h100.json")  # rungs z=1 and z=3
    fit = tmp_path / "fit.json"
    answers = [{"trainable_layers": 2, "largest_batch_size": 300}, {"trainable_layers": 3, "largest_batch_size": 100}]
    fit.write_text(json.dumps({"memory_bytes": 80 * 2**30, "results": answers}))
    runner = CliRunner()
    result = runner.invoke(app, ["ladder", str(profile), "--batch-limits", str(fit), "--export", "limits"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(r["trainable_layers"], r["max_batch_size"]) for r in data["rungs"]] == [(1, 300), (3, 100)]
    assert data["max_batch_source"] == f"layerprof fit ({fit}), 80.0 GiB"
    snippet = runner.invoke(app, ["ladder", str(profile), "--batch-limits", str(fit), "--export", "optuna"]).stdout
    assert "MAX_BATCH = {1: 300, 3: 100}" in snippet and "BATCH_SIZES = [32, 64, 128, 256, 512]" in snippet
    fit.write_text(json.dumps({"results": [{"trainable_layers": 1, "largest_batch_size": 300}]}))
    assert_one_line_error(runner.invoke(app, ["ladder", str(profile), "--batch-limits", str(fit)]),
                          "fit searched z up to 1, the ladder's rung z=3 is above it")  # fmt: skip


# ---------------------------------------------------------------- --objective: the user's training in the snippet

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_training.py"


def test_the_example_trains_its_own_model_through_optuna_with_layerprof_freezing(
    runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/own_training.py as its docstring runs it: estimate, ladder --export optuna --objective, then the
    script; every rung trains the digits MLP with exactly the last z of its 4 layers, and the study learns."""
    import importlib.util

    import optuna

    from layerprof.cli.commands import app

    profile = tmp_path / "digits.json"
    estimated = runner.invoke(app, ["estimate", f"{EXAMPLE}:digits_model", "--input-shape", "64", "--num-classes",
                                    "10", "--target", "cpu", "--batch-sizes", "64", "--out", str(profile)])  # fmt: skip
    assert estimated.exit_code == 0, estimated.output
    exported = runner.invoke(app, ["ladder", str(profile), "--eta", "2", "--export", "optuna", "--objective",
                                   f"{EXAMPLE}:train_and_evaluate"])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    script = tmp_path / "digits_optuna.py"
    script.write_text(exported.output)
    assert snippet_value(exported.output, "RUNGS") == {1: 1, 2: 2, 4: 4}  # predicted step times, eta 2
    assert snippet_value(exported.output, "OBJECTIVE") == (str(EXAMPLE), "train_and_evaluate")

    spec = importlib.util.spec_from_file_location("digits_optuna", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trained: list[tuple[int, int, int | None]] = []
    train = module.train_and_evaluate

    def recording(config: dict, trainable_layers: int, steps, state=None) -> tuple:
        loss, new_state = train(config, trainable_layers, steps, state)
        trained.append((trainable_layers, new_state["trained_params"], state and state["trainable_layers"]))
        return loss, new_state

    monkeypatch.setattr(module, "train_and_evaluate", recording)
    # Hyperband's brackets follow the study's name (random by default), the sampler its seed: both fixed here
    create_study = optuna.create_study
    monkeypatch.setattr(
        module.optuna,
        "create_study",
        lambda **options: create_study(study_name="digits", sampler=optuna.samplers.TPESampler(seed=0), **options),
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = module.main(n_trials=4)
    # z = 1 trains the head (64 x 10 + 10), z = 2 a hidden layer (64 x 64 + 64) too; z = 4 everything
    assert {z: count for z, count, _ in trained} == {1: 650, 2: 4810, 4: 13130}
    assert any(previous is not None and previous < z for z, _, previous in trained)  # a trial continued upward
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and min(t.value for t in complete) < 1.5  # it learned: chance is ln 10 = 2.30


@pytest.mark.parametrize("library", ["optuna", "neps", "ray", "smac", "plan"])
def test_every_export_calls_the_objective_it_names(library: str, tmp_path: Path) -> None:
    """The snippet's train_and_evaluate is the user's function (loaded with the standard library, so that it runs
    in the HPO library's own environment and in Ray's workers), and the stand-in is gone."""
    from layerprof.outputs.exporters import STAND_IN

    objective = tmp_path / "mine.py"
    objective.write_text("def fit(config, z, steps, state):\n    return config['learning_rate'] * z, {'z': z}\n")
    if library == "plan":
        from layerprof.fidelity.plan import plan_cluster
        from layerprof.measure.cluster import parse_inventory
        from tests.measure.test_cluster import h100_profile

        plan = plan_cluster([h100_profile(0.2)], parse_inventory("2xH100"), eta=3, configs=3, budget_steps=1000)
        source = export_plan_ray(plan, f"{objective}:fit")
        assert "loss, _state = train_and_evaluate(config, trainable_layers, steps, None)" in source
    else:
        source = export(geometric_ladder(3, 3), library, f"{objective}:fit")
    assert STAND_IN not in source
    assert snippet_value(source, "OBJECTIVE") == (str(objective), "fit")
    namespace: dict = {}
    exec(_top_level(source, ("OBJECTIVE", "_LOADED", "train_and_evaluate")), namespace)  # noqa: S102
    assert namespace["train_and_evaluate"]({"learning_rate": 0.5}, 3, None, None) == (1.5, {"z": 3})


USER_OBJECTIVE = """import json

LOG = LOG_PATH  # where every call is logged: Ray calls it in its workers, which do not share the driver's environment


def fit(config, trainable_layers, steps, state):
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps([trainable_layers, None if state is None else state["trainable_layers"]]) + "\\n")
    loss = config["learning_rate"] * 10 / trainable_layers
    return loss, {"trainable_layers": trainable_layers, "learning_rate": config["learning_rate"]}
"""


def user_objective(folder: Path) -> tuple[str, Path]:
    """`--objective FILE.py:fit` of a user's function written into `folder`, and the file it logs each call to."""
    folder.mkdir(parents=True, exist_ok=True)
    objective, log = folder / "mine.py", folder / "calls.jsonl"
    objective.write_text(USER_OBJECTIVE.replace("LOG_PATH", repr(str(log))))
    return f"{objective}:fit", log


@pytest.mark.parametrize("library", ["neps", "smac", "ray"])
def test_each_library_runs_the_users_objective_at_every_rung(
    library: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The snippet exported with --objective runs under the library itself (NePS in its own environment, 3 rungs and
    30 evaluations in `neps_runs`; Ray in worker processes of the run's cluster) and trains with the user's function
    at every rung, continuing promoted trials from the state it returned. Ray over two rungs at eta 2 (two trials,
    then the better one continued): every Tune trial starts a worker process, and test_ray_snippet runs the
    three-rung halving."""
    rung_count = 2 if library == "ray" else 3
    if library == "neps":
        log = request.getfixturevalue("neps_runs")["objective"]["folder"] / "calls.jsonl"
    else:
        objective, log = user_objective(tmp_path)
        if library == "smac":
            arguments = {"n_trials": 40, "output_directory": "smac"}
        else:
            arguments = {"ray_address": request.getfixturevalue("ray_cluster").address, "eta": 2}
        run_snippet(sys.executable, library, rung_count, tmp_path, objective=objective, **arguments)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert {z for z, _ in calls} == set(range(1, rung_count + 1)), calls  # geometric_ladder(n, eta): z = 1 .. n
    assert any(previous is not None and previous < z for z, previous in calls), calls  # continued upward


def _top_level(source: str, names: tuple[str, ...]) -> str:
    """The snippet's top-level statements that bind `names`, without the HPO library's imports."""
    import ast

    tree = ast.parse(source)
    kept = [
        node
        for node in tree.body
        if (isinstance(node, ast.FunctionDef) and node.name in names)
        or (isinstance(node, ast.Assign) and any(getattr(t, "id", None) in names for t in node.targets))
    ]
    return ast.unparse(ast.Module(body=kept, type_ignores=[]))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{tmp}/missing.py:fit", "no file {tmp}/missing.py (expected FILE.py:FUNCTION)"),
        ("{tmp}/mine.py:train", "{tmp}/mine.py defines no function train at its top level (fit, short)"),
        ("{tmp}/mine.py:short", "short takes 2 positional argument(s); the contract is short(config, "
                                "trainable_layers, steps, state) -> (loss, state)"),
        ("{tmp}/mine.py", "expected FILE.py:FUNCTION or package.module:FUNCTION"),
        ("no_such_package.module:fit", "no module 'no_such_package.module' to import"),
    ],
)  # fmt: skip
def test_a_wrong_objective_is_one_line_before_anything_runs(runner, tmp_path: Path, text: str, message: str) -> None:
    from layerprof.cli.commands import app

    (tmp_path / "mine.py").write_text("def fit(config, z, steps, state): ...\ndef short(config, z): ...\n")
    profile = Path(__file__).parents[1] / "data" / "profile-v1-measured.json"
    spec = text.format(tmp=tmp_path)
    result = runner.invoke(app, ["ladder", str(profile), "--export", "optuna", "--objective", spec])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: --objective {spec!r}: {message.format(tmp=tmp_path)}"), result.output


def test_an_objective_without_an_export_says_so(runner) -> None:
    from layerprof.cli.commands import app

    profile = Path(__file__).parents[1] / "data" / "profile-v1-measured.json"
    result = runner.invoke(app, ["ladder", str(profile), "--objective", "x.py:fit"])
    assert result.exit_code == 2
    assert "error: --objective names the training of an exported script; give --export too" in result.output
