"""The parts of `plan` (layerprof/fidelity/plan.py), each with hand-worked figures: a trial's cost on a kind and
where it comes from, the refusals at their edges, ASHA's places and shares, the deadline's search."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict

import pytest

from layerprof.devices import GPU_KINDS, InventoryItem, PriceBook
from layerprof.errors import LayerprofError
from layerprof.fidelity.plan import (
    PLAN_SCHEMA,
    Schedule,
    _counts_to_try,
    cheapest_cluster,
    one_gpu,
    plan_cluster,
    profile_set,
    together,
)
from layerprof.measure.cluster import parse_inventory
from layerprof.parsing import price_book
from tests.measure.test_cluster import H100_NAME, estimate_profile, gpu_profile, h100_profile

GIB = 2**30
MIB = 2**20
L4_SECONDS = 10.0 * 67 / 30.3  # a z=1 trial of h100_profile on an L4: scaled by the float32 peaks


def shares_of(placement: object) -> list[dict[str, object]]:
    return [asdict(share) for share in placement.shares]


# ---------------------------------------------------------------- a trial's cost


def test_memory_comes_from_the_kinds_own_profile_then_the_estimate_then_another_kind() -> None:
    """z=1 holds 7 GiB as measured on the H100 (7.75 GiB with the CUDA context); the estimate says 1 GiB."""
    estimate = estimate_profile({1: 10**12, 2: 2 * 10**12, 3: 3 * 10**12}, {1: 1.0, 2: 2.0, 3: 3.0})
    both = profile_set([h100_profile(), estimate], None)
    on_h100, on_l4 = both.cost(1, GPU_KINDS["H100"]), both.cost(1, GPU_KINDS["L4"])
    assert (on_h100.memory_need_bytes, on_h100.memory_source) == (7 * GIB + 768 * MIB, "measured on H100")
    assert (on_l4.memory_need_bytes, on_l4.memory_source) == (GIB + 768 * MIB, "estimate")
    alone = profile_set([h100_profile()], None).cost(1, GPU_KINDS["L4"])
    assert (alone.memory_need_bytes, alone.memory_source) == (7 * GIB + 768 * MIB, "measured on H100")
    assert (alone.step_time_ms, alone.time_source, alone.gpu_share) == (
        pytest.approx(L4_SECONDS),  # ms a step: 10 ms x 67 / 30.3
        "scaled from H100 by peak",
        1.0,
    )
    assert profile_set([h100_profile()], None).cost(4, GPU_KINDS["L4"]) is None  # no profile has z=4


def test_a_predictor_times_the_kinds_nobody_measured_and_only_those() -> None:
    asked: list[tuple[int, str]] = []

    def predictor(z: int, gpu: object) -> tuple[float, str, float] | None:
        asked.append((z, gpu.name))
        return (5.0 * z, f"predicted for {gpu.name}", 0.25) if gpu.name == "L4" else None

    group = profile_set([h100_profile(0.4)], None)
    group.predictor = predictor
    l4 = group.cost(3, GPU_KINDS["L4"])
    assert (l4.step_time_ms, l4.time_source, l4.gpu_share) == (15.0, "predicted for L4", 0.25)
    h100 = group.cost(3, GPU_KINDS["H100"])
    assert (h100.step_time_ms, h100.time_source, h100.gpu_share) == (30.0, "measured on H100", pytest.approx(0.4))
    a10 = group.cost(1, GPU_KINDS["A10"])  # the predictor has nothing for an A10: scaled by the peaks
    assert (a10.step_time_ms, a10.time_source) == (pytest.approx(10.0 * 67 / 31.2), "scaled from H100 by peak")
    assert asked == [(3, "L4"), (1, "A10")]  # never for the kind it measured


def test_a_host_bound_trials_share_is_its_kernels_time_and_a_cell_without_flops_fills_the_gpu() -> None:
    """FLOPs of 0.3 x 10 ms at 40% of the H100's float32 peak (67 TFLOP/s): the kernels keep it busy 30%."""
    profile = h100_profile(0.3)
    assert profile_set([profile], None).cost(1, GPU_KINDS["H100"]).gpu_share == pytest.approx(0.3)
    profile.row(1, 1).flops = 0
    assert profile_set([profile], None).cost(1, GPU_KINDS["H100"]).gpu_share == 1.0
    profile.row(1, 2).host_bound = False
    assert profile_set([profile], None).cost(2, GPU_KINDS["H100"]).gpu_share == 1.0


def test_flops_alone_come_from_a_measured_profile_without_times_too() -> None:
    """A measured H100 profile whose z=1 cell lost its time but kept 8.04 TFLOP: on an L4, 8.04e12 / (30.3e12 x
    0.4) s = 663.4 ms, the whole of it GPU time; on the H100, 300 ms."""
    profile = h100_profile()
    row = profile.row(1, 1)
    row.step_time_ms, row.flops = None, int(8.04e12)
    group = profile_set([profile], None)
    l4 = group.cost(1, GPU_KINDS["L4"])
    assert l4.step_time_ms == pytest.approx(8.04e12 / (30.3e12 * 0.4) * 1000)
    assert (l4.time_source, l4.gpu_share) == ("scaled from FLOPs at 40% of peak", 1.0)
    assert group.cost(1, GPU_KINDS["H100"]).step_time_ms == pytest.approx(300.0)


# ---------------------------------------------------------------- the set of profiles and its refusals


def test_profile_set_refusals_name_what_is_wrong() -> None:
    with pytest.raises(LayerprofError, match="^give at least one profile or estimate of the model$"):
        profile_set([], None)
    cpu_estimate = estimate_profile({1: 1, 2: 2, 3: 3}, {1: 1, 2: 2, 3: 3})
    cpu_estimate.environment.device_kind = "cpu"
    with pytest.raises(LayerprofError, match=r"^an estimate for the CPU says nothing about GPU memory; use --target"):
        profile_set([cpu_estimate], None)
    shorter = gpu_profile("NVIDIA L4", 22.0, {1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0})
    with pytest.raises(LayerprofError, match="^the profiles are of different models: model, model$"):
        profile_set([h100_profile(), shorter], None)  # same spec, two layer counts
    strange = gpu_profile(H100_NAME, 79.6, {1: 1.0}, {1: 1.0})
    strange.environment.device_name = "Weird GPU 9000"
    with pytest.raises(LayerprofError, match="^model: 'Weird GPU 9000' is not a GPU layerprof knows"):
        profile_set([strange], None)
    strange.environment.cluster_kind = "L4"  # the --gpu-kinds label it ran under, where the table lacks the name
    assert list(profile_set([strange], None).measured) == ["L4"]


def test_the_set_keeps_the_recipe_precision_and_tf32_of_the_profiles() -> None:
    half = gpu_profile(H100_NAME, 79.6, {1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0}, precision="bf16-mixed")
    half.environment.numerics = {"matmul_tf32": True}
    group = profile_set([half], 1)
    assert (group.model, group.batch_size, group.layer_count, group.precision, group.tf32) == (
        "model", 1, 2, "bf16-mixed", True,
    )  # fmt: skip
    assert group.peak(GPU_KINDS["L4"]) == 121
    assert profile_set([h100_profile()], None).tf32 is False


# ---------------------------------------------------------------- sharing one GPU


def test_together_and_one_gpu_at_their_edges() -> None:
    """Two trials busy half their step fill the GPU exactly: 1.13x. Waves of 2, 2 and 1 against 3 and 2 with room
    for three: both make 5 trials take (2 x 1.13 + 1) or (1.695 + 1.13) x 10 s; the fewer waves end no sooner
    (32.6 s against 28.25 s)."""
    assert together(0, 1.0) == 1.0 and together(2, 0.5) == pytest.approx(1.13)
    assert together(2, 0.6) == pytest.approx(1.2 * 1.13)
    assert one_gpu(5, 10.0, 0.5, 3) == one_gpu.__wrapped__(5, 10.0, 0.5, 3)
    run = one_gpu.__wrapped__(5, 10.0, 0.5, 3)
    assert (run.seconds, run.waves, run.at_once) == (pytest.approx(28.25), 2, 3)
    single = one_gpu.__wrapped__(1, 7.0, 0.5, 1)
    assert (single.seconds, single.waves, single.at_once) == (7.0, 1, 1)
    # GPU-bound: 3 waves of one (30 s) beat 2 waves of 2 and 1 (2.26 + 1 = 32.6 s)
    assert one_gpu.__wrapped__(3, 10.0, 1.0, 2).waves == 3
    # busy 1/1.13 of their step, two together take 2 x (1/1.13) x 1.13 = 2x one alone, as two waves do: the tie
    # keeps them together
    tie = one_gpu.__wrapped__(2, 10.0, 1 / 1.13, 2)
    assert (tie.seconds, tie.waves, tie.at_once) == (pytest.approx(20.0), 1, 2)
    assert one_gpu.__wrapped__(2, 10.0, 1.0, 2) == one_gpu.__wrapped__(2, 10.0, 1.0, 1)


# ---------------------------------------------------------------- plan_cluster's refusals and notes


@pytest.mark.parametrize("deadline", [0.0, -1.0, math.nan, math.inf])
def test_a_deadline_that_is_not_a_positive_finite_duration_is_refused(deadline: float) -> None:
    with pytest.raises(LayerprofError, match="^--deadline must be a positive duration like 6h, got "):
        plan_cluster([h100_profile()], parse_inventory("1xH100"), eta=3, configs=3, deadline_seconds=deadline,
                     prices=PriceBook())  # fmt: skip


def test_the_shortest_deadline_is_taken_and_says_no_composition_meets_it() -> None:
    plan = plan_cluster([h100_profile()], parse_inventory("1xH100"), eta=3, configs=3, budget_steps=10,
                        prices=price_book([], environ={}), deadline_seconds=1e-9)  # fmt: skip
    assert [(answer.algorithm, answer.met) for answer in plan.deadlines] == [
        ("successive halving", False), ("hyperband", False), ("asha", False),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("budget", "refused"), [(0, True), (1, False), (10**9, False), (10**9 + 1, True), (10**20, True)]
)
def test_budget_steps_from_one_to_a_billion(budget: int, refused: bool) -> None:
    """--budget-steps 10^20 once ran past 300 s; a billion steps is the most a plan takes."""
    if refused:
        with pytest.raises(LayerprofError, match="^--budget-steps "):
            plan_cluster([h100_profile()], parse_inventory("1xH100"), eta=3, configs=3, budget_steps=budget)
    else:
        plan = plan_cluster([h100_profile()], parse_inventory("1xH100"), eta=3, configs=3, budget_steps=budget)
        assert plan.budget_steps == budget
        top = plan.schedule("ladder", "successive halving").brackets[0][-1]
        assert top.makespan_seconds == pytest.approx(0.03 * budget)  # one z=3 trial of 30 ms steps


def test_eta_is_checked_before_anything_is_placed() -> None:
    with pytest.raises(LayerprofError, match="^--eta must be a number greater than 1 and at most 1000, got 1$"):
        plan_cluster([h100_profile()], parse_inventory("1xH100"), eta=1.0, budget_steps=0)  # eta said first


def test_more_configurations_than_a_plan_places_are_refused_given_or_derived() -> None:
    """Costs 1, 101, 10,201 ms at eta 101: three rungs, so eta^2 = 10,201 starting configurations by default."""
    steep = gpu_profile(H100_NAME, 79.6, {1: 1.0, 2: 101.0, 3: 10201.0}, {1: 1.0, 2: 2.0, 3: 3.0})
    with pytest.raises(LayerprofError) as caught:
        plan_cluster([steep], parse_inventory("1xH100"), eta=101)
    assert str(caught.value) == (
        "eta^2 = 10,201 configurations is beyond the 10,000 a plan places; give a smaller --configs"
    )
    with pytest.raises(LayerprofError, match=r"^--configs 10,001 is beyond the 10,000 a plan places"):
        plan_cluster([h100_profile()], parse_inventory("1xH100"), eta=3, configs=10_001)


def test_an_incomplete_profile_is_noted_and_the_json_names_its_schema() -> None:
    profile = h100_profile()
    profile.complete = False
    plan = plan_cluster([profile], parse_inventory("1xH100"), eta=3, configs=3)
    assert plan.notes[-1] == "the profile of NVIDIA H100 80GB HBM3 is incomplete (the sweep was interrupted)"
    assert plan.notes[1] == "2 rungs; neighbour cost ratios 3.00x (target 3x)"
    data = plan.to_dict()
    assert data["schema"] == PLAN_SCHEMA == "layerprof.plan/2" and data["rungs"] == [1, 3]
    assert data["inventory"] == [{"gpu": "H100", "count": 1}] and data["configs"] == 3
    assert [(s.name, s.algorithm) for s in plan.schedules] == [
        ("ladder", "successive halving"), ("best single kind", "successive halving"),
        ("budget only", "successive halving"), ("ladder", "hyperband"), ("best single kind", "hyperband"),
        ("budget only", "hyperband"), ("ladder", "asha"),
    ]  # fmt: skip
    with pytest.raises(StopIteration):
        plan.schedule("ladder", "bohb")


def test_the_budget_only_schedule_halves_steps_at_full_training() -> None:
    """3 rungs (1, 3, 9 ms) at eta 3 and 900 steps: 100, 300 and 900 steps of z=3 (9 ms), 9, 3 and 1 trials,
    one after another on the one H100: 9 x 0.9 + 3 x 2.7 + 8.1 = 24.3 s; the ladder 9 x 0.9 + 3 x 2.7 + 8.1 too
    but its z=1 rung costs 0.9 s a trial."""
    steep = gpu_profile(H100_NAME, 79.6, {1: 1.0, 2: 3.0, 3: 9.0}, {1: 1.0, 2: 2.0, 3: 3.0})
    plan = plan_cluster([steep], parse_inventory("1xH100"), eta=3, budget_steps=900)
    budget = plan.schedule("budget only", "successive halving")
    assert [(p.trainable_layers, p.steps, p.configs) for p in budget.brackets[0]] == [(3, 100, 9), (3, 300, 3),
                                                                                        (3, 900, 1)]  # fmt: skip
    assert budget.makespan_seconds == pytest.approx(24.3)
    ladder = plan.schedule("ladder", "successive halving")
    assert ladder.makespan_seconds == pytest.approx(9 * 0.9 + 3 * 2.7 + 8.1)
    assert budget.makespan_vs_ladder == pytest.approx(1.0) and budget.gpu_hours_vs_ladder == pytest.approx(1.0)


# ---------------------------------------------------------------- ASHA


def test_asha_on_two_kinds_puts_each_trial_where_it_ends_soonest_and_adds_each_kinds_share() -> None:
    """1 L4 and 1 H100, 3 configurations: z=1 takes 10 s on the H100, 22.1 s on the L4; z=3 fits the H100 only.
    The H100 runs two z=1 trials (0-10, 10-20 s), the L4 one (0-22.1 s); its end is the third completion, which
    promotes one z=3 trial: 22.1-52.1 s on the H100."""
    plan = plan_cluster([h100_profile()], parse_inventory("1xL4,1xH100"), eta=3, configs=3, budget_steps=1000)
    asha = plan.schedule("ladder", "asha")
    low, top = asha.brackets[0]
    need = 7 * GIB + 768 * MIB
    assert shares_of(low) == [
        {"gpu": "L4", "gpus": 1, "trials": 1, "trials_per_gpu": 1, "slots_per_gpu": 2, "waves": 1,
         "trial_seconds": pytest.approx(L4_SECONDS), "time_source": "scaled from H100 by peak",
         "memory_need_bytes": need, "memory_source": "measured on H100", "busy_seconds": pytest.approx(L4_SECONDS),
         "usd": None},
        {"gpu": "H100", "gpus": 1, "trials": 2, "trials_per_gpu": 1, "slots_per_gpu": 10, "waves": 2,
         "trial_seconds": 10.0, "time_source": "measured on H100", "memory_need_bytes": need,
         "memory_source": "measured on H100", "busy_seconds": 20.0, "usd": None},
    ]  # fmt: skip
    assert (low.rung, low.trainable_layers, low.steps, low.configs) == (0, 1, 1000, 3)
    assert low.makespan_seconds == pytest.approx(L4_SECONDS)
    assert low.gpu_hours == pytest.approx((L4_SECONDS + 20.0) / 3600)
    assert (top.rung, top.trainable_layers, top.configs) == (1, 3, 1)
    assert [(s["gpu"], s["trials"], s["busy_seconds"]) for s in shares_of(top)] == [("H100", 1, pytest.approx(30.0))]
    assert top.makespan_seconds == pytest.approx(30.0)
    assert asha.makespan_seconds == pytest.approx(L4_SECONDS + 30.0)
    assert asha.gpu_hours == pytest.approx((L4_SECONDS + 50.0) / 3600)
    assert (asha.name, asha.algorithm, asha.gpus) == ("ladder", "asha", "")


def test_asha_places_on_one_gpu_as_many_trials_as_fit_when_fewer_fit_than_their_share_allows() -> None:
    """Busy 20% of their step, five trials could share an H100, but each needs 30.75 GiB: two fit. Two z=1
    trials take 1.13 x 10 s together (0-11.3 s), the third 11.3-22.6 s beside an idle place; its end promotes
    one z=3 trial, 33.9 s: 22.6-56.5 s. Each place's busy time is half its trials' time."""
    profile = gpu_profile(H100_NAME, 79.6, {1: 10.0, 2: 20.0, 3: 30.0}, {1: 30.0, 2: 30.0, 3: 30.0}, 0.2)
    plan = plan_cluster([profile], parse_inventory("1xH100"), eta=3, configs=3, budget_steps=1000)
    asha = plan.schedule("ladder", "asha")
    low, top = asha.brackets[0]
    (share,) = shares_of(low)
    assert (share["gpus"], share["trials"], share["trials_per_gpu"], share["slots_per_gpu"], share["waves"]) == (
        1, 3, 2, 2, 2,
    )  # fmt: skip
    assert share["trial_seconds"] == pytest.approx(11.3) and share["busy_seconds"] == pytest.approx(3 * 5.65)
    assert low.makespan_seconds == pytest.approx(22.6)
    (upper,) = shares_of(top)
    assert (upper["gpus"], upper["trials"], upper["waves"], upper["busy_seconds"]) == (1, 1, 1, pytest.approx(16.95))
    assert top.makespan_seconds == pytest.approx(33.9)
    assert asha.makespan_seconds == pytest.approx(56.5)
    assert asha.gpu_hours == pytest.approx(2 * 16.95 / 3600)


def test_asha_counts_a_mig_slices_share_of_a_gpu_hour() -> None:
    """One 1g.10gb slice (16 of 132 SMs): three z=1 trials of 8.25 s, then one z=3 of 24.75 s: 49.5 s, 1/7 of a
    GPU-hour's worth each second."""
    profile = gpu_profile(H100_NAME, 79.6, {1: 10.0, 2: 20.0, 3: 30.0}, {1: 1.0, 2: 2.0, 3: 3.0})
    plan = plan_cluster([profile], parse_inventory("1xH100-1g.10gb"), eta=3, configs=3, budget_steps=100)
    asha = plan.schedule("ladder", "asha")
    assert asha.makespan_seconds == pytest.approx(49.5)
    assert asha.gpu_hours == pytest.approx(49.5 / 7 / 3600)
    assert [p.gpu_hours for p in asha.brackets[0]] == [pytest.approx(24.75 / 7 / 3600)] * 2


def test_asha_promotes_one_trial_per_eta_completions_at_every_rung() -> None:
    """Three rungs (1, 3, 9 ms), 9 configurations, eta 3, one H100, 100 steps: nine z=1 trials of 0.1 s, each
    third completion promotes a z=2 trial (0.3 s, taken first when the GPU frees: 0.3-0.6, 0.9-1.2, 1.5-1.8 s),
    the third z=2 one z=3 trial (1.8-2.7 s)."""
    steep = gpu_profile(H100_NAME, 79.6, {1: 1.0, 2: 3.0, 3: 9.0}, {1: 1.0, 2: 2.0, 3: 3.0})
    plan = plan_cluster([steep], parse_inventory("1xH100"), eta=3, budget_steps=100)
    asha = plan.schedule("ladder", "asha")
    assert [p.configs for p in asha.brackets[0]] == [9, 3, 1]
    assert asha.makespan_seconds == pytest.approx(9 * 0.1 + 3 * 0.3 + 0.9)
    assert [p.makespan_seconds for p in asha.brackets[0]] == pytest.approx([1.5, 1.5, 0.9])


def test_asha_refuses_a_rung_no_gpu_holds() -> None:
    """The ladder and halving say it first; ASHA alone, on 4 L4s that cannot hold z=3, says the same of z=1's
    ladder (its first rung's z)."""
    from layerprof.fidelity.plan import asha_schedule

    group = profile_set([h100_profile()], None)
    with pytest.raises(LayerprofError, match=r"^no GPU in the inventory holds a trial of z=1 \(asha\)"):
        asha_schedule(3, 3.0, [(1, 10), (3, 10)], parse_inventory("4xL4"), group)


# ---------------------------------------------------------------- the deadline's search


def test_the_counts_the_deadline_search_tries() -> None:
    assert _counts_to_try(0) == [0] and _counts_to_try(16) == list(range(17))
    assert _counts_to_try(17) == [0, 1, 2, 3, 4, 6, 8, 12, 16, 17]
    assert _counts_to_try(100) == [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 100]


L4_PER_HOUR, H100_PER_HOUR = 0.7992, 3.9492  # Modal's list prices


def work(hours_on_one_l4: float) -> object:
    """A stand-in schedule (cheapest_cluster's unit is the search, not the placing): an H100 does the work of 3
    L4s; no GPU at all places nothing."""

    def build(items: Sequence[InventoryItem]) -> Schedule:
        speed = sum(item.count * (3 if item.gpu.name == "H100" else 1) for item in items)
        return Schedule("ladder", "successive halving", [], makespan_seconds=hours_on_one_l4 * 3600 / speed)

    return build


def test_the_cheapest_composition_meets_the_deadline_exactly() -> None:
    """12 L4-hours of work on up to 3 L4s and 2 H100s by 4 h: 3 L4s (4 h, $9.59 held) beat an H100 (4 h, $15.80)
    and an L4 beside an H100 (3 h, $14.25). L4 counts 0-3, each with the H100s' count bisected: 12 compositions.
    By 3 h: 3 L4s and an H100 (2 h, $12.69) beat 2 L4s and an H100 (2.4 h, $13.31) and 1 L4 and one (3 h)."""
    inventory = parse_inventory("3xL4,2xH100")
    answer = cheapest_cluster(4 * 3600, "successive halving", work(12), inventory, price_book([], environ={}))
    assert (answer.met, answer.gpus, answer.makespan_seconds) == (True, [{"gpu": "L4", "count": 3}], 4 * 3600)
    assert answer.usd_held == pytest.approx(3 * L4_PER_HOUR * 4) and answer.usd == 0.0
    assert (answer.compositions_tried, answer.gpu_hours, answer.reason) == (12, 0.0, "")
    held = cheapest_cluster(3 * 3600, "hyperband", work(12), inventory, price_book([], environ={}))
    assert held.gpus == [{"gpu": "L4", "count": 3}, {"gpu": "H100", "count": 1}]
    assert held.usd_held == pytest.approx((3 * L4_PER_HOUR + H100_PER_HOUR) * 2) and held.algorithm == "hyperband"


def test_a_deadline_not_even_the_whole_inventory_meets_says_how_long_it_takes() -> None:
    inventory = parse_inventory("3xL4,2xH100")
    answer = cheapest_cluster(3600, "asha", work(12), inventory, price_book([], environ={}))
    assert (answer.met, answer.gpus, answer.usd_held, answer.compositions_tried) == (False, [], None, 1)
    assert answer.reason == (
        "even all of --cluster (3xL4, 2xH100) takes 1.33 h for ASHA over the ladder, beyond the deadline of 1 h: add "
        "GPUs or faster kinds, or lower --configs or --budget-steps"
    )

    def unplaceable(items: Sequence[InventoryItem]) -> Schedule:
        raise LayerprofError("no GPU holds it")

    refused = cheapest_cluster(3600, "hyperband", unplaceable, inventory, price_book([], environ={}))
    assert refused.reason.startswith("even all of --cluster (3xL4, 2xH100) cannot place every rung for hyperband")
    with pytest.raises(LayerprofError, match="no price for H200"):
        cheapest_cluster(3600, "hyperband", work(1), parse_inventory("1xH200"), PriceBook())


def test_asha_shares_a_gpu_by_the_lowest_rungs_share() -> None:
    """z=1 keeps the H100 busy 20% of its step, z=3 all of it: the lowest rung sets 5 places per H100 (1 GiB each,
    45 fit). Three z=1 trials together take 1.13 x 10 s; the promoted z=3 trial 5 x 1.13 x 30 s = 169.5 s."""
    profile = gpu_profile(H100_NAME, 79.6, {1: 10.0, 2: 20.0, 3: 30.0}, {1: 1.0, 2: 1.0, 3: 1.0}, 0.2)
    profile.row(1, 3).host_bound = False
    plan = plan_cluster([profile], parse_inventory("1xH100"), eta=3, configs=3, budget_steps=1000)
    asha = plan.schedule("ladder", "asha")
    assert asha.brackets[0][0].shares[0].trials_per_gpu == 5
    assert asha.makespan_seconds == pytest.approx(11.3 + 169.5)


def test_asha_takes_a_trial_that_fills_the_gpus_memory_exactly() -> None:
    """22,266 MiB reserved and the 768 MiB context: 23,034 MiB, an L4's all. Three z=1 trials of 22.1 s, then one
    z=3 trial of 30 ms x 67 / 30.3 a step: six L4 z=1 trials' time."""
    exact = 22266 / 1024
    profile = gpu_profile(H100_NAME, 79.6, {1: 10.0, 2: 20.0, 3: 30.0}, {1: exact, 2: exact, 3: exact})
    plan = plan_cluster([profile], parse_inventory("1xL4"), eta=3, configs=3, budget_steps=1000)
    assert GPU_KINDS["L4"].memory_mib == 23034
    assert plan.schedule("ladder", "asha").makespan_seconds == pytest.approx(6 * L4_SECONDS)


def test_a_gpu_you_own_costs_nothing_per_rung() -> None:
    """--price H100=0: every share, rung and schedule at $0, held or busy."""
    plan = plan_cluster([h100_profile()], parse_inventory("1xH100"), eta=3, configs=3,
                        prices=price_book(["H100=0"], environ={}))  # fmt: skip
    for schedule in plan.schedules:
        assert (schedule.usd, schedule.usd_held) == (0.0, 0.0)
        assert all(placement.usd == 0.0 for bracket in schedule.brackets for placement in bracket)
    assert plan.prices == {"H100": "$0/h (--price)"}


def test_the_first_trials_go_where_one_ends_soonest_not_on_the_first_kind_listed() -> None:
    """Busy 40% of their step, 4 z=1 trials on an L4 (22.1 s, listed first) and 2 H100s (10 s; two together
    11.3 s): two on each H100 end by 11.3 s. Had the L4 taken one, by its 22.1 s all four could share one H100
    (1.6 x 1.13 x 10 = 18.1 s, fewer GPU-hours): a later rung end."""
    plan = plan_cluster([h100_profile(0.4)], parse_inventory("1xL4,2xH100"), eta=3, configs=4, budget_steps=1000)
    low = plan.schedule("ladder", "successive halving").brackets[0][0]
    assert [(s.gpu, s.gpus, s.trials, s.trials_per_gpu) for s in low.shares] == [("H100", 2, 4, 2)]
    assert low.makespan_seconds == pytest.approx(11.3) and low.gpu_hours == pytest.approx(2 * 11.3 / 3600)


def test_each_schedule_is_compared_with_the_ladder_of_its_own_algorithm() -> None:
    """The 30.75 GiB trials of the test above on one H100: successive halving's ladder takes 21.3 s (two z=1 trials
    together, then one) + 30 s; ASHA 56.5 s against it. Hyperband's schedules against Hyperband's ladder."""
    profile = gpu_profile(H100_NAME, 79.6, {1: 10.0, 2: 20.0, 3: 30.0}, {1: 30.0, 2: 30.0, 3: 30.0}, 0.2)
    plan = plan_cluster([profile], parse_inventory("1xH100"), eta=3, configs=3, budget_steps=1000)
    ladder = plan.schedule("ladder", "successive halving")
    assert ladder.makespan_seconds == pytest.approx(51.3) and ladder.gpu_hours == pytest.approx(51.3 / 3600)
    asha = plan.schedule("ladder", "asha")
    assert asha.makespan_vs_ladder == pytest.approx(56.5 / 51.3)
    assert asha.gpu_hours_vs_ladder == pytest.approx(33.9 / 51.3)
    hyperband = [s for s in plan.schedules if s.algorithm == "hyperband"]
    own = plan.schedule("ladder", "hyperband")
    assert [s.makespan_vs_ladder for s in hyperband] == [pytest.approx(s.makespan_seconds / own.makespan_seconds)
                                                         for s in hyperband]  # fmt: skip
    assert own.makespan_seconds != pytest.approx(ladder.makespan_seconds)


def test_asha_on_a_gpu_that_holds_the_low_rungs_only() -> None:
    """Busy 20% of their step: an L4 holds two z=1 trials (7.75 GiB each; 24.99 s together) and no z=3 trial (30.25
    GiB, not even one of two); the H100 two of either (11.3 s, 33.9 s). The L4 runs 4 z=1 trials in two waves, the
    H100 5, then the three z=3 trials: 8 x 11.3 s in all."""
    plan = plan_cluster([h100_profile(0.2)], parse_inventory("1xL4,1xH100"), eta=3, configs=9, budget_steps=1000)
    asha = plan.schedule("ladder", "asha")
    low, top = asha.brackets[0]
    assert [(s.gpu, s.gpus, s.trials, s.trials_per_gpu, s.waves) for s in low.shares] == [
        ("L4", 1, 4, 2, 2), ("H100", 1, 5, 2, 3),
    ]  # fmt: skip
    assert low.makespan_seconds == pytest.approx(2 * L4_SECONDS * 1.13)
    assert [(s.gpu, s.trials, s.trials_per_gpu) for s in top.shares] == [("H100", 3, 2)]
    assert asha.makespan_seconds == pytest.approx(8 * 11.3)


def test_asha_gives_a_trial_that_leaves_the_gpu_idle_one_place_per_gpu() -> None:
    """A predictor that says the GPU is never busy (share 0): no share to divide by, one trial per GPU."""
    from layerprof.fidelity.plan import asha_schedule

    group = profile_set([h100_profile()], None)
    group.predictor = lambda z, gpu: (5.0 * z, f"predicted for {gpu.name}", 0.0)
    asha = asha_schedule(3, 3.0, [(1, 1000), (3, 1000)], parse_inventory("1xA100-80GB"), group)  # nobody measured
    assert asha.brackets[0][0].shares[0].trials_per_gpu == 1
    assert asha.makespan_seconds == pytest.approx(3 * 5.0 + 15.0)


def test_a_plan_without_prices_names_the_first_kind_that_lacks_one() -> None:
    plan = plan_cluster([h100_profile()], parse_inventory("1xL4,1xH100"), eta=3, configs=3,
                        prices=PriceBook(builtin=False))  # fmt: skip
    assert [note for note in plan.notes if note.startswith("no price")][0].startswith("no price for L4 (give one")


def test_the_deadline_search_over_three_kinds_finds_what_trying_them_all_finds() -> None:
    """12 L4-hours by 2 h on up to 1 T4, 1 L4 and 2 H100s (an H100 does 3 L4s' work): every composition tried by
    hand against the search."""
    inventory = parse_inventory("1xT4,1xL4,2xH100")
    prices = price_book([], environ={})
    answer = cheapest_cluster(2 * 3600, "successive halving", work(12), inventory, prices)
    brute = []
    for counts in itertools.product(range(2), range(2), range(3)):
        items = [InventoryItem(item.gpu, n) for item, n in zip(inventory, counts, strict=True) if n]
        if not items:
            continue
        makespan = work(12)(items).makespan_seconds
        if makespan <= 2 * 3600:
            held = sum(prices.usd(item.gpu, makespan) * item.count for item in items)
            brute.append((held, [{"gpu": item.gpu.name, "count": item.count} for item in items]))
    assert answer.met and (answer.usd_held, answer.gpus) == (pytest.approx(min(brute)[0]), min(brute)[1])
    # all of them (1.5 h, $13.93) beat the two H100s alone (2 h, $15.80)
    assert answer.gpus == [{"gpu": "T4", "count": 1}, {"gpu": "L4", "count": 1}, {"gpu": "H100", "count": 2}]


def test_asha_with_one_configuration_runs_it_on_the_quickest_gpu_and_promotes_none() -> None:
    """One z=1 trial, 10 s on the H100 against 22.1 s on the L4 listed first; one completion promotes nothing
    (floor(1/3) = 0): the top rung runs no trial and takes no time."""
    plan = plan_cluster([h100_profile()], parse_inventory("1xL4,1xH100"), eta=3, configs=1, budget_steps=1000)
    asha = plan.schedule("ladder", "asha")
    low, top = asha.brackets[0]
    assert [(s.gpu, s.trials) for s in low.shares] == [("H100", 1)] and asha.makespan_seconds == 10.0
    assert (top.configs, top.shares, top.makespan_seconds, top.gpu_hours) == (0, [], 0.0, 0.0)
