"""Mutation testing for layerprof: plant one small bug at a time in a module and see whether a test catches it.

    python tools/mutate.py                       # the layerprof modules changed against main (committed or not)
    python tools/mutate.py layerprof/outputs/check.py    # named modules
    python tools/mutate.py --base HEAD~3 --changed-lines   # only the lines a change touched
    python tools/mutate.py layerprof/measure/rounds.py --show 12   # one mutant's diff and its test run, in full

Why a tool of our own: mutmut copies the project into a tree of its own and runs the whole suite once to learn
which test reaches which function; this suite starts Ray clusters and builds HPO environments, and its CLI
tests import everything. Here each module's mutants run against the test files that import it, and only against
the tests that executed the mutated function (learned in one traced run), fastest first, stopping at the first
failure. Every mutant runs in a process forked from one that has imported torch and layerprof once, with the
function's code object swapped in place, so that `from layerprof.x import f` in a test sees the mutant too.

Mutations: arithmetic (+ -, * /, // /, ** *), comparisons (< <=, > >=, == !=, in / not in, is / is not),
and/or, `not` dropped, unary minus dropped, numbers (n -> n+1; floats doubled, 0.0 -> 1.0), True/False, += -=,
min/max and any/all swapped, break/continue swapped, a call statement deleted. And the bugs people write
(issue 40): a name swapped for another in scope of the same type (parameters sharing an annotation), a string
key or literal changed (a subscript or dict key, a compared string, the key of get/pop/setdefault/getattr), an
integer edge moved down by one (n -> n-1 where it is compared, sliced or a range's bound), an element of a
returned tuple or list dropped, a boolean default of a function inverted, and a reset or restore skipped (an
assignment of a constant or an empty container, or any assignment in a `finally:`, deleted). Not mutated: other
strings, f-strings, docstrings, `raise` and `assert` statements, annotations, decorators, lines marked
`# pragma: no mutate` (on a `def` line: the whole function). Module and class constants (`NAME = number`) are
mutated by rebinding them.

Verdicts: killed (a test failed), timeout (ran past three times the tests' traced time: counted as killed),
survived (every covering test passed), uncovered (no test runs that code: counted as survived), error (the
mutant could not be applied: left out of the score). The report goes to build/mutate/ as JSON and text.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "layerprof"
SKIP_PRAGMA = "pragma: no mutate"
# A mutant whose tests run this many times as long as in the traced run (itself slowed by tracing) is killed.
TIMEOUT_FACTOR = 3

BINARY_SWAPS: dict[type, type] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
}
COMPARE_SWAPS: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
SYMBOLS = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
    ast.BitAnd: "&", ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
    ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
    ast.IsNot: "is not", ast.And: "and", ast.Or: "or",
}  # fmt: skip
NAME_SWAPS = {"min": "max", "max": "min", "any": "all", "all": "any"}
# calls whose string argument (by position) is a key: d.get("key"), getattr(obj, "name")
KEY_METHODS = {"get": 0, "pop": 0, "setdefault": 0}
KEY_FUNCTIONS = {"getattr": 1, "hasattr": 1, "setattr": 1}
# calls that make an empty container: `x = []` and `x = list()` reset alike
EMPTY_CALLS = {"list", "dict", "set", "tuple"}
# keyword arguments that only check or format (zip's strict, mkdir's exist_ok, print's flush, rich's highlight)
UNMUTATED_KEYWORDS = {"strict", "exist_ok", "parents", "flush", "highlight", "indent", "stacklevel"}


# ---------------------------------------------------------------- finding mutation sites


@dataclass
class Mutant:
    index: int
    line: int
    description: str
    unit: str  # what is swapped in: a function's qualified name (up to its first <locals>), or `=NAME` / `=Class.NAME`
    source_line: str = ""
    verdict: str = ""
    seconds: float = 0.0
    tests_run: int = 0


Site = tuple[ast.AST, str, str, Any, str]  # (node, kind, description, payload, unit)


class Sites(ast.NodeVisitor):
    """Every mutation site of a module, in a fixed order (`mutated_tree` makes one on a copy of the tree)."""

    def __init__(self, lines: list[str], wanted_lines: set[int] | None) -> None:
        self.lines = lines
        self.wanted = wanted_lines
        self.found: list[Site] = []
        self.scope: list[str] = []  # qualified-name parts of the enclosing defs and classes
        self.in_function = 0
        self.alike: list[dict[str, str]] = []  # per function: parameter -> another of the same annotation
        self.finally_assignments: set[int] = set()  # ids of assignments in a `finally:` body

    # --- scopes
    def _unit(self) -> str:
        parts = []
        for part in self.scope:
            parts.append(part)
            if part == "<locals>":
                parts.pop()
                break
        return ".".join(parts)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:  # noqa: N802
        if SKIP_PRAGMA in self.lines[node.lineno - 1]:  # the whole function is left alone
            return
        if self.in_function:  # nested: defaults and body run when the enclosing function does
            for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
                self.visit(default)
        self.scope += [node.name] if not self.in_function else ["<locals>", node.name]
        if self.in_function == 0:  # its defaults are values of the live function: inverted there
            self._boolean_defaults(node)
        self.alike.append(_alike_parameters(node.args))
        self.in_function += 1
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring
        for statement in body:
            self.visit(statement)
        self.in_function -= 1
        self.alike.pop()
        del self.scope[-1 if not self.in_function else -2 :]

    def _boolean_defaults(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """A top-level function's or method's True/False defaults, each inverted (`live_default` applies it)."""
        unit = ".".join(self.scope)
        keyword = list(zip([a.arg for a in node.args.kwonlyargs], node.args.kw_defaults, strict=True))
        places = [("positional", i, d) for i, d in enumerate(node.args.defaults)]
        places += [("keyword", name, d) for name, d in keyword if d is not None]
        for where, key, default in places:
            if isinstance(default, ast.Constant) and isinstance(default.value, bool) and self._wanted(default):
                positional = [*node.args.posonlyargs, *node.args.args]
                first = len(positional) - len(node.args.defaults)
                name = positional[first + key].arg if where == "positional" else key
                description = f"default {name}={default.value} -> {not default.value}"
                self.found.append((default, "default", description, (where, key, not default.value), unit))

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_ClassDef(self, node: ast.ClassDef) -> None:  # noqa: N802
        if self.in_function:
            self.scope += ["<locals>", node.name]
            self.in_function += 1
            for statement in node.body:
                self.visit(statement)
            self.in_function -= 1
            del self.scope[-2:]
            return
        self.scope.append(node.name)
        for statement in node.body:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.visit(statement)
            elif isinstance(statement, ast.Assign):
                self._constant_assignment(statement)
        self.scope.pop()

    def visit_Module(self, node: ast.Module) -> None:  # noqa: N802
        for statement in node.body:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.visit(statement)
            elif isinstance(statement, ast.Assign):
                self._constant_assignment(statement)

    def _constant_assignment(self, node: ast.Assign) -> None:
        """`NAME = number` at module or class level: rebound to the mutated number."""
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            return
        value = node.value
        negative = isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub)
        number = value.operand if negative else value
        if not isinstance(number, ast.Constant) or not _is_number(number.value) or not self._wanted(node):
            return
        owner = ".".join(self.scope)
        unit = f"={owner + '.' if owner else ''}{node.targets[0].id}"
        current = -number.value if negative else number.value
        description = f"{node.targets[0].id} = {current!r} -> {_bigger(current)!r}"
        self.found.append((node, "rebind", description, _bigger(current), unit))

    # --- what is left alone
    def visit_Raise(self, node: ast.Raise) -> None:  # noqa: N802
        pass

    def visit_Assert(self, node: ast.Assert) -> None:  # noqa: N802
        pass

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:  # noqa: N802
        pass

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:  # noqa: N802
        if node.value is not None and self.in_function:
            self.visit(node.value)

    def visit_Lambda(self, node: ast.Lambda) -> None:  # noqa: N802
        if self.in_function:
            self.generic_visit(node)

    def _wanted(self, node: ast.AST) -> bool:
        line = getattr(node, "lineno", 0)
        if SKIP_PRAGMA in self.lines[line - 1]:
            return False
        return self.wanted is None or line in self.wanted

    def _add(self, node: ast.AST, kind: str, description: str, payload: Any = None) -> None:
        if self.in_function and self._wanted(node):
            self.found.append((node, kind, description, payload, self._unit()))

    # --- the mutations
    def visit_BinOp(self, node: ast.BinOp) -> None:  # noqa: N802
        swap = BINARY_SWAPS.get(type(node.op))
        if swap and not _text(node.left) and not _text(node.right):
            self._add(node, "binop", f"{SYMBOLS[type(node.op)]} -> {SYMBOLS[swap]}", swap)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:  # noqa: N802
        swap = BINARY_SWAPS.get(type(node.op))
        if swap and not _text(node.value):
            self._add(node, "augassign", f"{SYMBOLS[type(node.op)]}= -> {SYMBOLS[swap]}=", swap)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:  # noqa: N802
        self._compared(node)
        for position, op in enumerate(node.ops):
            swap = COMPARE_SWAPS.get(type(op))
            if swap:
                self._add(node, "compare", f"{SYMBOLS[type(op)]} -> {SYMBOLS[swap]}", (position, swap))
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:  # noqa: N802
        other = ast.Or if isinstance(node.op, ast.And) else ast.And
        self._add(node, "boolop", f"{SYMBOLS[type(node.op)]} -> {SYMBOLS[other]}", other)
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:  # noqa: N802
        if isinstance(node.op, ast.Not):
            self._add(node, "unwrap", "`not` dropped")
        elif isinstance(node.op, ast.USub):
            self._add(node, "unwrap", "unary minus dropped")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:  # noqa: N802
        if isinstance(node.value, bool):
            self._add(node, "constant", f"{node.value} -> {not node.value}", not node.value)
        elif _is_number(node.value):
            self._add(node, "constant", f"{node.value!r} -> {_bigger(node.value)!r}", _bigger(node.value))

    def visit_Call(self, node: ast.Call) -> None:  # noqa: N802
        if isinstance(node.func, ast.Name) and node.func.id in NAME_SWAPS:
            self._add(node, "name", f"{node.func.id}() -> {NAME_SWAPS[node.func.id]}()", NAME_SWAPS[node.func.id])
        self._call_keys(node)
        self.visit(node.func)
        for argument in node.args:
            self.visit(argument)
        for keyword in node.keywords:
            if keyword.arg not in UNMUTATED_KEYWORDS:
                self.visit(keyword.value)

    def visit_Expr(self, node: ast.Expr) -> None:  # noqa: N802
        if isinstance(node.value, ast.Call):
            self._add(node, "delete", "call statement deleted")
        self.generic_visit(node)

    # --- the bugs people write (issue 40)
    def visit_Name(self, node: ast.Name) -> None:  # noqa: N802
        other = self.alike[-1].get(node.id) if self.alike else None
        if other and isinstance(node.ctx, ast.Load):
            self._add(node, "rename", f"{node.id} -> {other} (same annotation)", other)

    def _key(self, node: ast.AST) -> None:
        """A string used as a key or compared: changed (a typo'd key, a misspelt device name)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            self._add(node, "constant", f"{node.value!r} -> {node.value + '_'!r}", node.value + "_")

    def _edge(self, node: ast.AST) -> None:
        """An integer where a bound is drawn: also moved down by one (n -> n+1 is `visit_Constant`'s)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            self._add(node, "constant", f"{node.value!r} -> {node.value - 1!r} (edge)", node.value - 1)

    def visit_Subscript(self, node: ast.Subscript) -> None:  # noqa: N802
        self._key(node.slice)
        self._edge(node.slice)
        self.generic_visit(node)

    def visit_Slice(self, node: ast.Slice) -> None:  # noqa: N802
        for bound in (node.lower, node.upper):
            if bound is not None:
                self._edge(bound)
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:  # noqa: N802
        for key in node.keys:
            if key is not None:
                self._key(key)
        self.generic_visit(node)

    def _compared(self, node: ast.Compare) -> None:
        for operand in (node.left, *node.comparators):
            self._key(operand)
            self._edge(operand)

    def _call_keys(self, node: ast.Call) -> None:
        position = None
        if isinstance(node.func, ast.Attribute):
            position = KEY_METHODS.get(node.func.attr)
        elif isinstance(node.func, ast.Name):
            position = KEY_FUNCTIONS.get(node.func.id)
            if node.func.id == "range":
                for argument in node.args:
                    self._edge(argument)
        if position is not None and len(node.args) > position:
            self._key(node.args[position])

    def visit_Return(self, node: ast.Return) -> None:  # noqa: N802
        value = node.value
        kind = type(value).__name__.lower()
        if (
            isinstance(value, (ast.Tuple, ast.List))
            and len(value.elts) > 1
            and not any(isinstance(e, ast.Starred) for e in value.elts)
        ):
            for position in range(len(value.elts)):
                self._add(node, "drop", f"element {position} of the returned {kind} dropped", position)
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:  # noqa: N802
        self.finally_assignments |= {id(s) for s in node.finalbody if isinstance(s, (ast.Assign, ast.AugAssign))}
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:  # noqa: N802
        if id(node) in self.finally_assignments:
            self._add(node, "delete", "restore in `finally:` skipped")
        elif _resets(node.value) and all(isinstance(t, (ast.Name, ast.Attribute, ast.Subscript)) for t in node.targets):
            self._add(node, "delete", "reset skipped")
        self.generic_visit(node)

    def visit_Break(self, node: ast.Break) -> None:  # noqa: N802
        self._add(node, "flow", "break -> continue", ast.Continue)

    def visit_Continue(self, node: ast.Continue) -> None:  # noqa: N802
        self._add(node, "flow", "continue -> break", ast.Break)


def _text(node: ast.AST) -> bool:
    """Whether an expression builds text (an f-string or a string literal inside it)."""
    return any(
        isinstance(part, ast.JoinedStr) or (isinstance(part, ast.Constant) and isinstance(part.value, str))
        for part in ast.walk(node)
    )


def _alike_parameters(arguments: ast.arguments) -> dict[str, str]:
    """Each parameter that shares its annotation with another: the next of them (round the group)."""
    groups: dict[str, list[str]] = {}
    for argument in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
        if argument.annotation is not None and argument.arg not in ("self", "cls"):
            groups.setdefault(ast.unparse(argument.annotation), []).append(argument.arg)
    alike = {}
    for names in groups.values():
        for position, name in enumerate(names if len(names) > 1 else ()):
            alike[name] = names[(position + 1) % len(names)]
    return alike


def _resets(value: ast.AST) -> bool:
    """Whether an assigned value puts something back to a start: a constant, an empty container."""
    if isinstance(value, ast.Constant):
        return not isinstance(value.value, str) or value.value == ""
    if isinstance(value, (ast.List, ast.Dict, ast.Set, ast.Tuple)):
        return not (value.keys if isinstance(value, ast.Dict) else value.elts)
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id in EMPTY_CALLS
        and not (value.args or value.keywords)
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bigger(value: int | float) -> int | float:
    if isinstance(value, int):
        return value + 1
    return 1.0 if value == 0 else value * 2


class _Apply(ast.NodeTransformer):
    """Makes one site's mutation, found by identity in a deep copy (the copy maps old nodes to new ones)."""

    def __init__(self, target: ast.AST, kind: str, payload: Any) -> None:
        self.target, self.kind, self.payload = target, kind, payload

    def visit(self, node: ast.AST) -> Any:
        if node is not self.target:
            return super().visit(node)
        kind, payload = self.kind, self.payload
        if kind in ("binop", "augassign"):
            node.op = payload()
        elif kind == "compare":
            position, swap = payload
            node.ops[position] = swap()
        elif kind == "boolop":
            node.op = payload()
        elif kind == "unwrap":
            return node.operand
        elif kind == "constant":
            node.value = payload
        elif kind == "name":
            node.func.id = payload
        elif kind == "delete":
            return ast.copy_location(ast.Pass(), node)
        elif kind == "rename":
            node.id = payload
        elif kind == "drop":
            node.value.elts = [e for position, e in enumerate(node.value.elts) if position != payload]
        elif kind == "flow":
            return ast.copy_location(payload(), node)
        return node


def mutated_tree(tree: ast.Module, site: Site) -> ast.Module:
    """A copy of `tree` with one site mutated."""
    memo: dict[int, Any] = {}
    clone = copy.deepcopy(tree, memo)
    node, kind, _, payload, _ = site
    clone = _Apply(memo[id(node)], kind, payload).visit(clone)
    return ast.fix_missing_locations(clone)


# ---------------------------------------------------------------- applying a mutant in a process


def module_name(path: Path) -> str:
    return ".".join(path.resolve().relative_to(ROOT).with_suffix("").parts)


def _code_by_qualname(code: Any, qualname: str) -> Any:
    for constant in code.co_consts:
        if hasattr(constant, "co_qualname"):
            if constant.co_qualname == qualname:
                return constant
            found = _code_by_qualname(constant, qualname)
            if found is not None:
                return found
    return None


def _functions_of(owner: Any, name: str) -> list[Any]:
    """The plain function objects behind a module or class attribute: through properties, class and static
    methods and functools wrappers (contextmanager)."""
    value = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset, value.fdel) if f is not None]
    if isinstance(value, (classmethod, staticmethod)):
        value = value.__func__
    while hasattr(value, "__wrapped__"):
        value = value.__wrapped__
    return [value] if hasattr(value, "__code__") else []


def apply_mutant(path: Path, site: Site, tree: ast.Module) -> None:
    """Swap the mutated function's code object into the live function (or rebind the mutated constant)."""
    module = importlib.import_module(module_name(path))
    _, kind, _, value, unit = site
    if kind == "rebind":
        owner_path, _, name = unit[1:].rpartition(".")
        owner: Any = module
        for part in filter(None, owner_path.split(".")):
            owner = getattr(owner, part)
        original = getattr(owner, name)
        setattr(owner, name, value)
        if owner is module:  # `from module import NAME` copies elsewhere in the package and the tests
            for other in list(sys.modules.values()):
                spelled = getattr(other, "__name__", "") or ""
                if spelled.startswith((PACKAGE, "tests")) and getattr(other, name, None) is original:
                    setattr(other, name, value)
        return
    owner = module
    parts = unit.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part)
    functions = [f for f in _functions_of(owner, parts[-1]) if f.__code__.co_qualname == unit]
    if not functions:
        raise LookupError(f"no live function {unit}")
    if kind == "default":
        for function in functions:
            live_default(function, *value)
        return
    code = compile(mutated_tree(tree, site), str(path), "exec")
    new_code = _code_by_qualname(code, unit)
    if new_code is None:
        raise LookupError(f"no code object {unit}")
    for function in functions:
        function.__code__ = new_code


def live_default(function: Any, where: str, key: int | str, value: Any) -> None:
    """Set one default of a live function: the `key`-th of its positional defaults, or its keyword-only `key`."""
    if where == "positional":
        defaults = list(function.__defaults__)
        defaults[key] = value
        function.__defaults__ = tuple(defaults)
    else:
        function.__kwdefaults__ = {**function.__kwdefaults__, key: value}


# ---------------------------------------------------------------- running tests in forked processes


def _silence() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


# pytest's unraisable-exception plugin runs gc.collect() twice per session: 0.5 s with torch's heap in the process
PYTEST_OPTIONS = ["-q", "-p", "no:cacheprovider", "-p", "no:unraisableexception", "--no-header", "-o", "addopts="]


def _pytest_args(nodeids: list[str]) -> list[str]:
    return ["-x", *PYTEST_OPTIONS, *nodeids]


def warm_up(tests: list[str]) -> None:
    """Collect the tests once in this process, so that every forked mutant finds the test modules (rewritten by
    pytest) and what they import already loaded."""
    import pytest

    saved = os.dup(1), os.dup(2)
    _silence()
    try:
        pytest.main([*PYTEST_OPTIONS, "--collect-only", *tests])
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)


def fork_run(job: Any, timeout_s: float, quiet: bool = True) -> tuple[str, float]:
    """Run `job()` (returns an exit code) in a forked child; ("exit:N" | "timeout" | "signal:N", seconds)."""
    began = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child
        code = 3
        try:
            if quiet:
                _silence()
            signal.alarm(max(1, int(timeout_s)))
            code = int(job())
        except BaseException:  # noqa: BLE001 - anything the mutant raises outside a test kills it
            code = 99
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - began
    if os.WIFSIGNALED(status):
        signal_number = os.WTERMSIG(status)
        return ("timeout" if signal_number == signal.SIGALRM else f"signal:{signal_number}"), seconds
    return f"exit:{os.WEXITSTATUS(status)}", seconds


class CoverageRecorder:
    """A pytest plugin: which functions of the target files each test runs, how long it takes, whether it
    passes. Functions are named by their patchable unit (qualified name up to the first <locals>).

    What a module- or session-scoped fixture runs while it is set up covers every test that uses the fixture,
    not only the first (the one whose setup built it): a mutant re-runs the fixture in its own process."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files  # filename -> module path as given
        self.current: str | None = None
        self.units: dict[str, dict[str, set[str]]] = {path: {} for path in files.values()}
        self.durations: dict[str, float] = {}
        self.failed: set[str] = set()
        self.fixture: tuple[str, str] | None = None  # (baseid, name) of the shared fixture being set up
        self.fixture_units: dict[tuple[str, str], set[tuple[str, str]]] = {}  # fixture -> (path, unit)
        self.fixtures_of: dict[str, set[str]] = {}  # test -> the fixture names it uses

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Any:  # noqa: ARG002
        previous = self.fixture
        if fixturedef.scope != "function":
            self.fixture = (fixturedef.baseid, fixturedef.argname)
        try:
            yield
        finally:
            self.fixture = previous

    def covering(self) -> dict[str, dict[str, set[str]]]:
        """Each unit's covering tests, with the tests that use a shared fixture which ran it."""
        for (baseid, name), units in self.fixture_units.items():
            users = {test for test, names in self.fixtures_of.items() if name in names and test.startswith(baseid)}
            for path, unit in units:
                self.units[path].setdefault(unit, set()).update(users)
                self.units[path].setdefault("*", set()).update(users)
        return self.units

    def _profile(self, frame: Any, event: str, _arg: Any) -> None:
        if event != "call" or self.current is None:
            return
        code = frame.f_code
        path = self.files.get(code.co_filename)
        if path is None:
            return
        qualname = code.co_qualname
        unit = qualname.split(".<locals>.")[0]
        self.units[path].setdefault(unit, set()).add(self.current)
        self.units[path].setdefault("*", set()).add(self.current)
        if self.fixture is not None:
            self.fixture_units.setdefault(self.fixture, set()).add((path, unit))

    def pytest_sessionstart(self, session: Any) -> None:  # noqa: ARG002
        import threading

        sys.setprofile(self._profile)
        threading.setprofile(self._profile)

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> None:  # noqa: ARG002
        self.current = item.nodeid
        self.fixtures_of[item.nodeid] = set(getattr(item, "fixturenames", ()))

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed:
            self.failed.add(report.nodeid)
        self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration


def map_coverage(modules: list[Path], tests: list[str], out: Path, timeout_s: float) -> dict[str, Any]:
    """One traced run of the candidate tests (in a forked child): per module, unit -> covering tests."""

    def job() -> int:
        import pytest

        files = {str(path.resolve()): str(path) for path in modules}
        recorder = CoverageRecorder(files)
        code = pytest.main([*PYTEST_OPTIONS, *tests], plugins=[recorder])
        sys.setprofile(None)
        data = {
            "units": {
                path: {unit: sorted(ids) for unit, ids in units.items()} for path, units in recorder.covering().items()
            },
            "durations": recorder.durations,
            "failed": sorted(recorder.failed),
            "exit": int(code),
        }
        out.write_text(json.dumps(data))
        return 0

    verdict, seconds = fork_run(job, timeout_s, quiet=True)
    if verdict != "exit:0" or not out.exists():
        raise SystemExit(f"the traced run of {' '.join(tests)} did not finish ({verdict} after {seconds:.0f} s)")
    return json.loads(out.read_text())


# ---------------------------------------------------------------- what to mutate and which tests


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def changed_modules(base: str) -> list[Path]:
    names = git("diff", "--name-only", base, "--", PACKAGE).split()
    names += git("ls-files", "--others", "--exclude-standard", PACKAGE).split()
    paths = sorted({ROOT / name for name in names if name.endswith(".py")})
    return [path for path in paths if path.exists() and path.name != "__init__.py"]


def changed_lines(base: str, path: Path) -> set[int]:
    tracked = git("ls-files", str(path.relative_to(ROOT))).strip()
    if not tracked:
        return set(range(1, len(path.read_text().splitlines()) + 1))
    lines: set[int] = set()
    for start, count in re.findall(r"^@@ -\S+ \+(\d+)(?:,(\d+))? @@", git("diff", "-U0", base, "--", str(path)), re.M):
        lines.update(range(int(start), int(start) + int(count or 1)))
    return lines


def covering_test_files(path: Path) -> list[str]:
    """The test files that import the module (by its dotted name, or `from layerprof.folder import <name>`)."""
    dotted = module_name(path)
    package, _, stem = dotted.rpartition(".")
    pattern = re.compile(rf"\b{re.escape(dotted)}\b|from {re.escape(package)} import [^\n]*\b{re.escape(stem)}\b")
    return sorted(
        str(test.relative_to(ROOT))
        for test in (ROOT / "tests").rglob("test_*.py")
        if pattern.search(test.read_text(encoding="utf-8"))
    )


# ---------------------------------------------------------------- the run


@dataclass
class ModuleReport:
    module: str
    tests: list[str]
    mutants: list[Mutant] = field(default_factory=list)
    baseline_failures: list[str] = field(default_factory=list)

    def count(self, *verdicts: str) -> int:
        return sum(m.verdict in verdicts for m in self.mutants)

    @property
    def score(self) -> float | None:
        scored = len(self.mutants) - self.count("error")
        return self.count("killed", "timeout") / scored if scored else None

    def summary(self) -> str:
        score = "n/a" if self.score is None else f"{self.score:.1%}"
        return (
            f"{self.module}: {score} killed ({self.count('killed')} killed, {self.count('timeout')} timed out, "
            f"{self.count('survived')} survived, {self.count('uncovered')} uncovered, {self.count('error')} errors "
            f"of {len(self.mutants)}; tests: {', '.join(self.tests)})"
        )


def mutate_module(
    path: Path,
    tests: list[str],
    wanted: set[int] | None,
    workdir: Path,
    show: int | None,
    limit: int | None,
    progress: Path | None = None,
) -> ModuleReport:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    finder = Sites(lines, wanted)
    finder.visit(tree)
    report = ModuleReport(str(path.relative_to(ROOT)), tests)
    for index, (node, _, description, _, unit) in enumerate(finder.found):
        line = getattr(node, "lineno", 0)
        report.mutants.append(Mutant(index, line, description, unit, lines[line - 1].strip()))
    if show is not None:
        _show(path, tree, finder, report, show, tests)
        return report
    print(f"{report.module}: {len(report.mutants)} mutants; tracing {' '.join(tests)}", flush=True)
    warm_up(tests)
    coverage = map_coverage([path], tests, workdir / "coverage.json", timeout_s=3600)
    report.baseline_failures = coverage["failed"]
    if coverage["failed"]:
        print(f"  tests failing before any mutation (left out): {', '.join(coverage['failed'])}", flush=True)
    units = coverage["units"][str(path)]
    durations = coverage["durations"]
    selected = report.mutants if limit is None else report.mutants[:limit]
    for mutant in selected:
        site = finder.found[mutant.index]
        covering = units.get("*" if mutant.unit.startswith("=") else mutant.unit, [])
        covering = sorted((t for t in covering if t not in coverage["failed"]), key=lambda t: durations.get(t, 0.0))
        mutant.tests_run = len(covering)
        if not covering:
            mutant.verdict = "uncovered"
            continue
        budget = TIMEOUT_FACTOR * sum(durations.get(t, 0.0) for t in covering) + 10

        def job(site: Any = site, mutant: Mutant = mutant, covering: list[str] = covering) -> int:
            import pytest

            try:
                apply_mutant(path, site, tree)
            except Exception:  # noqa: BLE001
                return 98
            return int(pytest.main(_pytest_args(covering)))

        outcome, mutant.seconds = fork_run(job, budget)
        mutant.verdict = {
            "exit:0": "survived",
            "exit:98": "error",
            "exit:5": "error",
            "timeout": "timeout",
        }.get(outcome, "killed")
        mark = {"survived": "S", "killed": ".", "timeout": "T", "error": "E"}[mutant.verdict]
        print(mark, end="", flush=True)
        if progress is not None:
            progress.write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(flush=True)
    return report


def _show(path: Path, tree: ast.Module, finder: Sites, report: ModuleReport, index: int, tests: list[str]) -> None:
    mutant = report.mutants[index]
    print(f"mutant {index}: line {mutant.line}: {mutant.description} in {mutant.unit}\n  {mutant.source_line}")
    site = finder.found[index]

    def job() -> int:
        import pytest

        apply_mutant(path, site, tree)
        return int(pytest.main(["-x", *PYTEST_OPTIONS, *tests]))

    outcome, seconds = fork_run(job, 3600, quiet=False)
    print(f"mutant {index}: {outcome} after {seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", type=Path, help="modules to mutate (default: those changed vs --base)")
    parser.add_argument("--base", default=os.environ.get("MUTATE_BASE", "main"), help="git ref to diff against")
    parser.add_argument("--changed-lines", action="store_true", help="mutate only the lines changed vs --base")
    parser.add_argument("--tests", nargs="+", help="test files or node ids (default: the files importing a module)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--show", type=int, metavar="N", help="run mutant N with the tests' output")
    parser.add_argument("--limit", type=int, help="run only the first N mutants (a smoke check)")
    parser.add_argument("--min-score", type=float, default=0.0, help="exit 1 when a module scores below this")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mutate", help="where the reports go")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)  # pytest finds tests/conftest.py from here
    missing = [str(path) for path in args.modules if not path.is_file()]
    if missing:
        print(f"no such module: {', '.join(missing)}; name files under {PACKAGE}/", file=sys.stderr)
        return 2
    try:
        modules = [path.resolve() for path in args.modules] or changed_modules(args.base)
    except subprocess.CalledProcessError as error:
        print(f"git cannot diff against {args.base!r} ({error.stderr.strip()}); pass --base REF", file=sys.stderr)
        return 2
    if not modules:
        print(f"no module of {PACKAGE}/ changed against {args.base}; name modules to mutate")
        return 0
    import torch  # noqa: F401 - imported once here, so that every forked mutant starts with it

    for path in modules:
        importlib.import_module(module_name(path))
    args.out.mkdir(parents=True, exist_ok=True)
    worst = 1.0
    for path in modules:
        wanted = changed_lines(args.base, path) if args.changed_lines else None
        tests = args.tests or covering_test_files(path)
        if not tests:
            print(f"{path.relative_to(ROOT)}: no test file imports it; give --tests")
            worst = 0.0
            continue
        if args.list:
            finder = Sites(path.read_text().splitlines(), wanted)
            finder.visit(ast.parse(path.read_text()))
            for index, (node, _, description, _, unit) in enumerate(finder.found):
                print(f"{index:4d} {path.name}:{getattr(node, 'lineno', 0)} {unit}: {description}")
            continue
        with tempfile.TemporaryDirectory() as scratch:
            progress = args.out / f"{path.stem}.json"
            report = mutate_module(path, tests, wanted, Path(scratch), args.show, args.limit, progress)
        if args.show is not None:
            continue
        stem = args.out / path.stem
        stem.with_suffix(".json").write_text(json.dumps(asdict(report), indent=2) + "\n")
        lines = [report.summary(), ""]
        for mutant in report.mutants:
            if mutant.verdict in ("survived", "uncovered"):
                lines.append(f"  {mutant.verdict}: line {mutant.line} ({mutant.unit}): {mutant.description}")
                lines.append(f"      {mutant.source_line}")
        stem.with_suffix(".txt").write_text("\n".join(lines) + "\n")
        print("\n".join(lines), flush=True)
        if report.score is not None:
            worst = min(worst, report.score)
    return 1 if worst < args.min_score else 0


if __name__ == "__main__":
    sys.exit(main())
