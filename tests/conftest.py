from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

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


# Test modules whose module- or session-scoped fixtures are costly (a measured profile, a Ray cluster): under
# pytest-xdist (`make test` runs one worker per core) each runs whole on one worker, so its fixtures are built once;
# every other test goes to whichever worker is free. The tests that need the NePS environment (minutes to build from
# nothing) run on one worker too, which builds it while the others go on.
SHARED_FIXTURE_MODULES = (
    "tests/cli/test_cli.py",
    "tests/cli/test_inputs.py",
    "tests/measure/test_cluster.py",
    "tests/measure/test_measure.py",
    "tests/outputs/test_check.py",
    "tests/outputs/test_report.py",
    "tests/predict/test_audit.py",  # each example audited once (functools.cache), not once per worker
)
SHARED_FIXTURE_TESTS = {
    "neps": (
        "tests/outputs/test_exports.py::test_neps",
        "tests/outputs/test_exports.py::test_configs_table_shows_the_brackets_neps_runs",
    ),
}


def shared_fixture_group(nodeid: str) -> str | None:
    """The group of tests that must run on one worker with this one (None: any worker)."""
    module = nodeid.split("::")[0]
    if module in SHARED_FIXTURE_MODULES:
        return module
    return next((group for group, tests in SHARED_FIXTURE_TESTS.items() if nodeid.startswith(tests)), None)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadgroup` by `shared_fixture_group`: each group is one unit of work, the groups handed out first
    (largest first), then every other test in collection order. pytest-xdist's own `xdist_group` mark does not reach
    its scheduler under pytest 9.2 (it renames `item._nodeid`, which pytest no longer reads)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return shared_fixture_group(nodeid) or nodeid

    return SharedFixtureScheduling(config, log)


# Tests that take tens of seconds each (pytest --durations), the longest first: under pytest-xdist they are handed out
# first, right after the modules above, so that no worker is still running one of them while the others have nothing
# left (the longest worker bounds the wall time). Every other test follows in collection order; a stale entry changes
# only the order.
SLOW_TESTS = (
    "tests/predict/test_compose.py::test_the_seeded_fit",
    "tests/outputs/test_exports.py::test_ray",
    "tests/predict/test_compose.py::test_composed_cells_equal_the_full_trace",
    "tests/outputs/test_exports.py::test_smac_snippet",
    "tests/fidelity/test_continue.py::test_continued_runs_as_ray_tasks",
    "tests/fidelity/test_correlate.py::test_ray_executor_on_a_local_instance",
)


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
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker sorts alike (xdist checks the collections are equal)
        slow = {prefix: rank for rank, prefix in enumerate(SLOW_TESTS)}
        items.sort(key=lambda item: min((slow[p] for p in SLOW_TESTS if item.nodeid.startswith(p)), default=len(slow)))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
    if _UNDECLARED_SKIPS and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    if _UNDECLARED_SKIPS:
        terminalreporter.section("skips that are not declared in tests/conftest.py (the run fails)", red=True)
        for line in _UNDECLARED_SKIPS:
            terminalreporter.line(line)
