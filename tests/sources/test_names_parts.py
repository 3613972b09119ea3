"""sources/names.py part by part (issue 40's mutation survivors): torchvision's non-classifiers come from the
recorded table only where it holds them for the installed release, and an unknown name's hint lists three close
names."""

from __future__ import annotations

import pytest

from layerprof.sources import names

RECORDED = {"detection": ["recorded_detector"]}


@pytest.mark.parametrize(
    ("table", "recorded"),
    [
        ({"torchvision": {"version": "9.9.9", "names": [], "tasks": RECORDED}}, True),
        ({"torchvision": {"version": "0.0.1", "names": [], "tasks": RECORDED}}, False),  # another release
        ({"torchvision": {"version": "9.9.9", "names": []}}, False),  # a table of before the tasks were recorded
        ({}, False),  # no table
    ],
)
def test_torchvisions_tasks_are_the_tables_only_for_the_installed_release(
    monkeypatch: pytest.MonkeyPatch, table: dict, recorded: bool
) -> None:
    monkeypatch.setattr(names, "_table", lambda: table)
    monkeypatch.setattr(names, "installed_release", lambda distribution: {"torchvision": "9.9.9"}[distribution])
    tasks = names.torchvision_task_names()
    if recorded:
        assert tasks == RECORDED
    else:  # asked of torchvision itself
        assert list(tasks) == list(names.TORCHVISION_TASKS) and "fasterrcnn_resnet50_fpn" in tasks["detection"]


def test_an_unknown_names_hint_lists_the_three_closest() -> None:
    candidates = ["resnet18", "resnet34", "resnet50", "resnet101", "vgg11"]
    error = names.unknown_name("resnet1", candidates, "model")
    assert str(error) == "unknown model 'resnet1'; did you mean resnet18, resnet101, resnet50?"
    error = names.unknown_name("vit", ["vgg11"], "model")  # no close name: `layerprof models` instead
    assert str(error) == "unknown model 'vit'; `layerprof models` lists the accepted names"
