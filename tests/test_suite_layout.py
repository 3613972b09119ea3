"""tests/conftest.py schedules tests by name (path::function prefix): every name it lists must still name a test, so
that a test renamed or moved cannot silently leave its group (a Ray test on another pytest-xdist worker would start
a second cluster there) or the list of slow tests handed out first."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import SHARED_FIXTURE_MODULES, SHARED_FIXTURE_TESTS, SLOW_TESTS

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
