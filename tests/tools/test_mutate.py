"""tools/mutate.py's operator classes for the bugs people write (issue 40), on a small sample source: each site is
found, and each mutation, applied, changes what the code does the way the bug would."""

from __future__ import annotations

import ast
import textwrap
from types import ModuleType

import pytest

from tests.tools.conftest import load_tool

SAMPLE = textwrap.dedent(
    '''
    def scale(width: int, height: int, flag: bool = False, *, strict: bool = True) -> int:
        """A docstring is never mutated."""
        return width * 2 + height


    def lookup(table: dict, key: str) -> float:
        if key == "cuda":
            return table["peak"]
        return table.get("fallback", 0.0)


    def bounded(values: list) -> list:
        if len(values) > 3:
            return values[:2]
        return [v for v in range(1, 4)]


    def pair(a: float, b: float) -> tuple:
        return a, b


    class Counter:
        def __init__(self) -> None:
            self.seen = []
            self.done = False

        def run(self) -> None:
            try:
                self.done = True
            finally:
                self.done = False
    '''
)


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    return load_tool("mutate")


def sites(tool: ModuleType) -> tuple[ast.Module, list]:
    tree = ast.parse(SAMPLE)
    finder = tool.Sites(SAMPLE.splitlines(), None)
    finder.visit(tree)
    return tree, finder.found


def described(found: list, kind: str) -> list[tuple[str, str]]:
    return [(unit, description) for _, site_kind, description, _, unit in found if site_kind == kind]


def run_mutant(tool: ModuleType, tree: ast.Module, site: tuple) -> dict:
    namespace: dict = {}
    exec(compile(tool.mutated_tree(tree, site), "<sample>", "exec"), namespace)  # noqa: S102
    return namespace


def site_of(found: list, description: str, unit: str) -> tuple:
    return next(s for s in found if s[2] == description and s[4] == unit)


def test_a_name_is_swapped_for_another_parameter_of_the_same_type(tool: ModuleType) -> None:
    tree, found = sites(tool)
    assert described(found, "rename") == [
        ("scale", "width -> height (same annotation)"),
        ("scale", "height -> width (same annotation)"),
        ("pair", "a -> b (same annotation)"),
        ("pair", "b -> a (same annotation)"),
    ]  # `table` and `key` differ in type: not swapped; nor `flag` and `strict` (no name of theirs is read)
    mutated = run_mutant(tool, tree, site_of(found, "width -> height (same annotation)", "scale"))
    assert mutated["scale"](5, 1) == 3 and run_mutant(tool, tree, found[0])["scale"]  # 1 * 2 + 1, not 11


def test_string_keys_and_compared_literals_change(tool: ModuleType) -> None:
    tree, found = sites(tool)
    keys = [d for u, d in described(found, "constant") if u == "lookup" and "'" in d]
    assert keys == ["'cuda' -> 'cuda_'", "'peak' -> 'peak_'", "'fallback' -> 'fallback_'"]
    mutated = run_mutant(tool, tree, site_of(found, "'peak' -> 'peak_'", "lookup"))
    with pytest.raises(KeyError):
        mutated["lookup"]({"peak": 1.0}, "cuda")
    mutated = run_mutant(tool, tree, site_of(found, "'cuda' -> 'cuda_'", "lookup"))
    assert mutated["lookup"]({"peak": 1.0, "fallback": 2.0}, "cuda") == 2.0


def test_an_integer_edge_moves_down_by_one(tool: ModuleType) -> None:
    tree, found = sites(tool)
    edges = [d for u, d in described(found, "constant") if u == "bounded" and "edge" in d]
    assert edges == ["3 -> 2 (edge)", "2 -> 1 (edge)", "1 -> 0 (edge)", "4 -> 3 (edge)"]
    mutated = run_mutant(tool, tree, site_of(found, "3 -> 2 (edge)", "bounded"))
    assert mutated["bounded"]([7, 8, 9]) == [7, 8]  # three values are no longer "at most three"
    mutated = run_mutant(tool, tree, site_of(found, "4 -> 3 (edge)", "bounded"))
    assert mutated["bounded"]([]) == [1, 2]


def test_an_element_of_a_returned_tuple_is_dropped(tool: ModuleType) -> None:
    tree, found = sites(tool)
    assert described(found, "drop") == [
        ("pair", "element 0 of the returned tuple dropped"),
        ("pair", "element 1 of the returned tuple dropped"),
    ]
    assert run_mutant(tool, tree, site_of(found, "element 0 of the returned tuple dropped", "pair"))["pair"](1, 2) == (
        2,
    )


def test_a_boolean_default_is_inverted_in_the_live_function(tool: ModuleType) -> None:
    _, found = sites(tool)
    defaults = [(unit, description, payload) for _, kind, description, payload, unit in found if kind == "default"]
    assert defaults == [
        ("scale", "default flag=False -> True", ("positional", 0, True)),
        ("scale", "default strict=True -> False", ("keyword", "strict", False)),
    ]

    def live(a: int, flag: bool = False, *, strict: bool = True) -> tuple[bool, bool]:
        return flag, strict

    tool.live_default(live, "positional", 0, True)
    tool.live_default(live, "keyword", "strict", False)
    assert live(1) == (True, False)


def test_an_inverted_default_reaches_the_signature_a_wrapper_declares(tool: ModuleType) -> None:
    """A decorator that adds CLI options (`with_recipe_options`) gives Typer a signature of its own and passes every
    value on: the inverted default must be in that signature, or a command's flag is never mutated."""
    import functools
    import inspect

    def command(a: int, flag: bool = False, *, strict: bool = True) -> tuple[bool, bool]:
        return flag, strict

    @functools.wraps(command)
    def wrapper(**kwargs: bool) -> tuple[bool, bool]:
        return command(1, **kwargs)

    wrapper.__signature__ = inspect.signature(command)  # type: ignore[attr-defined]
    tool.live_default(command, "positional", 0, True, wrappers=[wrapper])
    tool.live_default(command, "keyword", "strict", False, wrappers=[wrapper])
    declared = {name: p.default for name, p in inspect.signature(wrapper).parameters.items()}
    assert declared == {"a": inspect.Parameter.empty, "flag": True, "strict": False}
    assert command(1) == (True, False)


def test_a_reset_and_a_restore_are_skipped(tool: ModuleType) -> None:
    tree, found = sites(tool)
    assert described(found, "delete") == [
        ("Counter.__init__", "reset skipped"),
        ("Counter.__init__", "reset skipped"),
        ("Counter.run", "reset skipped"),
        ("Counter.run", "restore in `finally:` skipped"),
    ]
    restore = site_of(found, "restore in `finally:` skipped", "Counter.run")
    counter = run_mutant(tool, tree, restore)["Counter"]()
    counter.run()
    assert counter.done is True  # the restore did not run
    assert not hasattr(run_mutant(tool, tree, found[[s[2] for s in found].index("reset skipped")])["Counter"](), "seen")
