"""Parts of the ladder pinned by hand-worked literals: the rung-selection table, the time scale between GPU kinds,
the ladder's dollars, its budget index per rung, `fit`'s batch limits and the rungs another ladder chose."""

from __future__ import annotations

import math

import pytest

from layerprof.devices import GPU_KINDS, GpuPrice, PriceBook
from layerprof.errors import LayerprofError
from layerprof.fidelity.ladder import (
    _best_subset,
    attach_batch_limits,
    build_ladder,
    rungs_at,
    select_rungs,
    time_scale,
)
from layerprof.profile import Profile, Row
from tests.conftest import bare_profile

GIB = 2**30
H100 = GPU_KINDS["H100"]
A100 = GPU_KINDS["A100-80GB"]
H100_NAME = "NVIDIA H100 80GB HBM3"  # torch's name of the SXM board


def profile_of(step_times: dict[int, float], device: str = "cuda", name: str = H100_NAME) -> Profile:
    """One batch size (8); z layers' step time as given, FLOPs 1e9 x it, peak memory z GiB."""
    n = max(step_times)
    rows = [
        Row(8, z, "ok", trainable_params=z, trainable_fraction=z / n, step_time_ms=t, flops=int(t * 1e9),
            peak_memory_bytes=z * GIB)
        for z, t in step_times.items()
    ]  # fmt: skip
    return bare_profile(rows, n, device_kind=device, device_name=name, total_memory_bytes=80 * GIB)


# ---------------------------------------------------------------- rung selection


def test_best_subset_table_literals() -> None:
    zs, costs, log3 = [1, 2, 3], {1: 1.0, 2: 3.0, 3: 9.0}, math.log(3)
    assert _best_subset(zs, costs, 3, log3) == ([1, 2, 3], 0.0)
    # two rungs: 2 -> 3 steps by exactly 3 (error 0), 1 -> 3 by 9 (error log(3)^2)
    assert _best_subset(zs, costs, 2, log3) == ([2, 3], 0.0)
    assert _best_subset(zs, costs, 2, math.log(9)) == ([1, 3], 0.0)
    chosen, error = _best_subset(zs, costs, 2, math.log(2))
    assert chosen == [2, 3] and error == pytest.approx(math.log(1.5) ** 2)
    # one rung is full training alone, at no error; more rungs than zs have no subset
    assert _best_subset(zs, costs, 1, log3) == ([3], 0.0)
    assert _best_subset(zs, costs, 4, log3) == (None, math.inf)
    # a cost that does not rise has no ratio: 3 rungs over {1, 1, 9} do not exist
    assert _best_subset(zs, {1: 1.0, 2: 1.0, 3: 9.0}, 3, log3) == (None, math.inf)


def test_select_rungs_just_above_half_a_step_has_a_ladder() -> None:
    # span = log(1.8) / log(3) = 0.535 >= 0.5: two rungs, 1.8x (within 3^0.5 .. 3^1.5 = 1.73 .. 5.2)
    chosen, close, note = select_rungs({1: 1.0, 2: 1.8}, 3)
    assert (chosen, close, note) == ([1, 2], True, "2 rungs; neighbour cost ratios 1.80x (target 3x)")
    # 1.7x: span 0.483 < 0.5, only full training
    chosen, close, note = select_rungs({1: 1.0, 2: 1.7}, 3)
    assert (chosen, close) == ([2], False) and note.startswith("no ladder comes close to eta=3: the cost changes only")


# ---------------------------------------------------------------- the time scale between GPU kinds


def test_time_scale_measured_on_the_same_kind() -> None:
    assert time_scale(profile_of({1: 1.0, 2: 3.0}), H100, "ladder") == (1.0, "measured on H100")


def test_time_scale_float32_with_tf32_uses_the_tf32_peaks() -> None:
    profile = profile_of({1: 1.0, 2: 3.0})
    assert profile.settings.precision == "32-true"
    assert time_scale(profile, A100, "ladder") == (67 / 19.5, "scaled from H100 by peak")  # plain float32
    profile.environment.numerics = {"matmul_tf32": True}
    assert time_scale(profile, A100, "ladder") == (494.5 / 156, "scaled from H100 by peak")
    profile.settings.precision = "bf16-mixed"
    assert time_scale(profile, A100, "ladder") == (989 / 312, "scaled from H100 by peak")


def test_time_scale_source_is_the_cluster_kind_before_the_device_name() -> None:
    profile = profile_of({1: 1.0, 2: 3.0}, name="some board")
    profile.environment.cluster_kind = "a100-80gb"  # case-insensitive
    assert time_scale(profile, A100, "fit") == (1.0, "measured on A100-80GB")
    assert time_scale(profile, H100, "fit") == (19.5 / 67, "scaled from A100-80GB by peak")


def test_time_scale_of_a_cuda_estimate_is_its_target_gpu_else_h100() -> None:
    profile = profile_of({1: 1.0, 2: 3.0}, name="estimate")
    profile.environment.estimated = True
    assert time_scale(profile, H100, "ladder") == (1.0, "predicted for H100")
    assert time_scale(profile, A100, "ladder") == (67 / 19.5, "scaled from H100 by peak")
    profile.settings.target_gpu = "A100-80GB"
    assert time_scale(profile, A100, "ladder") == (1.0, "predicted for A100-80GB")
    # an estimate on a board the table knows is that board's, not its --gpu's
    profile.environment.device_name = H100_NAME
    assert time_scale(profile, H100, "ladder") == (1.0, "predicted for H100")


def test_time_scale_refuses_a_cpu_profile_naming_the_command() -> None:
    profile = profile_of({1: 1.0, 2: 3.0}, device="cpu", name="x86_64")
    with pytest.raises(LayerprofError, match=r"^cost --gpu H100: the profile's step times are x86_64's, not a GPU"):
        time_scale(profile, H100, "cost")
    profile.environment.estimated = True  # an estimate for the CPU is no GPU either
    with pytest.raises(LayerprofError, match="x86_64's"):
        time_scale(profile, H100, "cost")


# ---------------------------------------------------------------- dollars


PRICES = PriceBook({"H100": GpuPrice(3.6, "test"), "A100-80GB": GpuPrice(7.2, "test")})  # $0.001 and $0.002 a second


def test_price_ladder_without_steps_prices_a_thousand_steps_and_sums_the_bracket() -> None:
    ladder = build_ladder(profile_of({1: 1.0, 2: 3.0, 3: 9.0}), eta=3, configs=9, gpu=H100, prices=PRICES)
    assert [rung.trainable_layers for rung in ladder.rungs] == [1, 2, 3]
    assert (ladder.gpu, ladder.price, ladder.priced_steps) == ("H100", "$3.6/h (test)", "1000 steps")
    assert ladder.priced_time_source == "measured on H100"
    # 1, 3, 9 ms x 1000 steps = 1, 3, 9 s at $0.001 a second
    assert [rung.usd_per_trial for rung in ladder.rungs] == pytest.approx([0.001, 0.003, 0.009])
    assert ladder.successive_halving is not None and ladder.successive_halving.configs_per_rung == [9, 3, 1]
    assert ladder.successive_halving_usd == pytest.approx(9 * 0.001 + 3 * 0.003 + 1 * 0.009)


def test_price_ladder_on_another_kind_with_the_joint_ladders_steps_and_no_bracket() -> None:
    ladder = build_ladder(profile_of({1: 1.0, 2: 3.0, 3: 9.0}), eta=3, budget_steps=90, gpu=A100, prices=PRICES)
    assert [rung.steps for rung in ladder.rungs] == [10, 30, 90]
    assert ladder.priced_steps == "the rung's steps" and ladder.priced_time_source == "scaled from H100 by peak"
    scale = 67 / 19.5
    seconds = [1.0 * 10 / 1000 * scale, 3.0 * 30 / 1000 * scale, 9.0 * 90 / 1000 * scale]
    assert [rung.usd_per_trial for rung in ladder.rungs] == pytest.approx([s * 0.002 for s in seconds])
    assert ladder.successive_halving is None and ladder.successive_halving_usd is None  # no --configs


def test_price_ladder_leaves_the_bracket_unpriced_where_a_rung_has_no_step_time() -> None:
    profile = profile_of({1: 1.0, 2: 3.0, 3: 9.0})
    profile.rows[0].step_time_ms = None  # z=1 has FLOPs only
    ladder = build_ladder(profile, eta=3, cost_kind="flops", configs=9, gpu=H100, prices=PRICES)
    assert [rung.usd_per_trial for rung in ladder.rungs] == pytest.approx([None, 0.003, 0.009])
    assert ladder.successive_halving_usd is None


# ---------------------------------------------------------------- budget indexes, batch limits, other ladders' rungs


def test_budget_index_is_eta_to_the_rung_for_integer_eta_else_the_rung_number() -> None:
    profile = profile_of({z: 2.0 ** (z - 1) for z in range(1, 5)})  # 1, 2, 4, 8 ms
    assert [r.budget_index for r in build_ladder(profile, eta=2).rungs] == [1, 2, 4, 8]
    ladder = build_ladder(profile, eta=2.0)
    assert ladder.max_batch() == {} and [r.budget_index for r in ladder.rungs] == [1, 2, 4, 8]
    assert [r.budget_index for r in build_ladder(profile, eta=2.5).rungs] == [1, 2, 3, 4]


def test_attach_batch_limits_takes_the_nearest_larger_z_and_max_batch_prefers_it() -> None:
    ladder = build_ladder(profile_of({1: 1.0, 2: 3.0, 3: 9.0}), eta=3)
    results = [{"trainable_layers": 2, "largest_batch_size": 40}, {"trainable_layers": 3, "largest_batch_size": 30}]
    fit = {"results": results}
    attach_batch_limits(ladder, fit, "fit.json")
    assert [r.batch_limit for r in ladder.rungs] == [40, 40, 30]  # z=1 takes z=2's: more layers never need less
    assert ladder.batch_limits_source == "layerprof fit (fit.json)"
    assert ladder.max_batch() == {1: 40, 3: 40, 9: 30}
    ladder.rungs[0].batch_limit, ladder.rungs[0].largest_batch_size = None, 7
    assert ladder.max_batch() == {1: 7, 3: 40, 9: 30}
    attach_batch_limits(ladder, {**fit, "memory_bytes": 3 * GIB}, "f")
    assert ladder.batch_limits_source == "layerprof fit (f), 3.0 GiB"


def test_attach_batch_limits_refusals() -> None:
    ladder = build_ladder(profile_of({1: 1.0, 2: 3.0, 3: 9.0}), eta=3)
    with pytest.raises(LayerprofError, match=r"^--batch-limits f: no `results`"):
        attach_batch_limits(ladder, {"results": []}, "f")
    fit = {"results": [{"trainable_layers": 2, "largest_batch_size": 40}]}
    with pytest.raises(LayerprofError, match="fit searched z up to 2, the ladder's rung z=3 is above it"):
        attach_batch_limits(ladder, fit, "f")


def test_to_dict_budget_to_rung() -> None:
    ladder = build_ladder(profile_of({1: 1.0, 2: 3.0, 3: 9.0}), eta=3, budget_steps=90)
    assert ladder.to_dict()["budget_to_rung"] == {
        "1": {"trainable_layers": 1, "steps": 10},
        "3": {"trainable_layers": 2, "steps": 30},
        "9": {"trainable_layers": 3, "steps": 90},
    }


def test_rungs_at_another_ladders_zs() -> None:
    profile = profile_of({1: 1.0, 2: 3.0, 3: 9.0, 4: 27.0})
    rungs = rungs_at(profile, [2, 3, 4], 8, 3, 80 * GIB)
    assert list(rungs) == [2, 3, 4]
    assert [r.budget_index for r in rungs.values()] == [1, 3, 9]
    assert [r.cost for r in rungs.values()] == [3e9, 9e9, 27e9]  # FLOPs, not times
    assert [r.cost_vs_previous for r in rungs.values()] == [None, 3.0, 3.0]
    # a z the profile lacks is left out, and keeps the others' budget index
    assert [r.budget_index for r in rungs_at(profile, [5, 2, 4], 8, 3, None).values()] == [3, 9]
    assert [r.budget_index for r in rungs_at(profile, [2, 4], 8, 2.5, None).values()] == [1, 2]
    assert rungs_at(profile, [2, 4], 16, 3, None) == {}  # no such batch size
    profile.rows[-1].status = "oom"
    assert rungs_at(profile, [2, 4], 8, 3, None) == {}  # no full training
