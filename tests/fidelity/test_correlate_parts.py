"""Parts of fidelity/correlate.py that the end-to-end tests leave unpinned (issue 40: mutants that survived)."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import layerprof.fidelity.correlate as correlate
from layerprof.errors import LayerprofError
from layerprof.fidelity.correlate import (
    ContinuedResult,
    ContinuedTrial,
    CorrelationResult,
    SegmentResult,
    StudyPlan,
    Trial,
    TrialResult,
    TrialStore,
    _mean,
    _over_folds,
    _per_config_mean,
    _top_layers,
    chain_label,
    check_study_meta,
    continued_key,
    fingerprint,
    interleaved,
    plan_chains,
    plan_study,
    read_records,
    run_continued,
    run_job,
    run_local,
    run_ray,
    run_study,
    run_trial,
    serving,
    summarise_continued,
)
from layerprof.fidelity.grids import GRID_PRESETS, expand_grid
from layerprof.fidelity.judging import Fold
from layerprof.parsing import parse_layer_selection


def test_a_configurations_loss_is_the_mean_of_the_seeds_that_succeeded() -> None:
    assert _mean([1.0, None, 4.0]) == 2.5  # the failed seed left out, not counted as 0
    assert _mean([3.0]) == 3.0
    assert _mean([None, None]) is None
    assert _per_config_mean([[2.0, 6.0], [None], [5.0, None]]) == [4.0, None, 5.0]


def test_a_statistic_over_folds_leaves_out_a_fold_with_fewer_than_two_known_pairs() -> None:
    whole, thin = Fold((1,), (0,)), Fold((0,), (1,))
    lows = {whole: [1.0, 2.0, 3.0], thin: [1.0, None, 3.0]}
    judges = {whole: [1.0, 2.0, 3.0], thin: [None, 2.0, 3.0]}  # thin: only configuration 2 is known on both sides
    pairs = _over_folds(lambda low, _judge: float(len(low)), lows, judges)  # the statistic: how many pairs it saw
    assert pairs([0.0, 1.0, 2.0], []) == 3.0  # the thin fold's one pair is no statistic
    assert pairs([0.0, 2.0], []) == 2.0
    assert math.isnan(pairs([1.0], []))


# ---------------------------------------------------------------- a tiny task, run in this process

TASK = """
import os
import random

import torch

from layerprof.fidelity.trials import trial_phase


def task(config, trainable_layers, budget_fraction):
    fail = config.get("fail")
    if fail == "nan":
        return float("nan")
    if fail == "raise":
        raise RuntimeError("diverged\\nat step 3")
    if fail == "silent":
        raise ValueError()
    if fail == "draw":
        return random.random() + torch.rand(()).item()
    if fail == "pid":
        return os.getpid()
    if config.get("nan_at") == [trainable_layers, budget_fraction, config["seed"]]:
        return float("nan")
    if config.get("phases"):
        with trial_phase("training"):
            pass
        with trial_phase("evaluation"):
            pass
    if "losses" in config:
        loss = config["losses"][f"{trainable_layers}/{budget_fraction:g}"]
        return float("nan") if loss is None else loss
    return config["x"] * 10 + trainable_layers + budget_fraction + config["seed"] / 100


def resume(config, segment, state):
    state = (state or 0) + 1
    if config.get("fail") == "draw":
        return random.random() + torch.rand(()).item(), state
    if config.get("phases"):
        with trial_phase("training"):
            pass
        with trial_phase("checkpoint"):
            pass
    if "losses" in config:
        loss = config["losses"][f"c{segment.trainable_layers}/{segment.budget_fraction:g}"]
        return float("nan") if loss is None else loss, state
    if config.get("fail") == "shape" and segment.index == 1:
        return 3
    if config.get("fail") == "nan" and segment.index == 1:
        return float("nan"), state
    return config["x"] + segment.end_fraction + state + config["seed"] / 100, state


task.resume = resume
task.layer_count = 4


def plain(config, trainable_layers, budget_fraction):
    return 1.0
"""


@pytest.fixture
def spec(tmp_path: Path) -> str:
    path = tmp_path / "tiny_task.py"
    path.write_text(TASK)
    return f"{path}:task"


@pytest.fixture
def ticking(monkeypatch: pytest.MonkeyPatch) -> None:
    """The study's clock, one second a reading: seconds that count the readings, whatever the machine's load."""
    readings = itertools.count(100)
    monkeypatch.setattr(correlate, "_now", lambda: float(next(readings)))


def test_a_trial_runs_the_task_with_its_seed_and_times_its_phases(spec: str, ticking: None) -> None:
    """Readings: start 100, training 101-102, evaluation 103-104, end 105: 5 s, 1 s training, 1 s evaluation,
    3 s set-up."""
    result = run_trial(spec, {"x": 2, "phases": True}, Trial(0, 3, 0.5, 7))
    assert asdict(result) == {
        "config_index": 0, "trainable_layers": 3, "budget_fraction": 0.5, "seed": 7, "loss": 23.57,
        "error": None, "seconds": 5.0, "setup_seconds": 3.0, "train_seconds": 1.0, "eval_seconds": 1.0,
    }  # fmt: skip
    unmarked = run_trial(spec, {"x": 1}, Trial(4, 1, 1.0, 0))
    assert (unmarked.loss, unmarked.seconds, unmarked.setup_seconds, unmarked.train_seconds) == (12.0, 1.0, None, None)
    assert unmarked.eval_seconds is None and unmarked.config_index == 4


def test_failing_trials_keep_their_reason_and_no_loss(spec: str) -> None:
    nan = run_trial(spec, {"fail": "nan"}, Trial(0, 1, 1.0, 0))
    assert (nan.loss, nan.error) == (None, "returned nan")
    raised = run_trial(spec, {"fail": "raise"}, Trial(0, 1, 1.0, 0))
    assert (raised.loss, raised.error) == (None, "RuntimeError: diverged")
    assert run_trial(spec, {"fail": "silent"}, Trial(0, 1, 1.0, 0)).error == "ValueError: "
    unknown = run_trial("no-such-task", {}, Trial(0, 1, 1.0, 0))
    assert unknown.error.startswith("LayerprofError: unknown task 'no-such-task'; built-in: digits, pydoc-lm")


def test_a_trial_is_seeded_by_its_seed_on_one_thread(spec: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        drawn = run_trial(spec, {"fail": "draw"}, Trial(0, 1, 1.0, 11)).loss
        assert torch.get_num_threads() == 1  # one trial per core
    finally:
        torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(11)
    assert drawn == pytest.approx(random.Random(11).random() + torch.rand((), generator=generator).item())
    run = run_continued(spec, {"fail": "draw"}, ContinuedTrial(0, ((1, 0.5), (4, 1.0)), 11))
    assert run.segments[0].loss == pytest.approx(drawn)  # seeded before its first rung


def test_one_worker_runs_the_trials_in_this_process_in_order(spec: str) -> None:
    heard: list[object] = []
    jobs = [Trial(0, 1, 1.0, 0), ContinuedTrial(0, ((1, 0.5), (4, 1.0)), 0), Trial(0, 4, 1.0, 0)]
    run_local(spec, [{"fail": "pid"}], jobs, 1, heard.append)
    assert [type(r).__name__ for r in heard] == ["TrialResult", "ContinuedResult", "TrialResult"]
    assert heard[0].loss == heard[2].loss == os.getpid()


class Done:
    """A Ray object reference whose task has finished."""

    def __init__(self, value: object) -> None:
        self.value = value


class StandInRay:
    """Ray's calls as run_ray makes them, run at once in this process: what each task asked for, kept."""

    def __init__(self) -> None:
        self.asked: list[dict[str, float]] = []

    def remote(self, function: object) -> object:
        ray = self

        class Remote:
            def options(self, **options: float) -> object:
                ray.asked.append(options)
                return types.SimpleNamespace(remote=lambda *args: Done(function(*args)))

        return Remote()

    def wait(self, futures: list[object], num_returns: int) -> tuple[list[object], list[object]]:
        return futures[:num_returns], futures[num_returns:]

    def get(self, future: Done) -> object:
        return future.value


def test_ray_tasks_ask_for_one_cpu_and_the_gpu_share_of_their_top_rung(spec: str, monkeypatch) -> None:  # noqa: ANN001
    """Ray itself is tested in tests/fidelity/test_correlate.py; here the options each trial's task asks for."""
    import layerprof.measure.cluster as cluster

    ray = StandInRay()
    addresses: list[str | None] = []

    @contextlib.contextmanager
    def session(address: str | None) -> object:
        addresses.append(address)
        yield ray

    monkeypatch.setattr(cluster, "ray_session", session)
    heard: list[object] = []
    jobs = [Trial(0, 1, 1.0, 0), ContinuedTrial(1, ((1, 0.5), (4, 1.0)), 0)]
    run_ray(spec, [{"x": 1}, {"x": 2}], jobs, heard.append, "ray://head:10001", lambda z: z / 8)
    assert addresses == ["ray://head:10001"]
    assert ray.asked == [{"num_cpus": 1, "num_gpus": 0.125}, {"num_cpus": 1, "num_gpus": 0.5}]
    assert heard[0].loss == 12.0 and [s.loss for s in heard[1].segments] == [3.5, 5.0]  # config 1 ran config 1
    run_ray(spec, [{"x": 1}], jobs[:1], heard.append, None)
    assert ray.asked[-1] == {"num_cpus": 1} and addresses[-1] is None


def test_a_continued_run_hands_its_state_from_rung_to_rung_and_times_each(spec: str, ticking: None) -> None:
    """Readings: start 100; rung 1 from 101: training 102-103, checkpoint 104-105, end 106 (5 s); rung 2 from 107
    to 112; end 113: 13 s, 4 of them marked, 9 set-up."""
    run = run_continued(spec, {"x": 1, "phases": True}, ContinuedTrial(2, ((1, 0.5), (4, 1.0)), 3))
    assert (run.config_index, run.seed, run.chain, run.error) == (2, 3, [[1, 0.5], [4, 1.0]], None)
    assert [asdict(s) for s in run.segments] == [
        {"trainable_layers": 1, "budget_fraction": 0.5, "loss": 2.53, "error": None, "seconds": 5.0,
         "train_seconds": 1.0, "eval_seconds": 0.0, "checkpoint_seconds": 1.0},
        {"trainable_layers": 4, "budget_fraction": 1.0, "loss": 4.03, "error": None, "seconds": 5.0,
         "train_seconds": 1.0, "eval_seconds": 0.0, "checkpoint_seconds": 1.0},
    ]  # fmt: skip
    assert (run.seconds, run.setup_seconds) == (13.0, 9.0)
    assert run.key == "continued/1@0.5,4@1.0/2/3" and run.cells == ((1, 0.5), (4, 1.0))
    unmarked = run_continued(spec, {"x": 1}, ContinuedTrial(0, ((1, 0.5), (4, 1.0)), 0))
    assert unmarked.setup_seconds is None and unmarked.segments[0].checkpoint_seconds is None


def test_a_continued_run_stops_at_the_rung_that_fails(spec: str) -> None:
    chain = ((1, 0.25), (1, 0.5), (4, 1.0))
    shape = run_continued(spec, {"x": 1, "fail": "shape"}, ContinuedTrial(0, chain, 0))
    assert [s.loss for s in shape.segments] == [2.25, None]
    assert shape.error == shape.segments[1].error == "TypeError: resume must return (loss, state), got int"
    nan = run_continued(spec, {"x": 1, "fail": "nan"}, ContinuedTrial(0, chain, 0))
    assert [(s.loss, s.error) for s in nan.segments] == [(2.25, None), (None, "returned nan")]
    plain = run_continued(spec.replace(":task", ":plain"), {}, ContinuedTrial(0, chain, 0))
    assert plain.segments == [] and plain.error.startswith("LayerprofError: ")
    assert "cannot continue a run: give it fn.resume = resume(config, segment, state)" in plain.error
    assert isinstance(run_job(spec, {"x": 1}, ContinuedTrial(0, chain, 0)), ContinuedResult)
    assert isinstance(run_job(spec, {"x": 1}, Trial(0, 1, 1.0, 0)), TrialResult)


# ---------------------------------------------------------------- chains


def test_a_run_serves_a_path_through_its_rungs_where_it_trains_on_at_each() -> None:
    budget = ((1, 1 / 9), (1, 0.25), (1, 1 / 3), (1, 1.0))
    assert serving(budget, ((1, 1 / 9), (1, 1 / 3), (1, 1.0))) == [
        [0],
        [1, 2],
        [3],
    ]  # evaluating at 1/4 changes nothing
    assert serving(budget, budget) == [[0], [1], [2], [3]]
    assert serving(((1, 0.25), (1, 0.5)), ((1, 0.5),)) == [[0, 1]]  # from the start to 1/2, one run
    quarters = ((1, 0.25), (1, 0.5), (1, 0.75), (1, 1.0))
    assert serving(quarters, ((1, 0.5), (1, 1.0))) == [[0, 1], [2, 3]]  # 3/4 trains on from the run's 1/2
    thawed = ((1, 0.5), (2, 0.5), (2, 1.0))  # more layers on the same budget, then more budget
    assert serving(thawed, ((1, 0.5), (2, 1.0))) is None  # its z=2 rung trained 0.5 again: not one segment
    assert serving(thawed, thawed) == [[0], [1], [2]]
    assert serving(((1, 0.5), (1, 1.0)), ((1, 0.5),)) is None  # the run goes on past the path's end
    assert serving(((1, 0.5), (2, 1.0)), ((1, 1.0),)) is None  # never at z=1 with the whole budget
    assert serving(((1, 0.5), (2, 1.0)), ((2, 1.0),)) is None  # the path starts where the run does not
    assert serving(((1, 0.5),), ((1, 0.5), (2, 1.0))) is None  # the path goes on past the run


def test_plan_chains_adds_every_later_start_no_chain_serves() -> None:
    fractions, zs = (0.25, 0.5, 1.0), (1, 2, 4)
    thawing = plan_chains(["1@0.25,2@0.5,4@1"], zs, fractions, 4)
    assert thawing == (((1, 0.25), (2, 0.5), (4, 1.0)), ((2, 0.5), (4, 1.0)))
    budget = plan_chains(["1@0.25,1@0.5,1@1"], zs, fractions, 4)
    assert budget == (((1, 0.25), (1, 0.5), (1, 1.0)),)  # the run through 1/4 serves the one from 1/2
    # a thawing run serves no later start: both kept, in the order asked; a budget run that serves a planned one
    # replaces it
    assert plan_chains(["2@0.5,4@1", "1@0.25,2@0.5,4@1"], zs, fractions, 4) == (thawing[1], thawing[0])
    assert plan_chains(["1@0.5,1@1", "1@0.25,1@0.5,1@1"], zs, fractions, 4) == budget
    assert plan_chains(["1@0.2500001,4@1"], zs, fractions, 4) == (((1, 0.25), (4, 1.0)),)  # the study's fraction


def test_continue_refusals_name_the_request() -> None:
    fractions, zs = (0.5, 1.0), (1, 4)
    for request, message in [
        ("bogus", "--continue 'bogus': name paths (budget, layers, diagonal) or give rungs like 1@0.25,3@0.5,6@1"),
        (" , ", "--continue ' , ': name paths (budget, layers, diagonal) or give rungs like 1@0.25,3@0.5,6@1"),
        ("1@0.5,5@1", "--continue 1@0.5,5@1: z=5, but the task has 4 layers"),
        ("4@1", "--continue 4@1: a continued run goes through two or more rungs"),
        (
            "4@0.5,1@1",
            "--continue 4@0.5,1@1: each rung must add layers or budget and take none away, got 4@0.5 then 1@1",
        ),
        (
            "1@1,4@0.5",
            "--continue 1@1,4@0.5: each rung must add layers or budget and take none away, got 1@1 then 4@0.5",
        ),
        ("1@1,1@1", "--continue 1@1,1@1: each rung must add layers or budget and take none away, got 1@1 then 1@1"),
    ]:
        with pytest.raises(LayerprofError) as caught:
            plan_chains([request], zs, fractions, 4)
        assert str(caught.value) == message
    assert plan_chains(["1@0.5,4@0.5"], zs, fractions, 4) == (((1, 0.5), (4, 0.5)),)  # layers alone: allowed
    assert plan_chains(["1@0.5,7@1"], zs, fractions, None) == (((1, 0.5), (7, 1.0)),)  # a task of unknown depth
    assert plan_chains(["budget"], zs, fractions, 4) == (((4, 0.5), (4, 1.0)),)


def test_continued_runs_are_spread_evenly_among_the_trials() -> None:
    trials = [Trial(i, 1, 1.0, 0) for i in range(7)]
    runs = [ContinuedTrial(i, ((1, 0.5), (4, 1.0)), 0) for i in range(3)]
    jobs = interleaved(trials, runs)
    assert jobs == [*trials[:2], runs[0], *trials[2:5], runs[1], *trials[5:], runs[2]]  # after 2.33, 4.67, 7
    assert interleaved(trials, []) == trials and interleaved([], runs) == runs
    assert (_top_layers(runs[0]), _top_layers(Trial(0, 3, 0.5, 0))) == (4, 3)


# ---------------------------------------------------------------- the plan of a study


def test_a_study_plan_orders_cheap_trials_first_and_the_judges_last() -> None:
    plan = StudyPlan("t", [{"x": 1}, {"x": 2}], (4, 1), (1.0, 0.5), seeds=2, chains=(((1, 0.5), (4, 1.0)),),
                     judge_seeds=1)  # fmt: skip
    assert plan.full_cell == (4, 1.0)
    assert plan.trial_count == 2 * ((2 * 2 + 1) * 2 + 1) == len(plan.trials()) + len(plan.continued_trials())
    trials = plan.trials()
    assert [t.key for t in trials[:5]] == ["0/1/0.5/0", "0/1/0.5/1", "1/1/0.5/0", "1/1/0.5/1", "0/1/1/0"]
    assert [t.key for t in trials[-2:]] == ["0/4/1/2", "1/4/1/2"]  # the judge seed at full fidelity only
    assert [t.key for t in plan.continued_trials()] == [
        "continued/1@0.5,4@1.0/0/0", "continued/1@0.5,4@1.0/0/1", "continued/1@0.5,4@1.0/1/0",
        "continued/1@0.5,4@1.0/1/1",
    ]  # fmt: skip
    assert [(f.replay, f.judge) for f in plan.folds] == [((0, 1), (2,))]
    assert chain_label(((1, 1 / 9), (4, 1.0))) == "1@0.111111,4@1"
    assert continued_key(((1, 1 / 9),), 0, 0) == "continued/1@0.1111111111111111/0/0"


def test_plan_study_defaults_and_refusals(spec: str, tmp_path: Path) -> None:
    digits = plan_study("digits", None, (1.0, 0.5))
    assert digits.task == "digits" and digits.configs == expand_grid(GRID_PRESETS["small"]("digits"))
    assert plan_study("pydoc-lm", None, (1.0,)).configs == expand_grid(GRID_PRESETS["small"]("pydoc-lm"))
    assert (digits.trainable_layer_counts, digits.budget_fractions, len(digits.configs)) == (
        (1, 2, 4, 6),
        (0.5, 1.0),
        12,
    )
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"x": [1, 2, 3]}))
    user = plan_study(spec, None, (1.0,), grid=grid, continued=["1@1,4@1"], judge_seeds=0)
    assert (user.trainable_layer_counts, user.configs, user.chains) == ((1, 2, 4), [{"x": 1}, {"x": 2}, {"x": 3}],
                                                                        (((1, 1.0), (4, 1.0)),))  # fmt: skip
    assert plan_study(spec, parse_layer_selection("1,3"), (1.0,), grid=grid).trainable_layer_counts == (1, 3)
    with pytest.raises(LayerprofError, match="^--judge-seeds must be 0 or more, got -1$"):
        plan_study("digits", None, (1.0,), judge_seeds=-1)
    with pytest.raises(LayerprofError, match="^--grid-preset 'huge': choose one of small, paper$"):
        plan_study("digits", None, (1.0,), grid_preset="huge")
    with pytest.raises(LayerprofError, match=r"^a user task needs --grid FILE \(the presets name built-in"):
        plan_study(spec, None, (1.0,))
    plain = spec.replace(":task", ":plain")
    with pytest.raises(
        LayerprofError, match=r"does not say how many layers it has \(set fn.layer_count\); give --layers"
    ):
        plan_study(plain, None, (1.0,), grid=grid)
    with pytest.raises(LayerprofError) as cannot:
        plan_study(plain, parse_layer_selection("1,2"), (1.0,), grid=grid, continued=["budget"])
    assert str(cannot.value).startswith(f"{plain} cannot continue a run: give it fn.resume = ")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"x": list(range(1000))}))
    with pytest.raises(LayerprofError) as caught:
        plan_study(spec, parse_layer_selection("1,2"), (0.5, 1.0), grid=big, seeds=251)
    assert str(caught.value) == (
        "1,004,000 trials (1,000 configurations x 251 seed(s) x cells, and 0 judge seed(s)) is beyond the "
        "1,000,000 a study runs; fewer --seeds, configurations or cells"
    )
    assert plan_study(spec, parse_layer_selection("1,2"), (0.5, 1.0), grid=big, seeds=250).trial_count == 1_000_000


# ---------------------------------------------------------------- the store


def test_records_skip_torn_and_foreign_lines_and_keep_continued_runs(tmp_path: Path) -> None:
    trial = TrialResult(1, 4, 0.5, 0, 2.5)
    run = ContinuedResult(0, 1, [[1, 0.5], [4, 1.0]], [SegmentResult(1, 0.5, 3.0)])
    foreign = [json.dumps({"unexpected": 1}), "[1, 2]", json.dumps({"kind": "continued", "segments": [{"bad": 1}]})]
    lines = [json.dumps(asdict(trial)), "", '{"config_index": 1, "trai', *foreign, json.dumps(asdict(run))]
    path = tmp_path / "trials.jsonl"
    path.write_text("\n".join(lines) + "\n")
    results, continued = read_records(path)
    assert results == {"1/4/0.5/0": trial}
    assert continued == {"continued/1@0.5,4@1.0/0/1": run}


def test_the_store_describes_its_study_and_refuses_another(tmp_path: Path) -> None:
    identity = {"task": "t", "configs": [{"x": 1}], "fingerprint": fingerprint("t", [{"x": 1}])}
    store = TrialStore(tmp_path / "a" / "b", identity)
    meta = json.loads((tmp_path / "a" / "b" / "study.json").read_text())
    assert meta == {"schema": "layerprof.study/3", **identity} and store.load() == ({}, {})
    store.append(TrialResult(0, 1, 1.0, 0, 1.5))
    assert store.load()[0] == {"0/1/1/0": TrialResult(0, 1, 1.0, 0, 1.5)}
    TrialStore(tmp_path / "a" / "b", identity)  # the same study again
    other = {**identity, "fingerprint": fingerprint("t", [{"x": 2}])}
    with pytest.raises(LayerprofError, match="holds a study of another task or grid; use a new --out directory"):
        TrialStore(tmp_path / "a" / "b", other)
    (tmp_path / "file").write_text("")
    with pytest.raises(LayerprofError, match=r"^cannot create '.*file/study': "):
        TrialStore(tmp_path / "file" / "study", identity)
    assert fingerprint("t", [{"x": 1}]) == fingerprint("t", [{"x": 1}]) != fingerprint("u", [{"x": 1}])
    assert len(fingerprint("t", [])) == 16


def test_a_study_description_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "study.json"
    for meta in [[], {"configs": []}, {"task": "t"}, {"task": "t", "configs": {}}]:
        with pytest.raises(LayerprofError, match="is not a correlate study's description"):
            check_study_meta(meta, path)
    assert check_study_meta({"task": "t", "configs": []}, path) == {"task": "t", "configs": []}  # /1: no schema
    with pytest.raises(LayerprofError) as caught:
        check_study_meta({"schema": "layerprof.study/4", "task": "t", "configs": []}, path)
    assert str(caught.value) == (
        f"{str(path)!r} is a layerprof.study/4 study; this layerprof reads layerprof.study/1, layerprof.study/2 and "
        "layerprof.study/3 (upgrade it)"
    )


def test_a_result_reads_back_from_every_schema() -> None:
    cell = {"trainable_layers": 1, "budget_fraction": 1.0, "configs": 3, "spearman": 0.5, "spearman_low": 0.1,
            "spearman_high": 0.9, "kendall": 0.3, "kendall_low": 0.0, "kendall_high": 0.6, "regret": 1.0}  # fmt: skip
    old = {"schema": "layerprof.correlation/1", "task": "t", "configs": [{}], "layers": [1, 4],
           "budget_fractions": [1.0], "seeds": 1, "cells": [cell],
           "continued": [{"chain": [[1, 0.5], [4, 1.0]], "rungs": []}]}  # fmt: skip
    result = CorrelationResult.from_dict(old)
    assert result.trainable_layer_counts == [1, 4] and result.continued[0].failed_runs == 0
    assert result.noise_floor is None and result.judge == "same-seed"
    assert result.cell(1, 1.0).spearman == 0.5 and result.cell(1, 0.5) is None and result.cell(4, 1.0) is None
    again = CorrelationResult.from_dict(result.to_dict())
    assert again == result and result.to_dict()["schema"] == "layerprof.correlation/4"
    floor = {"spearman": 0.2, "spearman_low": 0.1, "spearman_high": 0.3, "regret": 1.0, "regret_low": 0.5,
             "regret_high": 1.5}  # fmt: skip
    with_floor = CorrelationResult.from_dict({**result.to_dict(), "noise_floor": floor})
    assert with_floor.noise_floor.spearman == 0.2
    with pytest.raises(LayerprofError, match="^study.json is not a layerprof correlation result$"):
        CorrelationResult.from_dict({"schema": "layerprof.correlation/5"}, source="study.json")


# ---------------------------------------------------------------- a whole study, in this process


LOSS_TABLE = {  # full fidelity is z=4 at budget 1; "c..." are the continued run's rungs
    "4/1": [1.0, 2.0, 3.0, 4.0],
    "4/0.5": [1.0, 2.0, 4.0, 3.0],  # rho 1 - 6 x 2 / 60 = 0.8, regret 0
    "1/1": [2.0, 1.0, 4.0, 3.0],  # rho 1 - 6 x 4 / 60 = 0.6, tau (4 - 2) / 6, regret 2 - 1
    "1/0.5": [None, 1.0, 1.0, None],  # two configurations: no rho
    "c1/0.5": [4.0, 3.0, 2.0, 1.0],  # rho -1, regret 4 - 1
    "c4/1": [2.0, 1.0, 3.0, None],  # config 3's run fails: rho of three 1 - 6 x 2 / 24 = 0.5, regret 1
}


def table_plan(spec: str, **options: object) -> StudyPlan:
    configs = [{"losses": {cell: losses[i] for cell, losses in LOSS_TABLE.items()}} for i in range(4)]
    return StudyPlan(spec, configs, (1, 4), (0.5, 1.0), chains=(((1, 0.5), (4, 1.0)),), **options)


def test_a_study_ranks_every_cell_and_continued_rung_against_full_training(spec: str, tmp_path: Path) -> None:
    heard: list[tuple[str, int, int]] = []
    started: list[tuple[int, int]] = []
    result = run_study(table_plan(spec), tmp_path / "out", workers=1,
                       on_result=lambda r, done, total: heard.append((type(r).__name__, done, total)),
                       on_start=lambda done, total: started.append((done, total)))  # fmt: skip
    assert started == [(0, 20)] and len(heard) == 20 and heard[-1][1:] == (20, 20)
    assert [name for name, *_ in heard].count("ContinuedResult") == 4
    cells = {(c.trainable_layers, c.budget_fraction): c for c in result.cells}
    assert list(cells) == [(1, 0.5), (1, 1.0), (4, 0.5), (4, 1.0)]
    thin = cells[(1, 0.5)]
    assert (thin.configs, thin.spearman, thin.kendall, thin.regret) == (2, None, None, None)
    assert thin.note == "rho undefined: 2 configuration(s) succeeded here and at full fidelity, need 3"
    low = cells[(1, 1.0)]
    assert (low.configs, low.spearman, low.kendall, low.regret) == (4, pytest.approx(0.6), pytest.approx(1 / 3), 1.0)
    assert low.spearman_low <= 0.6 <= low.spearman_high and low.kendall_low <= 1 / 3 <= low.kendall_high
    assert (low.spearman_fold_low, low.spearman_fold_high, low.note) == (None, None, "")
    assert (cells[(4, 0.5)].spearman, cells[(4, 0.5)].regret) == (pytest.approx(0.8), 0.0)
    full = cells[(4, 1.0)]
    assert (full.spearman, full.spearman_low, full.spearman_high, full.regret) == pytest.approx((1.0, 1.0, 1.0, 0.0))
    (chain,) = result.continued
    assert (chain.chain, chain.failed_runs) == ([[1, 0.5], [4, 1.0]], 1)
    assert [asdict(rung) for rung in chain.rungs] == [
        {"trainable_layers": 1, "budget_fraction": 0.5, "configs": 4, "spearman": pytest.approx(-1.0),
         "spearman_scratch": None, "regret": 3.0},
        {"trainable_layers": 4, "budget_fraction": 1.0, "configs": 3, "spearman": pytest.approx(0.5),
         "spearman_scratch": pytest.approx(1.0), "regret": 1.0},
    ]  # fmt: skip
    assert result.failed_trials == 2 + 1  # config 0 and 3 at (1, 0.5), and config 3's continued run
    assert (result.judge, result.judge_seeds, result.noise_floor, result.executor) == ("same-seed", 0, None, "local")
    assert (result.trainable_layer_counts, result.budget_fractions, result.seeds) == ([1, 4], [0.5, 1.0], 1)
    again = run_study(table_plan(spec), tmp_path / "out", workers=1, on_start=lambda d, t: started.append((d, t)))
    assert started[-1] == (20, 20) and again.executor == "local (resumed: 20 of 20 trials were on disk)"
    assert again.cells == result.cells


def test_every_configuration_alike_leaves_rho_undefined_and_says_why(spec: str, tmp_path: Path) -> None:
    configs = [{"losses": {"4/1": 1.0}} for _ in range(3)]
    result = run_study(StudyPlan(spec, configs, (4,), (1.0,)), tmp_path / "out", workers=1)
    (cell,) = result.cells
    assert (cell.configs, cell.spearman, cell.kendall, cell.spearman_low, cell.kendall_high) == (3, None, None, None,
                                                                                                 None)  # fmt: skip
    assert cell.note == "rho undefined: every configuration has the same loss" and cell.regret == 0.0


def test_a_held_out_judge_gives_a_noise_floor(spec: str, tmp_path: Path) -> None:
    """Seed 1 judges seed 0 at full fidelity: x = 1, 2, 3 scored 10x + 5 + seed/100, the same order: rho 1."""
    plan = StudyPlan(spec, [{"x": 1}, {"x": 2}, {"x": 3}], (4,), (1.0,), judge_seeds=1)
    result = run_study(plan, tmp_path / "out", workers=1)
    assert (result.judge, result.judge_seeds) == ("held-out", 1)
    assert (result.noise_floor.spearman, result.noise_floor.regret) == (pytest.approx(1.0), 0.0)
    two = run_study(StudyPlan(spec, [{"x": 1}, {"x": 2}, {"x": 3}], (4,), (1.0,), seeds=2), tmp_path / "two", workers=1)
    (cell,) = two.cells
    assert (cell.spearman_fold_low, cell.spearman_fold_high) == (pytest.approx(1.0), pytest.approx(1.0))


def test_a_study_refuses_what_it_cannot_rank_or_run(spec: str, tmp_path: Path) -> None:
    two = [{"x": 1}, {"x": 2}]
    with pytest.raises(LayerprofError, match=r"^the grid has 2 configuration\(s\); rank correlation needs at least 3$"):
        run_study(StudyPlan(spec, two, (4,), (1.0,)), tmp_path / "a")
    three = [{"x": 1}, {"x": 2}, {"x": 3}]
    for fraction in (0.0, 1.5):
        with pytest.raises(LayerprofError, match=r"^--budget-fractions must lie in \(0, 1\]$"):
            run_study(StudyPlan(spec, three, (4,), (fraction, 1.0)), tmp_path / "b")
    with pytest.raises(LayerprofError, match="^--executor must be one of local, ray, got 'slurm'$"):
        run_study(StudyPlan(spec, three, (4,), (1.0,)), tmp_path / "c", executor="slurm")


class StandInPool(ThreadPoolExecutor):
    """The worker processes as threads of this process (spawning processes that import torch takes seconds): what
    run_local asks of the pool, kept."""

    made: list[tuple[int, str]] = []
    submitted: list[object] = []

    def __init__(self, max_workers: int, mp_context: object) -> None:
        StandInPool.made.append((max_workers, mp_context.get_start_method()))
        super().__init__(max_workers)

    def submit(self, function: object, *args: object) -> object:
        StandInPool.submitted.append(args[-1])
        return super().submit(function, *args)


def test_workers_get_two_jobs_each_and_one_more_as_each_finishes(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import concurrent.futures

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", StandInPool)
    StandInPool.made, StandInPool.submitted = [], []
    jobs = [Trial(index, 1, 1.0, 0) for index in range(7)]
    heard: list[TrialResult] = []
    run_local(spec, [{"x": x} for x in range(7)], jobs, 2, heard.append)
    assert StandInPool.made == [(2, "spawn")] and StandInPool.submitted == jobs
    assert sorted(r.loss for r in heard) == [10.0 * x + 2 for x in range(7)]


def test_a_study_on_ray_runs_every_job_there(spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import layerprof.measure.cluster as cluster

    ray = StandInRay()
    monkeypatch.setattr(cluster, "ray_session", lambda address: contextlib.nullcontext(ray))
    result = run_study(table_plan(spec), tmp_path / "ray", executor="ray", gpu_fraction=lambda z: z / 4)
    assert result.executor == "ray" and len(ray.asked) == 20
    assert {options["num_gpus"] for options in ray.asked} == {0.25, 1.0}
    assert result.cell(1, 1.0).spearman == pytest.approx(0.6)


def test_a_configuration_that_fails_on_one_seed_counts_once_less_in_the_cell(spec: str, tmp_path: Path) -> None:
    """Two seeds judge each other; config 3 fails at full fidelity on seed 1 only. Replaying seed 0 against seed 1
    three configurations have both; replaying seed 1 against seed 0, at z=1, four: the cell counts the fewer."""
    configs = [{"x": 1}, {"x": 2}, {"x": 3}, {"x": 4, "nan_at": [4, 1.0, 1]}]
    result = run_study(StudyPlan(spec, configs, (1, 4), (1.0,), seeds=2), tmp_path / "out", workers=1)
    assert [(c.trainable_layers, c.configs) for c in result.cells] == [(1, 3), (4, 3)]
    assert result.failed_trials == 1


def test_continued_rungs_without_runs_have_no_statistics() -> None:
    plan = StudyPlan("t", [{"x": 1}, {"x": 2}, {"x": 3}], (1, 4), (0.5, 1.0), chains=(((1, 0.5), (4, 1.0)),))
    (chain,) = summarise_continued(plan, {}, {}, [])
    assert [(r.configs, r.spearman, r.spearman_scratch, r.regret) for r in chain.rungs] == [(0, None, None, None)] * 2
    assert chain.failed_runs == 0


def test_a_study_description_matches_by_its_fingerprint_or_by_its_task_and_configs(tmp_path: Path) -> None:
    """A study.json written under a task's old name keeps the fingerprint it had; one written before fingerprints
    were kept matches by its task and configurations; either is checked for its schema."""
    configs = [{"x": 1}]
    identity = {"task": "t", "configs": configs, "fingerprint": fingerprint("t", configs)}
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "study.json").write_text(
        json.dumps({"task": "old-t", "configs": [], **{"fingerprint": identity["fingerprint"]}})
    )
    TrialStore(renamed, identity)
    unprinted = tmp_path / "unprinted"
    unprinted.mkdir()
    (unprinted / "study.json").write_text(json.dumps({"task": "t", "configs": configs}))
    TrialStore(unprinted, identity)
    (unprinted / "study.json").write_text(json.dumps({"schema": "layerprof.study/9", "task": "t", "configs": configs}))
    with pytest.raises(LayerprofError, match="is a layerprof.study/9 study"):
        TrialStore(unprinted, identity)
    assert fingerprint("t", [{"a": 1, "b": 2}]) == fingerprint("t", [{"b": 2, "a": 1}])


def test_a_results_continued_failures_and_moved_task_read_back() -> None:
    data = CorrelationResult("layerprof.tasks:digits_task", [{}], [4], [1.0], 1).to_dict()
    data["continued"] = [{"chain": [[1, 0.5], [4, 1.0]], "rungs": [], "failed_runs": 2}]
    result = CorrelationResult.from_dict(data)
    assert result.continued[0].failed_runs == 2
    assert result.task == "layerprof.fidelity.tasks:digits_task"


def test_the_statistic_over_folds_is_their_mean() -> None:
    first, second = Fold((0,), (1,)), Fold((1,), (0,))
    lows = {first: [1.0, 2.0], second: [3.0, 4.0]}
    judges = {first: [1.0, 2.0], second: [1.0, 2.0]}
    assert _over_folds(lambda low, _judge: low[0], lows, judges)([0.0, 1.0], []) == 2.0


def test_a_cell_and_a_continued_rung_count_the_fewer_of_two_folds(spec: str, tmp_path: Path) -> None:
    """Configs 2 and 3 fail at full fidelity on seed 1: judged by seed 1 two configurations are known, by seed 0
    four. The cell and the rung count two: no rho."""
    configs = [{"x": 1}, {"x": 2}, {"x": 3, "nan_at": [4, 1.0, 1]}, {"x": 4, "nan_at": [4, 1.0, 1]}]
    plan = StudyPlan(spec, configs, (1, 4), (0.5, 1.0), seeds=2, chains=(((1, 0.5), (4, 1.0)),))
    result = run_study(plan, tmp_path / "out", workers=1)
    low = result.cell(1, 1.0)
    assert (low.configs, low.spearman) == (2, None) and low.note.startswith("rho undefined: 2 configuration(s)")
    assert [rung.configs for rung in result.continued[0].rungs] == [2, 2]


def test_continued_runs_of_a_task_that_cannot_continue_have_no_rungs(spec: str, tmp_path: Path) -> None:
    plain = spec.replace(":task", ":plain")
    plan = StudyPlan(plain, [{}, {"a": 1}, {"a": 2}], (4,), (0.5, 1.0), chains=(((4, 0.5), (4, 1.0)),))
    result = run_study(plan, tmp_path / "out", workers=1)
    assert [rung.configs for rung in result.continued[0].rungs] == [0, 0] and result.continued[0].failed_runs == 3


def test_workers_default_to_the_missing_trials_at_most_one_per_cpu(
    spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import concurrent.futures

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", StandInPool)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(correlate, "time", types.SimpleNamespace(perf_counter=itertools.count(100.0, 7.5).__next__))
    StandInPool.made, StandInPool.submitted = [], []
    three = [{"x": 1}, {"x": 2}, {"x": 3}]
    result = run_study(StudyPlan(spec, three, (4,), (1.0,)), tmp_path / "out")
    assert StandInPool.made == [(3, "spawn")] and result.wall_seconds == 7.5  # 3 trials, 4 CPUs
    StandInPool.made = []
    run_study(StudyPlan(spec, three, (4,), (1.0,)), tmp_path / "out")  # nothing missing: no pool
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: one
    run_study(StudyPlan(spec, three, (4,), (1.0,)), tmp_path / "other")
    assert StandInPool.made == []


def test_an_interrupt_cancels_the_workers_jobs(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import concurrent.futures

    shut: list[tuple[bool, bool]] = []

    class Pool(StandInPool):
        def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
            shut.append((wait, cancel_futures))
            super().shutdown(wait=True, cancel_futures=cancel_futures)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Pool)

    def interrupted(result: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_local(spec, [{"x": 1}], [Trial(0, z, 1.0, 0) for z in (1, 2, 3, 4)], 2, interrupted)
    assert shut[0] == (False, True)
