"""Mutation testing for layerprof: plant one small bug at a time in a module and see whether a test catches it.

    python tools/mutate.py                       # the layerprof modules changed against main (committed or not)
    python tools/mutate.py layerprof/outputs/check.py    # named modules
    python tools/mutate.py --base HEAD~3 --changed-lines   # only the lines a change touched
    python tools/mutate.py layerprof/measure/rounds.py --show 12   # one mutant's diff and its test run, in full
    python tools/mutate.py layerprof/parsing.py --again   # after new tests: only the last report's survivors

Why a tool of our own: mutmut copies the project into a tree of its own and runs the whole suite once to learn
which test reaches which function; this suite starts Ray clusters and builds HPO environments, and its CLI
tests import everything. Here each module's mutants run against the test files that import it, and only against
the tests that executed the mutated statement (learned in one traced run per test file, `sys.settrace` on the
package's lines, cached in build/mutate/trace/ until the file, a conftest.py above it or any module of the
package changes), the tests that killed earlier mutants of the same function first, then fastest first, stopping
at the first failure. Every mutant runs in a process forked from one that has imported torch, layerprof, the
tests and every library the traced run imported once (its objects frozen out of the collector, so their memory
stays shared), with the function's code object swapped in place, so that `from layerprof.x import f` in a test
sees the mutant too (and, for a mutation inside a nested function, the code of the closures the module's
registries hold, which a factory made at import).

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

Verdicts: killed (a test failed), timeout (a test ended past its deadline, three times the traced time of the
tests so far and of every setup, plus the longest test and 10 s: counted as killed), survived (every covering
test passed), uncovered (no test runs that statement: counted as survived), error (the mutant could not be
applied: left out of the score). The report goes to build/mutate/ as JSON and text (named by the module's dotted
path: predict-timemodel.json), with each mutant's time, its killer and the commit scored.

Stopping: Ctrl-C (SIGINT), SIGTERM (`timeout`, `kill`, a batch scheduler's limit) and SIGHUP (a closed terminal;
left ignored under `nohup`) end the run alike: the mutant in flight is stopped with its process group and left not
run, the module's report of the mutants that finished is written (its `stopped_by` names the signal), no further
module starts, and the exit status is 128 + the signal's number. `--again` goes on from that report.

Sampling: `--sample N` runs N of a module's mutants drawn uniformly without replacement (`--seed`, default 0: the
same draw each time, and a larger sample holds a smaller one, so `--again --sample 60` goes on from `--sample 30`)
and reports the score with its 95% Wilson interval, for a module whose every mutant would take hours. The draw runs
in the order drawn: a run stopped early has scored a smaller uniform sample. 60 mutants of
a module scoring 90% give about ±8 points.
"""

from __future__ import annotations

import argparse
import ast
import copy
import gc
import hashlib
import importlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager, suppress
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
    column: int = 0  # where on the line (two mutants of one description apart)
    verdict: str = ""
    seconds: float = 0.0  # the mutant's process, end to end
    tests_run: int = 0  # the tests that ran its statement in the traced run
    tests_ran: int = 0  # of those, the ones its process ran (up to the first failure)
    tests_seconds: float = 0.0  # their own time (setup, call, teardown), the rest being pytest and the fork
    killer: str = ""  # the first test that failed


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


def statement_spans(tree: ast.Module) -> dict[int, tuple[int, int]]:
    """Each node's (first, last) lines: those of its innermost statement, or where the statement is compound (if,
    for, while, with, def, except), of its header (the test, iterable, items, decorators and signature). A test
    that executed none of these lines never evaluated the node: its mutant cannot change what the test sees."""
    spans: dict[int, tuple[int, int]] = {}

    def walk(node: ast.AST, span: tuple[int, int]) -> None:
        for child in ast.iter_child_nodes(node):
            own = _span(child) if isinstance(child, (ast.stmt, ast.excepthandler)) else span
            spans[id(child)] = own
            walk(child, own)

    walk(tree, (0, 0))
    return spans


def _span(statement: ast.stmt | ast.excepthandler) -> tuple[int, int]:
    if not any(isinstance(getattr(statement, name, None), list) for name in ("body", "orelse", "finalbody")):
        return statement.lineno, statement.end_lineno or statement.lineno
    header = [
        part
        for child in ast.iter_child_nodes(statement)
        if not isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case))
        for part in ast.walk(child)
        if hasattr(part, "lineno")
    ]
    first = min([statement.lineno, *(part.lineno for part in header)])
    return first, max([statement.lineno, *((part.end_lineno or part.lineno) for part in header)])


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
    innermost = _wrapper_chain(owner, name)[-1]
    return [innermost] if hasattr(innermost, "__code__") else []


def _wrapper_chain(owner: Any, name: str) -> list[Any]:
    """A module or class attribute (a class or static method's function) and each function its functools wrappers
    wrap, outermost first: the last is the plain function."""
    value = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    if isinstance(value, (classmethod, staticmethod)):
        value = value.__func__
    chain = [value]
    while hasattr(chain[-1], "__wrapped__"):
        chain.append(chain[-1].__wrapped__)
    return chain


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
            live_default(function, *value, wrappers=_wrapper_chain(owner, parts[-1])[:-1])
        return
    code = compile(mutated_tree(tree, site), str(path), "exec")
    new_code = _code_by_qualname(code, unit)
    if new_code is None:
        raise LookupError(f"no code object {unit}")
    before = _nested_codes(functions[0].__code__)
    for function in functions:
        function.__code__ = new_code
    # A mutation inside a nested function reaches the calls of the outer one through its new code; the closures
    # the outer one made at import (a registry's builders) keep their old code unless swapped as well.
    changed = {before[name]: code for name, code in _nested_codes(new_code).items() if before.get(name, code) != code}
    for closure in _live_closures(module, {id(code) for code in changed}):
        closure.__code__ = changed[closure.__code__]  # ValueError where the mutant captures other names: an error


def clear_caches(prefixes: tuple[str, ...] | None = None) -> int:
    """Empty every `functools.cache`/`lru_cache` that a module of the package or of the tests (or of `prefixes`)
    holds by module attribute, so that a mutant is not hidden by a result the unmutated code cached before the fork
    (during collection, or in the parent's warm-up). Returns how many caches it emptied."""
    emptied = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith(prefixes or (PACKAGE, "tests")) or module is None:
            continue
        for value in list(vars(module).values()):
            if callable(getattr(value, "cache_clear", None)) and hasattr(value, "__wrapped__"):
                value.cache_clear()
                emptied += 1
    return emptied


def _nested_codes(code: Any) -> dict[str, Any]:
    """The code objects of every function defined inside `code`, at any depth, by qualified name."""
    found = {}
    for constant in code.co_consts:
        if hasattr(constant, "co_qualname"):
            found[constant.co_qualname] = constant
            found.update(_nested_codes(constant))
    return found


def _live_closures(module: Any, codes: set[int], depth: int = 4) -> list[Any]:
    """The functions whose code is one of `codes` (by id) that the module's globals hold, through dicts, lists,
    tuples, sets and the attributes of the package's own objects, `depth` levels down: closures a factory made
    at import and kept (`SPECS = {name: Spec(..., build=_factory(...))}`)."""
    found: list[Any] = []
    seen: set[int] = set()

    def walk(value: Any, left: int) -> None:
        if id(value) in seen or left < 0:
            return
        seen.add(id(value))
        if isinstance(value, types.FunctionType):
            if id(value.__code__) in codes:
                found.append(value)
            return
        if isinstance(value, dict):
            items: Any = value.values()
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = value
        elif not isinstance(value, type) and type(value).__module__.startswith(PACKAGE) and hasattr(value, "__dict__"):
            items = vars(value).values()
        else:
            return
        for item in list(items):
            walk(item, left - 1)

    if codes:
        for value in list(vars(module).values()):
            walk(value, depth)
    return found


def live_default(function: Any, where: str, key: int | str, value: Any, wrappers: list[Any] | None = None) -> None:
    """Set one default of a live function: the `key`-th of its positional defaults, or its keyword-only `key`; and
    the same parameter's default in the `__signature__` a wrapper of it declares (a decorator that adds options to
    a CLI command: Typer reads the wrapper's signature, and the wrapper passes every value on, so the function's
    own default is never used)."""
    if where == "positional":
        defaults = list(function.__defaults__)
        defaults[key] = value
        function.__defaults__ = tuple(defaults)
        code = function.__code__
        first = code.co_argcount - len(defaults)
        name = code.co_varnames[first + int(key)]
    else:
        function.__kwdefaults__ = {**function.__kwdefaults__, key: value}
        name = str(key)
    for wrapper in wrappers or []:
        signature = vars(wrapper).get("__signature__")
        if signature is not None and name in signature.parameters:
            parameters = [p.replace(default=value) if p.name == name else p for p in signature.parameters.values()]
            wrapper.__signature__ = signature.replace(parameters=parameters)


# ---------------------------------------------------------------- running tests in forked processes

# signals that stop a run as Ctrl-C does (`timeout` and batch schedulers send SIGTERM; a closed terminal SIGHUP)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived: raised in the run's process where Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, number: int) -> None:
        super().__init__(signal.Signals(number).name)
        self.number = number


def _stop(number: int, _frame: Any) -> None:
    raise Stopped(number)


def stopped_by(stop: KeyboardInterrupt) -> signal.Signals:
    """The signal behind a stop: SIGTERM or SIGHUP (`Stopped`), else Ctrl-C's SIGINT."""
    return signal.Signals(getattr(stop, "number", signal.SIGINT))


@contextmanager
def stopping_on_signals() -> Iterator[None]:
    """While the run lasts, SIGTERM and SIGHUP raise `Stopped` as SIGINT raises KeyboardInterrupt; a signal ignored
    when the run began stays ignored (SIGHUP under `nohup`). The handlers found are put back after."""
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    for number, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(number, _stop)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)


def _silence() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


# pytest's unraisable-exception plugin runs gc.collect() twice per session: 0.5 s with torch's heap in the process
PYTEST_OPTIONS = ["-q", "-p", "no:cacheprovider", "-p", "no:unraisableexception", "--no-header", "-o", "addopts="]


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


def fork_run(job: Any, timeout_s: float | None, quiet: bool = True) -> tuple[str, float]:
    """Run `job()` (returns an exit code) in a forked child; ("exit:N" | "timeout" | "signal:N", seconds). With
    `timeout_s` None the job sets its own alarms (`Guard`)."""
    began = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child
        code = 3
        try:
            os.setpgid(0, 0)  # a group of its own: a stopped run ends the child and whatever it started
            for number in STOP_SIGNALS:
                if signal.getsignal(number) is _stop:
                    signal.signal(number, signal.SIG_DFL)
            if quiet:
                _silence()
            if timeout_s is not None:
                signal.alarm(max(1, int(timeout_s)))
            code = int(job())
        except BaseException:  # noqa: BLE001 - anything the mutant raises outside a test kills it
            code = 99
        finally:
            os._exit(code)
    try:
        with suppress(OSError):
            os.setpgid(pid, pid)  # here too: a run stopped before the child ran its first line still ends it
        _, status = os.waitpid(pid, 0)
    except BaseException:  # the run is stopped (Ctrl-C, SIGTERM, SIGHUP): the child goes too, its verdict unknown
        for kill in (os.killpg, os.kill):
            with suppress(OSError):
                kill(pid, signal.SIGKILL)
        with suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise
    seconds = time.perf_counter() - began
    if os.WIFSIGNALED(status):
        signal_number = os.WTERMSIG(status)
        return ("timeout" if signal_number == signal.SIGALRM else f"signal:{signal_number}"), seconds
    return f"exit:{os.WEXITSTATUS(status)}", seconds


class CoverageRecorder:
    """A pytest plugin: which lines and functions of the package each test runs, how long its setup and the rest
    take, whether it passes. Functions are named by their patchable unit (qualified name up to the first <locals>).

    What a module- or session-scoped fixture runs while it is set up covers every test that uses the fixture,
    not only the first (the one whose setup built it): a mutant re-runs the fixture in its own process.

    Lines come from `sys.settrace`: its global function sees each Python call (not C calls, as `sys.setprofile`
    does) and turns line events on only in frames of the package's files."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files  # filename -> module path (relative to the repository)
        self.owner: str | tuple[str, str] | None = None  # the running test, or the shared fixture being set up
        self.lines: dict[Any, set[tuple[str, int]]] = {}  # owner -> (filename, line)
        self.units: dict[Any, set[tuple[str, str]]] = {}  # owner -> (filename, unit)
        self.durations: dict[str, float] = {}
        self.setups: dict[str, float] = {}
        self.failed: set[str] = set()
        self.fixtures_of: dict[str, set[str]] = {}  # test -> the fixture names it uses
        self._lines: set[tuple[str, int]] | None = None
        self._units: set[tuple[str, str]] | None = None

    def _own(self, owner: Any) -> None:
        self.owner = owner
        self._lines = None if owner is None else self.lines.setdefault(owner, set())
        self._units = None if owner is None else self.units.setdefault(owner, set())

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Any:  # noqa: ARG002
        previous = self.owner
        if fixturedef.scope != "function":
            self._own((fixturedef.baseid, fixturedef.argname))
        try:
            yield
        finally:
            self._own(previous)

    def _call(self, frame: Any, event: str, _arg: Any) -> Any:
        if self._units is None:
            return None
        filename = frame.f_code.co_filename
        if filename not in self.files:
            return None
        self._units.add((filename, frame.f_code.co_qualname.split(".<locals>.")[0]))
        return self._line

    def _line(self, frame: Any, event: str, _arg: Any) -> Any:
        if event == "line" and self._lines is not None:
            self._lines.add((frame.f_code.co_filename, frame.f_lineno))
        return self._line

    def pytest_sessionstart(self, session: Any) -> None:  # noqa: ARG002
        import threading

        sys.settrace(self._call)
        threading.settrace(self._call)

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> None:  # noqa: ARG002
        self._own(item.nodeid)
        self.fixtures_of[item.nodeid] = set(getattr(item, "fixturenames", ()))

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed:
            self.failed.add(report.nodeid)
        if report.when == "setup":
            self.setups[report.nodeid] = self.setups.get(report.nodeid, 0.0) + report.duration
        self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration

    def covering(self) -> dict[str, dict[str, Any]]:
        """Per module path: {"lines": {line: tests}, "units": {unit: tests}}, a shared fixture's lines and units
        given to every test that uses it."""
        import threading

        sys.settrace(None)
        threading.settrace(None)
        covered: dict[str, dict[str, Any]] = {path: {"lines": {}, "units": {}} for path in self.files.values()}
        for owner in set(self.lines) | set(self.units):
            if isinstance(owner, tuple):
                baseid, name = owner
                users = {t for t, names in self.fixtures_of.items() if name in names and t.startswith(baseid)}
            else:
                users = {owner}
            for filename, line in self.lines.get(owner, ()):
                covered[self.files[filename]]["lines"].setdefault(line, set()).update(users)
            for filename, unit in self.units.get(owner, ()):
                covered[self.files[filename]]["units"].setdefault(unit, set()).update(users)
        return covered


# Bump when what a traced run records changes: every cached trace is then traced again.
TRACE_FORMAT = 3


def package_files() -> dict[str, str]:
    """Every module of the package: absolute filename -> path relative to the repository."""
    return {str(path.resolve()): str(path.relative_to(ROOT)) for path in sorted((ROOT / PACKAGE).rglob("*.py"))}


def trace_key(test_file: str) -> str:
    """What a test file's cached trace depends on: the file, the conftest.py files above it, every module of the
    package (a change anywhere may change which tests reach which line) and the trace format."""
    digest = hashlib.sha256(f"{TRACE_FORMAT}\n{test_file}\n".encode())
    test_path = ROOT / test_file
    conftests = [folder / "conftest.py" for folder in [test_path.parent, *test_path.parent.parents]]
    sources = [test_path, *(c for c in conftests if ROOT in c.parents and c.is_file())]
    sources += sorted((ROOT / PACKAGE).rglob("*.py"))
    for source in sources:
        digest.update(str(source.relative_to(ROOT)).encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()


def _cache_path(cache: Path, test_file: str) -> Path:
    return cache / (test_file.replace("/", "__") + ".json")


def trace_tests(tests: list[str], cache: Path, workdir: Path) -> tuple[dict[str, Any], list[str], float]:
    """Per test file, the lines and units of every package module its tests run, their durations and failures:
    from the cache (`cache`/<file>.json, valid while `trace_key` is unchanged) or from a traced run (in a forked
    child) of each file whose trace is missing or stale, one file per run, each cached as its run ends: a run
    stopped while tracing (a signal, `timeout`) keeps the files it traced. Returns the entries, the files traced
    now, the seconds."""
    cache.mkdir(parents=True, exist_ok=True)
    keys = {test: trace_key(test) for test in tests}
    entries: dict[str, Any] = {}
    for test in tests:
        cached = _cache_path(cache, test)
        if cached.exists():
            entry = json.loads(cached.read_text())
            if entry.get("key") == keys[test]:
                entries[test] = entry
    stale = [test for test in tests if test not in entries]
    seconds = 0.0
    for test in stale:
        entries[test], took = _traced_run(test, keys[test], workdir)
        _cache_path(cache, test).write_text(json.dumps(entries[test]))
        seconds += took
    return entries, stale, seconds


def _traced_run(test: str, key: str, workdir: Path) -> tuple[dict[str, Any], float]:
    """One test file run under `CoverageRecorder` in a forked child: its trace entry and the run's seconds."""
    out = workdir / "trace.json"
    out.unlink(missing_ok=True)

    def job() -> int:
        import pytest

        recorder = CoverageRecorder(package_files())
        code = pytest.main([*PYTEST_OPTIONS, test], plugins=[recorder])
        covered = recorder.covering()
        imports = sorted(name for name in sys.modules if not name.startswith((PACKAGE, "tests", "_", "mutate")))
        if code not in (0, 1):  # 1: some tests failed (left out); anything else: the run did not happen
            return 10 + int(code)
        ids = sorted(t for t in recorder.durations if t.split("::")[0] == test)
        index = {t: i for i, t in enumerate(ids)}
        modules: dict[str, Any] = {}
        for path, found in covered.items():
            lines = {str(n): sorted(index[t] for t in ts if t in index) for n, ts in found["lines"].items()}
            units = {u: sorted(index[t] for t in ts if t in index) for u, ts in found["units"].items()}
            lines = {n: ts for n, ts in lines.items() if ts}
            if lines:
                modules[path] = {"lines": lines, "units": {u: ts for u, ts in units.items() if ts}}
        entry = {
            "key": key,
            "tests": ids,
            "seconds": [round(recorder.durations[t], 4) for t in ids],
            "setup_seconds": [round(recorder.setups.get(t, 0.0), 4) for t in ids],
            "failed": sorted(t for t in recorder.failed if t in index),
            "modules": modules,
            "imports": imports,  # what the traced run had imported (libraries), for `warm_imports`
        }
        out.write_text(json.dumps(entry))
        return 0

    verdict, seconds = fork_run(job, 4 * 3600, quiet=True)
    if verdict != "exit:0" or not out.exists():
        raise SystemExit(f"the traced run of {test} did not finish ({verdict} after {seconds:.0f} s)")
    return json.loads(out.read_text()), seconds


def warm_imports(names: list[str]) -> tuple[int, int]:
    """Import in this process the libraries the traced tests imported (not the package, not the tests), so that
    every forked mutant finds them loaded: a test's first use of torch's fake tensors (sympy), a model library or
    torch's lazily imported parts costs seconds otherwise, in every mutant's process. Returns the modules imported
    and the threads they started (a fork copies a thread dead, with any lock it held: a mutant could then hang,
    and a timeout counts as killed; `mutate_module` warns)."""
    threads = len(os.listdir("/proc/self/task")) if Path("/proc/self/task").is_dir() else 0
    imported = 0
    saved = os.dup(1), os.dup(2)
    _silence()
    try:
        for name in names:
            if name not in sys.modules:
                try:
                    importlib.import_module(name)
                    imported += 1
                except (Exception, SystemExit):  # noqa: BLE001 - a module that imports only as part of another
                    continue
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
    started = len(os.listdir("/proc/self/task")) - threads if threads else 0
    return imported, started


@dataclass
class Coverage:
    """What the traced tests of one module ran: per line and per unit the tests that ran it ("*": any line of the
    module), each test's seconds (setup apart) and the tests that failed unmutated (left out)."""

    lines: dict[int, set[str]] = field(default_factory=dict)
    units: dict[str, set[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    setup_seconds: dict[str, float] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, module: str, entries: dict[str, Any]) -> Coverage:
        """The coverage of `module` (a path relative to the repository) by the traced test files."""
        coverage = cls()
        for entry in entries.values():
            ids = entry["tests"]
            coverage.seconds.update(zip(ids, entry["seconds"], strict=True))
            coverage.setup_seconds.update(zip(ids, entry["setup_seconds"], strict=True))
            coverage.failed.update(entry["failed"])
            found = entry["modules"].get(module, {"lines": {}, "units": {}})
            for line, tests in found["lines"].items():
                coverage.lines.setdefault(int(line), set()).update(ids[t] for t in tests)
            for unit, tests in found["units"].items():
                coverage.units.setdefault(unit, set()).update(ids[t] for t in tests)
                coverage.units.setdefault("*", set()).update(ids[t] for t in tests)
        return coverage

    def covering(self, kind: str, unit: str, span: tuple[int, int]) -> set[str]:
        """The tests that may see a mutant: those that ran a line of its statement's span; of a rebound constant,
        any line of the module; of an inverted default, a call of the function."""
        if kind == "rebind":
            tests = self.units.get("*", set())
        elif kind == "default":
            tests = self.units.get(unit, set())
        else:
            first, last = span
            tests = set().union(*(self.lines.get(line, set()) for line in range(first, last + 1)))
        return tests - self.failed


def order_tests(tests: set[str], seconds: dict[str, float], killers: list[str]) -> list[str]:
    """The order a mutant's tests run in: the tests that killed earlier mutants of the same function first (the
    latest first), then the rest fastest first (ties by name)."""
    first = [test for test in reversed(killers) if test in tests]
    first = list(dict.fromkeys(first))
    rest = sorted(tests - set(first), key=lambda test: (seconds.get(test, 0.0), test))
    return first + rest


def deadlines(tests: list[str], coverage: Coverage) -> list[float]:
    """Seconds from the start of a mutant's process by which each of its tests must have ended (`Guard`): three
    times the traced time of the tests so far, plus every setup (a shared fixture is built by whichever test
    comes first), plus the longest test (a cache one test filled in the traced run may fall to another), plus
    10 s. The last deadline is never below the whole run's budget before per-test deadlines (3x the sum + 10 s)."""
    setups = sum(coverage.setup_seconds.get(test, 0.0) for test in tests)
    calls = [coverage.seconds.get(test, 0.0) - coverage.setup_seconds.get(test, 0.0) for test in tests]
    longest = max(calls, default=0.0)
    spent, out = 0.0, []
    for call in calls:
        spent += call
        out.append(TIMEOUT_FACTOR * (setups + spent + longest) + 10)
    return out


class Guard:
    """A pytest plugin in a mutant's process: runs the tests in the given order, ends the process (SIGALRM: a
    timeout) when a test runs past its deadline, and notes the first failing test (the killer)."""

    def __init__(self, tests: list[str], deadlines_s: list[float], note: Path) -> None:
        self.order = {test: position for position, test in enumerate(tests)}
        self.deadlines = dict(zip(tests, deadlines_s, strict=True))
        self.note = note
        self.began = time.perf_counter()
        self.ran = 0
        self.tests_s = 0.0
        self.killer = ""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[Any]) -> None:
        items.sort(key=lambda item: self.order.get(item.nodeid, len(self.order)))

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> None:  # noqa: ARG002
        left = self.deadlines.get(item.nodeid, 0.0) - (time.perf_counter() - self.began)
        signal.setitimer(signal.ITIMER_REAL, max(left, 0.01))
        self.ran += 1

    def pytest_runtest_logreport(self, report: Any) -> None:
        self.tests_s += report.duration
        if report.failed and not self.killer:
            self.killer = report.nodeid

    def pytest_sessionfinish(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.note.write_text(json.dumps({"killer": self.killer, "ran": self.ran, "tests_s": round(self.tests_s, 4)}))


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
    """The test files that import the module (by its dotted name, or `from layerprof.folder import <name>`), and
    its mirror in tests/ (tests/predict/test_calibration.py for predict/calibration.py, and its _parts file), which
    may reach it through the CLI alone."""
    dotted = module_name(path)
    package, _, stem = dotted.rpartition(".")
    pattern = re.compile(rf"\b{re.escape(dotted)}\b|from {re.escape(package)} import [^\n]*\b{re.escape(stem)}\b")
    mirror = ROOT / "tests" / path.resolve().relative_to(ROOT / PACKAGE).parent
    mirrors = {mirror / f"test_{path.stem}.py", mirror / f"test_{path.stem}_parts.py"}
    return sorted(
        str(test.relative_to(ROOT))
        for test in (ROOT / "tests").rglob("test_*.py")
        if test in mirrors or pattern.search(test.read_text(encoding="utf-8"))
    )


# ---------------------------------------------------------------- the run


@dataclass
class ModuleReport:
    module: str
    tests: list[str]
    mutants: list[Mutant] = field(default_factory=list)
    baseline_failures: list[str] = field(default_factory=list)
    commit: str = ""  # the code scored: HEAD, "+" when the work tree differs from it
    traced_now: list[str] = field(default_factory=list)  # the test files traced by this run (the rest: cached)
    trace_seconds: float = 0.0
    mutant_seconds: float = 0.0  # all the mutants' processes, end to end
    warm_imports: int = 0  # libraries imported before the mutants fork (`warm_imports`)
    stopped_by: str = ""  # the signal that stopped the run before every mutant ran (SIGINT, SIGTERM, SIGHUP)
    sampled: int = 0  # `--sample N`: the N mutants drawn (0: every mutant, or the first `--limit`)
    seed: int = 0  # the draw's seed

    def count(self, *verdicts: str) -> int:
        return sum(m.verdict in verdicts for m in self.mutants)

    @property
    def score(self) -> float | None:
        scored = len(self.mutants) - self.count("error", "")
        return self.count("killed", "timeout") / scored if scored else None

    def interval(self) -> tuple[float, float] | None:
        """The score's 95% Wilson interval when it comes from a sample of the mutants (None when all ran)."""
        scored = len(self.mutants) - self.count("error", "")
        if not self.sampled or not scored:
            return None
        return wilson_interval(self.count("killed", "timeout"), scored)

    def summary(self) -> str:
        score = "n/a" if self.score is None else f"{self.score:.1%}"
        interval = self.interval()
        if interval is not None:
            score += f" (95% interval {interval[0]:.1%}-{interval[1]:.1%}; sample of {self.sampled}, seed {self.seed})"
        ran = [m for m in self.mutants if m.seconds]
        per_mutant = f"{sum(m.seconds for m in ran) / len(ran):.2f} s per mutant run" if ran else "no mutant run"
        return (
            f"{self.module}: {score} killed ({self.count('killed')} killed, {self.count('timeout')} timed out, "
            f"{self.count('survived')} survived, {self.count('uncovered')} uncovered, {self.count('error')} errors, "
            f"{self.count('')} not run, of {len(self.mutants)}; {per_mutant}; traced {len(self.traced_now)} of "
            f"{len(self.tests)} test files in {self.trace_seconds:.0f} s; at {self.commit}; "
            f"tests: {', '.join(self.tests)})" + (f"; stopped by {self.stopped_by}" if self.stopped_by else "")
        )


def wilson_interval(killed: int, scored: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion `killed / scored` (z = 1.96: 95%), which stays inside [0, 1] and is
    honest at a score of 100%, where the normal approximation's width is zero."""
    share = killed / scored
    centre = (share + z * z / (2 * scored)) / (1 + z * z / scored)
    half = z * ((share * (1 - share) / scored + z * z / (4 * scored * scored)) ** 0.5) / (1 + z * z / scored)
    return max(0.0, centre - half), min(1.0, centre + half)


def choose_mutants(mutants: list[Mutant], limit: int | None, sample: int | None, seed: int) -> list[Mutant]:
    """The mutants to run: every one, the first `limit`, or `sample` of them drawn uniformly without replacement
    with `seed`, in the order drawn, so that a run stopped early (a signal, a `timeout`) still scores a uniform
    sample of what it ran. The draw is the first `sample` of one seeded shuffle: the same on every run, and a larger
    sample holds a smaller one (so `--again --sample 60` goes on from a run of `--sample 30`)."""
    if sample is not None and sample < len(mutants):
        shuffled = list(mutants)
        random.Random(seed).shuffle(shuffled)
        return shuffled[:sample]
    return mutants if limit is None else mutants[:limit]


def _matches(mutant: Mutant, before: dict[str, Any]) -> bool:
    return all(before.get(name) == getattr(mutant, name) for name in ("index", "line", "description", "unit"))


def mutate_module(
    path: Path,
    tests: list[str],
    wanted: set[int] | None,
    workdir: Path,
    limit: int | None,
    cache: Path,
    progress: Path | None = None,
    previous: dict[str, Any] | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> ModuleReport:
    """Run every mutant of `path` (the first `limit`, or a seeded draw of `sample`) against the tests that ran its
    statement. With `previous` (an earlier report of the same source), its killed, timed-out and errored mutants keep
    their verdicts and the rest run again."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    finder = Sites(lines, wanted)
    finder.visit(tree)
    spans = statement_spans(tree)
    report = ModuleReport(str(path.relative_to(ROOT)), tests, commit=_commit())
    for index, (node, _, description, _, unit) in enumerate(finder.found):
        line = getattr(node, "lineno", 0)
        column = getattr(node, "col_offset", 0)
        report.mutants.append(Mutant(index, line, description, unit, lines[line - 1].strip(), column))
    killers: dict[str, list[str]] = {}  # unit -> the tests that killed its mutants, in order
    done: set[int] = set()
    for before in (previous or {}).get("mutants", []):
        index = before.get("index", -1)
        if 0 <= index < len(report.mutants) and _matches(report.mutants[index], before):
            if before.get("verdict") in ("killed", "timeout", "error"):
                mutant = report.mutants[index]
                mutant.verdict, mutant.seconds = before["verdict"], before.get("seconds", 0.0)
                mutant.tests_run, mutant.killer = before.get("tests_run", 0), before.get("killer", "")
                done.add(index)
            if before.get("killer"):
                killers.setdefault(before["unit"], []).append(before["killer"])
    print(f"{report.module}: {len(report.mutants)} mutants ({len(done)} decided before); tests {' '.join(tests)}")
    warm_up(tests)
    entries, report.traced_now, report.trace_seconds = trace_tests(tests, cache, workdir)
    coverage = Coverage.of(report.module, entries)
    report.baseline_failures = sorted(coverage.failed)
    if coverage.failed:
        print(f"  tests failing before any mutation (left out): {', '.join(report.baseline_failures)}", flush=True)
    names = sorted({name for entry in entries.values() for name in entry.get("imports", [])})
    report.warm_imports, started = warm_imports(names)
    if started:
        print(f"  warning: importing the tests' libraries started {started} threads; a hang may be one", flush=True)
    gc.freeze()  # the forked mutants' collector leaves the parent's objects alone: their pages stay shared
    selected = choose_mutants(report.mutants, limit, sample, seed)
    if sample is not None and sample < len(report.mutants):
        report.sampled, report.seed = sample, seed
    try:
        _run_mutants(path, tree, finder, spans, coverage, report, selected, done, killers, workdir, progress)
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM, SIGHUP: the report keeps what ran (`--again` goes on)
        report.stopped_by = stopped_by(stop).name
        print(f"\n  stopped by {report.stopped_by}: {report.count('')} mutants not run", flush=True)
    gc.unfreeze()
    print(flush=True)
    return report


def _run_mutants(
    path: Path,
    tree: ast.Module,
    finder: Sites,
    spans: dict[int, tuple[int, int]],
    coverage: Coverage,
    report: ModuleReport,
    selected: list[Mutant],
    done: set[int],
    killers: dict[str, list[str]],
    workdir: Path,
    progress: Path | None,
) -> None:
    for mutant in selected:
        if mutant.index in done:
            continue
        site = finder.found[mutant.index]
        node, kind = site[0], site[1]
        covering = coverage.covering(kind, mutant.unit, spans.get(id(node), (mutant.line, mutant.line)))
        ordered = order_tests(covering, coverage.seconds, killers.get(mutant.unit, []))
        mutant.tests_run = len(ordered)
        if not ordered:
            mutant.verdict = "uncovered"
            continue
        limits = deadlines(ordered, coverage)
        note = workdir / f"mutant-{mutant.index}.json"

        def job(
            site: Site = site, ordered: list[str] = ordered, limits: list[float] = limits, note: Path = note
        ) -> int:
            import pytest

            try:
                apply_mutant(path, site, tree)
                clear_caches()
            except Exception:  # noqa: BLE001
                return 98
            signal.setitimer(signal.ITIMER_REAL, limits[-1] + 60)  # until the first test's own deadline
            return int(pytest.main(["-x", *PYTEST_OPTIONS, *ordered], plugins=[Guard(ordered, limits, note)]))

        outcome, mutant.seconds = fork_run(job, None)
        report.mutant_seconds += mutant.seconds
        mutant.verdict = {
            "exit:0": "survived",
            "exit:98": "error",  # the mutant could not be applied
            "exit:4": "error",  # pytest could not find a test it was given
            "exit:5": "error",
            "timeout": "timeout",
        }.get(outcome, "killed")
        if note.exists():
            ran = json.loads(note.read_text())
            mutant.killer, mutant.tests_ran, mutant.tests_seconds = ran["killer"], ran["ran"], ran["tests_s"]
            if mutant.killer:
                killers.setdefault(mutant.unit, []).append(mutant.killer)
        mark = {"survived": "S", "killed": ".", "timeout": "T", "error": "E"}[mutant.verdict]
        print(mark, end="", flush=True)
        if progress is not None:
            progress.write_text(json.dumps(asdict(report), indent=2) + "\n")


def _commit() -> str:
    """HEAD, with "+" where the package differs from it ("" outside a git checkout)."""
    try:
        head = git("rev-parse", "--short=12", "HEAD").strip()
        return head + ("+" if git("status", "--porcelain", "--untracked-files=no", PACKAGE).strip() else "")
    except (subprocess.CalledProcessError, OSError):
        return ""


def _show(path: Path, index: int, tests: list[str], cache: Path, workdir: Path) -> None:
    """Run mutant `index` against the tests that ran its statement, with their output."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    finder = Sites(source.splitlines(), None)
    finder.visit(tree)
    node, kind, description, _, unit = site = finder.found[index]
    print(f"mutant {index}: line {node.lineno}: {description} in {unit}\n  {source.splitlines()[node.lineno - 1]}")
    warm_up(tests)
    entries, _, _ = trace_tests(tests, cache, workdir)
    coverage = Coverage.of(str(path.relative_to(ROOT)), entries)
    span = statement_spans(tree).get(id(node), (node.lineno, node.lineno))
    ordered = order_tests(coverage.covering(kind, unit, span), coverage.seconds, [])
    print(f"mutant {index}: {len(ordered)} tests ran its statement (lines {span[0]}-{span[1]})")
    if not ordered:
        return

    def job() -> int:
        import pytest

        apply_mutant(path, site, tree)
        clear_caches()
        return int(pytest.main(["-x", *PYTEST_OPTIONS, *ordered]))

    outcome, seconds = fork_run(job, 3600, quiet=False)
    print(f"mutant {index}: {outcome} after {seconds:.1f} s")


def write_report(report: ModuleReport, out: Path, stem: str) -> list[str]:
    """The report as JSON and as text (summary and survivors); returns the text's lines."""
    (out / f"{stem}.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    lines = [report.summary(), ""]
    for mutant in report.mutants:
        if mutant.verdict in ("survived", "uncovered"):
            where = f"line {mutant.line}:{mutant.column}"
            lines.append(f"  {mutant.index} {mutant.verdict}: {where} ({mutant.unit}): {mutant.description}")
            lines.append(f"      {mutant.source_line}")
    (out / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", type=Path, help="modules to mutate (default: those changed vs --base)")
    parser.add_argument("--base", default=os.environ.get("MUTATE_BASE", "main"), help="git ref to diff against")
    parser.add_argument("--changed-lines", action="store_true", help="mutate only the lines changed vs --base")
    parser.add_argument("--tests", nargs="+", help="test files (default: the files importing a module)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--show", type=int, metavar="N", help="run mutant N with the tests' output")
    parser.add_argument("--limit", type=int, help="run only the first N mutants (a smoke check)")
    parser.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="run N mutants drawn at random (seeded) and report the score with its 95%% interval: a large module's "
        "score at a fraction of the time",
    )
    parser.add_argument("--seed", type=int, default=0, help="the seed of --sample's draw (default 0)")
    parser.add_argument(
        "--again", action="store_true", help="run again only the mutants the last report left alive (after new tests)"
    )
    parser.add_argument("--min-score", type=float, default=0.0, help="exit 1 when a module scores below this")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mutate", help="where the reports go")
    parser.add_argument(
        "--trace-cache", type=Path, default=ROOT / "build" / "mutate" / "trace", help="traced runs, per test file"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)  # pytest finds tests/conftest.py from here
    missing = [str(path) for path in args.modules if not path.is_file()]
    if missing:
        print(f"no such module: {', '.join(missing)}; name files under {PACKAGE}/", file=sys.stderr)
        return 2
    if args.sample is not None and args.sample < 1:
        print(f"--sample {args.sample}: give the number of mutants to draw, 1 or more", file=sys.stderr)
        return 2
    try:
        modules = [path.resolve() for path in args.modules] or changed_modules(args.base)
    except subprocess.CalledProcessError as error:
        print(f"git cannot diff against {args.base!r} ({error.stderr.strip()}); pass --base REF", file=sys.stderr)
        return 2
    if not modules:
        print(f"no module of {PACKAGE}/ changed against {args.base}; name modules to mutate")
        return 0
    with stopping_on_signals():
        try:
            return _mutate_all(args, modules)
        except KeyboardInterrupt as stop:  # while importing or tracing: no mutant of the module finished
            number = stopped_by(stop)
            print(f"\nstopped by {number.name} before a mutant ran: no report written", file=sys.stderr)
            return 128 + number


def _mutate_all(args: argparse.Namespace, modules: list[Path]) -> int:
    """Mutate each module in turn and write its report; a run stopped by a signal ends after the module it stopped
    in (exit 128 + the signal's number), else exit 1 when a module scored below `--min-score`."""
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
        stem = module_name(path).removeprefix(f"{PACKAGE}.").replace(".", "-")
        with tempfile.TemporaryDirectory() as scratch:
            if args.show is not None:
                _show(path, args.show, tests, args.trace_cache, Path(scratch))
                continue
            previous = None
            if args.again:
                last = args.out / f"{stem}.json"
                if not last.exists():
                    print(f"{path.relative_to(ROOT)}: no report at {last} to run again; run it whole first")
                    return 2
                previous = json.loads(last.read_text())
            report = mutate_module(
                path,
                tests,
                wanted,
                Path(scratch),
                args.limit,
                args.trace_cache,
                args.out / f"{stem}.json",
                previous,
                args.sample,
                args.seed,
            )
        print("\n".join(write_report(report, args.out, stem)), flush=True)
        if report.stopped_by:
            return 128 + signal.Signals[report.stopped_by]
        if report.score is not None:
            worst = min(worst, report.score)
    return 1 if worst < args.min_score else 0


if __name__ == "__main__":
    sys.exit(main())
