from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from layerprof.profile import EnvironmentInfo, Layer, ModelInfo, Profile, Row, SweepSettings, WorkloadInfo

# The only reasons a test may skip. Any other skip (a missing dev dependency, say) fails the run, so that
# a green suite never hides tests that did not run.
DECLARED_SKIP_REASONS = (
    "needs CUDA",  # tests marked gpu, on a machine without a GPU
    "needs 2 CUDA devices",  # a gpu test of --device cuda:N, on a machine with one GPU
    "environment cannot be built",  # an HPO library's own environment, where no package registry answers
)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


# What a test reads of rendered output must not depend on the terminal it runs in: every console (layerprof's
# own, Typer's help, click's) renders at this width, wide enough that a table never wraps, and nothing the
# machine's environment sets changes an estimate, the error path or the colours.
TEST_COLUMNS = 200
MACHINE_VARIABLES = (
    "LAYERPROF_DEBUG",  # tracebacks instead of one-line errors
    "FORCE_COLOR",  # ANSI codes in captured output
    "TTY_COMPATIBLE",
    "TERMINAL_WIDTH",  # Typer's help width
    "PYTORCH_CUDA_ALLOC_CONF",  # the CUDA allocator's and cuBLAS's settings change estimated bytes
    "PYTORCH_ALLOC_CONF",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUBLASLT_WORKSPACE_SIZE",
    "TORCH_CUBLASLT_UNIFIED_WORKSPACE",
    "RAY_ADDRESS",  # a cluster of the machine's instead of the tests' own
    "LAYERPROF_PRICES",
)


def _fix_the_terminal() -> None:
    """Before any console exists (Rich fixes a console's width from COLUMNS when it is made), and again in every
    test (Typer makes its help console per call)."""
    os.environ["COLUMNS"] = str(TEST_COLUMNS)
    if len(tempfile.gettempdir()) > 40 and "RAY_TMPDIR" not in os.environ:
        # Ray's sockets live under the temporary folder, and a socket path may not pass 107 bytes
        os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-", dir="/tmp")


@pytest.fixture(autouse=True)
def _fixed_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", str(TEST_COLUMNS))
    monkeypatch.setenv("LINES", "50")
    monkeypatch.setenv("NO_COLOR", "1")
    for name in MACHINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _same_process_settings() -> Iterator[None]:
    """Every test starts with the process's threads, CPUs and TF32 as the suite started: a test (or a CLI run in
    this process) that changes them cannot change what a later test predicts or measures."""
    from layerprof.measure.environment import ProcessSettings

    with ProcessSettings().applied():  # nothing set; everything restored
        yield


def bare_profile(
    rows: list[Row],
    layer_count: int,
    *,
    spec: str = "synthetic",
    device_kind: str = "cpu",
    device_name: str = "test",
    total_memory_bytes: int | None = None,
) -> Profile:
    """A complete profile around hand-made rows: a split of `layer_count` one-tensor layers."""
    layers = [Layer(i, f"layer{i}", "Linear", 1, (f"layer{i}.weight",), 1) for i in range(layer_count)]
    return Profile(
        model=ModelInfo(spec=spec, source="user", name=spec, layers=layers, total_params=layer_count),
        workload=WorkloadInfo(family="tensor-input", input_shape=(4,)),
        environment=EnvironmentInfo(device_kind, device_name, total_memory_bytes=total_memory_bytes),
        settings=SweepSettings(
            batch_sizes=tuple(sorted({row.batch_size for row in rows})),
            trainable_layer_counts=tuple(sorted({row.trainable_layers for row in rows})),
        ),
        rows=rows,
        complete=True,
    )


def linear_stack(width: int = 32, depth: int = 4, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(*(nn.Linear(width, width, bias=bias) for _ in range(depth)))


# ---------------------------------------------------------------- the run's one Ray cluster


@dataclass
class RayCluster:
    """The test run's one local Ray cluster: two nodes of one CPU each, the head and one more, whose custom resources
    kind_a and kind_b stand in for two GPU kinds (`--gpu-kinds small=kind_a,big=kind_b`). One CPU a node is what the
    tests prove things with (a sweep lands on its kind's node; Tune's trials and Ray tasks run, two at a time): more
    CPUs only start more worker processes at once on the 2 cores a test run has."""

    cluster: Any  # ray.cluster_utils.Cluster
    nodes: dict[str, Any]  # custom resource -> its node

    @property
    def address(self) -> str:
        return self.cluster.address

    @contextmanager
    def extra_node(self, **node_args: Any) -> Iterator[Any]:
        """A node for one test alone (one to remove, or one with pretend GPUs): gone again after the test, and the
        cluster no longer counts it alive."""
        node = self.cluster.add_node(**node_args)
        try:
            yield node
        finally:
            if node in self.cluster.worker_nodes:  # the test may have removed it
                self.cluster.remove_node(node)
            self.cluster.wait_for_nodes()


_RAY: dict[str, Any] = {}  # the run's Ray cluster while it runs: "cluster", and what its start changed to put back


def _start_ray_cluster() -> RayCluster:
    """Started on the one xdist worker that runs the Ray group (SHARED_FIXTURE_TESTS), when its first test asks for
    it. Its address file lies in a folder of its own: no `ray.init()` elsewhere on the machine joins it by accident,
    and no other test run's cluster is joined by this one's tests."""
    from ray.cluster_utils import Cluster

    _RAY["environment"] = {name: os.environ.get(name) for name in ("RAY_TMPDIR", "RAY_AUTH_MODE")}
    _RAY["folder"] = folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's sockets may not pass 107 bytes
    os.environ["RAY_TMPDIR"] = folder
    os.environ["RAY_AUTH_MODE"] = "disabled"  # no token written to the home folder
    head = {"num_cpus": 1, "resources": {"kind_a": 1}, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    _RAY["cluster"] = running = RayCluster(cluster, {"kind_a": cluster.head_node})  # stopped even if a node fails
    running.nodes["kind_b"] = cluster.add_node(num_cpus=1, resources={"kind_b": 1})
    cluster.wait_for_nodes()
    return running


def _stop_ray_cluster() -> None:
    """Shut the run's cluster down, if it runs, and put back what its start changed."""
    running = _RAY.pop("cluster", None)
    if running is None:
        return
    import ray

    try:
        ray.shutdown()
        running.cluster.shutdown()
    finally:
        for name, value in _RAY.pop("environment").items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(_RAY.pop("folder"), ignore_errors=True)


@pytest.fixture
def ray_cluster() -> RayCluster:
    """The run's Ray cluster (started by the first test that asks for it), this process connected to it (a test
    before may have left it or joined another): `ray_session(None)` uses it, and so do `--address` with its address
    and `RAY_ADDRESS` in a subprocess."""
    from layerprof.measure.cluster import connect

    cluster = _RAY.get("cluster") or _start_ray_cluster()
    connect(cluster.address)
    return cluster


@pytest.hookimpl(trylast=True)  # after the test's own fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Under xdist, the Ray group runs as one unit on one worker: after its last test the cluster is shut down, whose
    processes would otherwise take about 3% of a core for the rest of the run. (A run without xdist keeps it to the
    end: its Ray tests are spread over the run.)"""
    group_done = nextitem is None or shared_fixture_group(nextitem.nodeid) != "ray"
    if shared_fixture_group(item.nodeid) == "ray" and group_done and os.environ.get("PYTEST_XDIST_WORKER"):
        _stop_ray_cluster()


# Test modules whose module- or session-scoped fixtures are costly (a measured profile): under pytest-xdist (`make
# test` runs one worker per core) each runs whole on one worker, so its fixtures are built once; every other test goes
# to whichever worker is free. The tests that need the NePS environment (minutes to build from nothing) run on one
# worker too, which builds it while the others go on, and so do the tests on the run's one Ray cluster (`ray_cluster`):
# that worker starts it once. A test that asks for `neps_python` or `ray_cluster` outside its group fails the
# collection (`pytest_collection_modifyitems`).
SHARED_FIXTURE_MODULES = (
    "tests/cli/test_cli.py",
    "tests/cli/test_inputs.py",
    "tests/measure/test_measure.py",
    "tests/outputs/test_check.py",
    "tests/outputs/test_report.py",
    "tests/predict/test_audit.py",  # each example audited once (functools.cache), not once per worker
)
SHARED_FIXTURE_TESTS = {
    "neps": (
        "tests/outputs/test_exports.py::test_neps",
        "tests/outputs/test_exports.py::test_configs_table_shows_the_brackets_neps_runs",
        "tests/outputs/test_exports.py::test_each_library_runs_the_users_objective_at_every_rung[neps]",
    ),
    "ray": (
        "tests/fidelity/test_continue.py::test_continued_runs_as_ray_tasks",
        "tests/fidelity/test_correlate.py::test_ray_executor_on_a_local_instance",
        "tests/measure/test_cluster.py::test_sweeps_land_on_their_kind_one_profile_each_and_a_rerun_skips_them",
        "tests/measure/test_cluster.py::test_a_worker_that_dies_loses_only_its_own_sweeps",
        "tests/measure/test_cluster.py::test_ray_profile_bad_input",
        "tests/measure/test_cluster.py::test_the_exported_ray_script_runs_each_rung_on_its_kind",
        "tests/measure/test_cluster.py::test_a_node_that_dies_loses_its_sweeps",
        "tests/outputs/test_exports.py::test_ray_snippet",
        "tests/outputs/test_exports.py::test_ray_never_launches_a_batch_that_cannot_fit_its_rung",
        "tests/outputs/test_exports.py::test_each_library_runs_the_users_objective_at_every_rung[ray]",
    ),
}
GROUP_FIXTURES = {"neps_python": "neps", "ray_cluster": "ray"}  # a test asking for the fixture belongs to the group


def shared_fixture_group(nodeid: str) -> str | None:
    """The group of tests that must run on one worker with this one (None: any worker)."""
    module = nodeid.split("::")[0]
    if module in SHARED_FIXTURE_MODULES:
        return module
    return next((group for group, tests in SHARED_FIXTURE_TESTS.items() if nodeid.startswith(tests)), None)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadgroup` by `shared_fixture_group`: each group is one unit of work, every other test one of its own,
    handed out in the collection's order (`schedule_rank`, sorted by `pytest_collection_modifyitems`), not xdist's
    largest-unit-first. pytest-xdist's own `xdist_group` mark does not reach its scheduler under pytest 9.2 (it
    renames `item._nodeid`, which pytest no longer reads)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return shared_fixture_group(nodeid) or nodeid

    config.option.loadscopereorder = False  # the units in the order the workers collected them
    return SharedFixtureScheduling(config, log)


# Tests outside the groups above that take nine seconds or more each (pytest --durations of a whole run, quiet, warm),
# the longest first. tests/test_suite_layout.py holds every name here and in the groups to a test that exists.
SLOW_TESTS = (
    "tests/predict/test_compose.py::test_the_seeded_fit",
    "tests/fidelity/test_correlate.py::test_builtin_tasks_end_to_end_on_a_tiny_grid",
    "tests/outputs/test_exports.py::test_smac_snippet",
    "tests/predict/test_compose.py::test_composed_cells_equal_the_full_trace",
    "tests/fidelity/test_simulate.py::test_simulate_cli_writes_json_table_and_figure",
    "tests/predict/test_reuse.py::test_replayed_layers_give_the_exhaustive_figures",
    "tests/predict/test_reuse_batches.py::test_scaled_records_give_the_exhaustive_figures",
    "tests/predict/test_compose.py::test_a_sparse_selection_is_composed_between_its_own_anchors",
    "tests/sources/test_sources.py::test_a_litgpt_model_builds_without_lightning",
    "tests/predict/test_compose.py::test_a_recipe_fit_is_seeded_and_composed",
    "tests/outputs/test_exports.py::test_each_library_runs_the_users_objective_at_every_rung[smac]",
)
# The order the work goes out in (the longest first, so that no worker is still on a long unit while the other has
# nothing left): the Ray group (about two minutes on one worker), the shared-fixture modules, the slow tests, then
# the NePS group, whose environment builds in the background from the collection (about two minutes from nothing):
# handed out earlier, its worker would wait for the build instead of testing. Every other test follows in collection
# order.
SCHEDULE = ("ray", *SHARED_FIXTURE_MODULES, *SLOW_TESTS, "neps")


def schedule_rank(nodeid: str) -> int:
    """Where the test's unit of work goes out in `SCHEDULE` (its length: after all of them)."""
    group = shared_fixture_group(nodeid)
    if group is not None:
        return SCHEDULE.index(group)
    return next((SCHEDULE.index(name) for name in SLOW_TESTS if nodeid.startswith(name)), len(SCHEDULE))


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread per xdist worker, so that workers (one per core) never oversubscribe the CPUs: two
    workers of two threads each on two cores spend their time waiting on each other's OpenMP barriers. Then: `pytest
    -m gpu` where torch cannot use CUDA fails at once with the reason, instead of passing by skipping."""
    _fix_the_terminal()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # subprocesses: Ray workers, CLI runs
            os.environ[variable] = "1"
    expression = (config.option.markexpr or "").replace(" ", "")
    if "gpu" in expression and "notgpu" not in expression and not torch.cuda.is_available():
        from layerprof.measure.environment import cuda_unusable_reason

        reason = cuda_unusable_reason() or f"torch {torch.__version__} sees no CUDA device here"
        pytest.exit(f"pytest -m gpu needs a GPU torch can use: {reason}", returncode=1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    misplaced = [
        f"{item.nodeid} (it asks for {fixture}: add it to SHARED_FIXTURE_TESTS[{group!r}])"
        for item in items
        for fixture, group in GROUP_FIXTURES.items()
        if fixture in getattr(item, "fixturenames", ()) and shared_fixture_group(item.nodeid) != group
    ]
    if misplaced:
        raise pytest.UsageError("tests/conftest.py: tests outside their fixture's group: " + "; ".join(misplaced))
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker sorts alike (xdist checks the collections are equal)
        items.sort(key=lambda item: schedule_rank(item.nodeid))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    """A run that holds tests of the NePS environment starts building it now, in the background (each pytest-xdist
    worker collects every test: the first to take the build's lock builds, the other finds it built). Not for
    `--collect-only`, which runs nothing."""
    if session.config.option.collectonly:
        return
    if any("neps_python" in getattr(item, "fixturenames", ()) for item in session.items):
        from tests.hpo.environments import start_building

        start_building("neps")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not reason.startswith(DECLARED_SKIP_REASONS):
            _UNDECLARED_SKIPS.append(f"{report.nodeid}: {reason}")


_UNDECLARED_SKIPS: list[str] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.hpo.environments import wait_for_builds

    _stop_ray_cluster()  # if it still runs
    wait_for_builds()
    if _UNDECLARED_SKIPS and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    if _UNDECLARED_SKIPS:
        terminalreporter.section("skips that are not declared in tests/conftest.py (the run fails)", red=True)
        for line in _UNDECLARED_SKIPS:
            terminalreporter.line(line)
