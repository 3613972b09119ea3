"""Continued runs: a promoted trial trains on from its previous rung (a checkpointed budget rung, or more layers
thawed) instead of from scratch. `correlate --continue` records them, `simulate` prices every path both ways.

The accounting of seconds is checked with a clock the test drives (no test depends on how fast this machine
is); the training itself with the real digits task.
"""

from __future__ import annotations

import itertools
import json
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.errors import LayerprofError
from layerprof.fidelity import correlate
from layerprof.fidelity.correlate import (
    ContinuedTrial,
    CorrelationResult,
    StudyPlan,
    Trial,
    interleaved,
    plan_chains,
    run_continued,
    run_study,
    run_trial,
    segments,
    serving,
)
from layerprof.fidelity.simulate import simulate
from layerprof.fidelity.tasks import digits_run, scratch_segment
from layerprof.profile import Row
from tests.cli.test_cli import assert_one_line_error
from tests.conftest import bare_profile

THIRD, NINTH = 1 / 3, 1 / 9
BUDGET = ((6, NINTH), (6, THIRD), (6, 1.0))

# ---------------------------------------------------------------- the rule for a continued run's steps


def test_a_rung_trains_on_to_a_higher_fraction_and_again_on_the_same_one() -> None:
    def steps(chain: list[tuple[int, float]]) -> list[tuple[int, int, int]]:
        return [segment.steps(200) for segment in segments(chain)]

    assert steps(list(BUDGET)) == [(0, 22, 200), (22, 67, 200), (67, 200, 200)]  # as from scratch: 22, 67, 200
    assert steps([(1, 1.0), (3, 1.0), (6, 1.0)]) == [(0, 200, 600), (200, 400, 600), (400, 600, 600)]
    assert steps([(1, 0.25), (3, 0.25), (6, 1.0)]) == [(0, 50, 250), (50, 100, 250), (100, 250, 250)]
    assert steps([(2, 0.5)]) == [(0, 100, 100)]  # a from-scratch trial: one segment
    assert [s.trainable_layers for s in segments(BUDGET)] == [6, 6, 6]


def test_which_recorded_runs_serve_a_path() -> None:
    budget = ((6, NINTH), (6, 0.25), (6, THIRD), (6, 1.0))
    # evaluating more often changes nothing: a budget run serves every sub-path that ends where it ends
    assert serving(budget, BUDGET) == [[0], [1, 2], [3]]
    assert serving(budget, ((6, 0.25), (6, 1.0))) == [[0, 1], [2, 3]]
    assert serving(budget, ((6, NINTH), (6, THIRD))) is None  # stops earlier: another schedule
    layers = ((1, 1.0), (3, 1.0), (6, 1.0))
    assert serving(layers, layers) == [[0], [1], [2]]
    assert serving(layers, ((3, 1.0), (6, 1.0))) is None  # a bracket starting at z=3 never trained z=1
    assert serving(layers, ((1, 1.0), (6, 1.0))) is None  # trained z=3 on the way
    # 1@0.5 -> 3@0.5 trains half the budget again at z=3; it is not the first half of going on to 3@1
    assert serving(((1, 0.5), (3, 0.5), (3, 1.0)), ((1, 0.5), (3, 1.0))) is None
    assert serving(((1, 0.5), (3, 0.75), (3, 1.0)), ((1, 0.5), (3, 1.0))) == [[0], [1, 2]]


def test_continue_plans_the_later_starts_hyperband_needs() -> None:
    zs, fractions = (1, 3, 6), (NINTH, THIRD, 1.0)
    assert plan_chains(["budget"], zs, fractions, 6) == (BUDGET,)  # its later starts are the same run
    assert plan_chains(["layers,diagonal"], zs, fractions, 6) == (
        ((1, 1.0), (3, 1.0), (6, 1.0)),
        ((3, 1.0), (6, 1.0)),
        ((1, NINTH), (3, THIRD), (6, 1.0)),
        ((3, THIRD), (6, 1.0)),
    )
    # typed fractions name the study's; a chain another serves is not run twice
    quarters = (0.25, 0.5, 1.0)
    assert plan_chains(["6@0.5,6@1", "budget"], zs, quarters, 6) == (((6, 0.25), (6, 0.5), (6, 1.0)),)
    assert plan_chains(["1@0.1111111,6@1"], zs, fractions, 6) == (((1, NINTH), (6, 1.0)),)
    for request, message in [
        (["zigzag"], "name paths (budget, layers, diagonal)"),
        (["6@1"], "two or more rungs"),
        (["3@1,1@1"], "each rung must add layers or budget and take none away, got 3@1 then 1@1"),
        (["3@1,3@0.5"], "got 3@1 then 3@0.5"),
        (["6@0.5,9@1"], "z=9, but the task has 6 layers"),
        (["7@1"], "--continue 7@1: z=7, but the task has 6 layers"),  # the z first, not "two or more rungs"
        (["7@0.5,6@1"], "--continue 7@0.5,6@1: z=7, but the task has 6 layers"),  # wherever it is
        (["1@0.5,3"], "rungs like 1@0.25,3@0.5,6@1"),
    ]:
        with pytest.raises(LayerprofError, match=message.replace("(", r"\(").replace(")", r"\)")):
            plan_chains(request, zs, fractions, 6)


# ---------------------------------------------------------------- the digits task, continued


def digits_config(**extra: object) -> dict:
    return {"learning_rate": 1e-2, "optimizer": "adam", "weight_decay": 1e-4, **extra}


def test_a_continued_budget_run_trains_exactly_what_from_scratch_runs_train() -> None:
    """Same seed, same batches, constant learning rate: continuing to 1/3 from the 1/9 checkpoint is training to
    1/3, so every rung's loss equals the from-scratch trial's, to the bit."""
    continued = run_continued("digits", digits_config(), ContinuedTrial(0, BUDGET, 0))
    assert continued.error is None and len(continued.segments) == 3
    for rung, (z, fraction) in zip(continued.segments, BUDGET, strict=True):
        scratch = run_trial("digits", digits_config(), Trial(0, z, fraction, 0))
        assert rung.loss == scratch.loss
    # every part of the run is recorded: set-up apart from each rung's training and evaluation
    assert continued.setup_seconds is not None and continued.setup_seconds > 0
    assert all(s.train_seconds and s.eval_seconds for s in continued.segments)
    # and the checkpoint it goes on from: saved after 1/9, restored and saved after 1/3, restored before 1
    assert all(s.checkpoint_seconds > 0 for s in continued.segments)
    assert scratch.setup_seconds is not None  # the last from-scratch trial above: Trial(0, 6, 1.0, 0)


def test_a_run_goes_on_from_its_checkpoint_not_from_the_objects_it_left() -> None:
    """restore() loads the saved weights back: what the run did after saving is undone."""
    run = digits_run({**digits_config(), "seed": 0})
    first = segments([(6, NINTH), (6, 1.0)])[0]
    run.train(first)
    run.save()
    saved = {name: p.detach().clone() for name, p in run.model.named_parameters()}
    with torch.no_grad():
        for parameter in run.model.parameters():
            parameter.add_(1.0)
    run.restore()
    assert all(torch.equal(p, saved[name]) for name, p in run.model.named_parameters())


def test_thawed_layers_start_with_fresh_optimizer_state_and_trained_layers_keep_theirs() -> None:
    torch.manual_seed(0)
    run = digits_run({**digits_config(), "seed": 0})
    initial = {name: p.detach().clone() for name, p in run.model.named_parameters()}
    first, second = segments([(1, THIRD), (3, 1.0)])
    run.train(first)  # 67 steps of the head alone
    head = {name for name in run.layers[-1].parameter_names}
    thawed = {name for layer in run.layers[3:5] for name in layer.parameter_names}
    trained = {name: p.detach().clone() for name, p in run.model.named_parameters()}
    assert all(not torch.equal(trained[name], initial[name]) for name in head)
    assert all(torch.equal(trained[name], initial[name]) for name in initial if name not in head)

    run.thaw(3)
    parameters = dict(run.model.named_parameters())
    state = run.optimizer.state
    assert {name for name, p in parameters.items() if p in state} == head  # the thawed layers have none yet
    assert all(int(state[parameters[name]]["step"]) == 67 for name in head)  # the head's moments carried on
    assert all(torch.equal(parameters[name], trained[name]) for name in parameters)  # nothing re-initialised
    assert {name for name, p in parameters.items() if p.requires_grad} == head | thawed

    run.train(second)  # steps 67..199 at z=3
    assert all(int(state[parameters[name]]["step"]) == 200 for name in head)
    assert all(int(state[parameters[name]]["step"]) == 133 for name in thawed)
    assert all(torch.equal(parameters[n], initial[n]) for n in initial if n not in head | thawed)  # still frozen
    with pytest.raises(LayerprofError, match="cannot freeze back to 1"):
        run.thaw(1)


def test_a_continued_run_follows_the_schedule_of_its_final_budget() -> None:
    """Warm-up 10% and cool-down 50% of the whole run (200 steps): the learning rate at the end of the 1/3 rung
    is still the peak (a from-scratch 1/3 trial has cooled down to 1/33 of it), and at the end of the run 1/100."""
    config = {**digits_config(warmup_fraction=0.1, cooldown_fraction=0.5), "seed": 0}
    first, second = segments([(6, THIRD), (6, 1.0)])
    run = digits_run(config)
    run.train(first)
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2)
    run.train(second)
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 / 100)
    scratch = digits_run(config)
    scratch.train(scratch_segment(6, THIRD))
    assert scratch.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 / 33)
    # so the continued rung's loss is its own, recorded, not the from-scratch one
    continued = run_continued("digits", config, ContinuedTrial(0, ((6, THIRD), (6, 1.0)), 0))
    assert continued.segments[0].loss != run_trial("digits", config, Trial(0, 6, THIRD, 0)).loss


# ---------------------------------------------------------------- seconds, on a clock the test drives

CLOCKED_TASK = """
import json
import os

from layerprof.fidelity import correlate
from layerprof.fidelity.correlate import segments
from layerprof.fidelity.trials import trial_phase

FULL_STEPS = 200


def task(config, trainable_layers, budget_fraction):
    return resume(config, segments([(trainable_layers, budget_fraction)])[0], None)[0]


def resume(config, segment, state):
    if os.environ.get("TASK_LOG"):
        with open(os.environ["TASK_LOG"], "a") as handle:
            handle.write(json.dumps([config["x"], segment.trainable_layers, segment.budget_fraction]) + "\\n")
    if state is None:
        correlate._now.advance(3.0)  # set-up: data, model
        state = {"step": 0}
    start, end, _ = segment.steps(FULL_STEPS)
    assert start == state["step"]
    with trial_phase("training"):
        correlate._now.advance(end - start)  # a second a step
    state["step"] = end
    with trial_phase("evaluation"):
        correlate._now.advance(0.5)
    if config["x"] == 99 and segment.index == 1:
        raise RuntimeError("diverged")
    return config["x"] + 1.0 / end, state


task.resume = resume
task.layer_count = 6
task.full_steps = FULL_STEPS
task.batch_size = 8
task.profile_spec = "clocked-model"
"""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clocked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(correlate, "_now", Clock())
    path = tmp_path / "clocked.py"
    path.write_text(textwrap.dedent(CLOCKED_TASK))
    return f"{path}:task"


def test_segment_seconds_add_up_to_one_full_run_and_set_up_is_apart(clocked: str) -> None:
    full = run_trial(clocked, {"x": 1}, Trial(0, 6, 1.0, 0))
    assert (full.train_seconds, full.eval_seconds, full.setup_seconds, full.seconds) == (200, 0.5, 3, 203.5)
    run = run_continued(clocked, {"x": 1}, ContinuedTrial(0, BUDGET, 0))
    assert [s.train_seconds for s in run.segments] == [22, 45, 133]
    assert sum(s.train_seconds for s in run.segments) == full.train_seconds
    assert [s.eval_seconds for s in run.segments] == [0.5] * 3
    assert [s.seconds for s in run.segments] == [25.5, 45.5, 133.5]  # the first resume call builds the run
    assert (run.setup_seconds, run.seconds) == (3, 3 + 200 + 1.5)
    failed = run_continued(clocked, {"x": 99}, ContinuedTrial(0, BUDGET, 0))
    assert [s.loss for s in failed.segments] == [99 + 1 / 22, None]  # the run ends at the rung that failed
    assert failed.error == "RuntimeError: diverged" and failed.segments[1].train_seconds == 45


def test_a_study_with_continued_runs_resumes_and_summarises_them(
    clocked: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = [{"x": x} for x in (1, 2, 3, 4, 99)]
    plan = StudyPlan(clocked, configs, (1, 6), (THIRD, 1.0), 1, chains=(((1, THIRD), (6, 1.0)),))
    assert plan.trial_count == 5 * (4 + 1)
    real_append = correlate.TrialStore.append
    calls = {"count": 0}

    def interrupted(self: object, result: object) -> None:  # the 23rd result is lost with the interrupt
        calls["count"] += 1
        if calls["count"] == 23:
            raise KeyboardInterrupt
        real_append(self, result)  # type: ignore[arg-type]

    monkeypatch.setattr(correlate.TrialStore, "append", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(plan, tmp_path / "s", workers=1)
    monkeypatch.setattr(correlate.TrialStore, "append", real_append)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("TASK_LOG", str(log))
    result = run_study(plan, tmp_path / "s", workers=1)
    assert "resumed: 22 of 25" in result.executor
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    # the continued runs are spread among the trials (one after every 4): the last two trials (z=6 at budget 1 of
    # x=4 and x=99) and the last continued run (x=99) were missing
    assert calls == [[4, 6, 1.0], [99, 6, 1.0], [99, 1, THIRD], [99, 6, 1.0]]
    (chain,) = result.continued
    assert chain.chain == [[1, THIRD], [6, 1.0]] and chain.failed_runs == 1
    # config 99 reached 1@1/3 and failed on the way to 6@1
    assert [(r.configs, r.spearman, r.spearman_scratch, r.regret) for r in chain.rungs] == [
        (5, pytest.approx(1.0), pytest.approx(1.0), 0),
        (4, pytest.approx(1.0), pytest.approx(1.0), 0),
    ]
    # the result round-trips through its JSON, and an older result without continued runs still loads
    data = json.loads(json.dumps(result.to_dict()))
    assert data["schema"] == "layerprof.correlation/4"
    assert CorrelationResult.from_dict(data).continued == result.continued
    older = {**data, "schema": "layerprof.correlation/2"}
    for newer in ("continued", "judge", "judge_seeds", "noise_floor"):
        del older[newer]
    assert CorrelationResult.from_dict(older).continued == []
    assert CorrelationResult.from_dict(older).judge == "same-seed"  # before /4, every study judged itself


def test_correlate_continue_refuses_a_task_that_cannot_continue(tmp_path: Path) -> None:
    task = tmp_path / "plain.py"
    task.write_text("def task(config, trainable_layers, budget_fraction):\n    return 1.0\n\ntask.layer_count = 3\n")
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"x": [1, 2, 3]}))
    arguments = ["correlate", f"{task}:task", "--grid", str(grid), "--layers", "1,3", "--out", str(tmp_path / "o")]
    arguments.append("--continue")
    result = CliRunner().invoke(app, [*arguments, "budget"])
    assert_one_line_error(result, f"{task}:task cannot continue a run: give it fn.resume = resume(config, segment")
    assert not (tmp_path / "o").exists()  # refused before anything ran
    digits = ["correlate", "digits", "--out", str(tmp_path / "d"), "--continue"]
    for rungs, message in [("3@1,1@1", "must add layers or budget"), ("diagonals", "name paths"), ("2@1,9@1", "z=9")]:
        assert_one_line_error(CliRunner().invoke(app, [*digits, rungs]), message)
    assert not (tmp_path / "d").exists()


def test_a_study_of_a_later_schema_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    later = {"schema": "layerprof.study/9", "task": "digits", "configs": [], "fingerprint": "x"}
    (tmp_path / "s" / "study.json").write_text(json.dumps(later))
    assert_one_line_error(
        CliRunner().invoke(app, ["simulate", str(tmp_path / "s")]),
        "is a layerprof.study/9 study; this layerprof reads layerprof.study/1, layerprof.study/2 and layerprof.study/3",
    )


# ---------------------------------------------------------------- simulate: scratch and continued side by side


def write_mixed_study(
    directory: Path,
    scratch_loss: object,
    continued: dict[tuple[tuple[int, float], ...], object],
    zs: tuple[int, ...] = (1, 2, 3),
    fractions: tuple[float, ...] = (NINTH, THIRD, 1.0),
    training: bool = True,
    configs: int = 9,
) -> Path:
    """study.json and trials.jsonl as correlate writes them: from-scratch trials (set-up 100 s, training z*f*10 s)
    and, per chain, one continued run per configuration (each rung's training: its index + 1 seconds)."""
    directory.mkdir(parents=True, exist_ok=True)
    grid = [{"learning_rate": 10.0**-i} for i in range(configs)]
    meta = {"schema": "layerprof.study/2", "task": "synthetic", "configs": grid, "fingerprint": "test"}
    (directory / "study.json").write_text(json.dumps(meta))
    lines = []
    for index, z, fraction in itertools.product(range(configs), zs, fractions):
        train = z * fraction * 10
        lines.append({
            "config_index": index, "trainable_layers": z, "budget_fraction": fraction, "seed": 0,
            "loss": scratch_loss(index, z, fraction), "error": None, "seconds": 100 + train + 1,
            **({"setup_seconds": 100, "train_seconds": train, "eval_seconds": 1} if training else {}),
        })  # fmt: skip
    for chain, loss in continued.items():
        for index in range(configs):
            parts = [
                {"trainable_layers": z, "budget_fraction": f, "loss": loss(index, k), "seconds": k + 2,
                 **({"train_seconds": k + 1, "eval_seconds": 1} if training else {})}
                for k, (z, f) in enumerate(chain)
            ]  # fmt: skip
            lines.append({
                "kind": "continued", "config_index": index, "seed": 0, "chain": [list(c) for c in chain],
                "segments": parts, "seconds": 50, "setup_seconds": 40 if training else None, "error": None,
            })  # fmt: skip
    (directory / "trials.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return directory


def random_lowest_rung(index: int, z: int, fraction: float) -> float:
    """From scratch, z=1 ranks the configurations in reverse; everything else ranks them as full training."""
    if (z, fraction) == (1, 1.0):
        return 100.0 - index
    return index + 1 + 10 / (z * fraction)


def test_a_study_mixing_scratch_and_continued_trials_replays_each(tmp_path: Path) -> None:
    layers = ((1, 1.0), (2, 1.0), (3, 1.0))
    study = write_mixed_study(
        tmp_path / "s",
        random_lowest_rung,
        {layers: lambda index, k: index + k, layers[1:]: lambda index, k: index + 10 * k},
    )
    result = simulate(study, eta=3, repeats=50, paths=["layers", "budget"])
    assert result.seconds_used == "training"
    path = result.path("layers")
    # from scratch the lowest rung keeps the three worst: the pick is config 6, full-fidelity regret 6
    assert (path.successive_halving.regret_median, path.successive_halving.best_found_share) == (6, 0)
    assert [r.spearman for r in path.rungs] == [pytest.approx(-1.0), pytest.approx(1.0), pytest.approx(1.0)]
    # continued, every rung ranks as full training: regret 0
    continued = path.continued
    assert (continued.runs, continued.chain) == ("recorded", "1@1,2@1,3@1")
    assert (continued.successive_halving.regret_median, continued.successive_halving.best_found_share) == (0, 1)
    assert [r.spearman for r in continued.rungs] == [pytest.approx(1.0)] * 3
    # each rung costs its segment's training seconds (1, 2, 3 s), not the trials' (10, 20, 30 s, set-up 100 s),
    # and one evaluation (1 s) per trial per rung
    assert continued.successive_halving.recorded_seconds == pytest.approx(9 * (1 + 1) + 3 * (2 + 1) + 1 * (3 + 1))
    assert path.successive_halving.recorded_seconds == pytest.approx(9 * 11 + 3 * 21 + 1 * 31)
    # Hyperband: 9·3·1 on the chain, 5·1 on the run started at z=2 (1 + 2 s a rung), 3 from scratch at z=3
    assert continued.hyperband.recorded_seconds == pytest.approx(9 * 2 + 3 * 3 + 4 + 5 * 2 + 3 + 3 * 31)
    # the budget path has no continued runs: assumed to continue as it trained from scratch, its rungs' seconds
    # cut to the steps each adds (1/9 -> 1/3 adds two thirds of the 1/3 trial's steps)
    budget = result.path("budget")
    assert budget.continued.runs == "assumed"
    assert budget.successive_halving.recorded_seconds == pytest.approx(9 * (30 * NINTH + 1) + 3 * 11 + 31)
    assert budget.continued.successive_halving.recorded_seconds == pytest.approx(
        9 * (30 * NINTH + 1) + 3 * (30 * THIRD * (2 / 3) + 1) + 30 * (2 / 3) + 1  # evaluation is never cut
    )
    assert [r.spearman for r in budget.continued.rungs] == [r.spearman for r in budget.rungs]
    # each way of running is compared with the budget path run the same way
    assert continued.successive_halving.recorded_seconds_vs_budget == pytest.approx(
        31 / budget.continued.successive_halving.recorded_seconds
    )


def test_a_path_without_its_later_starts_has_no_continued_hyperband(tmp_path: Path) -> None:
    layers = ((1, 1.0), (2, 1.0), (3, 1.0))
    study = write_mixed_study(tmp_path / "s", random_lowest_rung, {layers: lambda index, k: index + k})
    result = simulate(study, eta=3, repeats=5, paths=["layers", "diagonal"])
    layers_result = result.path("layers")
    assert layers_result.continued.successive_halving is not None and layers_result.continued.hyperband is None
    assert result.path("diagonal").continued is None
    note = next(n for n in result.notes if n.startswith("no continued runs"))
    assert "of layers, diagonal" in note
    assert "--continue 1@1,2@1,3@1 --continue 1@0.111111,2@0.333333,3@1 --out" in note


def test_an_older_study_is_priced_by_whole_trials_and_says_so(tmp_path: Path) -> None:
    study = write_mixed_study(tmp_path / "s", random_lowest_rung, {}, training=False)
    result = simulate(study, eta=3, repeats=5, paths=["layers"])
    assert result.seconds_used == "total"
    assert result.path("layers").successive_halving.recorded_seconds == pytest.approx(9 * 111 + 3 * 121 + 131)
    output = CliRunner().invoke(app, ["simulate", str(study), "--repeats", "5", "--format", "md"])
    assert output.exit_code == 0, output.output
    assert "| best | trial s | × budget |" in output.output
    training = write_mixed_study(tmp_path / "t", random_lowest_rung, {})
    output = CliRunner().invoke(app, ["simulate", str(training), "--repeats", "5", "--format", "md"])
    assert "| best | train+eval s | × budget |" in output.output
    assert "| budget | assumed | 3@0.111 3@0.333 3@1 |" in output.output


def test_a_profile_prices_each_continued_rung_by_its_segment(tmp_path: Path) -> None:
    task = tmp_path / "task.py"
    task.write_text(
        "def task(config, trainable_layers, budget_fraction):\n    return 0.0\n\n"
        "task.layer_count = 3\ntask.full_steps = 90\ntask.batch_size = 8\ntask.profile_spec = 'synthetic-model'\n"
    )
    study = write_mixed_study(tmp_path / "s", random_lowest_rung, {})
    meta = json.loads((study / "study.json").read_text())
    (study / "study.json").write_text(json.dumps({**meta, "task": f"{task}:task"}))
    rows = [Row(8, z, "ok", step_time_ms=10.0 * z, flops=10**9 * z, peak_memory_bytes=z) for z in (1, 2, 3)]
    profile = bare_profile(rows, 3, spec="synthetic-model")
    result = simulate(study, eta=3, repeats=3, paths=["budget"], profile=profile)
    budget = result.path("budget")
    # 90 steps at budget 1: trials of 10, 30, 90 steps from scratch; continued segments of 10, 20, 60
    assert [r.price.steps for r in budget.rungs] == [10, 30, 90]
    assert [r.price.steps for r in budget.continued.rungs] == [10, 20, 60]
    assert budget.successive_halving.gpu_seconds == pytest.approx((9 * 10 + 3 * 30 + 90) * 0.030)
    assert budget.continued.successive_halving.gpu_seconds == pytest.approx((9 * 10 + 3 * 20 + 60) * 0.030)
    # Hyperband's bracket starting at 1/3 trains its first rung from scratch: 30 steps, then 60 more
    assert budget.continued.hyperband.gpu_seconds == pytest.approx(
        (9 * 10 + 3 * 20 + 60 + 5 * 30 + 60 + 3 * 90) * 0.030
    )
    # the clock against the cost model: from scratch 10 z f s of training for 0.01 z s x 90 f steps (0.9 z f
    # device s): 11.1 s per device second; the study has no continued runs to compare with
    assert result.clock_per_device_second == pytest.approx({"scratch": 10 / 0.9})
    assert not any(note.startswith("the clock drifted") for note in result.notes)


def test_a_clock_that_drifts_between_from_scratch_and_continued_runs_is_named(tmp_path: Path) -> None:
    task = tmp_path / "task.py"
    task.write_text(
        "def task(config, trainable_layers, budget_fraction):\n    return 0.0\n\n"
        "task.layer_count = 3\ntask.full_steps = 90\ntask.batch_size = 8\ntask.profile_spec = 'synthetic-model'\n"
        "task.eval_samples = 20\n"
    )
    chain = ((3, NINTH), (3, THIRD), (3, 1.0))
    study = write_mixed_study(tmp_path / "s", random_lowest_rung, {chain: lambda index, k: index + k})
    lines = [json.loads(line) for line in (study / "trials.jsonl").read_text().splitlines()]
    for line in lines:  # the continued runs were recorded on a machine twice as busy
        for segment in line.get("segments", []):
            segment["train_seconds"] = 2 * 30 * (segment["budget_fraction"] - {1.0: THIRD, THIRD: NINTH}.get(
                segment["budget_fraction"], 0.0))  # fmt: skip
    (study / "trials.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    meta = json.loads((study / "study.json").read_text())
    (study / "study.json").write_text(json.dumps({**meta, "task": f"{task}:task"}))
    rows = [
        Row(8, z, "ok", step_time_ms=10.0 * z, flops=4 * 10**9 * z, forward_flops=10**9 * z, peak_memory_bytes=z)
        for z in (1, 2, 3)
    ]
    result = simulate(study, eta=3, repeats=3, paths=["budget"], profile=bare_profile(rows, 3, spec="synthetic-model"))
    # from scratch: 10 z f s per 0.9 z f device s = 11.1; continued: twice that
    assert result.clock_per_device_second == pytest.approx({"scratch": 10 / 0.9, "continued": 20 / 0.9})
    assert any(note.startswith("the clock drifted between phases: from-scratch trials recorded 11.1 s") for note in
               result.notes)  # fmt: skip
    # evaluation is priced: 20 samples at batch 8 are 3 forward passes of a quarter of a step each (z=3: 7.5 ms)
    assert [r.price.eval_gpu_seconds for r in result.path("budget").rungs] == pytest.approx([3 * 0.0075] * 3)
    assert [r.price.trial_gpu_seconds for r in result.path("budget").rungs] == pytest.approx(
        [0.03 * steps + 3 * 0.0075 for steps in (10, 30, 90)]
    )


RESUMABLE_TASK = """
def task(config, trainable_layers, budget_fraction):
    return config["x"] + 1.0


def resume(config, segment, state):
    state = (state or []) + [segment.trainable_layers]
    return config["x"] + len(state), state  # the loss says how many rungs the run has gone through


task.resume = resume
task.layer_count = 3
"""


def test_continued_runs_are_recorded_among_the_from_scratch_trials_not_after_them() -> None:
    trials = [Trial(i, 1, 1.0, 0) for i in range(6)]
    runs = [ContinuedTrial(i, ((1, 0.5), (3, 1.0)), 0) for i in range(3)]
    order = interleaved(trials, runs)
    assert [job.config_index if isinstance(job, Trial) else f"c{job.config_index}" for job in order] == [
        0, 1, "c0", 2, 3, "c1", 4, 5, "c2",
    ]  # fmt: skip
    assert interleaved(trials, []) == trials and interleaved([], runs) == runs


def test_continued_runs_as_ray_tasks(ray_cluster, tmp_path: Path) -> None:  # on the run's local Ray cluster
    path = tmp_path / "resumable.py"
    path.write_text(textwrap.dedent(RESUMABLE_TASK))
    chain = ((1, 0.5), (2, 0.5), (3, 1.0))
    plan = StudyPlan(f"{path}:task", [{"x": x} for x in (1, 2, 3)], (3,), (1.0,), 1, chains=(chain, chain[1:]))
    seen: list[tuple[int, int]] = []
    run_study(plan, tmp_path / "ray", executor="ray", on_result=lambda _, done, total: seen.append((done, total)))
    assert sorted(seen) == [(done, 9) for done in range(1, 10)]  # 3 trials, 3 runs of the chain, 3 from its z=2
    lines = [json.loads(line) for line in (tmp_path / "ray" / "trials.jsonl").read_text().splitlines()]
    runs = {(tuple(map(tuple, line["chain"])), line["config_index"]): line for line in lines if "chain" in line}
    assert [s["loss"] for s in runs[(chain, 2)]["segments"]] == [4, 5, 6]
    assert [s["loss"] for s in runs[(chain[1:], 0)]["segments"]] == [2, 3]
