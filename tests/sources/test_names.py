"""Model names without torch: the recorded table is what the libraries list, `models` and a refused option or
name never import torch, and a release other than the recorded one is asked of the library itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from layerprof.sources import names

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("source", ["torchvision", "litgpt", "timm", "hf"])
def test_the_recorded_names_are_the_installed_librarys(source: str) -> None:
    """Fails after a pin moves: rerun tools/model_names.py."""
    recorded = names.recorded_names(source)
    assert recorded is not None, f"the table holds another {source} release: rerun tools/model_names.py"
    assert recorded == names.LIVE_LISTERS[source]()
    if source == "torchvision":
        entry = json.loads(names.NAME_TABLE.read_text())["torchvision"]
        names._table.cache_clear()
        assert entry["tasks"] == {module: names.torchvision_task_names()[module] for module in names.TORCHVISION_TASKS}


def test_another_release_is_asked_of_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(names, "installed_release", lambda source: "0.0.0-not-recorded")
    assert names.recorded_names("litgpt") is None
    names.source_names.cache_clear()
    asked: list[str] = []
    monkeypatch.setitem(names.LIVE_LISTERS, "litgpt", lambda: asked.append("litgpt") or ["only-this"])
    try:
        assert names.known_names("litgpt") == {"litgpt": ["only-this"]}
        assert asked == ["litgpt"]
    finally:
        names.source_names.cache_clear()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["models", "--json"], None),
        (["profile", "resnet18", "--batch-sizes", "abc"], "error: --batch-sizes expects positive integers"),
        (["profile", "resnt18"], "error: unknown model 'resnt18'; did you mean resnet18"),
        (["estimate", "fasterrcnn_resnet50_fpn"], "error: fasterrcnn_resnet50_fpn is a torchvision detection model"),
        (["layers", "resnet18", "--input-shape", "3,x"], "error: --input-shape expects positive integers"),
        (["layers", "convnext_atto"], "error: model 'convnext_atto' is a timm name: give timm:convnext_atto"),
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
