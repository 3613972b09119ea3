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

from layerprof.cli import app
from layerprof.cluster import parse_gpu_kinds, parse_inventory
from layerprof.devices import GPU_KINDS, kind_of_device
from layerprof.errors import LayerprofError
from layerprof.plan import ASSUMED_PEAK_SHARE, one_gpu, plan_cluster
from layerprof.profile import Row, SweepSettings, save_profile
from tests.conftest import bare_profile
from tests.test_cli import assert_one_line_error

GIB = 2**30


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
    for text, message in [("3xL5", "unknown GPU 'L5'"), ("0xL4", "has no GPUs"), ("", "--cluster is empty")]:
        with pytest.raises(LayerprofError, match=message):
            parse_inventory(text)


@pytest.mark.parametrize(
    ("device_name", "memory_gib", "kind"),
    [
        ("NVIDIA H100 80GB HBM3", 80, "H100"),
        ("NVIDIA A100-SXM4-40GB", 40, "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", 80, "A100-80GB"),
        ("NVIDIA L4", 22, "L4"),
        ("NVIDIA L40S", 45, "L40S"),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", 10, "H100-1g.10gb"),
        ("NVIDIA A100-SXM4-80GB MIG 3g.40gb", 40, "3g.40gb"),
        ("NVIDIA GeForce RTX 4090", 24, "RTX4090"),
        ("Intel(R) Xeon(R) Processor", None, None),
    ],
)
def test_a_device_name_finds_its_gpu_kind(device_name: str, memory_gib: int | None, kind: str | None) -> None:
    found = kind_of_device(device_name, memory_gib * GIB if memory_gib else None)
    assert (found.name if found else None) == kind


def test_mig_slices_have_their_share_of_the_gpu() -> None:
    h100 = GPU_KINDS["H100"]
    assert GPU_KINDS["H100-1g.10gb"].bf16_tflops == pytest.approx(h100.bf16_tflops * 16 / 132)
    assert 7 * GPU_KINDS["H100-1g.10gb"].memory_mib <= h100.memory_mib
    assert all(g.mig_of == "H100" and g.ray_accelerator is None for n, g in GPU_KINDS.items() if n.startswith("H100-"))


# ---------------------------------------------------------------- one GPU, several trials


def test_trials_sharing_a_gpu_slow_each_other_once_they_would_fill_it() -> None:
    """10 s alone, 40% of the GPU each: two together still take 10 s; three 12 s in one wave (not 20 s in two);
    with room for only two, three take two waves."""
    assert one_gpu(1, 10.0, 0.4, 10).seconds == 10.0
    assert one_gpu(2, 10.0, 0.4, 10).seconds == 10.0
    assert (one_gpu(3, 10.0, 0.4, 10).seconds, one_gpu(3, 10.0, 0.4, 10).waves) == (pytest.approx(12.0), 1)
    assert one_gpu(3, 10.0, 0.4, 2) == one_gpu(3, 10.0, 0.4, 2).__class__(20.0, 2, 2)
    assert one_gpu(4, 10.0, 1.0, 10).seconds == pytest.approx(40.0)  # a trial that fills the GPU gains nothing
    assert one_gpu(0, 10.0, 0.4, 1).seconds == 0.0


# ---------------------------------------------------------------- plans


def gpu_profile(device_name: str, memory_gib: float, step_ms: dict[int, float], need_gib: dict[int, float],
                achieved_share: float = 0.4) -> object:  # fmt: skip
    """A profile measured on a GPU: step times, FLOPs (so that achieved/peak = achieved_share), memory."""
    gpu = kind_of_device(device_name, int(memory_gib * GIB))
    rows = [
        Row(1, z, "ok", step_time_ms=ms, flops=int(achieved_share * gpu.bf16_tflops * 1e12 * ms / 1000),
            achieved_tflops=achieved_share * gpu.bf16_tflops, peak_memory_bytes=int(need_gib[z] * GIB),
            peak_reserved_bytes=int(need_gib[z] * GIB))
        for z, ms in step_ms.items()
    ]  # fmt: skip
    profile = bare_profile(rows, max(step_ms), spec="model", device_kind="cuda", device_name=device_name,
                           total_memory_bytes=int(memory_gib * GIB))  # fmt: skip
    return profile


def h100_profile() -> object:
    # z=1 costs a third of full training; a full trial needs 30 GiB, a z=1 trial 7.5 GiB
    return gpu_profile("NVIDIA H100 80GB HBM3", 79.6, {1: 10.0, 2: 20.0, 3: 30.0}, {1: 7.0, 2: 18.0, 3: 29.5})


def test_low_rungs_spread_over_small_gpus_and_the_top_rung_needs_the_large_ones() -> None:
    plan = plan_cluster([h100_profile()], parse_inventory("8xL4,1xH100"), eta=3, configs=27, budget_steps=1000)
    assert plan.rungs == [1, 3]
    low, top = plan.schedule("ladder", "successive halving").brackets[0]
    assert {share.gpu for share in low.shares} == {"L4", "H100"}  # 7.5 GiB fits an L4 twice
    assert [share.gpu for share in top.shares] == ["H100"]  # 30 GiB does not fit an L4
    assert sum(share.trials for share in low.shares) == 27 and top.configs == 9
    l4 = next(share for share in low.shares if share.gpu == "L4")
    assert l4.time_source == "scaled from H100 by peak"  # nothing was measured on an L4
    assert l4.trial_seconds == pytest.approx(10.0 * 1000 / 1000 * GPU_KINDS["H100"].bf16_tflops / 121)
    assert l4.slots_per_gpu == GPU_KINDS["L4"].memory_mib * 2**20 // l4.memory_need_bytes == 2
    # the largest GPU alone, and halving on steps at full z, cannot use the L4s: both take longer
    assert plan.schedule("largest GPUs", "successive halving").makespan_vs_ladder > 1
    budget = plan.schedule("budget only", "successive halving")
    assert all(share.gpu == "H100" for rung in budget.brackets[0] for share in rung.shares)
    assert [rung.steps for rung in budget.brackets[0]] == [333, 1000]
    assert budget.makespan_vs_ladder > 1


def test_a_rung_makespan_and_gpu_hours_follow_from_the_trials_per_gpu() -> None:
    """9 trials of z=3 on 2 H100s, two fit on each and together use 80% of it: waves of 2, 10 s x 1000 steps
    = 30 s each; the busier H100 runs 5 trials in 3 waves (90 s), the other 4 in 2 (60 s)."""
    plan = plan_cluster([h100_profile()], parse_inventory("2xH100"), eta=3, configs=27, budget_steps=1000)
    top = plan.schedule("ladder", "successive halving").brackets[0][1]
    (share,) = top.shares
    assert (share.gpus, share.trials, share.trials_per_gpu, share.slots_per_gpu, share.waves) == (2, 9, 2, 2, 3)
    assert top.makespan_seconds == pytest.approx(90.0)
    assert top.gpu_hours == pytest.approx((90.0 + 60.0) / 3600)


def test_an_estimate_alone_is_scaled_from_flops() -> None:
    rows = [Row(1, z, "ok", flops=z * 10**12, peak_memory_bytes=z * GIB) for z in (1, 2, 3)]
    estimate = bare_profile(rows, 3, spec="model", device_kind="cuda", device_name="cuda (estimate)")
    estimate.settings = SweepSettings(batch_sizes=(1,), trainable_layer_counts=(1, 2, 3), mode="estimate")
    estimate.environment.estimated = True
    plan = plan_cluster([estimate], parse_inventory("1xL4"), eta=3, budget_steps=100)
    share = plan.schedule("ladder", "successive halving").brackets[0][0].shares[0]
    assert share.time_source == f"scaled from FLOPs at {ASSUMED_PEAK_SHARE:.0%} of peak"
    assert share.trial_seconds == pytest.approx(1e12 / (121e12 * ASSUMED_PEAK_SHARE) * 100)
    assert share.memory_source == "estimate"


def test_plans_refuse_what_they_cannot_place() -> None:
    with pytest.raises(LayerprofError, match="no GPU in the inventory holds a trial of z=3.*29.5|no GPU.*z=3"):
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
    assert "| 1 | 1 | 1000 | 27 | L4 |" in result.output and "| largest GPUs | successive halving |" in result.output
    data = json.loads(runner.invoke(app, ["plan", str(path), "--cluster", "1xH100", "--json"]).stdout)
    assert data["schema"] == "layerprof.plan/1" and data["rungs"] == [1, 3]
    assert_one_line_error(runner.invoke(app, ["plan", str(path), "--cluster", "4xL4"]), "no GPU in the inventory")
    assert_one_line_error(runner.invoke(app, ["plan", str(path), "--cluster", "4xL5"]), "unknown GPU 'L5'")
    assert_one_line_error(
        runner.invoke(app, ["plan", str(path), "--cluster", "ray:127.0.0.1:1"]), "cannot reach the Ray cluster"
    )


# ---------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def two_kind_cluster():  # noqa: ANN201
    """A head and two CPU nodes; kind_a and kind_b stand in for two GPU kinds."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes = {
        "kind_a": cluster.add_node(num_cpus=2, resources={"kind_a": 1}),
        "kind_b": cluster.add_node(num_cpus=2, resources={"kind_b": 1}),
    }
    cluster.wait_for_nodes()
    yield cluster, nodes
    import ray

    ray.shutdown()
    cluster.shutdown()


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


def test_sweeps_land_on_their_kind_one_profile_each_and_a_rerun_skips_them(two_kind_cluster, tmp_path: Path) -> None:
    cluster, nodes = two_kind_cluster
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


def test_a_worker_that_dies_loses_only_its_own_sweeps(two_kind_cluster, tmp_path: Path) -> None:
    cluster, _ = two_kind_cluster
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


def test_ray_profile_bad_input(two_kind_cluster, tmp_path: Path) -> None:
    cluster, _ = two_kind_cluster
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


def test_the_exported_ray_script_runs_each_rung_on_its_kind(tmp_path: Path) -> None:
    """The plan's script on a local Ray instance with pretend GPUs: every trial asks for its rung's kind and
    share of a GPU, and each rung runs as many trials on each kind as the plan says."""
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
        kinds = {{"accelerator_type:L4": 1, "accelerator_type:H100": 1}}
        ray.init(address="local", num_cpus=4, num_gpus=9, resources=kinds, include_dashboard=False, log_to_driver=False)
        script = runpy.run_path({str(script)!r}, run_name="plan_script")

        def recorded(config, trainable_layers, steps):
            resources = ray.get_runtime_context().get_assigned_resources()
            with open({str(record)!r}, "a") as handle:
                handle.write(json.dumps({{"z": trainable_layers, "steps": steps, "resources": resources}}) + "\\n")
            return config["learning_rate"]

        script["trial"].__globals__["train_and_evaluate"] = recorded  # run_path returns a copy of the globals
        print("winner", script["main"]())
    """)
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # a fresh instance
    done = subprocess.run([sys.executable, "-c", harness], capture_output=True, text=True, timeout=300, env=environment)
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


def test_a_node_that_dies_loses_its_sweeps_without_a_retry_where_no_node_of_its_kind_is_left(tmp_path: Path) -> None:
    """The node of kind_b goes away while its sweep builds the model: that sweep is reported lost at once (no
    node of its kind remains to retry on), kind_a's profile is written."""
    import ray
    from ray.cluster_utils import Cluster

    factory = tmp_path / "model.py"
    factory.write_text(
        textwrap.dedent("""
        import time
        from pathlib import Path

        from torch import nn


        def slow():
            import ray

            worker = ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
            if worker and "kind_b" in ray.get_runtime_context().get_assigned_resources():
                (Path(__file__).parent / "started").touch()
                time.sleep(120)
            return nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    """)
    )
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=2, resources={"kind_a": 1})
    doomed = cluster.add_node(num_cpus=2, resources={"kind_b": 1})
    cluster.wait_for_nodes()

    def remove_when_started() -> None:
        deadline = time.monotonic() + 120
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        cluster.remove_node(doomed)

    killer = threading.Thread(target=remove_when_started, daemon=True)
    killer.start()
    try:
        began = time.monotonic()
        result = CliRunner().invoke(
            app, ["profile", f"{factory}:slow", "--input-shape", "8", "--batch-sizes", "4", "--layers", "1,all",
                  "--warmup", "1", "--min-steps", "2", "--steps", "2", "--steps-per-visit", "2", "--device", "cpu",
                  "--executor", "ray", "--address", cluster.address, "--gpu-kinds", "small=kind_a,big=kind_b",
                  "--out", str(tmp_path / "profiles")],
        )  # fmt: skip
        elapsed = time.monotonic() - began
    finally:
        killer.join(timeout=5)
        ray.shutdown()
        cluster.shutdown()
    assert result.exit_code == 1, result.output
    assert "big: batch 4 lost (its worker or node died): NodeDiedError" in result.output
    assert (tmp_path / "profiles" / "slow-small.json").exists()
    assert not (tmp_path / "profiles" / "slow-big.json").exists()
    assert elapsed < 100  # it did not wait for the sleeping sweep, nor retry it
