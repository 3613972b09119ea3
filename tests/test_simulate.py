"""`layerprof simulate`: successive halving and Hyperband replayed on recorded trials.

The studies here are written by hand, so that the right answer is known: where every fidelity ranks like full
training, every path finds the best configuration; where the lowest rung ranks at random, halving keeps a
random third and the regret is that of the best of a random three.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli import app
from layerprof.errors import LayerprofError
from layerprof.ladder import Bracket
from layerprof.profile import Row, save_profile
from layerprof.simulate import halve, simulate, spread
from tests.conftest import bare_profile
from tests.test_cli import assert_one_line_error

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
    from layerprof.simulate import CellTable

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
    assert slots == [16 * 2**30 // r.price.memory_need_bytes for r in layers.rungs] and slots[0] > slots[-1] >= 1
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
    assert "| layers | scratch | 1@1 2@1 3@1 | 1.00 1.00 1.00 | 9·3·1 | 0 [0, 0] | 100% |" in result.output
    assert "**Hyperband, eta=3: cost on test (synthetic-model)**" in result.output
    data = json.loads((study / "simulation-eta3.json").read_text())
    assert data["schema"] == "layerprof.simulation/2" and data["starting_configs"] == 9
    assert (study / "simulation-eta3.png").read_bytes()[:4] == b"\x89PNG"
    as_json = CliRunner().invoke(app, ["simulate", str(study), "--repeats", "20", "--json", "--eta", "2"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["eta"] == 2


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
