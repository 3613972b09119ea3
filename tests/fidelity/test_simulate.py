"""`layerprof simulate`: successive halving and Hyperband replayed on recorded trials.

The studies here are written by hand, so that the right answer is known: where every fidelity ranks like full
training, every path finds the best configuration; where the lowest rung ranks at random, halving keeps a
random third and the regret is that of the best of a random three.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import random
import textwrap
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.errors import LayerprofError
from layerprof.fidelity.ladder import Bracket
from layerprof.fidelity.simulate import MAX_REPEATS, REPEAT_BATCH, curve_series, halve, simulate
from layerprof.fidelity.trials import spread
from layerprof.outputs.tables import markdown_views, simulation_rows, simulation_views, with_uncertainty
from layerprof.profile import Row, save_profile
from tests.cli.test_cli import assert_one_line_error
from tests.conftest import bare_profile

THIRD, NINTH = 1 / 3, 1 / 9


def write_study(
    directory: Path,
    configs: int,
    loss: Callable[[int, int, float, int], float | None],
    zs: tuple[int, ...] = (1, 2, 3),
    fractions: tuple[float, ...] = (NINTH, THIRD, 1.0),
    seeds: int = 1,
    seconds: Callable[[int, float], float] = lambda z, f: z * f,
    task: str = "synthetic",
    skip: Callable[[int, int, float, int], bool] = lambda *_: False,
) -> Path:
    """study.json and trials.jsonl as `layerprof correlate` writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    grid = [{"learning_rate": 10.0**-index} for index in range(configs)]
    (directory / "study.json").write_text(json.dumps({"task": task, "configs": grid, "fingerprint": "test"}))
    lines = []
    for index, z, fraction, seed in itertools.product(range(configs), zs, fractions, range(seeds)):
        if skip(index, z, fraction, seed):
            continue
        value = loss(index, z, fraction, seed)
        lines.append(json.dumps({
            "config_index": index, "trainable_layers": z, "budget_fraction": fraction, "seed": seed,
            "loss": value, "error": None if value is not None else "RuntimeError: diverged",
            "seconds": seconds(z, fraction),
        }))  # fmt: skip
    (directory / "trials.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def perfect(index: int, z: int, fraction: float, _seed: int) -> float:
    """Every cell ranks configurations exactly as full training does; low fidelities are just worse."""
    return index + 1 + 10 / (z * fraction)


# ---------------------------------------------------------------- the answers we know


def test_perfect_ranking_finds_the_best_on_every_path_at_zero_regret(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", 9, perfect)
    result = simulate(study, eta=3, repeats=200, custom_paths=[[(1, NINTH), (1, THIRD), (3, 1.0)]])
    assert [p.name for p in result.paths] == ["layers", "budget", "diagonal", "custom-1"]
    assert result.starting_configs == 9  # eta^(3 rungs - 1), all the study has: the best is always drawn
    for path in result.paths:
        for outcome in (path.successive_halving, path.hyperband):
            assert outcome is not None
            assert (outcome.regret_median, outcome.regret_high, outcome.best_found_share) == (0, 0, 1), path.name
        assert all(rung.spearman == pytest.approx(1.0) for rung in path.rungs)


def test_a_random_lowest_rung_costs_the_best_of_a_random_third(tmp_path: Path) -> None:
    """Lowest layers rung at random (every configuration draws from the same values, one per seed), the rest
    perfect: 9 -> 3 survivors are a uniform 3-subset, so regret is min(random 3 of 1..9) - 1, mean 1.5,
    median 1, and the best survives 1/3 of the time. The budget path ranks perfectly: regret 0."""
    values = [random.Random(seed).random() * 100 for seed in range(20)]

    def loss(index: int, z: int, fraction: float, seed: int) -> float:
        if z == 1 and fraction == 1.0:
            return values[(seed + 7 * index) % 20]  # the same 20 values for every configuration
        return perfect(index, z, fraction, seed)

    study = write_study(tmp_path / "s", 9, loss, seeds=20)
    result = simulate(study, eta=3, repeats=4000, paths=["layers", "budget"])
    layers = result.path("layers").successive_halving
    assert layers.brackets == [{"first_rung": 0, "configs_per_rung": [9, 3, 1]}]
    assert layers.regret_mean == pytest.approx(1.5, abs=0.1)  # standard error ~0.02
    assert layers.regret_median == pytest.approx(1)
    assert layers.best_found_share == pytest.approx(1 / 3, abs=0.04)
    # Hyperband: brackets 9·3·1 (a random 3 survive), 5·1 from z=2 and 3 at z=3 (both rank perfectly), each
    # drawn on its own; the pick is the best of the three winners. P(regret >= k) = P(every bracket misses the
    # k best): [C(9-k, 3) / C(9, 3)]^2 * C(9-k, 5) / C(9, 5).
    expected = sum(
        (math.comb(9 - k, 3) / math.comb(9, 3)) ** 2 * math.comb(9 - k, 5) / math.comb(9, 5) for k in range(1, 9)
    )
    assert result.path("layers").hyperband.regret_mean == pytest.approx(
        expected, abs=0.05
    )  # 0.229; standard error ~0.01
    budget = result.path("budget").successive_halving
    assert (budget.regret_median, budget.regret_high) == (0, 0)
    assert result.path("layers").rungs[0].spearman is not None and abs(result.path("layers").rungs[0].spearman) < 0.9


def test_recorded_seconds_add_up_over_the_trials_each_rung_trains(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", 9, perfect, seconds=lambda z, f: 10 * z + f)
    result = simulate(study, eta=3, repeats=5)
    layers = result.path("layers").successive_halving  # 9 at z=1, 3 at z=2, 1 at z=3, all at budget 1
    assert layers.recorded_seconds == pytest.approx(9 * 11 + 3 * 21 + 1 * 31)
    budget = result.path("budget").successive_halving  # z=3 at 1/9, 1/3, 1
    assert budget.recorded_seconds == pytest.approx(9 * (30 + NINTH) + 3 * (30 + THIRD) + 31)
    assert layers.recorded_seconds_vs_budget == pytest.approx(layers.recorded_seconds / budget.recorded_seconds)
    hyperband = result.path("layers").hyperband  # Li et al. for 3 rungs: 9·3·1, 5·1 (from rung 1), 3 (rung 2)
    assert [b["configs_per_rung"] for b in hyperband.brackets] == [[9, 3, 1], [5, 1], [3]]
    assert hyperband.recorded_seconds == pytest.approx(9 * 11 + 3 * 21 + 31 + 5 * 21 + 31 + 3 * 31)


def test_halving_breaks_ties_by_the_random_order_of_the_draw() -> None:
    from layerprof.fidelity.simulate import CellTable

    flat = CellTable(losses=[[1.0]] * 4, seconds=[[1.0]] * 4)
    truth = CellTable(losses=[[4.0], [3.0], [2.0], [1.0]], seconds=[[1.0]] * 4)
    bracket = Bracket(first_rung=0, configs_per_rung=[4, 2], cost_full_equivalents=0)
    assert halve([flat, truth], bracket, [(2, 0), (0, 0), (3, 0), (1, 0)]) == ((2, 0), 6.0)  # kept 2 and 0
    assert halve([flat, truth], bracket, [(3, 0), (1, 0), (2, 0), (0, 0)]) == ((3, 0), 6.0)


def test_a_pick_that_failed_at_full_fidelity_counts_as_the_worst(tmp_path: Path) -> None:
    """Config 0 looks best at every low rung but diverges in full training: picked, it is the worst outcome;
    where full training is a rung with others beside it, it loses there (a failed trial ranks last)."""

    def loss(index: int, z: int, fraction: float, seed: int) -> float | None:
        if index == 0:
            return None if (z, fraction) == (3, 1.0) else 0.0
        return perfect(index, z, fraction, seed)

    study = write_study(tmp_path / "s", 9, loss)
    result = simulate(
        study, eta=3, repeats=20, starting_configs=9, paths=["budget"], custom_paths=[[(2, 1.0), (3, 1.0)], [(2, 1.0)]]
    )
    # 9 -> 3 at z=2 keeps configs 0, 1, 2; at full fidelity 0 failed and 1 (the best) wins
    assert result.path("custom-1").successive_halving.regret_median == 0
    # one rung at z=2: config 0 wins and is judged by full training, which it failed: worst (9) minus best (2)
    assert result.path("custom-2").successive_halving.regret_median == pytest.approx(9 - 2)


def test_paths_follow_the_chosen_study_values(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", 9, perfect, zs=(1, 2, 3, 4, 6), fractions=(0.25, 0.5, 1.0))
    result = simulate(study, eta=2, repeats=2)
    cells = {p.name: [(r.trainable_layers, r.budget_fraction) for r in p.rungs] for p in result.paths}
    assert cells["layers"] == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0), (6, 1.0)]
    assert cells["budget"] == [(6, 0.25), (6, 0.5), (6, 1.0)]
    assert cells["diagonal"] == [(1, 0.25), (3, 0.5), (6, 1.0)]
    assert result.starting_configs == 4  # eta^(budget rungs - 1)
    chosen = simulate(study, eta=2, repeats=2, layer_counts=[2, 6], budget_fractions=[0.5, 1.0])
    cells = {p.name: [(r.trainable_layers, r.budget_fraction) for r in p.rungs] for p in chosen.paths}
    assert cells == {"layers": [(2, 1.0), (6, 1.0)], "budget": [(6, 0.5), (6, 1.0)], "diagonal": [(2, 0.5), (6, 1.0)]}
    assert spread([1, 2, 3, 4, 6], 3) == [1, 3, 6] and spread([1, 2], 1) == [2]


def test_every_path_sees_the_same_draws_whichever_paths_ran(tmp_path: Path) -> None:
    """Repeat r draws the same configurations on every path: the budget path's figures are the same alone or beside
    others, and a --path with the budget path's rungs gives the budget path's figures exactly."""
    study = write_study(tmp_path / "s", 27, lambda i, z, f, s: random.Random(f"{i}/{z}/{f}").random() + i / 27)
    alone = simulate(study, eta=3, repeats=200, paths=["budget"])
    together = simulate(study, eta=3, repeats=200, paths=["layers", "diagonal", "budget"],
                        custom_paths=[[(3, NINTH), (3, THIRD), (3, 1.0)]])  # fmt: skip
    budget = asdict(alone.path("budget"))
    assert asdict(together.path("budget")) == budget
    twin = asdict(together.path("custom-1"))
    assert {key: twin[key] for key in ("successive_halving", "hyperband", "curve")} == {
        key: budget[key] for key in ("successive_halving", "hyperband", "curve")
    }


def test_rho_per_rung_ranks_the_mean_over_the_replayed_seeds(tmp_path: Path) -> None:
    """Each seed alone ranks 5 configurations with rho 0.8 (two pairs of neighbours swapped); their means rank
    exactly as full training does: rho 1, neither one seed's nor the seeds' average rho (both 0.8). A third
    seed recorded at full fidelity only judges both."""
    low = {0: [0.0, 3.0, 1.0, 5.0, 4.0], 1: [2.0, 0.0, 5.0, 3.0, 6.0]}  # means 1, 1.5, 3, 4, 5

    def loss(index: int, z: int, fraction: float, seed: int) -> float:
        return low[seed][index] if z == 1 else float(index)

    study = write_study(
        tmp_path / "s", 5, loss, zs=(1, 2), fractions=(1.0,), seeds=3, skip=lambda _i, z, _f, seed: seed == 2 and z == 1
    )
    result = simulate(study, eta=2, repeats=10, paths=["layers"])
    assert (result.judge, result.judge_folds, result.judge_seeds) == ("held-out", 1, 1)
    assert [rung.spearman for rung in result.path("layers").rungs] == [pytest.approx(1.0), pytest.approx(1.0)]
    # without the judge seed, each seed judges the other: each alone ranks with rho 0.8
    rotated = write_study(tmp_path / "two", 5, loss, zs=(1, 2), fractions=(1.0,), seeds=2)
    rungs = simulate(rotated, eta=2, repeats=10, paths=["layers"]).path("layers").rungs
    assert (rungs[0].spearman, rungs[0].spearman_low, rungs[0].spearman_high) == pytest.approx((0.8, 0.8, 0.8))
    one_seed = write_study(tmp_path / "one", 5, lambda i, z, f, s: loss(i, z, f, 0), zs=(1, 2), fractions=(1.0,))
    ranks = simulate(one_seed, eta=2, repeats=10, paths=["layers"]).path("layers").rungs
    assert ranks[0].spearman == pytest.approx(0.8)  # seed 0 alone: 1 - 6 x 4 / (5 x 24)


def test_each_run_draws_from_every_seed_but_the_one_that_judges_it(tmp_path: Path) -> None:
    from layerprof.fidelity.simulate import Replay, load_study

    study = load_study(write_study(tmp_path / "s", 6, perfect, zs=(1,), fractions=(1.0,), seeds=3))
    replay = Replay(study, 30, 0)
    assert [(f.replay, f.judge) for f in replay.folds] == [((1, 2), (0,)), ((0, 2), (1,)), ((0, 1), (2,))]
    drawn = {fold: set() for fold in range(3)}
    for repeat in range(30):
        drawn[repeat % 3] |= {seed for _, seed in replay.candidates(repeat, 0, 6)}
    assert drawn == {0: {1, 2}, 1: {0, 2}, 2: {0, 1}}


def test_a_replay_keeps_its_draws_for_the_next_path_up_to_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every path replays the same draws, so a replay keeps them (up to DRAWN_LIMIT candidates) instead of
    drawing again: kept or not, in any order, a draw equals the one a fresh replay makes."""
    from layerprof.fidelity import simulate as simulation

    study = simulation.load_study(write_study(tmp_path / "s", 6, perfect, zs=(1,), fractions=(1.0,), seeds=3))
    keys = [(repeat, bracket, count) for repeat in range(4) for bracket in range(2) for count in (2, 6)]
    monkeypatch.setattr(simulation, "DRAWN_LIMIT", 27)  # room for the first 7 draws (2+6+2+6+2+6+2 = 26)
    keeping = simulation.Replay(study, 30, 0)
    first = [keeping.candidates(*key) for key in keys]
    assert keeping._drawn_count == 26 and len(keeping._drawn) == 7
    again = [keeping.candidates(*key) for key in keys]
    assert [a is b for a, b in zip(first, again, strict=True)] == [True] * 7 + [False] * 9  # kept, then drawn anew
    monkeypatch.setattr(simulation, "DRAWN_LIMIT", 0)
    fresh = simulation.Replay(study, 30, 0)
    assert [fresh.candidates(*key) for key in reversed(keys)] == list(reversed(again)) == list(reversed(first))
    assert [len(draw) for draw in first] == [count for _, _, count in keys]
    # Random("0/0/0").sample(range(6), 2) is [4, 5], then two draws from fold 0's replay seeds (1, 2) give 2, 2
    assert first[0] == ((4, 2), (5, 2))


def test_a_same_seed_judge_and_a_held_out_judge_disagree_on_a_scripted_study(tmp_path: Path) -> None:
    """Seed 0 trains 4 configurations at z=1 and z=2 (full): z=1 ranks them 4 3 2 1, its full training 1 2 3 4.
    Seed 1, trained at full fidelity only, ranks them 4 3 2 1 like z=1: seed 0's full training was the fluke.
    Halving 4 -> 2 -> 1 keeps configurations 3 and 2 at z=1 and picks 2 (3 < 4 at z=2). Judged by seed 0
    itself (same-seed): z=1 has rho -1, the pick regret 3 - 1 = 2. Judged by seed 1 (held out): z=1 has rho 1,
    z=2 (full training itself) -1, and the pick regret 2 - 1 = 1; full training alone would have picked
    configuration 0, regret 4 - 1 = 3: the noise floor."""
    by_seed = {(0, 1): [4.0, 3.0, 2.0, 1.0], (0, 2): [1.0, 2.0, 3.0, 4.0], (1, 2): [4.0, 3.0, 2.0, 1.0]}

    def loss(index: int, z: int, _fraction: float, seed: int) -> float:
        return by_seed[(seed, z)][index]

    def one(seeds: int) -> object:
        directory = tmp_path / f"seeds{seeds}"
        write_study(directory, 4, loss, (1, 2), (1.0,), seeds, skip=lambda _i, z, _f, seed: (seed, z) == (1, 1))
        return simulate(directory, eta=2, starting_configs=4, repeats=20, paths=["layers"])

    same, held_out = one(1), one(2)
    assert (same.judge, same.noise_floor) == ("same-seed", None)
    assert any(note.startswith("single-seed study: every verdict is judged by") for note in same.notes)
    assert [r.spearman for r in same.path("layers").rungs] == pytest.approx([-1.0, 1.0])
    assert same.path("layers").successive_halving.regret_mean == 2.0
    assert held_out.judge == "held-out" and not any("single-seed" in note for note in held_out.notes)
    assert [r.spearman for r in held_out.path("layers").rungs] == pytest.approx([1.0, -1.0])
    assert held_out.path("layers").successive_halving.regret_mean == 1.0
    floor = held_out.noise_floor
    assert (floor.spearman, floor.regret, floor.folds) == (pytest.approx(-1.0), 3.0, 1)
    # the tables say who judged: same-seed verdicts are marked in each algorithm's title
    assert markdown_views(simulation_views(same)).count("same-seed judge") == 3  # halving, Hyperband, ASHA
    assert "same-seed judge" not in markdown_views(simulation_views(held_out))
    assert "held-out judge (1 rotation) · noise floor ρ -1.00, regret 3" in markdown_views(simulation_views(held_out))


def test_the_same_draws_give_the_same_answer_and_another_seed_another(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", 27, lambda i, z, f, s: random.Random(f"{i}/{z}/{f}").random() + i / 27)
    first = simulate(study, eta=3, repeats=50, starting_configs=9, seed=1)
    again = simulate(study, eta=3, repeats=50, starting_configs=9, seed=1)
    other = simulate(study, eta=3, repeats=50, starting_configs=9, seed=2)
    assert first.to_dict() == again.to_dict()
    assert first.to_dict()["paths"] != other.to_dict()["paths"]


# ---------------------------------------------------------------- priced by a profile


def write_task(directory: Path, profile_spec: str = "synthetic-model") -> str:
    path = directory / "task.py"
    path.write_text(
        textwrap.dedent(f"""
        def task(config, trainable_layers, budget_fraction):
            return 0.0

        task.layer_count = 3
        task.full_steps = 90
        task.batch_size = 8
        task.profile_spec = {profile_spec!r}
    """)
    )
    return f"{path}:task"


def priced_profile(spec: str = "synthetic-model", device: str = "cuda") -> object:
    gib = 2**30
    rows = [
        Row(8, z, "ok", step_time_ms=10.0 * z, flops=10**12 * z, peak_memory_bytes=z * gib, peak_reserved_bytes=z * gib)
        for z in (1, 2, 3)
    ]
    return bare_profile(rows, 3, spec=spec, device_kind=device, total_memory_bytes=16 * 2**30)


def test_a_profile_prices_the_trials_on_its_gpu(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", 9, perfect, task=write_task(tmp_path))
    result = simulate(study, eta=3, repeats=3, profile=priced_profile(), paths=["layers", "budget", "ladder"])
    assert (result.batch_size, result.full_steps, result.gpu_memory_bytes) == (8, 90, 16 * 2**30)
    layers = result.path("layers")
    steps = 90  # every rung on the full budget
    assert [r.price.steps for r in layers.rungs] == [steps] * 3
    sh = layers.successive_halving
    assert sh.gpu_seconds == pytest.approx((9 * 10 + 3 * 20 + 1 * 30) * steps / 1000)
    assert sh.flops == pytest.approx((9 * 1 + 3 * 2 + 1 * 3) * 1e12 * steps)
    # one trial needs its reservation plus the CUDA context reserve; 16 GiB holds that many side by side
    slots = [r.price.parallel_slots for r in layers.rungs]
    assert slots == [9, 5, 4]  # 16 GiB over 1.75, 2.75 and 3.75 GiB
    waves = [math.ceil(count / slot) for count, slot in zip([9, 3, 1], slots, strict=True)]
    assert sh.slot_wall_seconds == pytest.approx(
        sum(w * 10 * z * steps / 1000 for w, z in zip(waves, (1, 2, 3), strict=True))
    )
    assert sh.peak_memory_bytes == layers.rungs[-1].price.memory_need_bytes
    budget = result.path("budget")
    assert [r.price.steps for r in budget.rungs] == [10, 30, 90]
    assert sh.gpu_seconds_vs_budget == pytest.approx(sh.gpu_seconds / budget.successive_halving.gpu_seconds)
    # a CPU profile has no CUDA context to add: a trial holds its peak
    on_cpu = simulate(study, eta=3, repeats=1, profile=priced_profile(device="cpu"), paths=["layers"])
    assert [r.price.memory_need_bytes for r in on_cpu.path("layers").rungs] == [z * 2**30 for z in (1, 2, 3)]
    assert on_cpu.gpu_memory_bytes is None and on_cpu.path("layers").successive_halving.slot_wall_seconds is None
    # the ladder over costs 10, 20, 30 ms at eta 3: z=1 and z=3 (three times the cost)
    assert [r.trainable_layers for r in result.path("ladder").rungs] == [1, 3]
    # slots 10, 6, 4 (16 GiB over 1.5, 2.5, 3.5 GiB): layers 9·3·1 in one wave each, 0.9 + 1.8 + 2.7 s; budget
    # (z=3 at 10, 30, 90 steps) 9 in three waves of 0.3 s, 3 in one of 0.9 s, 1 of 2.7 s: 4.5 s
    assert sh.slot_wall_seconds == pytest.approx(5.4)
    assert budget.successive_halving.slot_wall_seconds == pytest.approx(4.5)
    assert sh.slot_wall_vs_budget == pytest.approx(1.2)


def test_the_study_carries_its_ladder_to_another_machine_and_says_where_they_differ(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", 9, perfect, task=write_task(tmp_path))
    first = simulate(study, eta=3, repeats=3, profile=priced_profile(), paths=["ladder"])
    assert [r.trainable_layers for r in first.path("ladder").rungs] == [1, 3]
    carried = json.loads((study / "study.json").read_text())["ladders"]
    assert carried == {"3": {"layers": [1, 3], "profile": "synthetic-model", "device": "test"}}
    # a simulation elsewhere replays the study's rungs, not its own profile's, and says so
    meta = json.loads((study / "study.json").read_text())
    meta["ladders"]["3"] = {"layers": [2, 3], "profile": "synthetic-model", "device": "the other GPU"}
    (study / "study.json").write_text(json.dumps(meta))
    again = simulate(study, eta=3, repeats=3, profile=priced_profile(), paths=["ladder"])
    assert [r.trainable_layers for r in again.path("ladder").rungs] == [2, 3]
    assert "the ladder paths use the study's ladder at eta 3, z 2,3 (from the other GPU); this profile (test) " \
        "recommends z 1,3" in again.notes  # fmt: skip
    # a profile whose ladder rests on disturbed cells keeps its warning
    disturbed = priced_profile()
    for row in disturbed.rows:
        row.disturbed = row.trainable_layers == 3
    noisy = simulate(study, eta=3, repeats=3, profile=disturbed, paths=["ladder"])
    # z=3 is full training here, so every rung's cost against it rests on the disturbed cell
    assert any(note.startswith("the ladder's rungs z = 1, 3 rest on cells other work") for note in noisy.notes)


def test_the_joint_ladder_pairs_the_rungs_with_the_largest_budget_fractions(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", 9, perfect, zs=(1, 2, 3), fractions=(NINTH, 0.25, THIRD, 1.0),
                        task=write_task(tmp_path))  # fmt: skip
    result = simulate(study, eta=3, repeats=3, profile=priced_profile(), paths=["ladder", "ladder-joint"])
    cells = {p.name: [(r.trainable_layers, r.budget_fraction) for r in p.rungs] for p in result.paths}
    assert cells == {"ladder": [(1, 1.0), (3, 1.0)], "ladder-joint": [(1, THIRD), (3, 1.0)]}
    joint = result.path("ladder-joint")
    assert [r.price.steps for r in joint.rungs] == [30, 90]  # a third of the 90 steps, then all of them


def test_the_cost_curve_starts_halving_from_eta_eta_squared_and_so_on(tmp_path: Path) -> None:
    """27 configurations at eta 3: curves from 3 (3·1·1), 9 (9·3·1) and 27 (27·9·3) starting configurations, the
    recorded seconds 10 z + f per trial and the profile's 10 z ms x 90 steps."""
    study = write_study(tmp_path / "s", 27, perfect, seconds=lambda z, f: 10 * z + f, task=write_task(tmp_path))
    result = simulate(study, eta=3, repeats=5, profile=priced_profile(), paths=["layers", "budget"])
    layers = result.path("layers").curve
    assert [(p.starting_configs, p.recorded_seconds, p.gpu_seconds) for p in layers] == [
        (3, pytest.approx(3 * 11 + 21 + 31), pytest.approx(3 * 0.9 + 1.8 + 2.7)),
        (9, pytest.approx(9 * 11 + 3 * 21 + 31), pytest.approx(9 * 0.9 + 3 * 1.8 + 2.7)),
        (27, pytest.approx(27 * 11 + 9 * 21 + 3 * 31), pytest.approx(27 * 0.9 + 9 * 1.8 + 3 * 2.7)),
    ]
    assert layers[-1].regret_median == 0  # all 27 drawn: a perfect ranking always finds the best
    budget = result.path("budget").curve
    assert [p.gpu_seconds for p in budget] == [
        pytest.approx(3 * 0.3 + 0.9 + 2.7), pytest.approx(9 * 0.3 + 3 * 0.9 + 2.7),
        pytest.approx(27 * 0.3 + 9 * 0.9 + 3 * 2.7),
    ]  # fmt: skip
    # the figure draws exactly these points: cost on the x axis, the median and its 90% band
    series = curve_series(result)
    assert series["layers"]["cost"] == [p.gpu_seconds for p in layers]
    assert series["layers"]["median"] == [p.regret_median for p in layers] and series["layers"]["configs"] == [3, 9, 27]
    assert series["layers"]["low"] == [p.regret_low for p in layers]
    assert series["layers"]["high"] == [p.regret_high for p in layers]


# ---------------------------------------------------------------- Monte-Carlo uncertainty


def one_best(index: int, _z: int, _fraction: float, _seed: int) -> float:
    """Configuration 0 is the best (loss 0), every other one equally worse (loss 1)."""
    return 0.0 if index == 0 else 1.0


def test_repeats_go_on_until_every_figure_is_stable(tmp_path: Path) -> None:
    """One rung, 4 of 10 configurations drawn: the pick is the best 40% of the time. Its share within +-1
    percentage point (95%) needs 1.96^2 x 0.24 / 0.01^2 = 9,220 runs: ten batches of 1,000."""
    study = write_study(tmp_path / "s", 10, one_best, zs=(1,), fractions=(1.0,))
    result = simulate(study, starting_configs=4, paths=["layers"])
    outcome = result.path("layers").successive_halving
    assert (REPEAT_BATCH, outcome.repeats, outcome.stable) == (1000, 10_000, True)
    low, high = outcome.uncertainty["best_found_share"]
    assert high - low <= 0.02 and low <= 0.4 <= high
    assert outcome.regret_median == 1 and outcome.uncertainty["regret_median"] == (1.0, 1.0)
    assert result.repeats is None and not any("still move" in note for note in result.notes)
    fixed = simulate(study, starting_configs=4, paths=["layers"], repeats=300).path("layers").successive_halving
    assert (fixed.repeats, fixed.stable) == (300, False)


def test_a_median_on_a_jump_of_the_regret_distribution_never_settles_and_says_so(tmp_path: Path) -> None:
    """5 of 10 drawn: regret 0 or 1, each half the time; the sample median flips between them at any count."""
    study = write_study(tmp_path / "s", 10, one_best, zs=(1,), fractions=(1.0,))
    result = simulate(study, starting_configs=5, paths=["layers"])
    outcome = result.path("layers").successive_halving
    assert (outcome.repeats, outcome.stable) == (32_000, False) and MAX_REPEATS == 32_000
    assert outcome.uncertainty["regret_median"] == (0.0, 1.0)
    assert result.notes[-1] == (
        f"figures marked ± still move between seeds in layers (halving): even {MAX_REPEATS} repeats leave them "
        "between two values of the regret distribution"
    )


def test_uncertain_figures_carry_their_interval_in_the_table(tmp_path: Path) -> None:
    assert with_uncertainty(0.127, (0.127, 0.160), lambda v: f"{v:.3g}") == "0.127 [0.127, 0.16]"  # lopsided
    assert with_uncertainty(0.127, (0.1, 0.160), lambda v: f"{v:.3g}") == "0.127±0.033"
    assert with_uncertainty(0.127, (0.1271, 0.1272), lambda v: f"{v:.3g}") == "0.127"
    study = write_study(tmp_path / "s", 10, one_best, zs=(1,), fractions=(1.0,))
    result = simulate(study, starting_configs=5, paths=["layers"], repeats=100)
    (row,) = simulation_rows(result, "successive_halving")
    outcome = result.path("layers").successive_halving
    assert row[1] == "scratch"  # a one-rung path has nothing to continue from
    assert row[5:8] == [f"{outcome.regret_median:g} [0, 1]", "[0, 1]", ""]  # the median of 100 runs: 0 or 1
    assert row[9] == f"{outcome.best_found_share:.0%}±10%" and row[-1] == "100"


def test_the_built_in_tasks_profile_the_models_they_train() -> None:
    """pydoc-lm trains 7-layer byte-level models on 8 sequences of 64 bytes: its workload counts 512 tokens per
    batch; digits a 6-layer CNN on 8x8 images of 10 classes, counted in samples."""
    from layerprof.fidelity.tasks import TASKS
    from layerprof.sources.models import build_model

    lm = build_model("layerprof.fidelity.tasks:pydoc_lm_workload")
    assert (lm.workload.item_name, lm.workload.items_per_batch(8)) == ("tokens", 512)
    inputs, targets = lm.workload.make_batch(8, torch.device("cpu"))
    assert inputs.shape == targets.shape == (8, 64) and int(inputs.max()) < 256
    assert len(lm.split()) == 7 == TASKS["pydoc-lm"].layer_count
    assert (TASKS["pydoc-lm"].full_steps, TASKS["pydoc-lm"].batch_size) == (150, 8)
    assert TASKS["pydoc-lm"].profile_spec == "layerprof.fidelity.tasks:pydoc_lm_workload"
    digits = build_model("layerprof.fidelity.tasks:digits_workload")
    images, labels = digits.workload.make_batch(32, torch.device("cpu"))
    assert images.shape == (32, 1, 8, 8) and int(labels.max()) < 10
    assert (digits.workload.item_name, digits.workload.items_per_batch(32)) == ("samples", 32)
    assert len(digits.split()) == 6 == TASKS["digits"].layer_count


def test_a_profile_of_another_model_is_refused(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", 9, perfect, task=write_task(tmp_path))
    with pytest.raises(LayerprofError, match="the profile is of 'resnet18'.*trains 'synthetic-model'"):
        simulate(study, profile=priced_profile(spec="resnet18"), repeats=1)
    rows = [Row(8, z, "ok", step_time_ms=1.0, flops=1, peak_memory_bytes=1) for z in (1, 2, 3, 4)]
    four_layers = bare_profile(rows, 4, spec="synthetic-model")
    with pytest.raises(LayerprofError, match="4 layers but the study's task trains 3"):
        simulate(study, profile=four_layers, repeats=1)


def test_the_ladder_path_needs_cells_the_study_may_lack(tmp_path: Path) -> None:
    """Costs 1, 3, 9 ms at z=1, 2, 3 give a ladder of z=1, 2, 3; a study without z=2 names what to add."""
    study = write_study(tmp_path / "s", 9, perfect, zs=(1, 3), task=write_task(tmp_path))
    rows = [Row(8, z, "ok", step_time_ms=3.0 ** (z - 1), flops=z, peak_memory_bytes=z) for z in (1, 2, 3)]
    profile = bare_profile(rows, 3, spec="synthetic-model")
    with pytest.raises(LayerprofError) as caught:
        simulate(study, profile=profile, repeats=1)
    message = str(caught.value)
    assert "z=2 at budget 1 (9 of 9 trials missing; ladder)" in message
    assert "--layers 1,2,3 --budget-fractions 0.111111,0.333333,1" in message


# ---------------------------------------------------------------- the command


def test_simulate_cli_writes_json_table_and_figure(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", 9, perfect, task=write_task(tmp_path))
    profile = save_profile(priced_profile(), tmp_path / "p.json")
    result = CliRunner().invoke(
        app, ["simulate", str(study), "--profile", str(profile), "--repeats", "20", "--format", "md"]
    )
    assert result.exit_code == 0, result.output
    assert (
        "| layers | scratch | 1@1 2@1 3@1 | 1.00 1.00 1.00 | 9·3·1 | 0 [0, 0] |  |  | 0 | 100% [84%, 100%] | 18 "
        "| 2.00× | 20 |" in result.output
    )
    assert "still move between seeds in layers (halving)" in result.output  # 20 runs cannot say 100% for sure
    assert "**Hyperband, eta=3: cost on test (synthetic-model)**" in result.output
    data = json.loads((study / "simulation-eta3.json").read_text())
    assert data["schema"] == "layerprof.simulation/3" and data["starting_configs"] == 9
    assert (data["judge"], data["noise_floor"]) == ("same-seed", None)
    assert (study / "simulation-eta3.png").read_bytes()[:4] == b"\x89PNG"
    # one path (a path's figures do not depend on which others ran): its Hyperband alone runs 32,000 repeats
    as_json = CliRunner().invoke(
        app, ["simulate", str(study), "--json", "--eta", "2", "--configs", "9", "--paths", "layers"]
    )
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["eta"] == 2 and data["repeats"] is None  # until stable: every pick the best after one batch
    assert [path["name"] for path in data["paths"]] == ["layers"]
    outcome = data["paths"][0]["successive_halving"]
    assert (outcome["repeats"], outcome["stable"], outcome["uncertainty"]["regret_median"]) == (1000, True, [0, 0])


def test_simulate_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    study = write_study(tmp_path / "s", 9, perfect)
    interrupted = write_study(tmp_path / "i", 9, perfect, skip=lambda i, z, f, s: z == 3 and f == 1.0 and i > 4)
    (tmp_path / "empty").mkdir()
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "study.json").write_text('{"task": "digits", "conf')
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "study.json").write_text('{"schema": "layerprof.profile/2"}')
    cases = [
        (["simulate", str(tmp_path / "nowhere")], "does not exist"),
        (["simulate", str(tmp_path / "empty")], "not a correlate study"),
        (["simulate", str(tmp_path / "torn")], "study.json' is not JSON; expected the study.json"),
        (["simulate", str(tmp_path / "foreign")], "is not a correlate study's description"),
        (["simulate", str(interrupted)], "z=3 at budget 1 (4 of 9 trials missing; layers, budget, diagonal, full"),
        (["simulate", str(study), "--eta", "1"], "--eta must be a number greater than 1"),
        (["simulate", str(study), "--configs", "10"], "--configs must be in 1..9"),
        (["simulate", str(study), "--repeats", "0"], "--repeats expects a positive number of repeats or auto"),
        (["simulate", str(study), "--repeats", "many"], "--repeats expects a positive number of repeats or auto"),
        (["simulate", str(study), "--paths", "layers,zigzag"], "unknown path 'zigzag'"),
        (["simulate", str(study), "--paths", "ladder"], "the ladder paths need --profile"),
        (["simulate", str(study), "--path", "1@0.5,3"], "rungs like 1@0.25,3@0.5,6@1"),
        (["simulate", str(study), "--path", "2@0.5,3@1"], "z=2 at budget 0.5 (9 of 9 trials missing; custom-1)"),
        (["simulate", str(study), "--layers", "1,5"], "--layers 5: the study has z 1,2,3"),
        (["simulate", str(study), "--budgets", "0.2"], "--budgets 0.2: the study has budget fractions 0.111111"),
        (["simulate", str(study), "--profile", str(tmp_path / "none.json")], "does not exist"),
    ]
    for arguments, message in cases:
        assert_one_line_error(runner.invoke(app, arguments), message)


def test_stability_asks_each_interval_to_be_narrow_enough() -> None:
    """A regret median whose 95% interval spans 1.5% of the worst regret is not stable (the limit is 1%), one that
    spans 0.75% is; a mean cost within +-1.24% is not (the limit is +-1%), one within +-0.62% is."""
    from layerprof.fidelity.simulate import _outcome

    bracket = [Bracket(first_rung=0, configs_per_rung=[3, 1], cost_full_equivalents=0)]
    wide = [i / 4200 for i in range(1000)]  # the median's interval: the 469th to the 532nd value, 63/4200 apart
    assert _outcome(wide, [1.0] * 1000, bracket, 1.0).uncertainty["regret_median"] == (468 / 4200, 531 / 4200)
    assert not _outcome(wide, [1.0] * 1000, bracket, 1.0).stable
    assert _outcome([r / 2 for r in wide], [1.0] * 1000, bracket, 1.0).stable
    assert _outcome(wide, [1.0] * 1000, bracket, 2.0).stable  # 1.5% of a worst regret of 1 is 0.75% of 2
    costs = [8.0, 12.0] * 500  # mean 10, standard error 2 / sqrt(1000): +-1.24% at 95%
    assert not _outcome([r / 2 for r in wide], costs, bracket, 1.0).stable
    assert _outcome([r / 2 for r in wide], [9.0, 11.0] * 500, bracket, 1.0).stable  # +-0.62%
    # every quantile sits on 1 and none found the best, but the mean regret (1.25) is uncertain by +-0.097, beyond
    # 1% of a worst regret of 8 either way: not stable; of 30, it is
    rare = [1.0] * 975 + [11.0] * 25
    assert _outcome(rare, [1.0] * 1000, bracket, 8.0).uncertainty["regret_high"] == (1.0, 1.0)
    assert not _outcome(rare, [1.0] * 1000, bracket, 8.0).stable
    assert _outcome(rare, [1.0] * 1000, bracket, 30.0).stable


def test_the_worst_regret_is_the_worst_configuration_above_the_best(tmp_path: Path) -> None:
    from layerprof.fidelity.simulate import Replay, load_study

    study = load_study(write_study(tmp_path / "s", 4, lambda i, z, f, s: 10.0 + i, zs=(1,), fractions=(1.0,)))
    replay = Replay(study, None, 0)
    assert (replay.best, replay.worst_regret, replay.regrets[0]) == (10.0, 3.0, [0.0, 1.0, 2.0, 3.0])


def test_typed_budget_fractions_name_the_studys_within_floating_noise() -> None:
    from layerprof.fidelity.simulate import match_fraction

    fractions = [NINTH, THIRD, 1.0]
    assert match_fraction(THIRD + 2e-7, fractions) == THIRD  # 6e-7 of it
    assert match_fraction(THIRD + 5e-7, fractions) == THIRD + 5e-7  # 1.5e-6 of it: another fraction
    assert match_fraction(0.5, fractions) == 0.5
    assert spread([1, 2, 3], 1) == [3] and spread([1, 2, 3], 3) == [1, 2, 3] and spread([1, 2, 3, 4, 5], 2) == [1, 5]


def test_the_joint_ladder_is_left_out_where_the_study_cannot_pair_its_rungs(tmp_path: Path) -> None:
    """A one-rung ladder (costs that never grow by eta) pairs with nothing; three rungs pair with three budget
    fractions but not with two. The paths named after it are still built."""
    task = write_task(tmp_path)
    flat = bare_profile([Row(8, z, "ok", step_time_ms=10.0, flops=1, peak_memory_bytes=1) for z in (1, 2, 3)], 3,
                        spec="synthetic-model")  # fmt: skip
    study = write_study(tmp_path / "s", 9, perfect, task=task)
    result = simulate(study, repeats=2, profile=flat, paths=["ladder-joint", "layers"])
    assert [p.name for p in result.paths] == ["layers"]
    assert (
        "ladder-joint left out: the ladder has 1 rung(s) and the study 3 budget fraction(s); it pairs 2 or more "
        "rungs with as many of the largest fractions"
    ) in result.notes
    steep = bare_profile([Row(8, z, "ok", step_time_ms=3.0 ** z, flops=1, peak_memory_bytes=1) for z in (1, 2, 3)], 3,
                         spec="synthetic-model")  # fmt: skip
    fresh = write_study(tmp_path / "u", 9, perfect, task=task)  # the first study carries the flat profile's ladder
    three = simulate(fresh, repeats=2, profile=steep, paths=["ladder-joint"])
    assert [(r.trainable_layers, r.budget_fraction) for r in three.path("ladder-joint").rungs] == [
        (1, NINTH), (2, THIRD), (3, 1.0),
    ]  # fmt: skip
    two_budgets = write_study(tmp_path / "t", 9, perfect, fractions=(THIRD, 1.0), task=task)
    left_out = simulate(two_budgets, repeats=2, profile=steep, paths=["ladder-joint", "layers"])
    assert [p.name for p in left_out.paths] == ["layers"]
    assert any(
        note.startswith("ladder-joint left out: the ladder has 3 rung(s) and the study 2") for note in left_out.notes
    )


def test_a_task_that_does_not_say_its_model_or_batch_is_priced_with_a_note(tmp_path: Path) -> None:
    """Without profile_spec the profile is taken at its word; without batch_size the batch with the most cells
    (the larger one on a tie) prices it. A rung of a 200th of 90 steps trains one step, not none."""
    task = tmp_path / "bare_task.py"
    task.write_text("def task(config, trainable_layers, budget_fraction):\n    return 0.0\n\ntask.layer_count = 3\n"
                    "task.full_steps = 90\n")  # fmt: skip
    rows = [Row(b, z, "ok", step_time_ms=1.0, flops=1, peak_memory_bytes=1) for b in (4, 8) for z in (1, 2, 3)]
    profile = bare_profile(rows, 3, spec="anything")
    study = write_study(tmp_path / "s", 9, perfect, fractions=(0.005, THIRD, 1.0), task=f"{task}:task")
    result = simulate(study, repeats=2, profile=profile, paths=["budget"])
    assert result.batch_size == 8
    assert result.notes[:2] == [
        f"{task}:task has no profile_spec: the profile is assumed to be of the model it trains",
        f"{task}:task does not say its batch size: the profile's batch 8 prices it",
    ]
    assert [r.price.steps for r in result.path("budget").rungs] == [1, 30, 90]
    fewer = bare_profile([r for r in rows if not (r.batch_size == 8 and r.trainable_layers == 2)], 3, spec="anything")
    assert simulate(study, repeats=2, profile=fewer, paths=["layers"]).batch_size == 4  # more cells at batch 4


def test_the_figure_draws_each_paths_curve_on_a_log_cost_axis(tmp_path: Path) -> None:
    from layerprof.outputs.figures import simulation_figure

    study = write_study(tmp_path / "s", 27, perfect, seconds=lambda z, f: 10 * z + f, task=write_task(tmp_path))
    result = simulate(study, eta=3, repeats=5, profile=priced_profile(), paths=["layers", "budget"])
    figure = simulation_figure(result)
    (axes,) = figure.axes
    assert axes.get_xscale() == "log"
    assert axes.get_xlabel() == "seconds on test (profile)"
    assert axes.get_ylabel() == "regret: full-fidelity loss above the best"
    title = " ".join(axes.get_title().split())  # wrapped to the figure's width
    assert title.startswith("Successive halving on task.py:task, eta=3: median regret")  # the file's name only
    # the budget path (one z, no continued runs recorded) is also drawn as assumed to continue: dashed
    assert "over 5 repeats (numbers: starting configurations; dashed: continued runs)" in title
    assert_title_and_legend_fit(figure, axes)
    curves = ("layers", "budget", "budget, assumed")
    assert [text.get_text() for text in axes.get_legend().get_texts()] == list(curves)
    series = curve_series(result)
    assert [(series[c]["path"], series[c]["runs"]) for c in curves] == [
        ("layers", "scratch"), ("budget", "scratch"), ("budget", "assumed")
    ]  # fmt: skip
    assert series["budget, assumed"]["cost"] == [p.gpu_seconds for p in result.path("budget").continued.curve]
    lines = axes.get_lines()[::3]  # a line and two caps each
    for line, name in zip(lines, curves, strict=True):
        assert list(line.get_xdata()) == series[name]["cost"] and list(line.get_ydata()) == series[name]["median"]
    assert [line.get_linestyle() for line in lines] == ["-", "-", "--"]
    assert lines[1].get_color() == lines[2].get_color() != lines[0].get_color()  # a path keeps its colour
    bands = [collection.get_segments() for collection in axes.collections]
    for segments, name in zip(bands, curves, strict=True):
        ends = [(low[1], high[1]) for low, high in segments]
        assert ends == [pytest.approx(pair) for pair in zip(series[name]["low"], series[name]["high"], strict=True)]
    assert [text.get_text() for text in axes.texts] == ["3", "9", "27"] * 3
    unpriced = simulation_figure(simulate(study, eta=3, repeats=5, paths=["layers"]))
    assert unpriced.axes[0].get_xlabel() == "seconds, set-up included (the study's trials)"
    assert " ".join(unpriced.axes[0].get_title().split()).endswith("over 5 repeats (numbers: starting configurations)")
    auto = simulate(write_study(tmp_path / "t", 9, perfect), eta=3, paths=["layers"])
    assert "over 1000 repeats (until stable)" in " ".join(simulation_figure(auto).axes[0].get_title().split())
    plt_close_all()


def assert_title_and_legend_fit(figure, axes) -> None:
    """The title and the legend lie inside the figure (nothing clipped) and the legend covers no curve."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    inside = figure.bbox
    title, legend = axes.title.get_window_extent(renderer), axes.get_legend().get_window_extent(renderer)
    plot = axes.get_window_extent(renderer)
    for box in (title, legend):
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
    assert legend.x0 >= plot.x1  # beside the plot, not on it


def test_a_long_task_name_and_many_paths_still_fit_the_figure(tmp_path: Path) -> None:
    from layerprof.outputs.figures import simulation_figure

    folder = tmp_path / ("a-folder-with-a-long-name-" * 3)
    folder.mkdir()
    task = write_task(folder)
    study = write_study(tmp_path / "s", 27, perfect, seconds=lambda z, f: 10 * z + f, task=task)
    paths = ["layers", "budget", "diagonal", "ladder", "ladder-joint"]
    figure = simulation_figure(simulate(study, eta=3, repeats=5, profile=priced_profile(), paths=paths))
    (axes,) = figure.axes
    assert len(axes.get_legend().get_texts()) >= 6
    assert max(len(line) for line in axes.get_title().split("\n")) <= 90
    assert_title_and_legend_fit(figure, axes)
    plt_close_all()


def plt_close_all() -> None:
    import matplotlib.pyplot as plt

    plt.close("all")


def test_figures_are_written_into_a_folder_made_for_them(tmp_path: Path) -> None:
    from layerprof.outputs.studies import write_simulation

    study = write_study(tmp_path / "s", 9, perfect)
    written = write_simulation(simulate(study, repeats=3), tmp_path / "new" / "folder")
    assert [path.name for path in written] == ["simulation-eta3.json", "simulation-eta3.png"]
    assert written[1].read_bytes()[:4] == b"\x89PNG"


def mixed_profile(spec: str = "synthetic-model") -> object:
    """Step times for z=3 only (z=1 and 2 estimated: FLOPs and memory, no time); z=1 without its memory."""
    gib = 2**30
    rows = [
        Row(8, 1, "ok", flops=10**12),
        Row(8, 2, "ok", flops=2 * 10**12, peak_memory_bytes=2 * gib, peak_reserved_bytes=2 * gib),
        Row(8, 3, "ok", step_time_ms=30.0, flops=3 * 10**12, peak_memory_bytes=3 * gib, peak_reserved_bytes=3 * gib),
    ]
    return bare_profile(rows, 3, spec=spec, device_kind="cuda", total_memory_bytes=16 * gib)


def test_figures_a_profile_cannot_price_stay_unpriced(tmp_path: Path) -> None:
    """A rung without a step time has no device seconds, so neither has a path through it (nor its ratio to the
    budget path, which has them); a rung without memory leaves the path's memory unknown; FLOPs are still summed.
    The figure falls back to recorded seconds when any path lacks device seconds."""
    study = write_study(tmp_path / "s", 9, perfect, seconds=lambda z, f: 10 * z + f, task=write_task(tmp_path))
    result = simulate(study, eta=3, repeats=3, profile=mixed_profile(), paths=["layers", "budget"])
    layers, budget = result.path("layers").successive_halving, result.path("budget").successive_halving
    assert (layers.gpu_seconds, layers.gpu_seconds_vs_budget, layers.slot_wall_seconds) == (None, None, None)
    assert layers.flops == pytest.approx((9 * 1 + 3 * 2 + 3) * 1e12 * 90) and layers.peak_memory_bytes is None
    assert budget.gpu_seconds == pytest.approx((9 * 10 + 3 * 30 + 90) * 30 / 1000)
    assert budget.peak_memory_bytes == 3 * 2**30 + 768 * 2**20
    hyperband = result.path("budget").hyperband  # 9·3·1 | 5·1 | 3 at 10, 30, 90 steps of 30 ms
    assert hyperband.gpu_seconds == pytest.approx((9 * 10 + 3 * 30 + 90 + 5 * 30 + 90 + 3 * 90) * 30 / 1000)
    assert hyperband.recorded_seconds_vs_budget == 1.0 and hyperband.gpu_seconds_vs_budget == 1.0
    series = curve_series(result)
    assert series["budget"]["cost"] == [p.recorded_seconds for p in result.path("budget").curve]


def test_without_a_budget_path_costs_stand_alone_and_the_longest_path_sets_the_start(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", 9, perfect)
    result = simulate(study, eta=3, repeats=3, paths=["layers"], custom_paths=[[(2, 1.0), (3, 1.0)]])
    assert result.starting_configs == 9  # eta^(3 - 1): the layers path's three rungs, not the custom path's two
    assert result.path("layers").successive_halving.recorded_seconds_vs_budget is None
    assert "no 'budget' path: costs are not shown relative to halving on budget alone" in result.notes
    with pytest.raises(LayerprofError, match="the ladder paths need --profile"):
        simulate(study, repeats=3, paths=["layers", "ladder"])


def test_starting_configurations_run_from_one_to_all_of_the_studys(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", 9, perfect)
    assert simulate(study, repeats=3, paths=["budget"], starting_configs=1).starting_configs == 1
    every = simulate(study, repeats=3, paths=["budget"], starting_configs=9)
    assert every.starting_configs == 9 and not any("would suit" in note for note in every.notes)
    for count in (0, 10):
        with pytest.raises(
            LayerprofError, match=f"--configs must be in 1..9 .the study's configurations., got {count}"
        ):
            simulate(study, repeats=3, paths=["budget"], starting_configs=count)
    eight = write_study(tmp_path / "e", 8, perfect)
    short = simulate(eight, repeats=3, paths=["budget"])
    assert short.starting_configs == 8
    assert "9 starting configurations would suit 3 rungs; the study has 8" in short.notes
    assert not any("would suit" in note for note in simulate(study, repeats=3, paths=["budget"]).notes)


def test_rho_needs_three_configurations_and_hyperband_more_than_one_rung(tmp_path: Path) -> None:
    three = simulate(write_study(tmp_path / "three", 3, perfect), eta=3, repeats=3, paths=["layers"])
    assert [rung.spearman for rung in three.path("layers").rungs] == [pytest.approx(1.0)] * 3
    two = simulate(write_study(tmp_path / "two", 2, perfect), eta=2, repeats=3, paths=["layers"])
    assert [rung.spearman for rung in two.path("layers").rungs] == [None, None, None]
    single = simulate(write_study(tmp_path / "one", 9, perfect), repeats=3, paths=["budget"],
                      custom_paths=[[(3, 1.0)]])  # fmt: skip
    assert single.path("custom-1").hyperband is None and single.path("budget").hyperband is not None
    pair = simulate(write_study(tmp_path / "pair", 9, perfect), repeats=3, custom_paths=[[(2, 1.0), (3, 1.0)]])
    assert [b["configs_per_rung"] for b in pair.path("custom-1").hyperband.brackets] == [[3, 1], [2]]
    four = simulate(write_study(tmp_path / "four", 9, perfect, zs=(1, 2, 3, 4)), repeats=3, paths=["layers"])
    assert four.path("layers").hyperband is None
    assert (
        "layers: Hyperband starts a bracket with 27 configurations, more than the study's 9; use fewer rungs "
        "(--layers/--budgets) or a larger eta"
    ) in four.notes


def test_an_outcome_with_nothing_to_vary_is_stable_at_once(tmp_path: Path) -> None:
    """Every configuration equally good (no regret to speak of) and trials that took no time: one batch."""
    study = write_study(tmp_path / "s", 9, lambda i, z, f, s: 1.0, seconds=lambda z, f: 0.0)
    outcome = simulate(study, paths=["budget"]).path("budget").successive_halving
    assert (outcome.repeats, outcome.stable, outcome.regret_high, outcome.recorded_seconds) == (1000, True, 0, 0)


def rendered_lines(table: object, width: int = 100) -> list[str]:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)
    console.print(table)
    return console.file.getvalue().splitlines()


def test_the_simulate_and_plan_tables_fit_100_columns_a_row_a_line_and_wide_shows_every_column(
    tmp_path: Path,
) -> None:
    """Each table drawn at 100 columns: a line per row (nothing wraps), the title above, borders, header."""
    from layerprof.fidelity.plan import plan_cluster
    from layerprof.fidelity.simulate import simulate as replay
    from layerprof.measure.cluster import parse_inventory
    from layerprof.outputs.tables import PLAN_RUNG_HEADERS, plan_views, simulation_views
    from tests.measure.test_cluster import h100_profile

    study = write_study(tmp_path / "s", 9, perfect, task=write_task(tmp_path))
    simulation = replay(study, repeats=20, profile=priced_profile(), gpu_memory=16 * 2**30)
    plan = plan_cluster([h100_profile(0.2)], parse_inventory("2xH100,4xL4"), eta=3, configs=27, budget_steps=1000)
    for table in [view.rich(wide=False) for view in [*simulation_views(simulation, wide=False), *plan_views(plan)]]:
        lines = rendered_lines(table)
        rule = next(i for i, line in enumerate(lines) if "━" in line and "┃" not in line and i > 0)
        body = [line for line in lines[rule + 1 :] if line.strip()]  # the rows, under the header's rule
        assert len(body) == table.row_count, "\n".join(lines)  # one line per row: no wrapping
        assert all(len(line) <= 100 for line in lines)
        assert not any("…" in line for line in body), "\n".join(lines)  # nothing cut short to fit
    wide = plan_views(plan)[0].rich(wide=True)
    assert [column.header for column in wide.columns] == PLAN_RUNG_HEADERS
    assert [column.header for column in plan_views(plan)[0].rich(wide=False).columns] == [
        "rung", "z", "steps", "trials", "GPU", "at once/GPU\n(fit)", "trial", "rung time", "GPU-h",
    ]  # fmt: skip


def test_a_continued_rung_spanning_two_recorded_segments_is_charged_both() -> None:
    """A budget run evaluated at 0.1, 0.25, 0.5 and 1 serves halving on 0.1, 0.5 and 1: its rung at 0.5 trains
    through two segments (0.1 -> 0.25 -> 0.5) and costs both (issue 40: charged only the last, [10, 30, 40])."""
    from layerprof.fidelity.correlate import ContinuedResult, SegmentResult
    from layerprof.fidelity.simulate import RecordedStudy

    chain = ((1, 0.1), (1, 0.25), (1, 0.5), (1, 1.0))
    continued = {}
    for index in range(2):
        seconds = (10.0, 20.0, 30.0, 40.0)
        segments = [
            SegmentResult(z, f, loss=1.0 / (position + 1 + index), seconds=s)
            for position, ((z, f), s) in enumerate(zip(chain, seconds, strict=True))
        ]
        continued[(chain, index, 0)] = ContinuedResult(index, 0, [list(c) for c in chain], segments, seconds=100.0)
    study = RecordedStudy(Path("study"), "task", [{}, {}], [0], [1], [0.1, 0.25, 0.5, 1.0], {}, continued)
    tables, served = study.continued_tables([(1, 0.1), (1, 0.5), (1, 1.0)])
    assert served == chain
    assert [table.seconds for table in tables] == [[[10.0]] * 2, [[50.0]] * 2, [[40.0]] * 2]
    assert [table.losses for table in tables] == [[[1.0], [0.5]], [[1 / 3], [0.25]], [[0.25], [0.2]]]
    assert study.continued_tables([(1, 0.25), (1, 1.0)])[0][1].seconds == [[70.0]] * 2  # 0.5 and 1: 30 + 40
