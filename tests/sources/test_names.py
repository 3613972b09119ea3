"""Model names without torch: the recorded table is what the libraries list, `models` and a refused option or
name never import torch, and a release other than the recorded one is asked of the library itself."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from layerprof.sources import names, registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("source", [entry.name for entry in registry.SOURCES if entry.package is not None])
def test_the_recorded_names_are_the_installed_librarys(source: str) -> None:
    """Fails after a pin moves: rerun tools/model_names.py."""
    entry = registry.source(source)
    assert entry.package is not None and entry.lister is not None
    recorded = names.recorded_names(source, entry.package)
    assert recorded is not None, f"the table holds another {source} release: rerun tools/model_names.py"
    assert recorded == entry.lister()
    if source == "torchvision":
        table = json.loads(names.NAME_TABLE.read_text())["torchvision"]
        names._table.cache_clear()
        assert table["tasks"] == {module: names.torchvision_task_names()[module] for module in names.TORCHVISION_TASKS}


def test_another_release_is_asked_of_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(names, "installed_release", lambda distribution: "0.0.0-not-recorded")
    assert names.recorded_names("litgpt", "litgpt") is None
    registry.source_names.cache_clear()
    asked: list[str] = []
    litgpt = replace(registry.source("litgpt"), lister=lambda: asked.append("litgpt") or ["only-this"])
    monkeypatch.setattr(registry, "SOURCES", tuple(litgpt if s.name == "litgpt" else s for s in registry.SOURCES))
    try:
        assert registry.known_names("litgpt") == {"litgpt": ["only-this"]}
        assert asked == ["litgpt"]
    finally:
        registry.source_names.cache_clear()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["models", "--json"], None),
        (["profile", "resnet18", "--batch-sizes", "abc"], "error: --batch-sizes expects positive integers"),
        (["profile", "resnt18"], "error: unknown model 'resnt18'; did you mean resnet18"),
        (["estimate", "fasterrcnn_resnet50_fpn"], "error: fasterrcnn_resnet50_fpn is a torchvision detection model"),
        (["layers", "resnet18", "--input-shape", "3,x"], "error: --input-shape expects positive integers"),
        (["layers", "convnext_atto"], "error: model 'convnext_atto' is a timm name: give timm:convnext_atto"),
        (["layers", "llama"], "error: model 'llama' is a hf name: give hf:llama"),
        (["layers", "timmm:resnet18"], "error: unknown source prefix 'timmm:' in 'timmm:resnet18' (choose one of "),
        (
            ["models", "--source", "timmm"],
            "error: --source 'timmm': choose one of preset, torchvision, litgpt, timm, hf\n",
        ),
        (["ladder", "p.json", "--export", "optuna", "--objective", "missing.py:f"], "error: --objective"),
    ],
)
def test_listing_names_and_refusing_input_import_no_torch(arguments: list[str], message: str | None) -> None:
    code = (
        "import sys\nfrom layerprof.cli.commands import app\n"
        f"try:\n    app({arguments!r})\nexcept SystemExit as done:\n    code = done.code\n"
        "print('torch' in sys.modules, code, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    torch_imported, exit_code = done.stderr.strip().splitlines()[-1].split()
    assert torch_imported == "False", done.stderr
    assert exit_code == ("0" if message is None else "2"), done.stderr
    if message is not None:
        assert done.stderr.startswith(message), done.stderr
