"""ASHA (asynchronous successive halving) as `simulate` replays it: the promotion rules of Optuna's
SuccessiveHalvingPruner and Ray Tune's ASHAScheduler, a hand-timed run on two workers, and the same recorded
losses fed to the real libraries, which must promote the same trials."""

from __future__ import annotations

import random
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


def tables_of(losses: list[list[float]], draw: random.Random) -> list[CellTable]:
    """Each rung's table: the recorded losses, and seconds that differ from trial to trial (so that on several
    workers trials end out of the order they started in)."""
    return [CellTable([[row[k]] for row in losses], [[round(draw.uniform(1, 4) * 3**k, 3)] for _ in losses])
            for k in range(RUNGS)]  # fmt: skip


@pytest.mark.parametrize("workers", [1, 4])
def test_rays_asha_scheduler_decides_what_the_replay_decides(workers: int) -> None:
    """Ray Tune's own ASHAScheduler (max_t 9, grace period 1, reduction factor 3: milestones 1, 3, 9) is handed
    each result in the order the replay's trials end on `workers`: the iteration of the rung ended and its loss.
    Its CONTINUE or STOP is the promotion; every one matches the Ray rule's."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    losses = recorded_losses()
    tables = tables_of(losses, random.Random(workers))
    scheduler = ASHAScheduler(time_attr="training_iteration", metric="loss", mode="min", max_t=ETA ** (RUNGS - 1),
                              grace_period=1, reduction_factor=ETA)  # fmt: skip
    decisions: list[tuple[int, int, bool, bool]] = []

    class Trial:  # what the scheduler reads of a trial: its id
        def __init__(self, index: int) -> None:
            self.trial_id = f"trial_{index}"

    trials: dict[int, Trial] = {}

    def ask_ray(candidate: tuple[int, int], rung: int, loss: float, earlier: list[float]) -> bool:
        index = candidate[0]
        if index not in trials:
            trials[index] = Trial(index)
            scheduler.on_trial_add(None, trials[index])
        action = scheduler.on_trial_result(None, trials[index], {"training_iteration": ETA**rung, "loss": loss})
        decisions.append((index, rung, action == TrialScheduler.CONTINUE, promoted(loss, earlier, ETA, "ray")))
        return action == TrialScheduler.CONTINUE

    candidates = [(i, 0) for i in range(CONFIGS)]
    library = asha(tables, candidates, ETA, workers, decide=ask_ray)
    ours = asha(tables, candidates, ETA, workers, rule="ray")
    assert [d[2] for d in decisions] == [d[3] for d in decisions]
    assert library.reached == ours.reached and library.pick == ours.pick
    assert sum(continued for _, _, continued, _ in decisions) > RUNGS  # more than the first trial went on


@pytest.mark.parametrize("workers", [1, 4])
def test_optunas_pruner_decides_what_the_replay_decides_with_trials_running_at_once(workers: int) -> None:
    """Optuna's own SuccessiveHalvingPruner through ask and tell: a trial is asked for when it starts, reports its
    loss at step eta^rung when it ends a rung, and is told PRUNED where the pruner says so; trials end in the
    replay's order on `workers`."""
    import optuna

    losses = recorded_losses()
    tables = tables_of(losses, random.Random(10 + workers))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ETA, min_early_stopping_rate=0)
    study = optuna.create_study(direction="minimize", pruner=pruner)
    asked: dict[int, optuna.Trial] = {}

    def ask_optuna(candidate: tuple[int, int], rung: int, loss: float, earlier: list[float]) -> bool:
        index = candidate[0]
        trial = asked.setdefault(index, study.ask())
        trial.report(loss, ETA**rung)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return False
        if rung == RUNGS - 2:  # the top rung's loss is its value
            study.tell(trial, losses[index][-1])
        return True

    candidates = [(i, 0) for i in range(CONFIGS)]
    library = asha(tables, candidates, ETA, workers, decide=ask_optuna)
    ours = asha(tables, candidates, ETA, workers, rule="optuna")
    assert library.reached == ours.reached and library.pick == ours.pick
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == sum(r == RUNGS - 1 for r in ours.reached.values())


def test_simulate_prices_every_path_on_a_named_kind(tmp_path: Path) -> None:
    """A profile measured on an H100 (10, 20, 30 ms a step): each algorithm's device seconds at the H100's price,
    or on an L4 scaled by the two kinds' float32 peaks (67 / 30.3) at the price given."""
    from layerprof.devices import GPU_KINDS, PriceBook
    from layerprof.errors import LayerprofError
    from layerprof.parsing import price_book
    from layerprof.profile import Row
    from tests.conftest import bare_profile
    from tests.fidelity.test_simulate import write_task

    rows = [Row(8, z, "ok", step_time_ms=10.0 * z, flops=10**12 * z, peak_memory_bytes=z * 2**30,
                peak_reserved_bytes=z * 2**30) for z in (1, 2, 3)]  # fmt: skip
    profile = bare_profile(rows, 3, spec="synthetic-model", device_kind="cuda", device_name="NVIDIA H100 80GB HBM3",
                           total_memory_bytes=80 * 2**30)  # fmt: skip
    study = write_study(tmp_path / "s", 9, perfect, task=write_task(tmp_path))
    on_h100 = simulate(study, eta=3, repeats=2, profile=profile, paths=["layers"], gpu=GPU_KINDS["H100"],
                       prices=PriceBook())  # fmt: skip
    layers = on_h100.path("layers")
    for outcome in (layers.successive_halving, layers.hyperband, layers.asha):
        assert outcome.usd == pytest.approx(outcome.gpu_seconds * 3.9492 / 3600)
    assert on_h100.price.startswith("$3.9492/h (Modal") and on_h100.priced_time_source == "measured on H100"
    on_l4 = simulate(study, eta=3, repeats=2, profile=profile, paths=["layers"], gpu=GPU_KINDS["L4"],
                     prices=price_book(["L4=1"], environ={}))  # fmt: skip
    sh = on_l4.path("layers").successive_halving
    assert sh.usd == pytest.approx(sh.gpu_seconds * 67 / 30.3 / 3600)
    assert on_l4.priced_time_source == "scaled from H100 by peak"
    with pytest.raises(LayerprofError, match="no price for H200"):
        simulate(study, eta=3, repeats=1, profile=profile, paths=["layers"], gpu=GPU_KINDS["H200"], prices=PriceBook())
    with pytest.raises(LayerprofError, match="--gpu H100 prices the profile's device seconds: give --profile too"):
        simulate(study, eta=3, repeats=1, paths=["layers"], gpu=GPU_KINDS["H100"])
