"""ASHA (asynchronous successive halving) as `simulate` replays it: the promotion rules of Optuna's
SuccessiveHalvingPruner and Ray Tune's ASHAScheduler, a hand-timed run on two workers, and the same recorded
losses fed to the real libraries, which must promote the same trials."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from layerprof.fidelity.ladder import Bracket
from layerprof.fidelity.simulate import CellTable, asha, halve_timed, promoted, simulate
from tests.fidelity.test_simulate import perfect, write_study


@pytest.mark.parametrize(
    ("loss", "earlier", "optuna", "ray"),
    [
        (5.0, [], True, True),  # the first at a rung goes on under both
        (2.0, [1.0], False, False),
        (1.0, [1.0], True, True),  # a tie with the best so far goes on
        (0.9, [1.0, 2.0], True, True),
        (1.5, [1.0, 2.0], False, False),
        (1.3, [1.0, 2.0], False, True),  # Ray: at most the 1/3 quantile of [1, 2], 1.333; Optuna: the best of 3
        (1.5, [1.0, 2.0, 3.0, 4.0, 5.0], True, True),  # Optuna: 6 recorded, the best 2 go on (1 and 1.5)
        (2.5, [1.0, 2.0, 3.0, 4.0, 5.0], False, False),
        (2.0, [1.0, 2.0, 3.0, 4.0], False, True),  # Optuna: the best 1 of 5; Ray: the 1/3 quantile of 4 is 2.0
        (2.01, [1.0, 2.0, 3.0, 4.0], False, False),
        (float("inf"), [], False, False),  # a failed trial never goes on
        (float("nan"), [1.0], False, False),
    ],
)
def test_the_promotion_rules_of_optuna_and_ray(loss: float, earlier: list[float], optuna: bool, ray: bool) -> None:
    """Ray keeps a trial whose reward -loss is at least numpy's (1 - 1/eta) percentile of the rewards recorded
    before it: for [1, 2] at eta 3 that is -1.333 (loss 1.333), so 1.3 goes on under Ray; Optuna keeps the best
    floor(n / eta) of the n recorded with it, at least the best (here the best of 3: 1.0)."""
    assert promoted(loss, earlier, 3, "optuna") is optuna
    assert promoted(loss, earlier, 3, "ray") is ray


def test_rays_cutoff_is_numpys_percentile_to_the_last_bit() -> None:
    import numpy

    draw = random.Random(3)
    for _ in range(2000):
        earlier = [round(draw.uniform(0, 3), draw.choice((1, 2, 6))) for _ in range(draw.randint(1, 12))]
        eta = draw.choice((2, 3, 4))
        cutoff = numpy.nanpercentile([-value for value in earlier], (1 - 1 / eta) * 100)
        for loss in (*earlier, float(-cutoff), draw.uniform(0, 3)):
            assert promoted(loss, earlier, eta, "ray") is bool(not -loss < cutoff), (loss, earlier, eta)


def test_asha_on_two_workers_promotes_on_arrival_and_never_waits_for_a_rung() -> None:
    """Four candidates, two rungs, eta 2, two workers. Rung 0 ends: c0 at 1 s (first: goes on), c1 at 2 s (1 < 3:
    goes on); both top trials take 10 s, so c2 starts at 11 s and ends rung 0 at 12 s (2 is not the best of 3:
    stops), c3 starts at 12 s, ends at 13 s (0.5: among the best 2 of 4) and its top trial at 23 s."""
    low = CellTable(losses=[[3.0], [1.0], [2.0], [0.5]], seconds=[[1.0], [2.0], [1.0], [1.0]])
    top = CellTable(losses=[[3.0], [1.0], [9.0], [0.2]], seconds=[[10.0]] * 4)
    candidates = [(0, 0), (1, 0), (2, 0), (3, 0)]
    run = asha([low, top], candidates, 2, workers=2, rule="optuna")
    assert run.reached == {(0, 0): 1, (1, 0): 1, (2, 0): 0, (3, 0): 1}
    assert (run.pick, run.seconds, run.wall_seconds) == ((3, 0), 35.0, 23.0)
    # synchronous halving on the same workers: rung 0 in 3 s (1 + 2 on one worker, 1 + 1 on the other), then the
    # best two (c3, c1) side by side for 10 s; here the early promotion of c0 costs ASHA its lead
    bracket = Bracket(first_rung=0, configs_per_rung=[4, 2], cost_full_equivalents=0)
    assert halve_timed([low, top], bracket, candidates, 2) == ((3, 0), 25.0, 13.0)
    assert asha([low, top], candidates, 2, workers=1, rule="optuna").wall_seconds == 35.0  # one worker: the sum


def test_simulate_replays_asha_beside_halving_with_its_wall_time(tmp_path: Path) -> None:
    """Every fidelity ranks like full training: ASHA, started on all 9 configurations as halving is, finds the
    best as halving does (the best is promoted wherever it arrives); on 4 workers its trials never wait for a
    rung."""
    study = write_study(tmp_path / "s", 9, perfect, seconds=lambda z, f: z * f * 10)
    result = simulate(study, eta=3, repeats=20, workers=4)
    layers = result.path("layers")
    assert layers.asha is not None and layers.asha.regret_median == 0 and layers.asha.best_found_share == 1
    assert layers.asha.workers == 4 and layers.successive_halving.workers == 4
    assert layers.asha.trials_per_rung[0] == 9  # 3^2 starting configurations, as halving's
    assert layers.asha.wall_seconds is not None and layers.successive_halving.wall_seconds is not None
    assert layers.successive_halving.wall_seconds >= layers.successive_halving.recorded_seconds / 4
    assert result.to_dict()["paths"][0]["asha"]["trials_per_rung"] is not None


# ---------------------------------------------------------------- the real libraries

RUNGS, ETA, CONFIGS = 3, 3, 27


def recorded_losses(seed: int = 7) -> list[list[float]]:
    """Per configuration, the loss a continued run reaches at each rung: noisy, mostly falling."""
    draw = random.Random(seed)
    return [[round(draw.uniform(0.5, 2.0) / (k + 1) + draw.uniform(0, 0.3), 4) for k in range(RUNGS)]
            for _ in range(CONFIGS)]  # fmt: skip


def replayed(losses: list[list[float]], rule: str) -> list[int]:
    tables = [CellTable([[row[k]] for row in losses], [[1.0]] * len(losses)) for k in range(RUNGS)]
    run = asha(tables, [(i, 0) for i in range(len(losses))], ETA, workers=1, rule=rule)
    return [run.reached[(i, 0)] for i in range(len(losses))]


def test_optuna_successive_halving_pruner_promotes_what_the_replay_promotes() -> None:
    """Trial i reports configuration i's loss at steps 1, 3 and 9 (eta^k), asking the pruner after rungs 0 and 1;
    one trial at a time, as the replay on one worker."""
    import optuna

    losses = recorded_losses()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA, min_early_stopping_rate=0)
    study = optuna.create_study(direction="minimize", pruner=pruner)
    reached: dict[int, int] = {}

    def objective(trial: optuna.Trial) -> float:
        for rung in range(RUNGS):
            reached[trial.number] = rung
            trial.report(losses[trial.number][rung], ETA**rung)
            if rung < RUNGS - 1 and trial.should_prune():
                raise optuna.TrialPruned
        return losses[trial.number][-1]

    study.optimize(objective, n_trials=CONFIGS)
    library = [reached[i] for i in range(CONFIGS)]
    assert library == replayed(losses, "optuna")
    assert sorted(library) != sorted(replayed(losses, "ray")), "the two rules should differ on these losses"
    assert sum(r == RUNGS - 1 for r in library) > 1  # more than the first trial reached the top


RAY_SCRIPT = textwrap.dedent("""
    import json, sys
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    losses, eta, out = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rungs = len(losses[0])

    def trainable(config):
        row = losses[config["index"]]
        for iteration in range(1, eta ** (rungs - 1) + 1):  # milestones 1, eta, eta^2: report the rung's loss
            rung = max(k for k in range(rungs) if eta**k <= iteration)
            tune.report({"loss": row[rung], "rung": rung})

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    scheduler = ASHAScheduler(time_attr="training_iteration", metric="loss", mode="min", max_t=eta ** (rungs - 1),
                              grace_period=1, reduction_factor=eta)
    tuner = tune.Tuner(
        trainable,
        param_space={"index": tune.grid_search(list(range(len(losses))))},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=out + ".ray", verbose=0),
    )
    results = tuner.fit()
    reached = {r.config["index"]: max(r.metrics_dataframe["rung"]) for r in results}
    json.dump([int(reached[i]) for i in range(len(losses))], open(out, "w"))
""")


def test_ray_tune_asha_scheduler_promotes_what_the_replay_promotes(tmp_path: Path) -> None:
    """The same losses through Ray Tune's ASHAScheduler (one trial at a time, configurations in order, a report
    per training iteration: the loss of the highest rung whose milestone 1, 3 or 9 it has passed)."""
    losses = recorded_losses()
    script, out = tmp_path / "ray_asha.py", tmp_path / "reached.json"
    script.write_text(RAY_SCRIPT)
    environment = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore", "RAY_DEDUP_LOGS": "0"}
    done = subprocess.run([sys.executable, str(script), json.dumps(losses), str(ETA), str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env=environment)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert json.loads(out.read_text()) == replayed(losses, "ray")
