"""Parts of the Ray cluster helpers pinned without a cluster: the inventory read from the nodes Ray reports (the
session stood in for by one that lists hand-made nodes)."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from layerprof.errors import LayerprofError
from layerprof.measure import cluster
from layerprof.parsing import parse_layer_selection
from layerprof.profile import Profile, Row, SweepTiming, load_profile, save_profile
from layerprof.sources.models import ModelOptions
from tests.conftest import bare_profile


def nodes_session(monkeypatch: pytest.MonkeyPatch, nodes: list[dict]) -> None:
    @contextmanager
    def ray_session(address: str | None) -> Iterator[SimpleNamespace]:
        yield SimpleNamespace(nodes=lambda: nodes)

    monkeypatch.setattr(cluster, "ray_session", ray_session)


def node(resources: dict[str, float], alive: bool = True) -> dict:
    return {"Alive": alive, "Resources": resources}


def test_the_inventory_counts_the_gpus_of_alive_nodes_by_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes_session(
        monkeypatch,
        [
            node({"GPU": 2.0, "accelerator_type:L4": 1.0}),
            node({"GPU": 1.0, "accelerator_type:L4": 1.0}),
            node({"GPU": 4.0, "accelerator_type:T4": 1.0}, alive=False),
            node({"GPU": 0.0, "accelerator_type:T4": 1.0}),  # no GPU
            node({"GPU": 1.0}),  # no accelerator type
            node({"CPU": 8.0}),
        ],
    )
    assert [(item.gpu.name, item.count) for item in cluster.inventory_from_ray(None)] == [("L4", 3)]


def test_an_ambiguous_kind_in_the_inventory_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes_session(
        monkeypatch, [node({"GPU": 8.0, "accelerator_type:H100": 1.0}), node({"GPU": 1.0, "accelerator_type:L4": 1.0})]
    )
    with pytest.raises(LayerprofError, match=r"the Ray cluster's H100 nodes do not say which GPU SKU"):
        cluster.inventory_from_ray(None)


def test_the_inventory_counts_each_kinds_nodes_and_refuses_a_cluster_without_gpu_kinds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nodes_session(
        monkeypatch,
        [
            node({"CPU": 8.0}),  # the head, without a GPU: the nodes after it still count
            node({"accelerator_type:T4": 1.0}),  # labelled, but no GPU offered: none counted
            node({"GPU": 1.0, "accelerator_type:T4": 1.0}),
            node({"GPU": 4.0, "accelerator_type:L4": 1.0}),
            node({"GPU": 2.0, "accelerator_type:T4": 1.0}),
        ],
    )
    assert [(item.gpu.name, item.count) for item in cluster.inventory_from_option("ray")] == [("T4", 3), ("L4", 4)]
    assert [(item.gpu.name, item.count) for item in cluster.inventory_from_option("2xL4")] == [("L4", 2)]
    nodes_session(monkeypatch, [node({"CPU": 8.0}), node({"GPU": 2.0, "accelerator_type:L4": 1.0}, alive=False)])
    with pytest.raises(
        LayerprofError, match=r"^the Ray cluster has no GPU nodes with an accelerator_type; give --clus"
    ):
        cluster.inventory_from_ray(None)
    nodes_session(monkeypatch, [node({"GPU": 1.0, "accelerator_type:A100": 1.0}), node({"GPU": 1.0,
                  "accelerator_type:H100": 1.0}), node({"GPU": 1.0, "accelerator_type:L4": 1.0})])  # fmt: skip
    with pytest.raises(LayerprofError) as caught:
        cluster.inventory_from_ray(None)
    assert str(caught.value) == (
        "the Ray cluster's A100, H100 nodes do not say which GPU SKU they are (Ray names every H100 board H100, every "
        "A100 A100); give the inventory as --cluster COUNTxGPU,..."
    )


def test_gpu_kinds_refusals_word_for_word() -> None:
    for text, message in [
        ("L5", "--gpu-kinds: unknown GPU kind 'L5'; known: "),
        ("H100-1g.10gb", "--gpu-kinds: Ray does not label H100-1g.10gb nodes (a MIG slice); give the custom resource "
                         "that marks them: H100-1g.10gb=RESOURCE"),
        ("RTX6000-Ada", "--gpu-kinds: Ray does not label RTX6000-Ada nodes (no type); give the custom"),
        ("=res", "--gpu-kinds '=res': write KIND=RESOURCE, e.g. small=mig_1g"),
        ("a=r,a=s", "--gpu-kinds needs distinct kinds, e.g. L4,H100; got 'a=r,a=s'"),
    ]:  # fmt: skip
        with pytest.raises(LayerprofError) as caught:
            cluster.parse_gpu_kinds(text)
        assert str(caught.value).startswith(message), caught.value
    (kind,) = cluster.parse_gpu_kinds("L4=my_l4s")
    assert (kind.label, kind.resource, kind.gpu.name) == ("L4", "my_l4s", "L4")  # a table kind on a custom resource
    assert cluster.parse_gpu_kinds("small=mig")[0].gpu is None


# ---------------------------------------------------------------- connecting (Ray's own calls stood in for)


class StandInRay:
    """The ray module as `connect` calls it: whether it is connected and where, what it was asked."""

    def __init__(self, connected_to: str | None = None, refuses: bool = False) -> None:
        self.connected_to, self.refuses = connected_to, refuses
        self.calls: list[tuple[str, object]] = []

    def is_initialized(self) -> bool:
        return self.connected_to is not None

    def get_runtime_context(self) -> SimpleNamespace:
        return SimpleNamespace(gcs_address=self.connected_to)

    def shutdown(self) -> None:
        self.calls.append(("shutdown", self.connected_to))
        self.connected_to = None

    def init(self, **options: object) -> None:
        self.calls.append(("init", options))
        if self.refuses:
            raise RuntimeError("no cluster there")
        self.connected_to = options["address"] or "local"


def stand_in(monkeypatch: pytest.MonkeyPatch, ray: StandInRay) -> StandInRay:
    monkeypatch.setattr(cluster, "import_ray", lambda: ray)
    return ray


INIT = {"ignore_reinit_error": True, "log_to_driver": False, "logging_level": logging.ERROR}


def test_connect_joins_once_and_switches_clusters(monkeypatch: pytest.MonkeyPatch) -> None:
    ray = stand_in(monkeypatch, StandInRay(connected_to="10.0.0.1:6379"))
    assert cluster.connect("ray://10.0.0.1:6379") is False and cluster.connect(None) is False and ray.calls == []
    with socket.create_server(("127.0.0.1", 0)) as listening:  # the other cluster's head answers
        other = f"127.0.0.1:{listening.getsockname()[1]}"
        assert cluster.connect(other) is True
    assert ray.calls == [("shutdown", "10.0.0.1:6379"), ("init", {"address": other, **INIT})]
    local = stand_in(monkeypatch, StandInRay())
    assert cluster.connect(None) is True and local.calls == [("init", {"address": None, **INIT})]


def test_connect_fails_in_seconds_where_nothing_listens_and_says_what_ray_said(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
    ray = stand_in(monkeypatch, StandInRay())
    with pytest.raises(LayerprofError, match=rf"^cannot reach the Ray cluster at ray://127.0.0.1:{port}: "):
        cluster.connect(f"ray://127.0.0.1:{port}")
    assert ray.calls == []  # Ray was not asked: it would retry for a minute
    stand_in(monkeypatch, StandInRay(refuses=True))
    with pytest.raises(
        LayerprofError, match="^cannot reach the Ray cluster at a new local instance: no cluster there$"
    ):
        cluster.connect(None)
    with pytest.raises(LayerprofError, match="^cannot reach the Ray cluster at auto: no cluster there$"):
        cluster.connect("auto")  # not HOST:PORT: no socket check, Ray's answer


def test_a_session_closes_only_what_it_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    ray = stand_in(monkeypatch, StandInRay())
    with cluster.ray_session(None) as module:
        assert module is ray
    assert [call for call, _ in ray.calls] == ["init", "shutdown"]
    joined = stand_in(monkeypatch, StandInRay(connected_to="local"))
    with cluster.ray_session(None):
        pass
    assert joined.calls == []


def test_without_ray_the_advice_is_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(LayerprofError, match=r"^the Ray executor needs Ray: pip install 'layerprof\[ray\]'$"):
        cluster.import_ray()


def test_the_kinds_offered_are_summed_over_alive_nodes_and_missing_ones_named(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = [
        node({"CPU": 4.0, "GPU": 1.0, "accelerator_type:L4": 1.0, "node:10.0.0.1": 1.0, "memory": 1e9}),
        node({"CPU": 2.0, "accelerator_type:L4": 1.0, "mig_1g": 7.0, "object_store_memory": 1e8}),
        node({"CPU": 64.0, "accelerator_type:H100": 1.0}, alive=False),
    ]
    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(nodes=lambda: nodes))
    assert cluster.alive_resources() == {"CPU": 6.0, "GPU": 1.0, "accelerator_type:L4": 2.0, "node:10.0.0.1": 1.0,
                                         "memory": 1e9, "mig_1g": 7.0, "object_store_memory": 1e8}  # fmt: skip
    cluster._check_kinds_offered(cluster.parse_gpu_kinds("L4,small=mig_1g"))
    with pytest.raises(LayerprofError) as caught:
        cluster._check_kinds_offered(cluster.parse_gpu_kinds("H100,L4,big=mig_7g"))
    assert str(caught.value) == (
        "no alive node of the Ray cluster offers accelerator_type:H100, mig_7g (it offers accelerator_type:L4 x2, "
        "mig_1g x7); check --gpu-kinds"
    )
    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(nodes=lambda: [node({"CPU": 1.0, "GPU": 1.0})]))
    with pytest.raises(LayerprofError, match=r"\(it offers no custom resources or accelerator types\)"):
        cluster._check_kinds_offered(cluster.parse_gpu_kinds("L4"))


# ---------------------------------------------------------------- sweeps on a stand-in cluster


def kind_profile(batch: int, zs: tuple[int, ...] = (1, 2), spec: str = "model") -> Profile:
    rows = [Row(batch, z, "ok", step_time_ms=10.0 * batch + z) for z in zs]
    profile = bare_profile(rows, 2, spec=spec, device_kind="cuda", device_name="NVIDIA L4")
    profile.timing = SweepTiming(10.0 * batch, 4.0 * batch)
    return profile


def request(device: str = "cuda") -> cluster.SweepRequest:
    settings = kind_profile(1).settings
    settings = dataclasses.replace(settings, batch_sizes=(1, 2))
    return cluster.SweepRequest("model", ModelOptions(), settings, parse_layer_selection("1,2"), device)


class RayTaskError(Exception):
    """Ray's wrapper of an exception the task raised."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class WorkerCrashedError(Exception):
    pass


class NodeDiedError(Exception):
    pass


class Ref:
    def __init__(self, answer: object) -> None:
        self.answer = answer


class SweepRay:
    """Ray as profile_on_ray calls it: each task's answer (a profile's data or an exception) from a script, by
    (kind, batch size) and attempt; what each task asked for, kept."""

    def __init__(self, answers: dict[tuple[str, int], list[object]]) -> None:
        self.answers, self.asked, self.cancelled = answers, [], []

    def remote(self, function: object) -> object:
        assert function is cluster.sweep_on_node
        ray = self

        class Remote:
            def options(self, **options: object) -> SimpleNamespace:
                def remote(request: cluster.SweepRequest, kind: cluster.ClusterKind, batch: int) -> Ref:
                    ray.asked.append((kind.label, batch, options))
                    return Ref(ray.answers[(kind.label, batch)].pop(0))

                return SimpleNamespace(remote=remote)

        return Remote()

    def wait(self, references: list[Ref], num_returns: int) -> tuple[list[Ref], list[Ref]]:
        if num_returns > len(references):  # as Ray refuses it
            raise ValueError("num_returns cannot be greater than the number of ray_waitables provided to ray.wait.")
        return references[:num_returns], references[num_returns:]

    def get(self, reference: Ref) -> object:
        if isinstance(reference.answer, BaseException):
            raise reference.answer
        return reference.answer

    def cancel(self, reference: Ref, force: bool) -> None:
        self.cancelled.append((reference, force))


def on_stand_in(monkeypatch: pytest.MonkeyPatch, ray: SweepRay, offered: dict[str, float]) -> list[str | None]:
    sessions: list[str | None] = []

    @contextmanager
    def ray_session(address: str | None) -> Iterator[SweepRay]:
        sessions.append(address)
        yield ray

    monkeypatch.setattr(cluster, "ray_session", ray_session)
    monkeypatch.setattr(cluster, "alive_resources", lambda: offered)
    readings = itertools.count(100.0, 7.5)  # each run: 7.5 s from its first reading to its last
    monkeypatch.setattr(cluster, "time", SimpleNamespace(perf_counter=lambda: next(readings)))
    return sessions


def test_sweeps_retry_a_lost_worker_once_report_failures_and_merge_each_kinds_profile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """L4: batch 1's worker crashes and its rerun returns, batch 2 returns. small: batch 1 raises in the sweep
    (reported at once), batch 2's node dies twice (lost after two attempts)."""
    ray = SweepRay({
        ("L4", 1): [WorkerCrashedError("worker crashed"), kind_profile(1).to_dict()],
        ("L4", 2): [kind_profile(2).to_dict()],
        ("small", 1): [RayTaskError(LayerprofError("out of memory at batch 1\n  in layer 3"))],
        ("small", 2): [NodeDiedError("The node died. See the raylet logs."), NodeDiedError("The node died again")],
    })  # fmt: skip
    sessions = on_stand_in(monkeypatch, ray, {"accelerator_type:L4": 1.0, "mig_1g": 1.0})
    events: list[tuple[str, str, int, str]] = []
    kinds = cluster.parse_gpu_kinds("L4,small=mig_1g")
    run = cluster.profile_on_ray(request(), kinds, tmp_path / "out", "ray://head:10001",
                                 lambda event, outcome, batch, detail: events.append(
                                     (event.value, outcome.kind.label, batch, detail)))  # fmt: skip
    l4_path, small_path = tmp_path / "out" / "model-L4.json", tmp_path / "out" / "model-small.json"
    assert sessions == ["ray://head:10001"]
    assert events == [
        ("submitted", "L4", 1, ""), ("submitted", "L4", 2, ""), ("submitted", "small", 1, ""),
        ("submitted", "small", 2, ""),
        ("retry", "L4", 1, "WorkerCrashedError: worker crashed"), ("submitted", "L4", 1, ""),
        ("done", "L4", 2, str(l4_path)),
        ("failed", "small", 1, "batch 1 failed: LayerprofError: out of memory at batch 1"),
        ("retry", "small", 2, "NodeDiedError: The node died"), ("submitted", "small", 2, ""),
        ("done", "L4", 1, str(l4_path)),
        ("failed", "small", 2, "batch 2 lost (its worker or node died) after 2 attempts: NodeDiedError: The node died "
                               "again"),
    ]  # fmt: skip
    assert ray.asked[0] == ("L4", 1, {"num_cpus": 1, "num_gpus": 1, "resources": {"accelerator_type:L4": 0.001},
                                      "max_retries": 0})  # fmt: skip
    assert ray.asked[2][2]["resources"] == {"mig_1g": 0.001}
    l4, small = run.outcomes
    assert (l4.batch_sizes, l4.done, l4.skipped, l4.failures, l4.path) == ([1, 2], [2, 1], [], [], l4_path)
    assert (small.done, len(small.failures)) == ([], 2) and not small_path.exists()
    assert run.failed and run.wall_seconds == 7.5
    merged = load_profile(l4_path)
    assert merged.complete and merged.batch_sizes() == [1, 2] and merged.settings.batch_sizes == (1, 2)
    assert [row.key for row in merged.rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert (merged.timing.sweep_wall_s, merged.timing.in_steps_s) == (30.0, 12.0)  # both sweeps' seconds added


def test_a_rerun_skips_what_is_on_disk_without_joining_ray(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    done = kind_profile(1)
    done.rows += kind_profile(2).rows
    save_profile(done, tmp_path / "model-L4.json")
    sessions = on_stand_in(monkeypatch, SweepRay({}), {})
    events: list[tuple[str, int, str]] = []

    def heard(event: cluster.SweepEventKind, outcome: cluster.KindOutcome, batch: int, detail: str) -> None:
        events.append((event.value, batch, detail))

    run = cluster.profile_on_ray(request(), cluster.parse_gpu_kinds("L4"), tmp_path, None, heard)
    assert sessions == [] and not run.failed and run.wall_seconds == 7.5
    (outcome,) = run.outcomes
    assert (outcome.done, outcome.skipped) == ([1, 2], [1, 2])
    assert events == [("skipped", 1, str(tmp_path / "model-L4.json")), ("skipped", 2, str(tmp_path / "model-L4.json"))]


def test_a_batch_missing_a_z_runs_again_and_its_rows_replace_the_old(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On disk: batch 1 whole, batch 2 with z=1 only (an interrupted sweep). The rerun asks for batch 2 alone, on a
    CPU node (no GPU), and its rows replace the old batch 2's."""
    partial = kind_profile(1)
    partial.rows += kind_profile(2, zs=(1,)).rows
    partial.rows[-1].step_time_ms = 999.0
    save_profile(partial, tmp_path / "model-L4.json")
    ray = SweepRay({("L4", 2): [kind_profile(2).to_dict()]})
    on_stand_in(monkeypatch, ray, {"accelerator_type:L4": 1.0})
    run = cluster.profile_on_ray(request("cpu"), cluster.parse_gpu_kinds("L4"), tmp_path)
    assert [(label, batch, options["num_gpus"]) for label, batch, options in ray.asked] == [("L4", 2, 0)]
    assert (run.outcomes[0].skipped, run.outcomes[0].done) == ([1], [1, 2])
    merged = load_profile(tmp_path / "model-L4.json")
    assert [(row.key, row.step_time_ms) for row in merged.rows] == [((1, 1), 11.0), ((1, 2), 12.0), ((2, 1), 21.0),
                                                                     ((2, 2), 22.0)]  # fmt: skip


def test_a_lost_sweep_is_not_retried_where_no_node_of_its_kind_is_left(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ray = SweepRay({("L4", 1): [WorkerCrashedError("gone")], ("L4", 2): [kind_profile(2).to_dict()]})
    offered = {"accelerator_type:L4": 1.0}
    on_stand_in(monkeypatch, ray, offered)
    ray.wait = lambda references, num_returns: (offered.clear() or references[:1], references[1:])  # type: ignore[method-assign]
    run = cluster.profile_on_ray(request(), cluster.parse_gpu_kinds("L4"), tmp_path)
    assert run.outcomes[0].failures == ["batch 1 lost (its worker or node died): WorkerCrashedError: gone"]
    assert len(ray.asked) == 2 and load_profile(tmp_path / "model-L4.json").complete is False


def test_an_interrupt_cancels_the_sweeps_still_running(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ray = SweepRay({("L4", 1): [KeyboardInterrupt()], ("L4", 2): [kind_profile(2).to_dict()]})
    on_stand_in(monkeypatch, ray, {"accelerator_type:L4": 1.0})
    with pytest.raises(KeyboardInterrupt):
        cluster.profile_on_ray(request(), cluster.parse_gpu_kinds("L4"), tmp_path)
    assert [(reference.answer["settings"]["batch_sizes"], force) for reference, force in ray.cancelled] == [([2], True)]


def test_sweeps_refuse_a_kind_no_node_offers_and_an_output_they_cannot_make(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    on_stand_in(monkeypatch, SweepRay({}), {"accelerator_type:L4": 1.0})
    with pytest.raises(LayerprofError, match=r"^no alive node of the Ray cluster offers accelerator_type:H100 "):
        cluster.profile_on_ray(request(), cluster.parse_gpu_kinds("L4,H100"), tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(LayerprofError, match=r"^cannot create '.*file/out': "):
        cluster.profile_on_ray(request(), cluster.parse_gpu_kinds("L4"), tmp_path / "file" / "out")
    save_profile(kind_profile(1, spec="other"), tmp_path / "model-L4.json")
    with pytest.raises(LayerprofError, match="model-L4.json' holds a profile of another model or recipe; move it"):
        cluster.profile_on_ray(request(), cluster.parse_gpu_kinds("L4"), tmp_path)
    steps = kind_profile(1)
    steps.settings = dataclasses.replace(steps.settings, warmup_steps=steps.settings.warmup_steps + 1)
    save_profile(steps, tmp_path / "model-L4.json")
    with pytest.raises(LayerprofError, match="holds a profile of another model or recipe"):
        cluster.profile_on_ray(request(), cluster.parse_gpu_kinds("L4"), tmp_path)


def test_a_sweeps_error_in_one_line() -> None:
    assert cluster._describe(RayTaskError(LayerprofError("bad batch\nmore"))) == "LayerprofError: bad batch"
    assert cluster._describe(RayTaskError(ValueError("Traceback\n  line\nValueError: x. Try y."))) == (
        "ValueError: ValueError: x"
    )
    assert cluster._describe(WorkerCrashedError("")) == "WorkerCrashedError"
    assert cluster._describe(RayTaskError(LayerprofError(""))) == "LayerprofError"
    assert cluster._lost(NodeDiedError()) and not cluster._lost(RayTaskError(ValueError()))
    assert cluster.kind_path(Path("out"), "pkg.mod:make", cluster.ClusterKind("my kind/1", "r", None)) == Path(
        "out/make-my-kind-1.json"
    )
    assert cluster.kind_path(Path("out"), "m", cluster.ClusterKind("//", "r", None)) == Path("out/m-kind.json")
    assert cluster.ClusterRun([]).failed is False


def test_a_cluster_sweep_is_checked_before_any_node_works(tmp_path: Path) -> None:
    factory = tmp_path / "tiny.py"
    factory.write_text(
        "from torch import nn\n\n\ndef tiny():\n    return nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))\n"
    )
    spec, options, selection = f"{factory}:tiny", ModelOptions(input_shape=(8,)), parse_layer_selection("1,all")
    settings = dataclasses.replace(kind_profile(1).settings, batch_sizes=(4, 8))
    with pytest.raises(LayerprofError, match=r"^--device 'mps' with --executor ray: use auto, cuda or cpu"):
        cluster.plan_cluster_profile(spec, options, settings, selection, "mps")
    no_warmup = dataclasses.replace(settings, warmup_steps=0)  # the settings are checked first
    with pytest.raises(LayerprofError, match="^--warmup 0: at least 1 warm-up step is needed"):
        cluster.plan_cluster_profile(spec, options, no_warmup, selection, "mps")
    swept = cluster.plan_cluster_profile(spec, options, settings, selection, "cpu", tf32=True, threads=2)
    assert swept == cluster.SweepRequest(spec, options, settings, selection, "cpu", True, 2)
