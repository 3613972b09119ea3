"""tests/conftest.py schedules tests by name (path::function prefix): every name it lists must still name a test, so
that a test renamed or moved cannot silently leave its group (a Ray test on another pytest-xdist worker would start
a second cluster there) or the list of slow tests handed out first."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from tests.conftest import SCHEDULE, SHARED_FIXTURE_MODULES, SHARED_FIXTURE_TESTS, SLOW_TESTS

ROOT = Path(__file__).resolve().parents[1]


def defined_tests(module: Path) -> set[str]:
    """The test functions a module defines at its top level."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_name_the_schedule_lists_is_a_test() -> None:
    names = [*SHARED_FIXTURE_MODULES, *(name for group in SHARED_FIXTURE_TESTS.values() for name in group), *SLOW_TESTS]
    stale = []
    for name in names:
        module, _, test = name.partition("::")
        path = ROOT / module
        function = test.split("[")[0]
        if not path.is_file() or not any(f.startswith(function) for f in defined_tests(path)):
            stale.append(name)
    assert stale == []
    assert len(set(names)) == len(names)  # one place each


def test_every_group_has_one_place_in_the_schedule() -> None:
    groups = [*SHARED_FIXTURE_MODULES, *SHARED_FIXTURE_TESTS]
    assert sorted(name for name in SCHEDULE if name in groups) == sorted(groups)


class Worker:
    """A pytest-xdist worker as its scheduler sees it: the test indices sent to it, in order."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def test_the_work_goes_out_ray_group_first_and_the_neps_group_after_the_slow_tests() -> None:
    """The order the workers sort their collections by, through conftest's real xdist scheduler on two stand-in
    workers: the Ray group (one unit) goes out first, then the slow tests, then the NePS group (not first for being
    the unit with the most tests, as xdist orders them), then the rest."""
    from tests.conftest import pytest_xdist_make_scheduler, schedule_rank

    ray, neps = SHARED_FIXTURE_TESTS["ray"][:2], SHARED_FIXTURE_TESTS["neps"]
    slow = [f"{SLOW_TESTS[0]}_answers[a]", f"{SLOW_TESTS[1]}[b]"]
    other = "tests/test_suite_layout.py::test_every_group_has_one_place_in_the_schedule"
    collection = sorted([other, *neps, slow[1], ray[0], slow[0], ray[1]], key=schedule_rank)
    assert collection == [*ray, *slow, *neps, other]
    values = {"dist": "loadgroup", "tx": ["2*popen"]}
    config = SimpleNamespace(getvalue=values.__getitem__, option=SimpleNamespace(loadscopereorder=True))
    scheduler = pytest_xdist_make_scheduler(config, None)  # type: ignore[arg-type]
    first, second = Worker("gw0"), Worker("gw1")
    for worker in (first, second):
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, collection)
    scheduler.schedule()  # a unit each, then another to each worker that holds two tests or fewer
    assert (first.sent, second.sent) == ([0, 1, 3], [2, 4, 5, 6])
    scheduler.mark_test_complete(first, 0)
    assert first.sent == [0, 1, 3, 7]


def test_the_makefiles_recipes_keep_bytecode_where_the_machine_says_not_to() -> None:
    """`make` runs its recipes without PYTHONDONTWRITEBYTECODE (this project's CI image sets it): a module is compiled
    once, by the first process that imports it, not again in every process the tests start."""
    check = f"bytecode-check: ; @{sys.executable} -c 'import sys; print(sys.dont_write_bytecode)'"
    done = subprocess.run(
        ["make", "--no-print-directory", "--eval", check, "bytecode-check"],
        cwd=ROOT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, "False\n"), done.stderr


def test_make_test_fails_where_the_tests_or_the_checks_fail_and_prints_the_checks_whole_after_the_tests(
    tmp_path: Path,
) -> None:
    """`make test` runs lint and the gate beside pytest: with stand-ins for the tools (pytest's and mypy's exit
    codes set per case), it fails where either fails, and the checks' output follows the tests', in one piece."""
    tools = tmp_path / "bin"
    tools.mkdir()
    scripts = {
        "python": 'echo "pytest: the tests ran"; exit "$TESTS_RC"',
        "ruff": "exit 0",
        "mypy": 'echo "mypy: first line"; sleep 0.3; echo "mypy: last line"; exit "$MYPY_RC"',
    }
    for name, body in scripts.items():
        (tools / name).write_text(f"#!/bin/sh\n{body}\n")
        (tools / name).chmod(0o755)
    stamp = tmp_path / "installed"
    stamp.touch()  # newer than pyproject.toml and constraints.txt: no install
    variables = [f"BIN={tools}", f"STAMP={stamp}", "GATE_MODELS=", f"CHECKS_LOG={tmp_path / 'checks.log'}"]
    for tests_rc, mypy_rc in ((0, 0), (1, 0), (0, 1)):
        done = subprocess.run(
            ["make", "--no-print-directory", "test", *variables],
            cwd=ROOT,
            env={**os.environ, "TESTS_RC": str(tests_rc), "MYPY_RC": str(mypy_rc)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode == 0) == (tests_rc == mypy_rc == 0), (tests_rc, mypy_rc, done.stdout, done.stderr)
        assert done.stdout.index("pytest: the tests ran") < done.stdout.index("mypy: first line\nmypy: last line")
