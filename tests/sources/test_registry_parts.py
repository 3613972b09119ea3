"""registry.py part by part (issue 40's mutation survivors): which MODEL strings have a factory's form, which one-name
modules are a mistyped prefix, a file named without its factory, a bare torchvision detector refused with why, and
a source's names read from the recorded table where it matches the installed release."""

from __future__ import annotations

import dataclasses

import pytest

from layerprof.errors import LayerprofError
from layerprof.sources import registry
from layerprof.sources.registry import is_user_spec, resolve, source_names, unknown_prefix


@pytest.mark.parametrize(
    ("spec", "factory"),
    [
        ("path/to/file.py:make", True),
        ("models/zoo:build", True),  # a path without .py: still a factory's form (its builder says what is wrong)
        ("my_package.models:build", True),
        ("my-package.models:build", False),  # not a module path
        ("timm:resnet18", False),  # a source's prefix
        ("hf:bert", False),
        ("model.py:", False),  # no function
        ("model.py:2fast", False),
        (":make", False),
        ("resnet18", False),
    ],
)
def test_a_factorys_form_is_a_file_a_path_or_a_module_and_a_function_name(spec: str, factory: bool) -> None:
    assert is_user_spec(spec) is factory


def test_only_a_one_name_module_no_import_finds_is_a_mistyped_prefix() -> None:
    assert unknown_prefix("models/zoo:build") is None  # a path: its builder says what is wrong
    assert unknown_prefix("json.nosuch:build") is None  # a dotted module: its import says what is wrong
    assert unknown_prefix("json:loads") is None
    refused = unknown_prefix("timmm:resnet18")
    assert refused is not None
    assert str(refused) == (
        "unknown source prefix 'timmm:' in 'timmm:resnet18' (choose one of torchvision:, litgpt:, timm:, hf:; or "
        "package.module:fn of a module that imports)"
    )


@pytest.mark.parametrize("spec", ["model.py", "model.py:"])
def test_a_file_without_its_factory_is_refused_with_the_form_to_write(spec: str) -> None:
    with pytest.raises(LayerprofError) as refused:
        resolve(spec)
    assert str(refused.value) == f"model {spec!r} names a file but no factory in it; write model.py:FACTORY"


def test_a_bare_torchvision_detector_is_refused_with_what_to_do_instead() -> None:
    with pytest.raises(LayerprofError, match=r"^fasterrcnn_resnet50_fpn is a torchvision detection model; "):
        resolve("fasterrcnn_resnet50_fpn")


def test_a_sources_names_come_from_the_table_where_it_matches_the_installed_release(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_library() -> list[str]:
        raise AssertionError("the library was asked although the table matches its release")

    entries = tuple(
        dataclasses.replace(entry, lister=no_library) if entry.name == "torchvision" else entry
        for entry in registry.SOURCES
    )
    monkeypatch.setattr(registry, "SOURCES", entries)
    names = source_names.__wrapped__("torchvision")
    assert {"resnet18", "vit_b_16"} <= set(names) and "fasterrcnn_resnet50_fpn" not in names
