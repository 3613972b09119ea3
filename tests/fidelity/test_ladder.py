"""Rung selection, slots, brackets, the joint ladder, exporters checked against the real libraries."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from layerprof.devices import CUDA_CONTEXT_RESERVE_BYTES
from layerprof.errors import LayerprofError
from layerprof.fidelity.ladder import (
    build_ladder,
    default_cost,
    hyperband,
    ladder_for,
    largest_batch_that_fits,
    neps_hyperband,
    select_rungs,
    successive_halving,
)
from layerprof.outputs.exporters import export, library_max_budget
from layerprof.parsing import parse_memory
from layerprof.profile import Profile, Row, save_profile
from tests.conftest import bare_profile

GIB = 2**30


def synthetic_profile(
    costs: dict[int, float],
    memory: dict[int, int] | None = None,
    batch_sizes: tuple[int, ...] = (8,),
    device: str = "cpu",
    memory_per_sample: int = 0,
) -> Profile:
    n = max(costs)
    rows = []
    for batch_size in batch_sizes:
        for z, cost in costs.items():
            peak = (memory or {}).get(z, z * GIB // 4) + memory_per_sample * batch_size
            rows.append(
                Row(
                    batch_size,
                    z,
                    "ok",
                    trainable_params=z,
                    trainable_fraction=z / n,
                    step_time_ms=cost,
                    flops=int(cost * 1e9),
                    peak_memory_bytes=peak,
                )  # fmt: skip
            )
    return bare_profile(rows, n, device_kind=device, total_memory_bytes=80 * GIB if device == "cuda" else None)


def test_geometric_costs_give_every_eta_step() -> None:
    costs = {z: 2.0 ** (z - 1) for z in range(1, 10)}
    assert select_rungs(costs, 2)[0] == list(range(1, 10))
    chosen, close, _ = select_rungs(costs, 4)
    assert chosen == [1, 3, 5, 7, 9] and close


def test_staircase_picks_the_largest_z_on_each_step() -> None:
    costs = dict(enumerate([1, 1, 1, 3, 3, 3, 9, 9, 9], start=1))
    chosen, close, note = select_rungs(costs, 3)
    assert chosen == [3, 6, 9] and close
    assert "3.00x, 3.00x" in note


def test_flat_costs_have_only_full_training() -> None:
    chosen, close, note = select_rungs({z: 10.0 for z in range(1, 6)}, 3)
    assert chosen == [5] and not close and "no ladder comes close" in note
    assert "the cost changes only 1.00x over all z" in select_rungs({1: 0.5, 2: 0.5}, 3)[2]  # small, not zero


def test_far_from_eta_is_said_plainly() -> None:
    chosen, close, note = select_rungs({1: 1.0, 2: 1.05, 3: 30.0}, 2)
    assert not close and "no choice of z comes close" in note
    assert chosen[-1] == 3


@pytest.mark.parametrize("eta", [1.5, 2, 3, 4])
def test_rungs_strictly_rise_in_z_and_cost(eta: float) -> None:
    costs = {z: 10 + z**2.2 + (3 if z % 4 == 0 else 0) for z in range(1, 25)}
    chosen, _, _ = select_rungs(costs, eta)
    assert chosen[-1] == 24
    assert all(a < b for a, b in zip(chosen, chosen[1:], strict=False))
    assert all(costs[a] < costs[b] for a, b in zip(chosen, chosen[1:], strict=False))


def test_eta_must_exceed_one() -> None:
    with pytest.raises(LayerprofError, match="greater than 1"):
        select_rungs({1: 1.0, 2: 2.0}, 1)


def test_parallel_slots_use_peak_plus_context_reserve_or_nvml() -> None:
    profile = synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0}, memory={1: 1 * GIB, 2: 3 * GIB, 3: 7 * GIB})
    ladder = build_ladder(profile, eta=3, gpu_memory=16 * GIB)
    need = [
        GIB + CUDA_CONTEXT_RESERVE_BYTES,
        3 * GIB + CUDA_CONTEXT_RESERVE_BYTES,
        7 * GIB + CUDA_CONTEXT_RESERVE_BYTES,
    ]
    assert [r.memory_need_bytes for r in ladder.rungs] == need  # 16 GiB over 1.75, 3.75 and 7.75 GiB
    assert [r.parallel_slots for r in ladder.rungs] == [16 * GIB // n for n in need] == [9, 4, 2]
    profile.rows[0].nvml_process_bytes = 2 * GIB  # NVML's per-process figure wins where measured
    assert build_ladder(profile, eta=3, gpu_memory=16 * GIB).rungs[0].parallel_slots == 8


def test_gpu_memory_defaults_to_the_profiled_gpu() -> None:
    profile = synthetic_profile({1: 1.0, 2: 3.0}, memory={1: GIB, 2: 2 * GIB}, device="cuda")
    ladder = build_ladder(profile, eta=3)
    assert ladder.gpu_memory_bytes == 80 * GIB
    assert ladder.rungs[0].parallel_slots == 80 * GIB // (GIB + CUDA_CONTEXT_RESERVE_BYTES)


def test_largest_batch_is_the_boundary_of_a_linear_memory_model() -> None:
    base, per_sample = 2 * GIB, 100 * 2**20
    points = [(b, base + per_sample * b) for b in (1, 4, 16)]
    memory = 10 * GIB
    largest = largest_batch_that_fits(points, memory, CUDA_CONTEXT_RESERVE_BYTES)
    fits = lambda b: base + per_sample * b + CUDA_CONTEXT_RESERVE_BYTES <= memory  # noqa: E731
    assert fits(largest) and not fits(largest + 1)
    profile = synthetic_profile({1: 1.0, 2: 3.0}, batch_sizes=(1, 4, 16), memory_per_sample=per_sample)
    ladder = build_ladder(profile, eta=3, batch_size=4, gpu_memory=memory)
    assert all(r.largest_batch_size is not None for r in ladder.rungs)


def test_successive_halving_and_hyperband_follow_the_formulas() -> None:
    sh = successive_halving([1.0, 3.0, 9.0], configs=27, eta=3)
    assert sh.configs_per_rung == [27, 9, 3]
    assert sh.cost_full_equivalents == pytest.approx((27 * 1 + 9 * 3 + 3 * 9) / 9)
    # Li et al. (2018), R = 81, eta = 3: brackets start 81, 34, 15, 8, 5 configurations
    brackets = hyperband([3.0**k for k in range(5)], eta=3)
    assert [b.configs_per_rung[0] for b in brackets] == [81, 34, 15, 8, 5]
    assert brackets[0].configs_per_rung == [81, 27, 9, 3, 1]
    assert [b.first_rung for b in brackets] == [0, 1, 2, 3, 4]
    assert brackets[1].configs_per_rung == [34, 11, 3, 1]


def test_neps_brackets_start_floor_k_over_s_plus_one_times_eta_to_the_s() -> None:
    """Six rungs at eta 3: NePS starts 243, 81, 27, 18, 9, 6 configurations where Li et al. start 243, 98, 41, 18,
    9, 6, and keeps n // eta^i at each rung (neps.optimizers.utils.brackets)."""
    unit = [1.0] * 6
    neps, li = neps_hyperband(unit, 3), hyperband(unit, 3)
    assert [b.configs_per_rung for b in neps] == [
        [243, 81, 27, 9, 3, 1], [81, 27, 9, 3, 1], [27, 9, 3, 1], [18, 6, 2], [9, 3], [6],
    ]  # fmt: skip
    assert [b.configs_per_rung[0] for b in li] == [243, 98, 41, 18, 9, 6]
    assert [b.first_rung for b in neps] == [0, 1, 2, 3, 4, 5]
    # costs in full-training equivalents: rung costs 1, 3, 9 over three rungs, NePS's s=1 bracket 3·1 from rung 1
    three = neps_hyperband([1.0, 3.0, 9.0], 3)
    assert [b.configs_per_rung for b in three] == [[9, 3, 1], [3, 1], [3]]
    assert [b.cost_full_equivalents for b in three] == [pytest.approx(9 / 9 + 9 / 9 + 1), pytest.approx(1 + 1), 3]


def test_budget_only_halving_is_compared() -> None:
    profile = synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0})
    ladder = build_ladder(profile, eta=3, configs=9)
    assert ladder.successive_halving.configs_per_rung == [9, 3, 1]
    budget = ladder.budget_successive_halving
    # rung budgets 1/9, 1/3, 1 of full training
    assert budget["from_scratch_full_equivalents"] == pytest.approx(9 / 9 + 3 / 3 + 1)
    assert budget["with_continuation_full_equivalents"] == pytest.approx(9 / 9 + 3 * (1 / 3 - 1 / 9) + (1 - 1 / 3))


def test_joint_ladder_cost_arithmetic() -> None:
    profile = synthetic_profile({1: 10.0, 2: 30.0, 3: 90.0}, memory={1: GIB, 2: 2 * GIB, 3: 4 * GIB})
    ladder = build_ladder(profile, eta=3, configs=9, budget_steps=900)
    joint = ladder.joint
    assert [r["steps"] for r in joint["rungs"]] == [100, 300, 900]
    assert [r.steps for r in ladder.rungs] == [100, 300, 900]
    assert [r["joint_cost_ms"] for r in joint["rungs"]] == [1000.0, 9000.0, 81000.0]
    assert [r["steps_only_cost_ms"] for r in joint["rungs"]] == [9000.0, 27000.0, 81000.0]
    assert joint["joint_total_ms"] == 9 * 1000 + 3 * 9000 + 1 * 81000
    assert joint["steps_only_total_ms"] == 9 * 9000 + 3 * 27000 + 81000
    assert joint["saving"] == pytest.approx(14 / 27)  # 1 - 117000 / 243000
    assert joint["joint_lowest_peak_memory_bytes"] == GIB and joint["steps_only_peak_memory_bytes"] == 4 * GIB
    data = ladder.to_dict()
    assert data["budget_to_rung"] == {
        "1": {"trainable_layers": 1, "steps": 100},
        "3": {"trainable_layers": 2, "steps": 300},
        "9": {"trainable_layers": 3, "steps": 900},
    }


def test_joint_ladder_rounds_steps_to_the_nearest_integer() -> None:
    profile = synthetic_profile({1: 10.0, 2: 30.0, 3: 90.0})
    ladder = build_ladder(profile, eta=3, configs=9, budget_steps=500)
    # 500 / 9 = 55.6 and 500 / 3 = 166.7: nearest, not floor
    assert [r.steps for r in ladder.rungs] == [56, 167, 500]
    assert [r["joint_cost_ms"] for r in ladder.joint["rungs"]] == [560.0, 5010.0, 45000.0]
    assert ladder.joint["steps_only_total_ms"] == 9 * 56 * 90.0 + 3 * 167 * 90.0 + 500 * 90.0
    tiny = build_ladder(profile, eta=3, budget_steps=4)
    assert [r.steps for r in tiny.rungs] == [1, 1, 4]  # never zero steps
    # without --configs one configuration per rung: 1 x 10 + 1 x 30 + 4 x 90 ms against 1 x 90 + 1 x 90 + 4 x 90
    assert tiny.joint["configs_per_rung"] == [1, 1, 1]
    assert (tiny.joint["joint_total_ms"], tiny.joint["steps_only_total_ms"]) == (400.0, 540.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eta": 1.0}, "greater than 1"),
        ({"batch_size": 3}, "--batch-size 3 is not in the profile"),
        ({"gpu_memory": GIB // 2}, "less than the lowest rung needs"),  # z=1 needs 0.25 GiB + 0.5 GiB
        ({"min_layers": 9}, "--min-layers must be in 1..3"),
        ({"cost_kind": "money"}, "--cost"),
    ],
)
def test_bad_ladder_input(kwargs: dict, message: str) -> None:
    with pytest.raises(LayerprofError, match=message):
        build_ladder(synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0}), **kwargs)


def test_profile_without_successful_cells() -> None:
    profile = synthetic_profile({1: 1.0, 2: 3.0})
    for row in profile.rows:
        row.status = "oom"
    with pytest.raises(LayerprofError, match="no successful cells"):
        build_ladder(profile)


def test_parse_memory() -> None:
    assert parse_memory("80GiB") == 80 * GIB
    assert parse_memory("24GB") == 24 * 10**9
    assert parse_memory("40G") == 40 * GIB
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory("1000B") == 1000
    with pytest.raises(LayerprofError, match="not understood"):
        parse_memory("lots")
    with pytest.raises(LayerprofError, match="'24' has no unit; write e.g. 24GiB"):
        parse_memory("24", "--memory")  # 24 bytes to a parser, 24 GiB to a reader


# ---------------------------------------------------------------- exporters


def load_snippet(source: str, tmp_path: Path, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def geometric_ladder(rung_count: int, eta: int = 3):
    profile = synthetic_profile({z: float(eta ** (z - 1)) for z in range(1, rung_count + 1)})
    ladder = build_ladder(profile, eta=eta)
    assert len(ladder.rungs) == rung_count
    return ladder


def test_library_max_budget_guards_the_float_log() -> None:
    assert math.floor(math.log(243, 3)) == 4  # the trap: 3^5 looks like less than 5 powers of 3
    assert library_max_budget(3, 6) == 244
    assert library_max_budget(3, 5) == 81 and library_max_budget(2, 4) == 8


@pytest.mark.parametrize(("rung_count", "eta"), [(3, 3), (6, 3), (4, 2)])
def test_optuna_computes_exactly_our_rungs(tmp_path: Path, rung_count: int, eta: int) -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ladder = geometric_ladder(rung_count, eta)
    module = load_snippet(export(ladder, "optuna"), tmp_path, f"optuna_snippet_{rung_count}_{eta}")
    ours = sorted(module.RUNGS)
    assert ours == [eta**k for k in range(rung_count)]
    pruner = module.make_pruner("hyperband")
    study = optuna.create_study(
        study_name="layerprof", direction="minimize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0)
    )  # a fixed name: Optuna assigns brackets by a hash of it
    study.optimize(module.objective, n_trials=40)
    assert pruner._n_brackets == rung_count  # the library's own bracket count
    # the library's own rung steps in its most aggressive bracket are our budget indices
    first = pruner._pruners[0]
    library_rungs = [first._min_resource * first._reduction_factor**k for k in range(rung_count)]
    assert library_rungs == ours
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(t.last_step in ours for t in pruned)
    # every trial starts at the first rung its bracket decides at: no training the pruner ignores
    for trial in study.trials:
        bracket = pruner._get_bracket_id(study, trial)
        assert min(trial.intermediate_values) == eta**bracket, (trial.number, bracket, trial.intermediate_values)
    assert len({pruner._get_bracket_id(study, t) for t in study.trials}) >= 2  # more than one bracket ran
    sh_study = optuna.create_study(pruner=module.make_pruner("sh"), sampler=optuna.samplers.RandomSampler(seed=1))
    sh_study.optimize(module.objective, n_trials=27)
    # successive halving: no more trials reach a rung than the one below, a third or fewer pass the lowest,
    # trials are stopped only below the top rung, and the best trial trained at every rung
    reached = [sum(1 for t in sh_study.trials if budget in t.intermediate_values) for budget in ours]
    assert reached[0] == 27 and reached == sorted(reached, reverse=True) and reached[1] <= 27 // eta + 1, reached
    stopped = {t.last_step for t in sh_study.trials if t.state == optuna.trial.TrialState.PRUNED}
    assert ours[0] in stopped and ours[-1] not in stopped, stopped
    assert sorted(sh_study.best_trial.intermediate_values) == ours


@pytest.mark.parametrize("library", ["neps", "optuna", "ray", "smac"])
def test_every_exporter_writes_the_ladder_and_guards_the_float_log(library: str) -> None:
    """What the snippet holds; tests/outputs/test_exports.py runs each against its library."""
    source = export(geometric_ladder(6, 3), library)
    compile(source, f"{library}_snippet.py", "exec")
    assert "MAX_BUDGET = 244" in source and "RUNGS = {1: 1, 3: 2, 9: 3, 27: 4, 81: 5, 243: 6}" in source
    assert "def main(" in source and 'if __name__ == "__main__":' in source


def test_export_refuses_non_integer_eta_and_single_rung() -> None:
    profile = synthetic_profile({z: 1.5 ** (z - 1) for z in range(1, 6)})
    with pytest.raises(LayerprofError, match="integer eta"):
        export(build_ladder(profile, eta=1.5), "optuna")
    flat = synthetic_profile({z: 5.0 for z in range(1, 4)})
    with pytest.raises(LayerprofError, match="single rung"):
        export(build_ladder(flat, eta=3), "optuna")


def test_a_zero_cost_leaves_only_full_training_without_a_traceback() -> None:
    """A cost of 0 (a hand-edited profile) has no ratio to any other; the note used to divide by it."""
    chosen, close, note = select_rungs({1: 0.0, 2: 5.0}, 3)
    assert (chosen, close) == ([2], False)
    assert note == "no ladder comes close to eta=3: the cost is 0 at some z, so only full training is a rung"
    profile = synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0})
    profile.rows[0].flops = 0
    ladder = build_ladder(profile, eta=3, cost_kind="flops")
    assert [r.trainable_layers for r in ladder.rungs] == [3] and not ladder.close_to_eta


# ---------------------------------------------------------------- boundaries the paper's rules draw


def test_half_a_log_step_is_the_boundary_of_close() -> None:
    """eta 4, costs 1 and 2: the total change is 4^0.5, exactly half a log step, and the one ratio (2) lies exactly
    half a step from eta: both boundaries are inclusive, so it is a close two-rung ladder; at 1.9 it is not."""
    assert select_rungs({1: 1.0, 2: 2.0}, 4)[:2] == ([1, 2], True)
    assert select_rungs({1: 1.0, 2: 1.9}, 4)[:2] == ([2], False)
    assert select_rungs({1: 1.0, 2: 2.0}, 3)[:2] == ([1, 2], True)  # log 2 / log 3 = 0.63 of a step


def test_one_close_ratio_does_not_make_a_ladder_close() -> None:
    """Costs 1, 3, 30 at eta 3: the step 1 -> 3 is exact, 3 -> 30 is 10x, far from 3x: not close."""
    chosen, close, note = select_rungs({1: 1.0, 2: 3.0, 3: 30.0}, 3)
    assert (chosen, close) == ([1, 2, 3], False)
    assert "step by 3.00x, 10.00x" in note


def test_without_a_close_ladder_the_smallest_mean_error_per_step_wins() -> None:
    """Squared log-distances from log 3 = 1.0986, none within half a step:
    costs 1, 1.22, 12.2: two rungs [2, 3] err (log 10 - log 3)^2 = 1.450; three rungs add (log 1.22 - log 3)^2 = 0.810,
    2.259 over two steps = 1.130 per step < 1.450, so three rungs.
    costs 1, 13.5, 135: three rungs add (log 13.5 - log 3)^2 = 2.262, (1.450 + 2.262) / 2 = 1.856 > 1.450: two.
    costs 1, 10, 100: 1.450 against (1.450 + 1.450) / 2, a tie: the first found (fewer rungs) stays.
    costs 1, 1, 30: equal costs are no step, so z=1 cannot join z=2 (and the larger z is kept)."""
    assert select_rungs({1: 1.0, 2: 1.22, 3: 12.2}, 3)[:2] == ([1, 2, 3], False)
    assert select_rungs({1: 1.0, 2: 13.5, 3: 135.0}, 3)[:2] == ([2, 3], False)
    assert select_rungs({1: 1.0, 2: 10.0, 3: 100.0}, 3)[:2] == ([2, 3], False)
    assert select_rungs({1: 1.0, 2: 1.0, 3: 30.0}, 3)[:2] == ([2, 3], False)


def test_largest_batch_literal_boundaries() -> None:
    # two points are enough for a line: 1 GiB + 100 B per sample, 1000 B free above the intercept -> 10 samples
    assert largest_batch_that_fits([(1, GIB + 100), (3, GIB + 300)], GIB + 1000, 0) == 10
    assert largest_batch_that_fits([(1, 1001), (3, 1003)], 2000, 0) == 1000  # 1 B per sample still grows
    assert largest_batch_that_fits([(1, GIB), (4, GIB)], 4 * GIB, 0) is None  # flat: no boundary
    assert largest_batch_that_fits([(8, GIB), (8, 2 * GIB)], 4 * GIB, 0) is None  # one batch size: no line
    assert largest_batch_that_fits([(1, 3 * GIB), (2, 3 * GIB + 1)], 2 * GIB, 0) == 0  # not even one sample


def test_largest_batch_per_rung_from_the_profile() -> None:
    """Peak 0.25 GiB x z + 100 MiB per sample, plus the 0.75 GiB context reserve, in 10 GiB:
    z=1: (10 - 1) GiB / 100 MiB = 92.16 -> 92; z=2: (10 - 1.25) GiB / 100 MiB = 89.6 -> 89.
    An OOM cell's peak (off the line) is no point of the fit."""
    profile = synthetic_profile({1: 1.0, 2: 3.0}, batch_sizes=(1, 4), memory_per_sample=100 * 2**20)
    profile.rows += [Row(16, z, "oom", message="CUDA out of memory", peak_memory_bytes=GIB) for z in (1, 2)]
    ladder = build_ladder(profile, eta=3, batch_size=4, gpu_memory=10 * GIB)
    assert [r.largest_batch_size for r in ladder.rungs] == [92, 89]


def test_default_batch_size_has_the_most_successful_cells_then_the_largest() -> None:
    profile = synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0}, batch_sizes=(8, 16))
    assert build_ladder(profile, eta=3).batch_size == 16  # 3 cells each: the larger
    profile.row(16, 1).status = "oom"
    assert build_ladder(profile, eta=3).batch_size == 8  # 3 cells against 2


def test_default_cost_is_time_where_any_cell_has_one() -> None:
    profile = synthetic_profile({1: 1.0, 2: 3.0})
    profile.rows[0].step_time_ms = None
    assert default_cost(profile) == "time"
    profile.rows[1].step_time_ms = None
    assert default_cost(profile) == "flops"


def test_lowest_rung_that_exactly_fits_is_allowed() -> None:
    profile = synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0}, memory={1: GIB, 2: 3 * GIB, 3: 7 * GIB})
    need = GIB + CUDA_CONTEXT_RESERVE_BYTES
    ladder = build_ladder(profile, eta=3, gpu_memory=need)
    assert [r.parallel_slots for r in ladder.rungs] == [1, 0, 0]  # the higher rungs do not fit: no error for them
    with pytest.raises(LayerprofError, match="less than the lowest rung needs"):
        build_ladder(profile, eta=3, gpu_memory=need - 1)


def test_option_boundaries_are_inclusive() -> None:
    profile = synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0})
    assert [r.trainable_layers for r in build_ladder(profile, eta=3, min_layers=3).rungs] == [3]
    assert build_ladder(profile, eta=3, configs=1).successive_halving.configs_per_rung == [1, 1, 1]
    assert [r.steps for r in build_ladder(profile, eta=3, budget_steps=1).rungs] == [1, 1, 1]
    for option, message in [
        ({"min_layers": 0}, "--min-layers must be in 1..3, got 0"),
        ({"configs": 0}, "--configs must be at least 1, got 0"),
        ({"budget_steps": 0}, "--budget-steps must be at least 1, got 0"),
    ]:
        with pytest.raises(LayerprofError, match=message):
            build_ladder(profile, eta=3, **option)


def test_missing_full_training_says_what_happened_to_it() -> None:
    profile = synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0})
    full = profile.row(8, 3)
    full.status, full.message = "oom", "CUDA out of memory"
    with pytest.raises(LayerprofError, match=r"\(z=3\) at batch size 8 \(it is oom: CUDA out of memory\); a ladder"):
        build_ladder(profile, eta=3)
    full.message = None
    with pytest.raises(LayerprofError, match=r"\(z=3\) at batch size 8; a ladder"):
        build_ladder(profile, eta=3)
    profile.rows.remove(full)
    with pytest.raises(LayerprofError, match=r"\(z=3\) at batch size 8; a ladder"):
        build_ladder(profile, eta=3)


def test_no_successful_cell_names_the_failures() -> None:
    profile = synthetic_profile({1: 1.0, 2: 3.0})
    for row in profile.rows:
        row.status, row.message = "oom", "CUDA out of memory"
    with pytest.raises(LayerprofError, match="no successful cells: every cell failed: 2 x oom: CUDA out of memory"):
        build_ladder(profile)


def test_cost_kind_picks_the_figure_and_names_the_missing_one() -> None:
    profile = synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0})
    assert [r.cost for r in build_ladder(profile, eta=3, cost_kind="time").rungs] == [1.0, 3.0, 9.0]
    assert [r.cost for r in build_ladder(profile, eta=3, cost_kind="flops").rungs] == [1e9, 3e9, 9e9]
    for row in profile.rows:
        row.step_time_ms = None
    with pytest.raises(LayerprofError, match=r"the profile has no step times \(an estimate"):
        build_ladder(profile, eta=3, cost_kind="time")
    for row in profile.rows:
        row.flops = None
    with pytest.raises(LayerprofError, match="the profile has no FLOPs; use --cost flops"):
        build_ladder(profile, eta=3, cost_kind="flops")


def test_rung_figures_against_full_training_and_the_rung_below() -> None:
    ladder = build_ladder(synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0}), eta=3)
    assert [r.cost_vs_full for r in ladder.rungs] == [pytest.approx(1 / 9), pytest.approx(1 / 3), 1.0]
    assert [r.cost_vs_previous for r in ladder.rungs] == [None, 3.0, 3.0]
    assert [r.trainable_fraction for r in ladder.rungs] == [pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0]
    assert [r.budget_index for r in ladder.rungs] == [1, 3, 9]
    # a non-integer eta has no integer powers: the budget index counts rungs from 1
    fractional = build_ladder(synthetic_profile({z: 1.5 ** (z - 1) for z in range(1, 6)}), eta=1.5)
    assert [r.budget_index for r in fractional.rungs] == [1, 2, 3, 4, 5]


def test_a_disturbed_full_training_cell_marks_every_rung() -> None:
    profile = synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0})
    profile.row(8, 1).disturbed = True
    assert [r.disturbed for r in build_ladder(profile, eta=3).rungs] == [True, False, False]
    profile.row(8, 1).disturbed = None
    profile.row(8, 3).disturbed = True
    assert [r.disturbed for r in build_ladder(profile, eta=3).rungs] == [True, True, True]


def test_hyperband_brackets_on_the_ladder_and_neps_only_where_it_differs() -> None:
    """Li et al. at eta 3: K=2 starts ceil(2/2 x 3) = 3 and ceil(2/1) = 2 configurations, as NePS does
    (floor(2/2) x 3, floor(2/1)); K=3 starts 9, ceil(3/2 x 3) = 5, 3 where NePS starts 9, floor(3/2) x 3 = 3, 3."""
    one = build_ladder(synthetic_profile({1: 5.0, 2: 5.0}), eta=3, gpu_memory=80 * GIB)
    assert one.hyperband == [] and len(one.rungs) == 1  # one rung: nothing to halve
    two = build_ladder(synthetic_profile({1: 1.0, 2: 3.0}), eta=3)
    assert [b.configs_per_rung for b in two.hyperband] == [[3, 1], [2]]
    assert two.hyperband_neps == []
    three = build_ladder(synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0}), eta=3)
    assert [b.configs_per_rung for b in three.hyperband] == [[9, 3, 1], [5, 1], [3]]
    assert [b.configs_per_rung for b in three.hyperband_neps] == [[9, 3, 1], [3, 1], [3]]
    # counts of configurations are integers (the JSON shows 27, not 27.0)
    assert all(type(c) is int for b in neps_hyperband([1.0] * 6, 3) for c in b.configs_per_rung)


def test_joint_ladder_without_step_times_costs_nothing_and_saves_nothing() -> None:
    profile = synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0})
    for row in profile.rows:
        row.step_time_ms = None
    joint = build_ladder(profile, eta=3, cost_kind="flops", configs=9, budget_steps=900).joint
    assert [r["steps"] for r in joint["rungs"]] == [100, 300, 900]
    assert [r["joint_cost_ms"] for r in joint["rungs"]] == [0.0, 0.0, 0.0]
    assert [r["steps_only_cost_ms"] for r in joint["rungs"]] == [0.0, 0.0, 0.0]
    assert joint["saving"] == 0.0


class _Cell:
    def __init__(self, spearman: float) -> None:
        self.spearman = spearman


class _Correlation:
    """Stands in for a correlate result (`layerprof.fidelity.correlate.CorrelationResult`): rho per (z, budget)."""

    budget_fractions = (0.25, 1.0)

    def cell(self, trainable_layers: int, budget: float) -> _Cell | None:
        rho = {(1, 1.0): 0.5, (3, 1.0): 1.0, (1, 0.25): 0.1, (2, 0.25): 0.2, (3, 0.25): 0.3}
        return _Cell(rho[trainable_layers, budget]) if (trainable_layers, budget) in rho else None


def test_ladder_for_reads_the_file_notes_incompleteness_and_attaches_rho(tmp_path: Path) -> None:
    profile = synthetic_profile({1: 1.0, 2: 3.0, 3: 9.0})
    for row in profile.rows:
        row.step_time_ms = None
    profile.settings.mode = "estimate"  # only an estimate has no step times: a measured ok cell without one is damage
    path = save_profile(profile, tmp_path / "p.json")
    ladder, notes = ladder_for(path, eta=3)
    assert ladder.cost_kind == "flops" and notes == []  # no step times: FLOPs by default
    ladder, notes = ladder_for(path, _Correlation(), eta=3)
    assert [r.spearman for r in ladder.rungs] == [0.5, None, 1.0]  # at the full budget, not the smallest
    assert notes == ["the correlation result has no z=2"]
    profile.complete = False
    save_profile(profile, path)
    _, notes = ladder_for(path, eta=3, cost_kind="flops")
    assert len(notes) == 1 and notes[0].startswith(f"{path} is incomplete (the sweep was interrupted)")
