"""Rank statistics, bootstrap, resuming, failing trials, built-in tasks, and the correlate CLI."""

from __future__ import annotations

import json
import math
import random
import sys
import textwrap
from pathlib import Path

import pytest
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.errors import LayerprofError
from layerprof.fidelity.correlate import StudyPlan, expand_grid, load_grid, run_study
from layerprof.fidelity.tasks import TASKS
from layerprof.stats import bootstrap_interval, kendall_tau_b, spearman
from tests.cli.test_cli import assert_one_line_error


def study(task: str, configs: list[dict], zs: list[int], fractions: list[float], seeds: int, out: Path, **options):
    return run_study(StudyPlan(task, configs, tuple(zs), tuple(fractions), seeds), out, **options)


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]),
        ([3, 1, 2, 2, 5, 4], [1, 2, 2, 3, 6, 5]),  # ties on both sides
        ([1, 2, 3, 4], [4, 3, 2, 1]),
    ],
)
def test_rank_statistics_match_scipy(x: list[float], y: list[float]) -> None:
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic)
    assert kendall_tau_b(x, y) == pytest.approx(scipy_stats.kendalltau(x, y).statistic)


def test_bootstrap_interval_covers_the_truth_and_is_narrow() -> None:
    generator = random.Random(1)
    truth = [generator.gauss(0, 1) for _ in range(200)]
    covered = 0
    for repeat in range(20):
        noisy = [value + generator.gauss(0, 0.5) for value in truth]
        sample = generator.sample(range(200), 40)
        x, y = [noisy[i] for i in sample], [truth[i] for i in sample]
        low, high = bootstrap_interval(x, y, spearman, repeats=300, seed=repeat)
        assert low <= spearman(x, y) <= high
        # as wide as the textbook interval (Fisher's z, standard error 1.03 / sqrt(n - 3)) within a factor 2
        sample_rho, half = spearman(x, y), 1.96 * 1.03 / math.sqrt(len(x) - 3)
        textbook = math.tanh(math.atanh(sample_rho) + half) - math.tanh(math.atanh(sample_rho) - half)
        assert textbook / 2 < high - low < 2 * textbook, (low, high, textbook)
        population = spearman(noisy, truth)
        covered += low <= population <= high
    assert covered >= 16  # a 95% interval misses rarely


def test_bootstrap_interval_has_the_percentiles_of_a_known_sampling_distribution() -> None:
    # the bootstrap mean of 100 coin flips (half heads) has standard deviation 0.05: a 95% percentile
    # interval is 0.5 -+ 1.96 * 0.05
    flips = [0.0, 1.0] * 50
    low, high = bootstrap_interval(flips, flips, lambda x, _y: sum(x) / len(x), repeats=2000, seed=3)
    assert low == pytest.approx(0.5 - 1.96 * 0.05, abs=0.015)
    assert high == pytest.approx(0.5 + 1.96 * 0.05, abs=0.015)


def test_bootstrap_interval_of_a_perfect_order_is_a_point() -> None:
    x = [float(v) for v in range(12)]
    assert bootstrap_interval(x, [2 * v + 1 for v in x], spearman, repeats=200) == pytest.approx((1.0, 1.0))
    assert bootstrap_interval(x, [-v for v in x], kendall_tau_b, repeats=200) == pytest.approx((-1.0, -1.0))


def test_grid_expansion_drops_beta2_for_sgd() -> None:
    configs = expand_grid({"optimizer": ["adam", "sgd"], "beta2": [0.9, 0.99], "learning_rate": [0.1]})
    assert len(configs) == 3
    assert {"optimizer": "sgd", "learning_rate": 0.1} in configs


def test_grid_files(tmp_path: Path) -> None:
    good = tmp_path / "grid.yaml"
    good.write_text("learning_rate: [0.001, 0.01]\noptimizer: [adam, sgd]\n")
    assert load_grid(good, ["learning_rate", "optimizer"]) == {
        "learning_rate": [0.001, 0.01],
        "optimizer": ["adam", "sgd"],
    }
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LayerprofError, match="does not parse"):
        load_grid(bad, None)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"learning_rat": [1]}))
    with pytest.raises(LayerprofError, match="unknown hyperparameter 'learning_rat'"):
        load_grid(unknown, ["learning_rate"])


TASK = """
import json, math, os

LOG = os.environ.get("TASK_LOG")

def task(config, trainable_layers, budget_fraction):
    if LOG:
        with open(LOG, "a") as handle:
            handle.write(json.dumps([config["x"], trainable_layers, budget_fraction]) + "\\n")
    if config["x"] == 99:
        return float("nan")
    if config["x"] == 98:
        raise RuntimeError("diverged")
    # more layers and more budget reveal the true order of x better
    noise = ((config["x"] * 7919) % 13) / 13 * (1 - trainable_layers / 4) * (1 - budget_fraction + 0.1)
    return config["x"] + 3 * noise

task.layer_count = 4
"""


def write_task(tmp_path: Path) -> str:
    path = tmp_path / "task.py"
    path.write_text(textwrap.dedent(TASK))
    return f"{path}:task"


TABLE_TASK = """
def task(config, trainable_layers, budget_fraction):
    # the loss is read from the configuration's own table; seed 1 adds the configuration's seed_shift
    loss = config["losses"][f"{trainable_layers}/{budget_fraction:g}"]
    return loss + config.get("seed_shift", 0.0) * config["seed"]

task.layer_count = 4
"""

# Full fidelity is z=4 at budget 1 (config 0 best). Every other cell ranks imperfectly, one with a tie.
LOSSES = {
    "4/1": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    "4/0.5": [2.0, 1.0, 3.0, 3.0, 5.0, 6.0],
    "2/1": [1.0, 3.0, 2.0, 4.0, 6.0, 5.0],
    "2/0.5": [1.5, 2.5, 1.0, 5.0, 4.5, 6.5],
    "1/1": [2.0, 1.5, 3.5, 3.0, 6.0, 5.0],
    "1/0.5": [3.0, 1.0, 2.0, 6.0, 4.0, 5.0],
}


def table_configs(seed_shift: list[float] | None = None) -> list[dict]:
    return [
        {"losses": {cell: losses[i] for cell, losses in LOSSES.items()}, "seed_shift": (seed_shift or [0.0] * 6)[i]}
        for i in range(6)
    ]


def expected_cell(low: list[float], full: list[float]) -> tuple[float, float, float]:
    """rho and tau from scipy; regret from the definition: full loss of the cell's best minus the best full loss."""
    best_here = min(range(len(low)), key=lambda i: low[i])
    return (
        scipy_stats.spearmanr(low, full).statistic,
        scipy_stats.kendalltau(low, full).statistic,
        full[best_here] - min(full),
    )


def test_every_cell_is_ranked_against_the_largest_z_at_the_full_budget(tmp_path: Path) -> None:
    task = tmp_path / "table.py"
    task.write_text(TABLE_TASK)
    # layers and budgets in no particular order: the reference is still z=4 at budget 1
    result = study(f"{task}:task", table_configs(), [2, 4, 1], [1.0, 0.5], 1, tmp_path / "out", workers=1)
    assert len(result.cells) == 6
    for cell in result.cells:
        low = LOSSES[f"{cell.trainable_layers}/{cell.budget_fraction:g}"]
        rho, tau, regret = expected_cell(low, LOSSES["4/1"])
        assert cell.configs == 6
        assert cell.spearman == pytest.approx(rho), cell
        assert cell.kendall == pytest.approx(tau), cell
        assert cell.regret == pytest.approx(regret), cell
        assert cell.spearman_low <= cell.spearman <= cell.spearman_high
        assert cell.kendall_low <= cell.kendall <= cell.kendall_high
    # the cells are not all alike: the test would notice a statistic computed against the wrong reference
    assert result.cell(1, 0.5).regret == pytest.approx(1.0) and result.cell(2, 0.5).regret == pytest.approx(2.0)
    assert result.cell(1, 0.5).spearman == pytest.approx(0.6571428571)


def test_two_seeds_judge_each_other_held_out_and_the_verdict_is_the_mean_over_the_two_folds(tmp_path: Path) -> None:
    task = tmp_path / "table.py"
    task.write_text(TABLE_TASK)
    shift = [0.0, 0.0, 0.0, 0.0, 0.0, -12.0]  # seed 1 of config 5 is far better: only seed 1 says it is the best
    result = study(f"{task}:task", table_configs(shift), [1, 4], [1.0], 2, tmp_path / "out", workers=1)
    by_seed = [
        {cell: [v + s * seed for v, s in zip(losses, shift, strict=True)] for cell, losses in LOSSES.items()}
        for seed in (0, 1)
    ]
    assert result.judge == "held-out"
    for z in (1, 4):
        # fold 1: seed 1 replays, seed 0 judges; fold 2: the other way round
        folds = [expected_cell(by_seed[1 - j][f"{z}/1"], by_seed[j]["4/1"]) for j in (0, 1)]
        cell = result.cell(z, 1.0)
        mean = [sum(values) / 2 for values in zip(*folds, strict=True)]
        assert (cell.spearman, cell.kendall, cell.regret) == pytest.approx(mean)
        assert (cell.spearman_fold_low, cell.spearman_fold_high) == pytest.approx(sorted(f[0] for f in folds))
    # full training judged by the other seed is the noise floor: rho 1/7; seed 1 picks config 5 (6 - 1 = 5 by
    # seed 0), seed 0 picks config 0 (1 - -6 = 7 by seed 1)
    assert result.cell(4, 1.0).spearman == pytest.approx(1 / 7) and result.cell(4, 1.0).regret == pytest.approx(6.0)
    floor = result.noise_floor
    assert (floor.spearman, floor.regret, floor.regret_low, floor.regret_high) == pytest.approx((1 / 7, 6, 5, 7))


def test_judge_seeds_train_full_fidelity_only_and_judge_every_cell(tmp_path: Path) -> None:
    task = tmp_path / "table.py"
    task.write_text(TABLE_TASK)
    shift = [0.0, 0.0, 0.0, 0.0, 0.0, -12.0]  # the judge seed (1) says config 5 is the best
    plan = StudyPlan(f"{task}:task", table_configs(shift), (1, 4), (0.5, 1.0), 1, judge_seeds=1)
    assert plan.trial_count == 6 * 4 + 6  # every cell once, and full fidelity again for the judge
    assert {(t.trainable_layers, t.budget_fraction) for t in plan.trials() if t.seed == 1} == {(4, 1.0)}
    result = run_study(plan, tmp_path / "out", workers=1)
    assert (result.judge, result.judge_seeds) == ("held-out", 1)
    judge = [v + s for v, s in zip(LOSSES["4/1"], shift, strict=True)]
    for cell in result.cells:
        rho, tau, regret = expected_cell(LOSSES[f"{cell.trainable_layers}/{cell.budget_fraction:g}"], judge)
        assert (cell.spearman, cell.kendall, cell.regret) == pytest.approx((rho, tau, regret)), cell
    # seed 0's full training picks config 0, which the judge puts at 1 against config 5's -6
    assert (result.noise_floor.spearman, result.noise_floor.regret) == pytest.approx((1 / 7, 7.0))
    # simulate finds the judge seed in the recorded trials: it judges, the replay draws from seed 0
    from layerprof.fidelity.simulate import load_study

    recorded = load_study(tmp_path / "out")
    assert (recorded.seeds, recorded.judge_seeds) == ([0], [1])


def test_nan_and_raising_configurations_are_excluded(tmp_path: Path) -> None:
    configs = [{"x": x} for x in (1, 2, 3, 4, 98, 99)]
    result = study(write_task(tmp_path), configs, [1, 4], [0.5, 1.0], 1, tmp_path / "out", workers=1)
    assert result.failed_trials == 8  # 2 bad configurations x 4 cells
    full = result.cell(4, 1.0)
    assert full.configs == 4 and full.spearman == pytest.approx(1.0) and full.regret == 0
    assert all(cell.configs == 4 for cell in result.cells)


def test_fewer_than_three_configurations_leave_rho_undefined(tmp_path: Path) -> None:
    configs = [{"x": x} for x in (1, 2, 98, 99)]
    result = study(write_task(tmp_path), configs, [1, 4], [1.0], 1, tmp_path / "out", workers=1)
    assert all(cell.spearman is None and "need 3" in cell.note for cell in result.cells)


def test_resume_runs_only_missing_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_task(tmp_path)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("TASK_LOG", str(log))
    configs = [{"x": x} for x in range(1, 6)]
    out = tmp_path / "study"
    import layerprof.fidelity.correlate as correlate

    real_append = correlate.TrialStore.append
    calls = {"count": 0}

    def interrupted_append(self, result):  # the 7th finished trial is interrupted before it is saved
        calls["count"] += 1
        if calls["count"] == 7:
            raise KeyboardInterrupt
        real_append(self, result)

    monkeypatch.setattr(correlate.TrialStore, "append", interrupted_append)
    with pytest.raises(KeyboardInterrupt):
        study(spec, configs, [1, 4], [0.5, 1.0], 1, out, workers=1)
    monkeypatch.setattr(correlate.TrialStore, "append", real_append)
    saved = len((out / "trials.jsonl").read_text().splitlines())
    assert saved == 6
    log.write_text("")
    heard: list[tuple[int, int]] = []  # the bar's first reading: the resumed trials of the total, before any runs
    result = study(spec, configs, [1, 4], [0.5, 1.0], 1, out, workers=1,
                   on_start=lambda done, total: heard.append((done, total)))  # fmt: skip
    assert heard == [(6, 20)]
    rerun = len(log.read_text().splitlines())
    assert rerun == 20 - saved  # 5 configs x 2 z x 2 budgets, minus what was on disk
    assert "resumed: 6 of 20" in result.executor
    assert result.cell(4, 1.0).spearman == pytest.approx(1.0)


def test_another_grid_in_the_same_directory_is_refused(tmp_path: Path) -> None:
    spec = write_task(tmp_path)
    study(spec, [{"x": x} for x in (1, 2, 3)], [4], [1.0], 1, tmp_path / "out", workers=1)
    with pytest.raises(LayerprofError, match="another task or grid"):
        study(spec, [{"x": x} for x in (1, 2, 4)], [4], [1.0], 1, tmp_path / "out", workers=1)


def test_local_worker_processes(tmp_path: Path) -> None:
    result = study(write_task(tmp_path), [{"x": x} for x in (1, 2, 3, 4)], [1, 4], [1.0], 1, tmp_path / "o", workers=2)
    assert result.cell(4, 1.0).spearman == pytest.approx(1.0)


def test_ray_missing_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError, as without Ray
    with pytest.raises(LayerprofError, match="pip install 'layerprof\\[ray\\]'"):
        study(write_task(tmp_path), [{"x": x} for x in (1, 2, 3)], [4], [1.0], 1, tmp_path / "r", executor="ray")


# digits in two worker processes (a built-in task named in spawned workers), pydoc-lm in this process (each trial
# seeded alike either way): one pair of workers importing torch, not two. In this process pydoc-lm's run is
# shortened from 150 full steps to 30 (3 at budget 0.1): nothing here reads a trained loss, and 990 steps of its
# LitGPT were 20 of this test's 27 s
@pytest.mark.parametrize(("task", "workers"), [("digits", 2), ("pydoc-lm", 1)])
def test_builtin_tasks_end_to_end_on_a_tiny_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: str, workers: int
) -> None:
    from layerprof.fidelity import tasks

    full_steps = {"digits": tasks.DIGITS_FULL_STEPS, "pydoc-lm": 30}[task]
    if task == "pydoc-lm":
        monkeypatch.setattr(tasks, "LM_FULL_STEPS", full_steps)  # what its runs train
        monkeypatch.setattr(TASKS[task], "full_steps", full_steps)  # what simulate prices
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"learning_rate": [1e-4, 1e-3, 3e-2]}))
    out = tmp_path / task
    result = CliRunner().invoke(
        app, ["correlate", task, "--grid", str(grid), "--layers", "1,all", "--budget-fractions", "0.1",
              "--workers", str(workers), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "result.json").read_text())
    layer_count = TASKS[task].layer_count
    assert data["trainable_layer_counts"] == [1, layer_count] and data["budget_fractions"] == [0.1, 1.0]
    assert data["failed_trials"] == 0
    full = next(c for c in data["cells"] if c["trainable_layers"] == layer_count and c["budget_fraction"] == 1.0)
    assert full["spearman"] == pytest.approx(1.0)
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG" and (out / "cells.csv").exists()
    # the study replays under simulate, priced by an estimate of the task's own model (FLOPs, memory)
    estimate = tmp_path / "estimate.json"
    function = TASKS[task]
    estimated = CliRunner().invoke(
        app, ["estimate", function.profile_spec, "--batch-sizes", str(function.batch_size), "--out", str(estimate)]
    )
    assert estimated.exit_code == 0, estimated.output
    simulated = CliRunner().invoke(
        app, ["simulate", str(out), "--profile", str(estimate), "--gpu-memory", "16GiB", "--repeats", "50", "--json"]
    )
    assert simulated.exit_code == 0, simulated.output
    assert json.loads(simulated.stdout)["full_steps"] == full_steps  # the task's own budget, priced
    paths = {path["name"]: path for path in json.loads(simulated.stdout)["paths"]}
    assert {"layers", "budget", "diagonal", "ladder"} <= set(paths)
    budget = paths["budget"]["successive_halving"]
    assert budget["brackets"] == [{"first_rung": 0, "configs_per_rung": [3, 1]}]
    # an estimate has FLOPs and predicted step times (the time model), and simulate says they are predicted
    assert budget["flops"] > 0 and budget["gpu_seconds"] > 0
    assert any("predicted by the time model" in note for note in json.loads(simulated.stdout)["notes"])


@pytest.mark.parametrize("task", sorted(TASKS))
def test_builtin_tasks_describe_the_model_they_train(task: str) -> None:
    """layer_count is what `--layers all` means and profile_spec is what `simulate` prices: both must be the
    task's own model, split as the task splits it."""
    from layerprof.sources.models import ModelOptions, split_without_memory

    function = TASKS[task]
    loaded, layers = split_without_memory(function.profile_spec, ModelOptions())
    assert len(layers) == function.layer_count
    device = next(loaded.model.parameters()).device  # split on meta: the batch goes where the model is
    loss = loaded.workload.custom.loss(loaded.model, loaded.workload.custom.make_batch(function.batch_size, device))
    assert loss.shape == ()
    assert function.full_steps >= 100


def test_correlate_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    spec = write_task(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("[")
    assert_one_line_error(runner.invoke(app, ["correlate", "digits", "--grid", str(bad)]), "does not parse")
    assert_one_line_error(runner.invoke(app, ["correlate", "cifar"]), "unknown task 'cifar'")
    assert_one_line_error(runner.invoke(app, ["correlate", spec]), "needs --grid")
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"x": [1, 2]}))
    assert_one_line_error(
        runner.invoke(app, ["correlate", spec, "--grid", str(two), "--out", str(tmp_path / "o")]), "at least 3"
    )
    assert_one_line_error(
        runner.invoke(app, ["correlate", "digits", "--budget-fractions", "0,2"]), "--budget-fractions"
    )
    assert_one_line_error(runner.invoke(app, ["correlate", "digits", "--layers", "1,9"]), "outside 1..6")
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "study.json").write_text('{"task": "dig')  # a study directory a crash or an editor left broken
    three = tmp_path / "three.json"
    three.write_text(json.dumps({"learning_rate": [1e-4, 1e-3, 1e-2]}))
    assert_one_line_error(
        runner.invoke(app, ["correlate", "digits", "--grid", str(three), "--out", str(torn)]), "is not JSON"
    )


def test_ladder_shows_measured_rank_correlation_per_rung(tmp_path: Path) -> None:
    from layerprof.outputs.studies import write_correlation
    from layerprof.profile import save_profile
    from tests.fidelity.test_ladder import synthetic_profile

    result = study(
        write_task(tmp_path), [{"x": x} for x in (1, 2, 3, 4, 5)], [1, 2, 4], [1.0], 1, tmp_path / "s", workers=1
    )
    write_correlation(result, tmp_path / "s")
    profile = save_profile(synthetic_profile({1: 1.0, 2: 3.0, 3: 5.0, 4: 9.0}), tmp_path / "p.json")
    output = CliRunner().invoke(
        app, ["ladder", str(profile), "--correlation", str(tmp_path / "s" / "result.json"), "--json"]
    )
    assert output.exit_code == 0, output.output
    data = json.loads(output.stdout)
    by_z = {rung["trainable_layers"]: rung["spearman"] for rung in data["rungs"]}
    assert by_z[4] == pytest.approx(1.0)
    assert by_z[1] == pytest.approx(result.cell(1, 1.0).spearman)


def test_ray_executor_on_a_local_instance(ray_cluster, tmp_path: Path) -> None:
    """Each trial a Ray task on the run's local Ray cluster (`ray_session` uses the connection it finds)."""
    configs = [{"x": x} for x in (1, 2, 3, 4)]
    result = study(write_task(tmp_path), configs, [1, 4], [1.0], 1, tmp_path / "ray", executor="ray")
    assert result.executor == "ray"
    assert result.cell(4, 1.0).spearman == pytest.approx(1.0)
    assert len((tmp_path / "ray" / "trials.jsonl").read_text().splitlines()) == 8


def test_a_study_naming_an_old_task_module_is_read_under_the_new_name_and_resumes(tmp_path: Path) -> None:
    from layerprof.fidelity.correlate import TrialStore, check_study_meta, fingerprint

    old, new = "layerprof.tasks:digits_task", "layerprof.fidelity.tasks:digits_task"
    meta = {"schema": "layerprof.study/2", "task": old, "configs": [{"lr": 0.1}]}
    assert check_study_meta(meta, tmp_path / "study.json")["task"] == new
    (tmp_path / "study.json").write_text(json.dumps({**meta, "fingerprint": fingerprint(old, meta["configs"])}))
    TrialStore(tmp_path, {"task": new, "configs": meta["configs"], "fingerprint": fingerprint(new, meta["configs"])})
    with pytest.raises(LayerprofError, match="another task or grid"):
        other = "layerprof.fidelity.tasks:pydoc_lm_task"
        TrialStore(tmp_path, {"task": other, "configs": meta["configs"], "fingerprint": fingerprint(other, [])})
