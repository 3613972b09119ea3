"""The package's shape: no import cycle (deferred imports included), a thin CLI, help that names the library's
own lists, and the one definition of a recipe, a Ray address and a name list."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.cli.options import check_profile_executor
from layerprof.errors import LayerprofError
from layerprof.parsing import parse_names, parse_ray_address
from layerprof.profile import RECIPE_SETTINGS, SweepSettings, recipe_difference

PACKAGE = Path(__file__).resolve().parent.parent / "layerprof"


def module_of(path: Path) -> str:
    """A module's name inside the package: `errors`, `measure.jobs`."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules one file imports, at the top or inside a function, but not for type hints only."""
    tree = ast.parse(path.read_text())
    hints_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hints_only |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in hints_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "layerprof":
            inside = node.module.removeprefix("layerprof").removeprefix(".")
            found |= {inside} | {f"{inside}.{alias.name}".lstrip(".") for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {
                alias.name.removeprefix("layerprof.") for alias in node.names if alias.name.startswith("layerprof.")
            }
    return (found & modules) - {module_of(path)}


def package_modules() -> list[Path]:
    return [path for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"]


@functools.lru_cache(maxsize=1)
def _parsed_imports() -> tuple[tuple[str, frozenset[str]], ...]:
    modules = {module_of(path) for path in package_modules()}
    return tuple((module_of(path), frozenset(imports_of(path, modules))) for path in package_modules())


def import_graph() -> dict[str, set[str]]:
    """Each module's imports of the package's modules: the files parsed once per run (0.8 s; six tests ask), a
    fresh copy each call that a test may plant imports into."""
    return {module: set(imports) for module, imports in _parsed_imports()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def test_no_module_imports_another_in_a_cycle_even_inside_a_function() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = import_graph()
    graph["measure.jobs"] = graph["measure.jobs"] | {"predict.estimate"}  # the branch on settings.mode, gone
    found = cycles(graph)
    assert any({"predict.estimate", "measure.jobs"} <= set(cycle) for cycle in found), found


def test_the_measured_sweep_never_asks_for_the_estimate() -> None:
    for module in ("cells", "jobs"):
        assert "predict.estimate" not in import_graph()[f"measure.{module}"]
        assert 'mode == "estimate"' not in (PACKAGE / "measure" / f"{module}.py").read_text()


def test_the_cli_only_parses_calls_and_renders() -> None:
    source = (PACKAGE / "cli" / "commands.py").read_text()
    # 598 before --price/--prices/--gpu/--deadline/--workers (36), recipes (34), --objective/--wide (5)
    assert len(source.splitlines()) < 640
    assert not re.search(r"^\s*(from rich\b|import rich\b)", source, re.M)  # printing lives in cli/render.py
    assert "layerprof.outputs.tables" not in source  # so do the tables it prints


# Each folder is one concept; a folder imports only from the folders before it here (the root's shared modules first).
LAYERS = ("", "sources", "measure", "predict", "fidelity", "outputs", "cli")


def layer_of(module: str) -> int:
    """`python -m layerprof` (`__main__`) runs the command line and `api` gathers the public Python API from the
    folders: both sit above every folder."""
    return len(LAYERS) if module in ("__main__", "api") else LAYERS.index(module.rpartition(".")[0])


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, imported in graph.items() for b in imported if layer_of(b) > layer_of(a))


def test_the_package_is_these_folders_and_each_imports_only_from_those_before_it() -> None:
    folders = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    assert folders == set(LAYERS) - {""}
    assert upward_imports(import_graph()) == []


def test_the_layer_check_finds_a_planted_upward_import() -> None:
    graph = import_graph()
    graph["fidelity.correlate"] = graph["fidelity.correlate"] | {"outputs.figures"}  # a study drawing its own figure
    graph["sources.models"] = graph["sources.models"] | {"measure.jobs"}
    assert upward_imports(graph) == ["fidelity.correlate -> outputs.figures", "sources.models -> measure.jobs"]


def test_tests_mirror_the_folders_and_the_readme_maps_each_one() -> None:
    tests = Path(__file__).resolve().parent
    architecture = (
        (PACKAGE.parent / "docs" / "architecture.md").read_text().split("## The package", 1)[1].split("\n## ", 1)[0]
    )
    for folder in LAYERS[1:]:
        assert list((tests / folder).glob("test_*.py")), folder
        assert f"`{folder}/`" in architecture, folder
    for path in package_modules():
        assert f"`{path.name}`" in architecture, path  # every module is in the map


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


def test_models_help_names_every_source() -> None:
    text = help_text("models")
    assert "Only this source: preset, torchvision, litgpt, timm, hf." in text


def test_every_gpu_option_names_the_same_gpu_table() -> None:
    """estimate's --gpu and fit's --gpu list one table: the same MIG slices, H200 and B200 in both."""
    listed = []
    for command in ("estimate", "fit"):
        text = help_text(command)
        match = re.search(r"Known GPUs and MIG slices \(any case\): (.*?)\.(?: |$)", text)
        assert match is not None, text
        listed.append(match.group(1).split(", "))
    assert listed[0] == listed[1]
    assert {"T4", "L4", "H100", "H200", "B200", "1g.10gb", "H100-1g.10gb"} <= set(listed[0])


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("ray", (True, None)), ("ray:10.0.0.1:6379", (True, "10.0.0.1:6379")), ("16xL4", (False, None)),
     ("rayon", (False, None))],
)  # fmt: skip
def test_a_cluster_option_names_ray_with_or_without_an_address(text: str, parsed: tuple) -> None:
    assert parse_ray_address(text) == parsed


def test_names_keep_their_order_and_an_unknown_one_names_the_choices() -> None:
    assert parse_names("budget,layers", "--paths", ("layers", "budget"), "path") == ["budget", "layers"]
    with pytest.raises(LayerprofError, match=r"^--paths: unknown path 'zigzag'; choose from layers, budget$"):
        parse_names("layers,zigzag", "--paths", ("layers", "budget"), "path")


@pytest.mark.parametrize(
    ("on_ray", "cpus", "gpu_kinds", "address", "out", "message"),
    [
        (True, "0-3", "L4", None, None, "--cpus names this machine's CPUs"),
        (True, None, None, None, None, "--executor ray needs --gpu-kinds"),
        (True, None, "L4", None, Path("p.json"), "--out is a directory"),
        (False, None, "L4", None, None, "--gpu-kinds and --address need --executor ray"),
        (False, None, None, "127.0.0.1:6379", None, "--gpu-kinds and --address need --executor ray"),
    ],
)
def test_options_of_one_executor_are_refused_with_the_other(on_ray, cpus, gpu_kinds, address, out, message) -> None:
    with pytest.raises(LayerprofError, match=re.escape(message)):
        check_profile_executor(on_ray, cpus, gpu_kinds, address, out)


def test_options_that_fit_their_executor_pass() -> None:
    check_profile_executor(True, None, "L4,H100", "127.0.0.1:6379", Path("profiles"))
    check_profile_executor(False, "0-3", None, None, Path("p.json"))


def test_one_recipe_is_optimizer_precision_frozen_mode_adapters_checkpointing_and_compile() -> None:
    assert RECIPE_SETTINGS == (
        "optimizer", "precision", "eval_frozen", "checkpointing", "adapter", "adapter_layers", "adapter_rank",
        "adapter_alpha", "adapter_dropout", "adapter_targets", "compile_mode",
    )  # fmt: skip
    base = SweepSettings(batch_sizes=(1,), trainable_layer_counts=(1,))
    assert recipe_difference(base, SweepSettings(batch_sizes=(8,), trainable_layer_counts=(1, 2))) is None
    frozen = SweepSettings(batch_sizes=(1,), trainable_layer_counts=(1,), eval_frozen=True)
    assert recipe_difference(base, frozen) == ("eval_frozen", False, True)
    timed = SweepSettings(batch_sizes=(1,), trainable_layer_counts=(1,), max_steps=50)
    assert recipe_difference(base, timed) is None
    assert recipe_difference(base, timed, also=("max_steps",)) == ("max_steps", 30, 50)


def test_settings_are_resolved_once_with_the_family_default_and_the_split() -> None:
    from layerprof.measure.jobs import resolve_settings
    from layerprof.parsing import parse_layer_selection
    from layerprof.sources.workloads import Workload

    workload = Workload(family="causal-lm", seq_len=8, vocab_size=16, default_batch_sizes=(1, 4, 16))
    empty = SweepSettings(batch_sizes=(), trainable_layer_counts=())
    resolved = resolve_settings(empty, workload, 12, parse_layer_selection("2-4"), mode="estimate", target="cpu")
    assert (resolved.batch_sizes, resolved.trainable_layer_counts) == ((1, 4, 16), (2, 3, 4))
    assert (resolved.mode, resolved.target) == ("estimate", "cpu")
    given = SweepSettings(batch_sizes=(8,), trainable_layer_counts=())
    assert resolve_settings(given, workload, 12, parse_layer_selection("all")).trainable_layer_counts == tuple(
        range(1, 13)
    )
    assert resolve_settings(given, workload, 12, parse_layer_selection("all")).batch_sizes == (8,)


def test_failed_trials_are_kept_for_after_the_bar_and_finished_ones_advance_it() -> None:
    from layerprof.cli.render import TrialFailures
    from layerprof.fidelity.correlate import ContinuedResult, SegmentResult, TrialResult

    advanced: list[tuple[int, int]] = []
    failures = TrialFailures(lambda done, total: advanced.append((done, total)))
    failures.on_result(TrialResult(0, 2, 0.5, 0, loss=1.5), 1, 3)
    failures.on_result(TrialResult(1, 3, 0.25, 0, loss=None, error="diverged"), 2, 3)
    reached = SegmentResult(1, 0.25, 0.9)
    failures.on_result(ContinuedResult(2, 0, [[1, 0.25], [3, 1.0]], [reached], error="out of memory"), 3, 3)
    assert advanced == [(1, 3), (2, 3), (3, 3)]
    assert failures.lines == [
        "config 1 at z=3: diverged",
        "config 2, continued, at 1@0.25: out of memory",
    ]


def test_every_moved_module_name_lands_on_a_module_and_hides_none() -> None:
    """MOVED_MODULES, by which old specs are rewritten on load, names modules that exist under their new names."""
    from layerprof.profile import MOVED_MODULES

    now = {"layerprof." + module_of(path) for path in package_modules()}
    assert set(MOVED_MODULES.values()) <= now
    assert not {f"layerprof.{old}" for old in MOVED_MODULES} & now


def test_a_name_that_never_was_a_module_is_still_not_found() -> None:
    with pytest.raises(ModuleNotFoundError):
        __import__("layerprof.nonexistent")


def test_every_name_of_the_public_api_resolves_from_the_module_it_is_listed_under() -> None:
    import importlib

    import layerprof

    assert layerprof.__all__[0] == "__version__"
    assert len(layerprof.__all__) == 29  # __version__ and the 28 names of _LAZY: one added or lost shows here
    for name in layerprof.__all__[1:]:
        home = importlib.import_module(layerprof._LAZY[name])
        assert name in vars(home), f"layerprof.{name} is listed under {home.__name__}, which has no {name}"
        assert getattr(layerprof, name) is vars(home)[name]
    with pytest.raises(AttributeError, match=r"^module 'layerprof' has no attribute 'profile_models'$"):
        layerprof.profile_models  # noqa: B018  (a near miss of a public name)


def test_importing_the_package_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, layerprof; assert 'torch' not in sys.modules, 'layerprof imported torch'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr


def test_each_typed_set_of_names_is_its_registry() -> None:
    """The Literals the command line takes name exactly the registry's entries (a new exporter or grid preset needs
    both, and the type checker holds the registry's keys to the Literal)."""
    from typing import get_args

    from layerprof.fidelity.grids import GRID_PRESETS, GridPresetName
    from layerprof.outputs.exporters import EXPORTERS, ExportName

    assert list(EXPORTERS) == list(get_args(ExportName)) == ["neps", "optuna", "ray", "smac", "limits"]
    assert list(GRID_PRESETS) == list(get_args(GridPresetName)) == ["small", "paper"]
