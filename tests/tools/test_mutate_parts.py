"""tools/mutate.py's run: the lines a mutant's tests must execute, the order and deadlines of those tests, the
traced run cached per test file, and one whole run on a small package of two functions (a mutant no test reaches
is uncovered; a mutant only one test reaches runs that test alone), and a run stopped by SIGTERM writing the report
of the mutants that finished."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.tools.conftest import load_tool

SPANS = textwrap.dedent(
    '''
    def total(values: list, limit: int) -> tuple:
        """A docstring."""
        result = 0
        for value in values:
            if (value > limit
                    and value < 10):
                result += value
            else:
                result -= 1

        @staticmethod
        def inner(x=3):
            return x
        return (result,
                limit)
    '''
)


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return load_tool("mutate")


def span_of(tool: ModuleType, predicate: object) -> tuple[int, int]:
    tree = ast.parse(SPANS)
    spans = tool.statement_spans(tree)
    return next(spans[id(node)] for node in ast.walk(tree) if predicate(node))  # type: ignore[operator]


def test_a_node_needs_the_lines_of_its_statement_or_of_a_compound_statements_header(tool: ModuleType) -> None:
    def constant(value: int) -> object:
        return lambda n: isinstance(n, ast.Constant) and n.value == value

    assert span_of(tool, lambda n: isinstance(n, ast.Compare) and isinstance(n.ops[0], ast.Gt)) == (6, 7)
    assert span_of(tool, constant(10)) == (6, 7)  # the condition's second line: the `if` header
    assert span_of(tool, lambda n: isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Add)) == (8, 8)
    assert span_of(tool, constant(1)) == (10, 10)
    assert span_of(tool, lambda n: isinstance(n, ast.Name) and n.id == "values") == (5, 5)  # the `for` header
    assert span_of(tool, constant(3)) == (12, 13)  # a nested def's default: its decorator and signature
    assert span_of(tool, lambda n: isinstance(n, ast.Return) and isinstance(n.value, ast.Tuple)) == (15, 16)


def coverage(tool: ModuleType) -> object:
    return tool.Coverage(
        lines={5: {"a"}, 6: {"b"}, 7: {"c"}},
        units={"f": {"a", "b", "c", "d"}, "*": {"a", "b", "c", "d", "e"}},
        failed={"b"},
    )


def test_the_covering_tests_by_line_by_function_and_by_module(tool: ModuleType) -> None:
    covered = coverage(tool)
    assert covered.covering("compare", "f", (5, 6)) == {"a"}  # b ran line 6 but fails unmutated: left out
    assert covered.covering("compare", "f", (6, 7)) == {"c"}
    assert covered.covering("constant", "f", (8, 9)) == set()  # uncovered although f runs
    assert covered.covering("default", "f", (1, 1)) == {"a", "c", "d"}  # a default: every call of f
    assert covered.covering("rebind", "=LIMIT", (0, 0)) == {"a", "c", "d", "e"}  # a constant: any line


def test_killers_of_the_same_function_first_the_latest_first_then_the_fastest(tool: ModuleType) -> None:
    seconds = {"slow": 5.0, "fast": 0.1, "mid": 1.0, "b": 1.0, "gone": 0.0}
    order = tool.order_tests({"slow", "fast", "mid", "b"}, seconds, ["mid", "gone", "slow", "mid"])
    assert order == ["mid", "slow", "fast", "b"]  # `gone` killed before but does not cover this mutant
    assert tool.order_tests({"slow", "fast", "mid", "b"}, seconds, []) == ["fast", "b", "mid", "slow"]


def test_each_test_has_a_deadline_no_earlier_than_the_whole_runs_old_budget_at_the_end(tool: ModuleType) -> None:
    covered = tool.Coverage(seconds={"t1": 1.0, "t2": 3.0}, setup_seconds={"t1": 0.5})
    # setups 0.5, calls 0.5 and 3.0, the longest 3.0: 3 * (0.5 + 0.5 + 3) + 10 and 3 * (0.5 + 3.5 + 3) + 10
    assert tool.deadlines(["t1", "t2"], covered) == [22.0, 31.0]
    assert tool.deadlines(["t1", "t2"], covered)[-1] >= 3 * (1.0 + 3.0) + 10


def test_the_tests_run_in_the_order_given_whatever_pytest_collected(tool: ModuleType, tmp_path: Path) -> None:
    class Item:
        def __init__(self, nodeid: str) -> None:
            self.nodeid = nodeid

    items = [Item("t::slow"), Item("t::killer"), Item("t::fast")]
    guard = tool.Guard(["t::killer", "t::fast", "t::slow"], [1.0, 2.0, 3.0], tmp_path / "note.json")
    guard.pytest_collection_modifyitems(items)
    assert [item.nodeid for item in items] == ["t::killer", "t::fast", "t::slow"]


def make_project(root: Path) -> None:
    """A package of two functions and a test file that reaches only one."""
    (root / "samplepkg").mkdir()
    (root / "samplepkg" / "__init__.py").write_text("")
    (root / "samplepkg" / "calc.py").write_text(
        textwrap.dedent(
            """
            def clamp(value, low, high):
                if value < low:
                    return low
                return min(value, high)


            def double(value):
                return value * 2
            """
        )
    )
    (root / "tests").mkdir()
    (root / "tests" / "conftest.py").write_text("")
    (root / "tests" / "test_calc.py").write_text(
        textwrap.dedent(
            """
            from samplepkg.calc import clamp


            def test_below():
                import colorsys  # a library a test imports lazily: imported before the mutants fork

                assert clamp(-5, 0, 10) == 0


            def test_above():
                assert clamp(50, 0, 10) == 10
            """
        )
    )
    (root / "tests" / "test_other.py").write_text("def test_nothing():\n    assert True\n")
    (root / "tests" / "test_calc_parts.py").write_text("def test_by_the_cli():\n    assert True\n")


@pytest.fixture
def project(tool: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_project(tmp_path)
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    monkeypatch.setattr(tool, "PACKAGE", "samplepkg")
    monkeypatch.setattr(tool, "warm_up", lambda tests: None)  # the children import the tests themselves
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_modules_tests_import_it_or_mirror_it(tool: ModuleType, project: Path) -> None:
    assert tool.covering_test_files(project / "samplepkg" / "calc.py") == [
        "tests/test_calc.py",
        "tests/test_calc_parts.py",  # its mirror, which need not import it (a CLI test)
    ]


def test_a_test_files_trace_depends_on_it_its_conftests_and_the_package_alone(tool: ModuleType, project: Path) -> None:
    keys = {name: tool.trace_key(f"tests/{name}") for name in ("test_calc.py", "test_other.py")}
    (project / "tests" / "test_other.py").write_text("def test_nothing():\n    assert 1\n")
    assert tool.trace_key("tests/test_calc.py") == keys["test_calc.py"]
    assert tool.trace_key("tests/test_other.py") != keys["test_other.py"]
    for changed in ("tests/conftest.py", "samplepkg/calc.py"):
        before = tool.trace_key("tests/test_calc.py")
        (project / changed).write_text((project / changed).read_text() + "\n# changed\n")
        assert tool.trace_key("tests/test_calc.py") != before, changed


def test_the_traced_run_is_cached_per_test_file(tool: ModuleType, project: Path) -> None:
    cache, work = project / "cache", project / "work"
    work.mkdir()
    tests = ["tests/test_calc.py", "tests/test_other.py"]
    entries, traced, _ = tool.trace_tests(tests, cache, work)
    assert traced == tests
    covered = tool.Coverage.of("samplepkg/calc.py", entries)
    below, above = "tests/test_calc.py::test_below", "tests/test_calc.py::test_above"
    assert {line: sorted(ids) for line, ids in covered.lines.items()} == {
        3: [above, below],
        4: [below],
        5: [above],
    }
    assert covered.units == {"clamp": {above, below}, "*": {above, below}}
    assert "colorsys" in entries["tests/test_calc.py"]["imports"]
    assert not any(name.startswith(("samplepkg", "tests")) for name in entries["tests/test_calc.py"]["imports"])
    assert set(covered.seconds) == {above, below, "tests/test_other.py::test_nothing"}
    again, traced, seconds = tool.trace_tests(tests, cache, work)
    assert (traced, seconds, again) == ([], 0.0, entries)
    (project / "tests" / "test_other.py").write_text("def test_nothing():\n    assert 1\n")
    _, traced, _ = tool.trace_tests(tests, cache, work)
    assert traced == ["tests/test_other.py"]


def test_each_test_file_is_traced_in_its_own_run_and_kept_when_a_later_one_fails(
    tool: ModuleType, project: Path
) -> None:
    cache, work = project / "cache", project / "work"
    work.mkdir()
    (project / "tests" / "test_broken.py").write_text("def test_x(:\n")  # pytest cannot collect it: exit 2
    with pytest.raises(SystemExit, match="the traced run of tests/test_broken.py did not finish"):
        tool.trace_tests(["tests/test_calc.py", "tests/test_broken.py"], cache, work)
    kept = json.loads((cache / "tests__test_calc.py.json").read_text())
    assert kept["tests"] == ["tests/test_calc.py::test_above", "tests/test_calc.py::test_below"]
    _, traced, _ = tool.trace_tests(["tests/test_calc.py", "tests/test_other.py"], cache, work)
    assert traced == ["tests/test_other.py"]  # the first file's trace survived the failed run


def test_a_whole_run_on_a_small_package(tool: ModuleType, project: Path) -> None:
    work = project / "work"
    work.mkdir()
    report = tool.mutate_module(
        project / "samplepkg" / "calc.py", ["tests/test_calc.py"], None, work, None, project / "cache"
    )
    verdicts = {(m.line, m.description): (m.verdict, m.tests_run, m.killer) for m in report.mutants}
    assert verdicts == {
        (3, "< -> <="): ("survived", 2, ""),  # no test at the edge
        (5, "min() -> max()"): ("killed", 1, "tests/test_calc.py::test_above"),  # test_below never gets there
        (9, "* -> /"): ("uncovered", 0, ""),
        (9, "2 -> 3"): ("uncovered", 0, ""),
    }
    killed = next(m for m in report.mutants if m.verdict == "killed")
    assert killed.tests_ran == 1 and 0 < killed.tests_seconds < killed.seconds
    assert report.traced_now == ["tests/test_calc.py"]
    assert "colorsys" in sys.modules  # warm_imports ran in this process, the mutants' parent
    assert (report.score, report.count("survived", "uncovered")) == (0.25, 3)

    (work / "report.json").write_text(json.dumps(tool.asdict(report)))
    previous = json.loads((work / "report.json").read_text())
    again = tool.mutate_module(
        project / "samplepkg" / "calc.py", ["tests/test_calc.py"], None, work, None, project / "cache", None, previous
    )
    assert [m.verdict for m in again.mutants] == [m.verdict for m in report.mutants]
    assert again.traced_now == []  # the trace came from the cache
    assert next(m for m in again.mutants if m.verdict == "killed").seconds == killed.seconds  # kept, not re-run


def test_a_run_stopped_by_sigterm_writes_the_report_of_what_finished(tool: ModuleType, project: Path) -> None:
    """A real run (tools/mutate.py's main in a process of its own) sent SIGTERM while a mutant's test hangs: the
    report keeps the mutants that finished, leaves the one in flight not run, names the signal, and the run exits
    128 + 15 with the hung mutant's process ended. Without the handler the process dies with no report."""
    hung = project / "hung.pid"
    (project / "tests" / "test_double.py").write_text(
        textwrap.dedent(
            f"""
            import os
            import time
            from pathlib import Path

            from samplepkg.calc import double


            def test_double():
                if double(2) == 6:  # the mutant 2 -> 3 hangs here until the run is stopped
                    Path({str(hung)!r} + ".tmp").write_text(str(os.getpid()))
                    os.replace({str(hung)!r} + ".tmp", {str(hung)!r})
                    time.sleep(5)
                    Path({str(hung)!r} + ".done").write_text("")  # not reached: the stop ends this process
                assert double(2) == 4
            """
        )
    )
    out = project / "reports"
    pid = os.fork()
    if pid == 0:  # the run, as `python tools/mutate.py samplepkg/calc.py --tests tests/test_double.py` runs it
        code = 70
        try:
            log = os.open(project / "run.log", os.O_WRONLY | os.O_CREAT, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            arguments = ["samplepkg/calc.py", "--tests", "tests/test_double.py", "--out", str(out)]
            code = tool.main([*arguments, "--trace-cache", str(project / "cache")])
        finally:
            os._exit(code)
    hung_pid = 0
    try:
        waited = time.monotonic()
        while not hung.exists() and time.monotonic() - waited < 60:
            time.sleep(0.02)
        hung_pid = int(hung.read_text())
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGTERM, (project / "run.log").read_text()
        report = json.loads((out / "calc.json").read_text())
        assert [(m["line"], m["description"], m["verdict"]) for m in report["mutants"]] == [
            (3, "< -> <=", "uncovered"),
            (5, "min() -> max()", "uncovered"),
            (9, "* -> /", "killed"),
            (9, "2 -> 3", ""),  # in flight when the run was stopped: not run (`--again` runs it)
        ]
        assert report["stopped_by"] == "SIGTERM"
        assert "0 survived, 2 uncovered, 0 errors, 1 not run, of 4" in (out / "calc.txt").read_text()
        assert not Path(f"{hung}.done").exists()  # the mutant's process went with the run, not after its test
        assert not Path(f"/proc/{hung_pid}").exists()
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        if hung_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(hung_pid, signal.SIGKILL)


def test_sigterm_and_sighup_stop_a_run_while_it_lasts_and_an_ignored_hangup_stays_ignored(tool: ModuleType) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under `nohup`
    try:
        with tool.stopping_on_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, before[0])  # else it would end pytest
            with pytest.raises(KeyboardInterrupt) as stop:
                signal.raise_signal(signal.SIGTERM)
            assert tool.stopped_by(stop.value) == signal.SIGTERM
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == (before[0], signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # a terminal's
        with tool.stopping_on_signals(), pytest.raises(KeyboardInterrupt) as stop:
            signal.raise_signal(signal.SIGHUP)
        assert tool.stopped_by(stop.value) == signal.SIGHUP
        assert tool.stopped_by(KeyboardInterrupt()) == signal.SIGINT  # Ctrl-C
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGHUP, before[1])


REGISTRY = textwrap.dedent(
    """
    class Spec:
        def __init__(self, build):
            self.build = build


    def _scaled(factor):
        def build(x):
            return x * factor + 1

        return build


    SPECS = {"double": Spec(_scaled(2))}  # closures made at import, kept in a registry
    PLAIN = [_scaled(3)]
    """
)


def one_module_package(
    tool: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dotted: str, source: str
) -> tuple[Path, ast.Module, list]:
    """A package of one module (`package.module`) under tmp_path, importable and the tool's package for the test;
    the module's path, its tree and its mutation sites."""
    package, module = dotted.split(".")
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    path = tmp_path / package / f"{module}.py"
    path.write_text(source)
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    monkeypatch.setattr(tool, "PACKAGE", package)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in (package, dotted):
        monkeypatch.delitem(sys.modules, name, raising=False)
    tree = ast.parse(source)
    finder = tool.Sites(source.splitlines(), None)
    finder.visit(tree)
    return path, tree, finder.found


def test_a_mutant_inside_a_closure_made_at_import_reaches_the_registrys_copy(
    tool: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, tree, found = one_module_package(tool, tmp_path, monkeypatch, "closurepkg.registry", REGISTRY)
    site = next(s for s in found if s[2] == "* -> /" and s[4] == "_scaled")
    import closurepkg.registry as registry  # noqa: PLC0415 - made above

    kept = registry.SPECS["double"].build
    assert (kept(4), registry.PLAIN[0](6), registry._scaled(2)(4)) == (9, 19, 9)
    tool.apply_mutant(path, site, tree)
    assert registry.SPECS["double"].build is kept  # the same function, its code swapped
    assert (kept(4), registry.PLAIN[0](6), registry._scaled(2)(4)) == (3.0, 3.0, 3.0)


CACHED = textwrap.dedent(
    """
    import functools


    @functools.lru_cache(maxsize=1)
    def table():
        return [1, 2, 3]
    """
)


def test_a_mutant_is_not_hidden_by_a_result_cached_before_it(
    tool: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, tree, found = one_module_package(tool, tmp_path, monkeypatch, "cachedpkg.data", CACHED)
    site = next(s for s in found if s[2] == "element 0 of the returned list dropped")
    import cachedpkg.data as data  # noqa: PLC0415 - made above

    assert data.table() == [1, 2, 3]  # cached by the real code, as a collection or a warm-up would
    tool.apply_mutant(path, site, tree)
    assert data.table() == [1, 2, 3]  # the mutant hidden
    assert tool.clear_caches(("cachedpkg",)) == 1  # the package alone: the suite's own caches stay
    assert data.table() == [2, 3]


def test_the_wilson_interval_of_a_sampled_score(tool: ModuleType) -> None:
    low, high = tool.wilson_interval(54, 60)
    assert (round(low, 4), round(high, 4)) == (0.7985, 0.9534)
    low, high = tool.wilson_interval(60, 60)  # all killed: still an interval below 100%
    assert round(low, 4) == 0.9398 and high == pytest.approx(1.0)
    assert tool.wilson_interval(0, 5) == (0.0, pytest.approx(0.4345, abs=1e-4))


def test_a_sample_is_the_same_draw_each_time_in_the_order_drawn(tool: ModuleType) -> None:
    mutants = [tool.Mutant(index, index, "+ -> -", "f") for index in range(100)]
    drawn = tool.choose_mutants(mutants, None, 10, 0)
    assert len({m.index for m in drawn}) == 10
    # drawn order, not source order: a run stopped after k mutants has scored the first k of the draw
    assert [m.index for m in drawn] != sorted(m.index for m in drawn)
    assert [m.index for m in drawn] == [m.index for m in tool.choose_mutants(mutants, None, 30, 0)][:10]
    assert drawn == tool.choose_mutants(mutants, None, 10, 0)  # `--again` goes on with the same mutants
    assert drawn != tool.choose_mutants(mutants, None, 10, 1)
    assert drawn != mutants[:10]  # a draw, not the first ten
    assert tool.choose_mutants(mutants, None, 100, 0) == mutants  # a sample of all is all
    assert tool.choose_mutants(mutants, 3, None, 0) == mutants[:3]


def test_a_sampled_run_scores_only_what_it_drew_and_says_so(tool: ModuleType, project: Path) -> None:
    work = project / "work-sample"
    work.mkdir()
    path = project / "samplepkg" / "calc.py"
    report = tool.mutate_module(path, ["tests/test_calc.py"], None, work, None, project / "cache", sample=2, seed=0)
    ran = [m for m in report.mutants if m.verdict]
    assert len(ran) == 2 and report.count("") == 2 and (report.sampled, report.seed) == (2, 0)
    assert report.score == sum(m.verdict == "killed" for m in ran) / 2
    assert report.interval() == tool.wilson_interval(report.count("killed", "timeout"), 2)
    assert "sample of 2, seed 0" in report.summary()
    whole = tool.mutate_module(path, ["tests/test_calc.py"], None, work, None, project / "cache")
    assert whole.sampled == 0 and whole.interval() is None and "sample of" not in whole.summary()
