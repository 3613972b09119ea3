"""GPU kinds on a cluster: inventories, placing rungs (`layerprof plan`), its Ray script, and profile sweeps
run as Ray tasks on nodes of each kind (a local multi-node Ray cluster whose CPU nodes stand in for two kinds
through custom resources)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.devices import GPU_KINDS, kind_of_device, peak_tflops
from layerprof.errors import LayerprofError
from layerprof.fidelity.plan import (
    ASSUMED_PEAK_SHARE,
    SHARING_OVERHEAD,
    GpuRun,
    one_gpu,
    plan_cluster,
    profile_set,
    together,
)
from layerprof.measure.cluster import parse_gpu_kinds, parse_inventory
from layerprof.outputs.tables import markdown_views, plan_views
from layerprof.profile import Row, SweepSettings, load_profile, save_profile
from tests.cli.test_cli import assert_one_line_error
from tests.conftest import bare_profile

GIB = 2**30
KERNEL_SHARE = 0.4  # of the peak: ASSUMED_PEAK_SHARE's value, spelled out


# ---------------------------------------------------------------- kinds and inventories


def test_gpu_kinds_name_ray_accelerator_types_or_custom_resources() -> None:
    kinds = parse_gpu_kinds("L4, h100, small=mig_1g")
    assert [(k.label, k.resource) for k in kinds] == [
        ("L4", "accelerator_type:L4"), ("H100", "accelerator_type:H100"), ("small", "mig_1g"),
    ]  # fmt: skip
    assert parse_gpu_kinds("A100-80GB")[0].resource == "accelerator_type:A100"  # Ray's name for both A100s
    for text, message in [
        ("L5", "unknown GPU kind 'L5'.*L5=RESOURCE"),
        ("H100-1g.10gb", "Ray does not label H100-1g.10gb nodes"),
        ("L4,L4", "distinct kinds"),
        ("small=", "KIND=RESOURCE"),
    ]:
        with pytest.raises(LayerprofError, match=message):
            parse_gpu_kinds(text)


def test_inventory_counts_gpus_and_mig_slices() -> None:
    items = parse_inventory("16xL4, 4xA100-80GB,1×H100,H100-1g.10gb,2xL4")
    assert [(i.gpu.name, i.count) for i in items] == [("L4", 18), ("A100-80GB", 4), ("H100", 1), ("H100-1g.10gb", 1)]
    for text, message in [("3xL5", "unknown GPU 'L5'"), ("0xL4", "has no GPUs"), ("", "--cluster is empty"),
                          ("-1xH100", "'-1xH100' has no GPUs; write COUNTxNAME, a count of 1 or more")]:  # fmt: skip
        with pytest.raises(LayerprofError, match=message):
            parse_inventory(text)


def test_mig_slices_have_their_share_of_the_gpu() -> None:
    h100 = GPU_KINDS["H100"]
    assert GPU_KINDS["H100-1g.10gb"].bf16_tflops == pytest.approx(h100.bf16_tflops * 16 / 132)
    assert 7 * GPU_KINDS["H100-1g.10gb"].memory_mib <= h100.memory_mib
    slices = [gpu for name, gpu in GPU_KINDS.items() if name.startswith("H100-") and "g." in name]
    assert len(slices) == 6 and all(gpu.mig_of == "H100" and gpu.ray_accelerator is None for gpu in slices)


# ---------------------------------------------------------------- one GPU, several trials


def test_trials_sharing_a_gpu_take_turns_once_they_would_fill_it_and_pay_for_switching() -> None:
    """10 s alone, busy 40% of it: two together take 1.13 x 10 s (the switching overhead); three 1.2 x 1.13 x
    10 s in one wave (not 21.3 s in two); with room for only two, three take two waves. A trial that keeps the GPU
    busy all the time gains nothing from company: four run one after another."""
    assert SHARING_OVERHEAD == 0.13
    assert one_gpu(1, 10.0, 0.4, 10).seconds == 10.0
    assert one_gpu(2, 10.0, 0.4, 10) == GpuRun(pytest.approx(11.3), 1, 2)
    assert one_gpu(3, 10.0, 0.4, 10) == GpuRun(pytest.approx(13.56), 1, 3)
    assert one_gpu(3, 10.0, 0.4, 2) == GpuRun(pytest.approx(21.3), 2, 2)
    assert one_gpu(4, 10.0, 1.0, 10) == GpuRun(pytest.approx(40.0), 4, 1)
    assert one_gpu(0, 10.0, 0.4, 1) == GpuRun(0.0, 0, 0)
    assert (together(1, 1.0), together(2, 0.5), together(3, 0.5)) == (1.0, pytest.approx(1.13), pytest.approx(1.695))


SHARING = Path(__file__).parents[2] / "benchmarks" / "results" / "nvidia-h200-2026-12-04" / "sharing"


@pytest.mark.parametrize(
    ("cell", "batch_size", "z"),
    [("b256", 256, 11), ("b32", 32, 1), ("pythia-1.4b", 1, 27)],  # resnet18 host-bound twice; pythia 32-true GPU-bound
)
def test_the_sharing_model_matches_two_trials_measured_on_an_h200(cell: str, batch_size: int, z: int) -> None:
    """Two copies of one cell on one NVIDIA H200 at once (benchmarks/gpu_sharing.py): the slower of the two took
    1.11x, 1.18x and 2.23x as long as one alone (the quicker one's figure rests on visits its twin had left by
    then). The model, from the alone profile only, is within 5% of each; the bf16-peak utilisation it replaces
    said 1.00x for all three."""
    stem = "pythia-1.4b-" if cell == "pythia-1.4b" else ""
    suffix = "b1" if cell == "pythia-1.4b" else cell
    single = load_profile(SHARING / f"{stem}alone-{suffix}.json")
    pair = [load_profile(SHARING / f"{stem}pair{i}-{suffix}.json").row(batch_size, z).step_time_ms for i in (0, 1)]
    measured = max(pair) / single.row(batch_size, z).step_time_ms
    cost = profile_set([single], batch_size).cost(z, GPU_KINDS["H200"])
    assert together(2, cost.gpu_share) == pytest.approx(measured, rel=0.05), (cost.gpu_share, measured)
    assert (cost.gpu_share == 1.0) == (z == 27)  # the GPU-bound trial fills the GPU, the host-bound ones do not


# ---------------------------------------------------------------- plans


def gpu_profile(device_name: str, memory_gib: float, step_ms: dict[int, float], need_gib: dict[int, float],
                gpu_share: float | None = None, precision: str = "32-true") -> object:  # fmt: skip
    """A profile measured on a GPU: step times, memory (reserved; a trial needs 0.5 GiB more), and FLOPs. GPU-bound
    cells unless `gpu_share` is given: then host-bound, with FLOPs that keep the GPU busy that share of a step at
    40% of the precision's peak."""
    gpu = kind_of_device(device_name)
    peak = gpu.bf16_tflops if precision != "32-true" else gpu.fp32_tflops
    rows = []
    for z, ms in step_ms.items():
        flops = int((gpu_share or 0.5) * ms / 1000 * KERNEL_SHARE * peak * 1e12)
        need = int(need_gib[z] * GIB)
        rows.append(Row(1, z, "ok", step_time_ms=ms, flops=flops, achieved_tflops=flops / (ms / 1000) / 1e12,
                        host_time_ms=ms if gpu_share else ms / 2, host_bound=gpu_share is not None,
                        peak_memory_bytes=need, peak_reserved_bytes=need))  # fmt: skip
    profile = bare_profile(rows, max(step_ms), spec="model", device_kind="cuda", device_name=device_name,
                           total_memory_bytes=int(memory_gib * GIB))  # fmt: skip
    profile.settings.precision = precision
    return profile


H100_NAME = "NVIDIA H100 80GB HBM3"


def h100_profile(gpu_share: float | None = None) -> object:
    # z=1 costs a third of full training; a full trial needs 30 GiB, a z=1 trial 7.5 GiB
    return gpu_profile(H100_NAME, 79.6, {1: 10.0, 2: 20.0, 3: 30.0}, {1: 7.0, 2: 18.0, 3: 29.5}, gpu_share)


def test_low_rungs_spread_over_small_gpus_and_the_top_rung_needs_the_large_ones() -> None:
    """GPU-bound trials, 32-true: an L4 runs a z=1 trial in 10 s x 67 / 30.3 (the float32 peaks) = 22.1 s, one
    after another. 27 trials end soonest at 3 x 22.1 s with 6 on the H100 (60 s) and 3 on each of 7 L4s."""
    plan = plan_cluster([h100_profile()], parse_inventory("8xL4,1xH100"), eta=3, configs=27, budget_steps=1000)
    assert plan.rungs == [1, 3]
    low, top = plan.schedule("ladder", "successive halving").brackets[0]
    l4_seconds = 10.0 * 67 / 30.3
    assert [(s.gpu, s.gpus, s.trials, s.trials_per_gpu, s.slots_per_gpu, s.waves) for s in low.shares] == [
        ("L4", 7, 21, 1, 2, 3),  # 7.5 GiB fits an L4 twice, but a GPU-bound trial gains nothing from company
        ("H100", 1, 6, 1, 10, 6),
    ]
    l4 = low.shares[0]
    assert l4.time_source == "scaled from H100 by peak" and l4.trial_seconds == pytest.approx(l4_seconds)
    assert low.makespan_seconds == pytest.approx(3 * l4_seconds)
    assert low.gpu_hours == pytest.approx((7 * 3 * l4_seconds + 60.0) / 3600)
    assert [(s.gpu, s.gpus, s.trials) for s in top.shares] == [("H100", 1, 9)]  # 30 GiB does not fit an L4
    assert top.makespan_seconds == pytest.approx(270.0)
    # the H100 alone is the best single kind (an L4 cannot hold z=3): 27 x 10 s + 9 x 30 s against 66.3 s + 270 s
    single = plan.schedule("best single kind", "successive halving")
    assert single.gpus == "H100" and single.makespan_vs_ladder == pytest.approx(540 / (3 * l4_seconds + 270))
    budget = plan.schedule("budget only", "successive halving")  # full z at 333 and 1000 steps: only the H100
    assert all(share.gpu == "H100" for rung in budget.brackets[0] for share in rung.shares)
    assert [rung.steps for rung in budget.brackets[0]] == [333, 1000]
    assert budget.makespan_seconds == pytest.approx(27 * 9.99 + 9 * 30.0)


def test_a_rung_makespan_and_gpu_hours_follow_from_the_trials_per_gpu() -> None:
    """9 trials of z=3 on 2 H100s, two fit on each. GPU-bound: one after another, 5 and 4 trials of 30 s. Busy 40%
    of their step (host-bound): two together take 1.13 x 30 s = 33.9 s, so 5 trials run in waves of 2, 2, 1
    (97.8 s) and 4 in two of 2 (67.8 s)."""
    for gpu_share, makespan, busy_seconds, at_once, waves in ((None, 150.0, 150.0 + 120.0, 1, 5),
                                                                 (0.4, 97.8, 97.8 + 67.8, 2, 3)):  # fmt: skip
        plan = plan_cluster([h100_profile(gpu_share)], parse_inventory("2xH100"), eta=3, configs=27)
        top = plan.schedule("ladder", "successive halving").brackets[0][1]
        (share,) = top.shares
        assert (share.gpus, share.trials, share.trials_per_gpu, share.slots_per_gpu, share.waves) == (
            2, 9, at_once, 2, waves,
        )  # fmt: skip
        assert top.makespan_seconds == pytest.approx(makespan)
        assert top.gpu_hours == pytest.approx(busy_seconds / 3600)


def test_trials_that_fit_together_go_on_as_few_gpus_as_the_makespan_allows() -> None:
    """3 trials busy 20% of their 10 s step, 2 H100s: two GPUs finish no sooner than one (a second trial on either
    makes it 11.3 s), so all three share one H100 for 11.3 s and the other stays free: 11.3 GPU-seconds, not 21.3."""
    plan = plan_cluster([h100_profile(0.2)], parse_inventory("2xH100"), eta=3, configs=3, budget_steps=1000)
    low = plan.schedule("ladder", "successive halving").brackets[0][0]
    assert [(s.gpu, s.gpus, s.trials, s.trials_per_gpu, s.waves) for s in low.shares] == [("H100", 1, 3, 3, 1)]
    assert low.makespan_seconds == pytest.approx(11.3)
    assert low.gpu_hours == pytest.approx(11.3 / 3600)


@pytest.mark.parametrize(
    ("reserved_mib", "slots"),
    [
        (10749, 2),  # 2 x (10,749 + 768) = 23,034 MiB: exactly an L4
        (10750, 1),  # one MiB more each: one trial
        (7400, 2),  # 3 x 7,400 + one context would fit (22,968); three trials hold three: 3 x 8,168 > 23,034
    ],
)
def test_every_trial_on_a_gpu_holds_its_own_cuda_context(reserved_mib: int, slots: int) -> None:
    profile = gpu_profile(H100_NAME, 79.6, {1: 10.0, 2: 30.0}, {1: reserved_mib / 1024, 2: reserved_mib / 1024})
    plan = plan_cluster([profile], parse_inventory("1xL4"), eta=3, configs=3, budget_steps=10)
    share = plan.schedule("ladder", "successive halving").brackets[0][0].shares[0]
    assert share.memory_need_bytes == (reserved_mib + 768) * 2**20 and share.slots_per_gpu == slots


def test_a_scaled_trial_keeps_the_share_of_the_gpu_it_was_measured_on() -> None:
    """Host-bound on the H100, its kernels 30% of its step there; on an L4 its step is scaled by the peaks and its
    share stays 0.3 (taken against the L4's own peak it would be 0.66)."""
    group = profile_set([h100_profile(0.3)], None)
    on_l4 = group.cost(1, GPU_KINDS["L4"])
    assert on_l4.time_source == "scaled from H100 by peak" and on_l4.gpu_share == pytest.approx(0.3)
    assert group.cost(1, GPU_KINDS["H100"]).gpu_share == pytest.approx(0.3)
    assert profile_set([h100_profile()], None).cost(1, GPU_KINDS["L4"]).gpu_share == 1.0  # GPU-bound
    assert profile_set([h100_profile(2.5)], None).cost(1, GPU_KINDS["H100"]).gpu_share == 1.0  # at most all of it


def test_the_best_single_kind_is_the_quickest_not_the_one_with_most_memory() -> None:
    """1xH100 and 1xA100-80GB: the A100 has more memory (81,920 against 81,559 MiB) but runs float32 at 19.5
    TFLOP/s against 67. Ladder on both: 27 z=1 trials by 210 s (21 on the H100, 6 on the A100), 9 z=3 by 210 s
    (7 and 2); the H100 alone 270 + 270 s: 9/7 of the ladder's 420 s."""
    plan = plan_cluster([h100_profile()], parse_inventory("1xH100,1xA100-80GB"), eta=3, configs=27)
    ladder = plan.schedule("ladder", "successive halving")
    assert ladder.makespan_seconds == pytest.approx(420.0)
    single = plan.schedule("best single kind", "successive halving")
    assert single.gpus == "H100" and single.makespan_seconds == pytest.approx(540.0)
    assert single.makespan_vs_ladder == pytest.approx(9 / 7)
    assert "best single kind (H100)" in markdown_views(plan_views(plan))


def test_configs_changes_halving_not_hyperband_and_says_so() -> None:
    few = plan_cluster([h100_profile()], parse_inventory("2xH100"), eta=3, configs=9)
    many = plan_cluster([h100_profile()], parse_inventory("2xH100"), eta=3, configs=27)

    def sizes(plan, algorithm):  # noqa: ANN001, ANN202
        return [[p.configs for p in bracket] for bracket in plan.schedule("ladder", algorithm).brackets]

    assert sizes(few, "successive halving") == [[9, 3]] and sizes(many, "successive halving") == [[27, 9]]
    assert sizes(few, "hyperband") == sizes(many, "hyperband") == [[3, 1], [2]]
    assert (
        "--configs 27 sets successive halving's starting configurations; Hyperband's brackets follow from eta and "
        "the 2 rungs alone (Li et al.)"
    ) in many.notes
    default = plan_cluster([h100_profile()], parse_inventory("2xH100"), eta=3)
    assert not any("--configs" in note for note in default.notes)


def test_a_mig_slice_hour_counts_its_share_of_a_gpu() -> None:
    """A 1g.10gb slice of an H100 has 16 of its 132 SMs (steps 132/16 times as long) and counts 1/7 of a GPU-hour:
    3 z=1 trials of 8.25 s and one z=3 trial of 24.75 s, one after another, are 49.5 s busy, 49.5 / 7 GPU-s."""
    profile = gpu_profile(H100_NAME, 79.6, {1: 10.0, 2: 20.0, 3: 30.0}, {1: 1.0, 2: 2.0, 3: 3.0})
    plan = plan_cluster([profile], parse_inventory("1xH100-1g.10gb"), eta=3, configs=3, budget_steps=100)
    ladder = plan.schedule("ladder", "successive halving")
    assert ladder.makespan_seconds == pytest.approx(49.5)
    assert ladder.gpu_hours == pytest.approx(49.5 / 7 / 3600)
    assert (GPU_KINDS["H100-1g.10gb"].share_of_gpu, GPU_KINDS["H100-4g.40gb"].share_of_gpu) == (1 / 7, 4 / 7)
    assert GPU_KINDS["3g.40gb"].share_of_gpu == 3 / 7 and GPU_KINDS["H100"].share_of_gpu == 1.0


@pytest.mark.parametrize(
    ("precision", "tf32", "peak"),
    [("bf16-mixed", False, 121), ("16-true", False, 121), ("32-true", False, 30.3), ("32-true", True, 60)],
)
def test_an_estimate_alone_is_scaled_from_flops_at_the_peak_of_its_precision(
    precision: str, tf32: bool, peak: float
) -> None:
    rows = [Row(1, z, "ok", flops=z * 10**12, peak_memory_bytes=z * GIB) for z in (1, 2, 3)]
    estimate = bare_profile(rows, 3, spec="model", device_kind="cuda", device_name="cuda (estimate)")
    estimate.settings = SweepSettings(batch_sizes=(1,), trainable_layer_counts=(1, 2, 3), mode="estimate",
                                      precision=precision)  # fmt: skip
    estimate.environment.estimated = True
    estimate.environment.numerics = {"matmul_tf32": tf32}
    plan = plan_cluster([estimate], parse_inventory("1xL4"), eta=3, budget_steps=100)
    share = plan.schedule("ladder", "successive halving").brackets[0][0].shares[0]
    assert share.time_source == "scaled from FLOPs at 40% of peak" and ASSUMED_PEAK_SHARE == KERNEL_SHARE
    assert share.trial_seconds == pytest.approx(1e12 / (peak * 1e12 * 0.4) * 100)
    assert share.memory_need_bytes == GIB + 768 * 2**20  # the estimate's peak and the CUDA context
    assert share.memory_source == "estimate"


def test_the_gpu_table_has_the_dense_peaks_of_every_precision() -> None:
    h100, a100, l4 = GPU_KINDS["H100"], GPU_KINDS["A100-80GB"], GPU_KINDS["L4"]
    assert (h100.fp32_tflops, h100.tf32_tflops, h100.bf16_tflops) == (67, 494.5, 989)
    assert (a100.fp32_tflops, a100.tf32_tflops, a100.bf16_tflops) == (19.5, 156, 312)
    assert (peak_tflops(l4, "32-true"), peak_tflops(l4, "32-true", tf32=True), peak_tflops(l4, "bf16-mixed")) == (
        30.3, 60, 121,
    )  # fmt: skip
    assert GPU_KINDS["T4"].tf32_tflops == GPU_KINDS["T4"].fp32_tflops == 8.1  # Turing has no TF32
    for gpu in GPU_KINDS.values():
        assert 0 < gpu.fp32_tflops <= gpu.tf32_tflops < gpu.fp16_tflops, gpu.name
        assert gpu.fp32_tflops <= gpu.bf16_tflops <= gpu.fp16_tflops, gpu.name
    assert GPU_KINDS["H100-2g.20gb"].tf32_tflops == pytest.approx(494.5 * 32 / 132)


def test_plans_refuse_what_they_cannot_place() -> None:
    with pytest.raises(LayerprofError, match=r"z=3 \(ladder\): it needs 30.2 GiB, the largest GPU \(L4\) has 22.5 GiB"):
        plan_cluster([h100_profile()], parse_inventory("4xL4"))
    cpu = bare_profile([Row(1, 1, "ok", step_time_ms=1.0, peak_memory_bytes=1)], 1, spec="model")
    with pytest.raises(LayerprofError, match="not a GPU"):
        plan_cluster([cpu], parse_inventory("1xL4"))
    other = h100_profile()
    other.model.spec = "other"
    with pytest.raises(LayerprofError, match="different models"):
        plan_cluster([h100_profile(), other], parse_inventory("1xH100"))
    with pytest.raises(LayerprofError, match="two profiles were measured on H100"):
        plan_cluster([h100_profile(), h100_profile()], parse_inventory("1xH100"))


def test_plan_cli_tables_json_and_errors(tmp_path: Path) -> None:
    path = save_profile(h100_profile(), tmp_path / "h100.json")
    runner = CliRunner()
    result = runner.invoke(app, ["plan", str(path), "--cluster", "8xL4,1xH100", "--configs", "27", "--format", "md"])
    assert result.exit_code == 0, result.output
    assert "| 1 | 1 | 1000 | 27 | L4 | 7 | 21 | 1 (2) | 3 |" in result.output
    assert "| best single kind (H100) | successive halving | 1×H100 → 1×H100 |" in result.output
    data = json.loads(runner.invoke(app, ["plan", str(path), "--cluster", "1xH100", "--json"]).stdout)
    assert data["schema"] == "layerprof.plan/2" and data["rungs"] == [1, 3]
    assert_one_line_error(runner.invoke(app, ["plan", str(path), "--cluster", "4xL4"]), "no GPU in the inventory")
    assert_one_line_error(runner.invoke(app, ["plan", str(path), "--cluster", "4xL5"]), "unknown GPU 'L5'")
    assert_one_line_error(
        runner.invoke(app, ["plan", str(path), "--cluster", "ray:127.0.0.1:1"]), "cannot reach the Ray cluster"
    )


# ---------------------------------------------------------------- Ray


# The Ray tests run on the test run's one cluster (`ray_cluster`, tests/conftest.py): two nodes of one CPU, the head
# and one more, whose resources kind_a and kind_b stand in for two GPU kinds.


FACTORY = textwrap.dedent("""
    import os
    from pathlib import Path

    from torch import nn


    def tiny():
        '''Dies (the worker process exits) on kind_b while a `die` file is in the test's directory.'''
        import ray

        directory = Path(__file__).parent
        worker = ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
        assigned = ray.get_runtime_context().get_assigned_resources() if worker else {}  # the driver splits first
        if "kind_b" in assigned and (directory / "die").exists():
            (directory / "died").touch()
            os._exit(1)
        return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 4))
""")


def ray_profile(cluster: object, tmp_path: Path, *extra: str) -> object:
    factory = tmp_path / "model.py"
    factory.write_text(FACTORY)
    return CliRunner().invoke(
        app, ["profile", f"{factory}:tiny", "--input-shape", "8", "--batch-sizes", "4,8", "--layers", "1,all",
              "--warmup", "1", "--min-steps", "2", "--steps", "2", "--steps-per-visit", "2", "--device", "cpu",
              "--executor", "ray", "--address", cluster.address, "--gpu-kinds", "small=kind_a,big=kind_b",
              "--out", str(tmp_path / "profiles"), *extra],
    )  # fmt: skip


def test_sweeps_land_on_their_kind_one_profile_each_and_a_rerun_skips_them(ray_cluster, tmp_path: Path) -> None:
    cluster, nodes = ray_cluster, ray_cluster.nodes
    result = ray_profile(cluster, tmp_path)
    assert result.exit_code == 0, result.output
    for label, resource in (("small", "kind_a"), ("big", "kind_b")):
        data = json.loads((tmp_path / "profiles" / f"tiny-{label}.json").read_text())
        assert data["environment"]["cluster_kind"] == label
        assert data["environment"]["cluster_node"] == nodes[resource].node_id
        assert data["complete"] and data["settings"]["batch_sizes"] == [4, 8]
        assert sorted((r["batch_size"], r["trainable_layers"]) for r in data["rows"]) == [
            (4, 1),
            (4, 3),
            (8, 1),
            (8, 3),
        ]
    again = ray_profile(cluster, tmp_path)
    assert again.exit_code == 0, again.output
    assert "small (kind_a): batch sizes 4, 8 (4, 8 already there) · complete" in again.output


def test_a_worker_that_dies_loses_only_its_own_sweeps(ray_cluster, tmp_path: Path) -> None:
    cluster = ray_cluster
    (tmp_path / "die").touch()
    result = ray_profile(cluster, tmp_path)
    assert result.exit_code == 1, result.output
    assert (tmp_path / "died").exists()
    assert (tmp_path / "profiles" / "tiny-small.json").exists()
    assert not (tmp_path / "profiles" / "tiny-big.json").exists()
    assert "lost (its worker or node died) after 2 attempts: WorkerCrashedError" in result.output
    assert "rerun the same command" in result.output
    (tmp_path / "die").unlink()  # the next run finds a healthy worker: only the lost sweeps run
    healed = ray_profile(cluster, tmp_path)
    assert healed.exit_code == 0, healed.output
    assert (tmp_path / "profiles" / "tiny-big.json").exists() and "already there" in healed.output


def test_ray_profile_bad_input(ray_cluster, tmp_path: Path) -> None:
    cluster = ray_cluster
    runner = CliRunner()
    base = ["profile", "resnet18", "--executor", "ray"]
    assert_one_line_error(runner.invoke(app, base), "needs --gpu-kinds")
    assert_one_line_error(
        runner.invoke(app, [*base, "--gpu-kinds", "L4", "--out", str(tmp_path / "x.json")]), "--out is a directory"
    )
    assert_one_line_error(
        runner.invoke(app, [*base, "--gpu-kinds", "L4", "--address", "127.0.0.1:1", "--out", str(tmp_path)]),
        "cannot reach the Ray cluster at 127.0.0.1:1",
    )
    assert_one_line_error(
        runner.invoke(app, ["profile", "resnet18", "--batch-sizes", "1", "--executor", "ray", "--gpu-kinds", "H100",
                            "--address", cluster.address, "--out", str(tmp_path)]),
        "no alive node of the Ray cluster offers accelerator_type:H100",
    )  # fmt: skip
    assert_one_line_error(runner.invoke(app, ["profile", "resnet18", "--gpu-kinds", "L4"]), "need --executor ray")


def test_the_exported_ray_script_runs_each_rung_on_its_kind(ray_cluster, tmp_path: Path) -> None:
    """The plan's script on a Ray cluster with a node of pretend GPUs of both kinds (added to the run's cluster for
    this test alone): every trial asks for its rung's kind and share of a GPU, and each rung runs as many trials on
    each kind as the plan says."""
    plan = plan_cluster([h100_profile()], parse_inventory("8xL4,1xH100"), eta=3, configs=27, budget_steps=10)
    low = plan.schedule("ladder", "successive halving").brackets[0][0]
    assert {share.gpu for share in low.shares} == {"L4", "H100"}  # the split the script must reproduce
    script = tmp_path / "plan.py"
    script.write_text(CliRunner().invoke(app, ["plan", str(save_profile(h100_profile(), tmp_path / "p.json")),
                                               "--cluster", "8xL4,1xH100", "--configs", "27", "--budget-steps", "10",
                                               "--export", "ray"]).stdout)  # fmt: skip
    record = tmp_path / "trials.jsonl"
    harness = textwrap.dedent(f"""
        import json, runpy, ray
        ray.init(log_to_driver=False)  # RAY_ADDRESS: the cluster with the pretend GPUs
        script = runpy.run_path({str(script)!r}, run_name="plan_script")

        def recorded(config, trainable_layers, steps, state=None):  # the export contract (docs/api.md)
            resources = ray.get_runtime_context().get_assigned_resources()
            with open({str(record)!r}, "a") as handle:
                handle.write(json.dumps({{"z": trainable_layers, "steps": steps, "resources": resources}}) + "\\n")
            return config["learning_rate"], state

        script["trial"].__globals__["train_and_evaluate"] = recorded  # run_path returns a copy of the globals
        print("winner", script["main"]())
    """)
    pretend_gpus = {"accelerator_type:L4": 1, "accelerator_type:H100": 1}
    with ray_cluster.extra_node(num_cpus=1, num_gpus=9, resources=pretend_gpus):  # the trials one at a time
        environment = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
        done = subprocess.run([sys.executable, "-c", harness], capture_output=True, text=True, timeout=300,
                              env=environment)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    trials = [json.loads(line) for line in record.read_text().splitlines()]
    for placement in plan.schedule("ladder", "successive halving").brackets[0]:
        ran = [t for t in trials if t["z"] == placement.trainable_layers]
        assert len(ran) == placement.configs and {t["steps"] for t in ran} == {placement.steps}
        for share in placement.shares:
            key = f"accelerator_type:{GPU_KINDS[share.gpu].ray_accelerator}"
            on_kind = [t for t in ran if key in t["resources"]]
            assert len(on_kind) == share.trials
            assert {round(t["resources"]["GPU"], 4) for t in on_kind} == {
                round(int(10_000 / share.trials_per_gpu) / 10_000, 4)
            }


def test_a_node_that_dies_loses_its_sweeps_without_a_retry_where_no_node_of_its_kind_is_left(
    ray_cluster, tmp_path: Path
) -> None:
    """A node of its own kind (`doomed`, added to the run's cluster for this test) goes away while its sweep builds
    the model: that sweep is reported lost at once (no node of its kind remains to retry on), kind_a's profile is
    written."""
    factory = tmp_path / "model.py"
    factory.write_text(
        textwrap.dedent("""
        import time
        from pathlib import Path

        from torch import nn


        def slow():
            import ray

            worker = ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
            if worker and "doomed" in ray.get_runtime_context().get_assigned_resources():
                (Path(__file__).parent / "started").touch()
                time.sleep(3600)
            return nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    """)
    )
    with ray_cluster.extra_node(num_cpus=1, resources={"doomed": 1}) as doomed:

        def remove_when_started() -> None:
            deadline = time.monotonic() + 120
            while not (tmp_path / "started").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            ray_cluster.cluster.remove_node(doomed)

        killer = threading.Thread(target=remove_when_started, daemon=True)
        killer.start()
        try:
            began = time.monotonic()
            result = CliRunner().invoke(
                app, ["profile", f"{factory}:slow", "--input-shape", "8", "--batch-sizes", "4", "--layers", "1,all",
                      "--warmup", "1", "--min-steps", "2", "--steps", "2", "--steps-per-visit", "2", "--device", "cpu",
                      "--executor", "ray", "--address", ray_cluster.address, "--gpu-kinds", "small=kind_a,big=doomed",
                      "--out", str(tmp_path / "profiles")],
            )  # fmt: skip
            elapsed = time.monotonic() - began
        finally:
            killer.join(timeout=5)
    assert result.exit_code == 1, result.output
    assert "big: batch 4 lost (its worker or node died): NodeDiedError" in result.output
    assert (tmp_path / "profiles" / "slow-small.json").exists()
    assert not (tmp_path / "profiles" / "slow-big.json").exists()
    # it did not wait for the sweep that sleeps an hour, nor retry it: seconds on a quiet machine, a few minutes on
    # the busiest one seen; an hour if it waited
    assert elapsed < 1800


def estimate_profile(flops: dict[int, int | None], need_gib: dict[int, float]) -> object:
    rows = [Row(1, z, "ok", flops=flops[z], peak_memory_bytes=int(need_gib[z] * GIB)) for z in flops]
    estimate = bare_profile(rows, max(flops), spec="model", device_kind="cuda", device_name="cuda (estimate)")
    estimate.settings = SweepSettings(batch_sizes=(1,), trainable_layer_counts=tuple(flops), mode="estimate")
    estimate.environment.estimated = True
    return estimate


def test_a_cell_that_failed_is_no_cell_to_plan_on() -> None:
    """A cell that ran out of memory in a later round keeps its earlier figures: the plan must not use them."""
    profile = h100_profile()
    failed = profile.row(1, 3)
    failed.status, failed.message = "oom", "failed in timed round 2 (OutOfMemoryError)"
    group = profile_set([profile], None)
    assert group.cost(3, GPU_KINDS["H100"]) is None and group.cost(1, GPU_KINDS["H100"]) is not None
    no_time = profile_set([estimate_profile({1: 10**12, 2: None}, {1: 1.0, 2: 2.0})], None)
    assert no_time.cost(2, GPU_KINDS["L4"]) is None  # memory without FLOPs or a time: no cost
    assert no_time.cost(1, GPU_KINDS["L4"]).gpu_share == 1.0  # scaled from FLOPs: all of it GPU time


def test_the_ladder_comes_from_the_largest_measured_gpu_and_times_from_any_that_has_them() -> None:
    """An L4 profile whose staircase would give three rungs, an H100 one that gives two: the H100's (80 GB) sets the
    ladder. An A10 takes its time from the profile that has the cell's time, the H100's here."""
    l4 = gpu_profile("NVIDIA L4", 22.0, {1: 10.0, 2: 30.0, 3: 90.0}, {1: 7.0, 2: 18.0, 3: 29.5})
    l4.row(1, 1).step_time_ms = None
    plan = plan_cluster([l4, h100_profile()], parse_inventory("1xH100"), eta=3)
    assert plan.rungs == [1, 3]
    cost = profile_set([l4, h100_profile()], None).cost(1, GPU_KINDS["A10"])
    assert cost.time_source == "scaled from H100 by peak" and cost.step_time_ms == pytest.approx(10.0 * 67 / 31.2)
    measured = profile_set([estimate_profile({1: 1, 2: 2, 3: 3}, {1: 1, 2: 2, 3: 3}), h100_profile()], None)
    assert sorted(measured.measured) == ["H100"] and measured.estimate is not None  # both kept, whatever the order
    assert measured.cost(1, GPU_KINDS["H100"]).time_source == "measured on H100"


def test_profiles_without_a_batch_size_in_common_say_so() -> None:
    one, other = h100_profile(), gpu_profile("NVIDIA L4", 22.0, {1: 10.0, 2: 20.0, 3: 30.0}, {1: 1, 2: 2, 3: 3})
    for row in other.rows:
        row.batch_size = 4
    with pytest.raises(LayerprofError, match="choose --batch-size: the profiles share batch sizes none"):
        plan_cluster([one, other], parse_inventory("1xH100"))
    both = h100_profile()
    both.rows += [Row(4, row.trainable_layers, "ok", step_time_ms=1.0, peak_memory_bytes=1) for row in both.rows]
    with pytest.raises(LayerprofError, match="choose --batch-size: the profiles share batch sizes 1, 4"):
        plan_cluster([both], parse_inventory("1xH100"))
    with pytest.raises(LayerprofError, match=r"--batch-size 2 is not in every profile; they share \[1, 4\]"):
        plan_cluster([both], parse_inventory("1xH100"), batch_size=2)


def test_a_single_trial_goes_where_it_ends_soonest() -> None:
    """configs=1: each rung one trial; on 1xL4 + 1xH100 (the L4 listed first) the z=1 trial runs on the H100."""
    plan = plan_cluster([h100_profile()], parse_inventory("1xL4,1xH100"), eta=3, configs=1)
    low = plan.schedule("ladder", "successive halving").brackets[0][0]
    assert [(s.gpu, s.trials) for s in low.shares] == [("H100", 1)] and low.makespan_seconds == pytest.approx(10.0)


def test_the_fewest_gpu_hours_count_a_slices_share() -> None:
    """2 L4s and 7 1g.10gb slices, 7 GPU-bound trials: the L4s finish 6 by 66.3 s (22.1 s each), a slice takes the
    seventh by 82.5 s. By then each slice runs one trial for 82.5/7 GPU-seconds, an L4 three for 22.1 each:
    all seven go on the slices, 82.5 GPU-seconds in all against 144 with the L4s."""
    profile = gpu_profile(H100_NAME, 79.6, {1: 10.0, 2: 20.0, 3: 30.0}, {1: 1.0, 2: 2.0, 3: 3.0})
    plan = plan_cluster([profile], parse_inventory("2xL4,7xH100-1g.10gb"), eta=3, configs=7, budget_steps=1000)
    low = plan.schedule("ladder", "successive halving").brackets[0][0]
    assert low.makespan_seconds == pytest.approx(10.0 * 132 / 16)
    assert [(s.gpu, s.gpus, s.trials) for s in low.shares] == [("H100-1g.10gb", 7, 7)]
    assert low.gpu_hours == pytest.approx(7 * 10.0 * 132 / 16 / 7 / 3600)


def test_plan_defaults_and_limits() -> None:
    """Costs 1, 3, 9 ms: three rungs, so eta^2 = 9 starting configurations by default; one step of budget leaves
    each budget-only rung one step; no budget at all is refused."""
    steep = gpu_profile(H100_NAME, 79.6, {1: 1.0, 2: 3.0, 3: 9.0}, {1: 1.0, 2: 2.0, 3: 3.0})
    plan = plan_cluster([steep], parse_inventory("1xH100"), eta=3, budget_steps=1)
    assert (plan.rungs, plan.configs) == ([1, 2, 3], 9)
    assert [rung.steps for rung in plan.schedule("budget only", "successive halving").brackets[0]] == [1, 1, 1]
    hyperband = plan.schedule("ladder", "hyperband")
    assert [[p.trainable_layers for p in bracket] for bracket in hyperband.brackets] == [[1, 2, 3], [2, 3], [3]]
    with pytest.raises(LayerprofError, match="--budget-steps must be at least 1, got 0"):
        plan_cluster([steep], parse_inventory("1xH100"), budget_steps=0)
    assert plan.notes == ["3 rungs; neighbour cost ratios 3.00x, 3.00x (target 3x)"]  # measured: nothing scaled
    scaled = plan_cluster([steep], parse_inventory("1xL4"), eta=3)
    assert scaled.notes[0] == (
        "predicted or scaled: some step times were not measured on that GPU kind (see each rung's time source)"
    )
    mixed = plan_cluster([steep], parse_inventory("4xL4,1xH100"), eta=3)  # the ladder's low rung partly on L4s
    assert mixed.schedule("ladder", "successive halving").scaled
    assert not mixed.schedule("best single kind", "successive halving").scaled  # on the measured H100 alone
    assert mixed.notes[0].startswith("predicted or scaled: some step times were not measured")


def test_the_best_single_kinds_gpu_hours_are_compared_with_the_ladders() -> None:
    plan = plan_cluster([h100_profile()], parse_inventory("1xH100,1xA100-80GB"), eta=3, configs=27)
    a100_z1, a100_z3 = 10.0 * 67 / 19.5, 30.0 * 67 / 19.5  # scaled by the float32 peaks
    ladder_seconds = 21 * 10.0 + 6 * a100_z1 + 7 * 30.0 + 2 * a100_z3
    ladder = plan.schedule("ladder", "successive halving")
    assert ladder.gpu_hours == pytest.approx(ladder_seconds / 3600)
    single = plan.schedule("best single kind", "successive halving")
    assert single.gpu_hours_vs_ladder == pytest.approx(540 / ladder_seconds)


def test_an_unplaceable_rung_names_its_smallest_need_and_the_largest_gpu() -> None:
    """z=3 needs 28.75 GiB as measured on an L4 and 30.25 GiB on the H100 (context reserve included); neither an L4
    (22.5 GiB) nor an A10 holds it."""
    l4 = gpu_profile("NVIDIA L4", 22.0, {1: 20.0, 2: 40.0, 3: 60.0}, {1: 7.0, 2: 18.0, 3: 28.0})
    with pytest.raises(LayerprofError) as caught:
        plan_cluster([h100_profile(), l4], parse_inventory("1xA10,1xL4"))
    assert str(caught.value) == (
        "no GPU in the inventory holds a trial of z=3 (ladder): it needs 28.8 GiB, the largest GPU (L4) has 22.5 GiB; "
        "add a larger GPU to --cluster"
    )


def test_plan_refuses_profiles_of_two_recipes_and_names_the_setting() -> None:
    """One recipe (profile.RECIPE_SETTINGS): frozen layers in eval mode make another run, as a precision does."""
    frozen = h100_profile()
    frozen.settings.eval_frozen = True
    with pytest.raises(LayerprofError, match=r"different recipes \(eval_frozen True and False\); plan one recipe"):
        plan_cluster([h100_profile(), frozen], parse_inventory("1xH100"), eta=3, configs=27)
    half = gpu_profile(H100_NAME, 79.6, {1: 10.0, 2: 20.0, 3: 30.0}, {1: 7.0, 2: 18.0, 3: 29.5}, precision="bf16-mixed")
    with pytest.raises(LayerprofError, match=r"different recipes \(precision 'bf16-mixed' and '32-true'\)"):
        plan_cluster([h100_profile(), half], parse_inventory("1xH100"), eta=3, configs=27)


def test_plan_asks_its_predictor_once_for_every_z_and_it_traces_them_in_one_model_build(monkeypatch) -> None:
    """`plan` on one estimate took 15.8 s of CPU (0.5 s before it predicted unmeasured kinds): it built the
    model on fake tensors once per z. The predictor is told the z values up front and traces them in one build."""
    import layerprof.fidelity.predictor as predictors

    told: list[tuple[int, ...]] = []
    built: list[tuple[int, ...]] = []

    def predictor(group: object, zs: tuple[int, ...]) -> predictors.PlanPredictor:
        told.append(tuple(zs))
        return predictors.PlanPredictor(group, zs)

    def traced(spec: str, options: object, settings: SweepSettings, traces: dict) -> None:
        built.append(settings.trainable_layer_counts)  # no trace kept: the plan falls back to scaling

    monkeypatch.setattr(predictors, "estimate_model", traced)
    rows = [Row(1, z, "ok", flops=z * 10**12, peak_memory_bytes=z * GIB, predicted_step_time_ms=10.0 * z)
            for z in range(1, 10)]  # fmt: skip
    profile = bare_profile(rows, 9, spec="model", device_kind="cuda", device_name="estimate for cuda")
    profile.settings.mode, profile.settings.target = "estimate", "cuda"
    plan = plan_cluster([profile], parse_inventory("1xL4,1xH100"), eta=3, configs=9, predict=predictor)
    assert told == [(*plan.rungs, 9)] and plan.rungs == [1, 3, 9]  # the rungs, then full training for halving
    assert built == [(1, 3, 9)]  # one build, every z the plan asks for
