"""The model sources, one entry each: where a MODEL string's model comes from.

An entry says everything about one source: its name (`profile.ModelSource`, what a profile records), the prefix
it takes on the command line (`timm:NAME`), a line for MODEL's help, the optional extra that installs its library,
and the functions that list its names, refuse a name with why, and build its models. `layerprof models`,
`--source` and its help, MODEL's help, `resolve` and `build_model` all read SOURCES: adding a source is its builder
in `sources/builders.py` (its library's helpers in `sources/hub_models.py`), one entry here, its name in
`profile.ModelSource` (the type checker holds the two together), and `tools/model_names.py` run once if its names
come from a library.

Torch-free: the builders are imported when a model is built, never to list or resolve a name.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Protocol

from layerprof.errors import LayerprofError
from layerprof.profile import ModelSource
from layerprof.sources.names import (
    ModelOptions,
    hf_live_names,
    litgpt_live_names,
    preset_names,
    recorded_names,
    timm_live_names,
    torchvision_live_names,
    torchvision_task_refusal,
    unknown_name,
)

if TYPE_CHECKING:
    import torch

    from layerprof.sources.builders import LoadedModel


class Builder(Protocol):
    """A source's builder: the MODEL string as given, the name its source resolved, the options, the device."""

    def __call__(self, spec: str, name: str, options: ModelOptions, device: torch.device) -> LoadedModel:
        """The model, with random weights on `device`."""
        ...


@dataclass(frozen=True)
class Source:
    """One model source: how a MODEL string names its models, what lists them, what builds them."""

    name: ModelSource
    help: str  # how MODEL's help names it: "a torchvision model (resnet50)"
    builder_name: str  # its builder in layerprof.sources.builders (a `Builder`)
    prefix: str | None = None  # it takes PREFIX:NAME on the command line
    bare: bool = False  # its names are also accepted, and listed, without the prefix
    lister: Callable[[], list[str]] | None = None  # its names, asked of its library; None: it lists none
    package: str | None = None  # the library its models come from (distribution and import name)
    extra: str | None = None  # the optional extra that installs `package`: pip install 'layerprof[EXTRA]'
    what: str = "model"  # one of its names, in an error: "unknown LitGPT config 'x'"
    checked_when_built: bool = False  # any PREFIX:NAME resolves; its builder checks the name
    refusal: Callable[[str], LayerprofError | None] | None = None  # why it refuses a name (a torchvision detector)
    matches: Callable[[str], bool] | None = None  # a MODEL string of its own form (a factory's), not a listed name

    def require(self) -> None:
        """An input error that says how to install its optional library, where that is missing."""
        if self.extra is not None and self.package is not None and importlib.util.find_spec(self.package) is None:
            raise LayerprofError(f"{self.package} is not installed: pip install 'layerprof[{self.extra}]'")

    def names(self) -> list[str]:
        """Its names as its library lists them (bare), from the table where it matches the installed release."""
        return source_names(self.name)

    def listed(self) -> list[str]:
        """Its names as they are given: with the prefix where they must be."""
        names = self.names()
        return names if self.bare or self.prefix is None else [f"{self.prefix}:{name}" for name in names]

    def find(self, name: str) -> str:
        """NAME given with its prefix, checked; a LayerprofError that says why not or suggests close names."""
        if self.checked_when_built or name in self.names():
            return name
        raise self.refused(name)

    def refused(self, name: str) -> LayerprofError:
        """Why NAME is not one of its models."""
        reason = self.refusal(name) if self.refusal is not None else None
        return reason or unknown_name(name, self.names(), self.what)

    def builder(self) -> Builder:
        """Its builder (importing torch and its library; `require` first)."""
        self.require()
        from layerprof.sources import builders

        build: Builder = getattr(builders, self.builder_name)
        return build


def is_user_spec(spec: str) -> bool:
    """Whether a MODEL string has a factory's form: `path/to/file.py:fn` or `package.module:fn` (not a prefix)."""
    target, sep, attribute = spec.rpartition(":")
    prefixes = {source.prefix for source in SOURCES if source.prefix is not None}
    if not sep or not attribute.isidentifier() or target in prefixes or not target:
        return False
    return target.endswith(".py") or "/" in target or all(part.isidentifier() for part in target.split("."))


def unknown_prefix(spec: str) -> LayerprofError | None:
    """A factory's form whose module is one name that no import finds (`timmm:resnet18`): a mistyped prefix, more
    likely than a module, refused with the prefixes there are."""
    target = spec.rpartition(":")[0]
    if "." in target or "/" in target:
        return None
    try:
        if importlib.util.find_spec(target) is not None:
            return None
    except (ImportError, ValueError):  # a module whose spec cannot be read (`__main__`): let its import say why
        return None
    prefixes = ", ".join(f"{source.prefix}:" for source in SOURCES if source.prefix is not None)
    return LayerprofError(
        f"unknown source prefix '{target}:' in {spec!r} (choose one of {prefixes}; or package.module:fn of a "
        "module that imports)"
    )


SOURCES: tuple[Source, ...] = (
    Source(
        "preset",
        help="a preset (paper-resnet18-cifar100)",
        builder_name="build_preset",
        bare=True,
        lister=preset_names,
        what="preset",
    ),
    Source(
        "torchvision",
        help="a torchvision model (resnet50)",
        builder_name="build_torchvision",
        prefix="torchvision",
        bare=True,
        lister=torchvision_live_names,
        package="torchvision",
        what="torchvision model",
        refusal=torchvision_task_refusal,
    ),
    Source(
        "litgpt",
        help="a LitGPT config (pythia-14m)",
        builder_name="build_litgpt",
        prefix="litgpt",
        bare=True,
        lister=litgpt_live_names,
        package="litgpt",
        what="LitGPT config",
    ),
    Source(
        "timm",
        help="timm:NAME",
        builder_name="build_timm",
        prefix="timm",
        lister=timm_live_names,
        package="timm",
        extra="timm",
        what="timm model",
    ),
    Source(
        "hf",
        help="hf:MODEL_TYPE or hf:path/config.json",
        builder_name="build_hf",
        prefix="hf",
        lister=hf_live_names,
        package="transformers",
        extra="hf",
        checked_when_built=True,  # a model type or a config file: read where the config is built
    ),
    Source(
        "user",
        help="a factory: path/to/file.py:fn or package.module:fn",
        builder_name="build_user",
        matches=is_user_spec,
        refusal=unknown_prefix,
    ),
)


def source(name: str) -> Source:
    """The entry named NAME."""
    found = next((entry for entry in SOURCES if entry.name == name), None)
    if found is None:
        raise LayerprofError(f"unknown model source {name!r} (choose one of {', '.join(all_sources())})")
    return found


def all_sources() -> list[str]:
    """Every source's name, as a profile records it."""
    return [entry.name for entry in SOURCES]


def listed_sources() -> list[str]:
    """The sources `layerprof models` lists (and `--source` takes): those with names to list."""
    return [entry.name for entry in SOURCES if entry.lister is not None]


@cache
def source_names(name: str) -> list[str]:
    """A source's names as its library lists them (bare), from the table where it matches the installed release,
    else from the library (which imports torch; an input error naming the extra where the library is missing)."""
    entry = source(name)
    if entry.lister is None:
        return []
    recorded = recorded_names(entry.name, entry.package) if entry.package is not None else None
    if recorded is not None:
        return recorded
    entry.require()
    return entry.lister()


def torchvision_names() -> list[str]:
    """torchvision's classification model names."""
    return source_names("torchvision")


def litgpt_names() -> list[str]:
    """LitGPT's config names."""
    return source_names("litgpt")


def known_names(source_name: str | None = None) -> dict[str, list[str]]:
    """Every accepted model name, grouped by source (or of one source), as it is given: `timm:` and `hf:` names
    with their prefix. Without a source, the optional ones (timm, hf) are listed where installed; asked for by
    name, a missing one says how to install it."""
    listed = listed_sources()
    if source_name is not None and source_name not in listed:
        raise LayerprofError(f"--source {source_name!r}: choose one of {', '.join(listed)}")
    names: dict[str, list[str]] = {}
    for entry in SOURCES:
        if entry.lister is None or source_name not in (None, entry.name):
            continue
        try:
            names[entry.name] = entry.listed()
        except LayerprofError:
            if source_name is not None:
                raise
    return names


def model_help() -> str:
    """MODEL's help: every source's line, and the prefixes that tell a bare name's source."""
    lines = [entry.help for entry in SOURCES]
    text = ", ".join(lines[:-1]) + ", or " + lines[-1]
    optional = " or ".join(f"{entry.prefix}:" for entry in SOURCES if entry.bare and entry.prefix is not None)
    return f"{text[0].upper()}{text[1:]}. Prefix {optional} to disambiguate; `layerprof models` lists the names."


# ---------------------------------------------------------------- a MODEL string's source


def resolve(spec: str) -> tuple[Source, str]:
    """The source of a MODEL string and the name it builds, or a LayerprofError that says why not (close names,
    the prefix to give, how to install a source's library).

    Tried in order: `PREFIX:NAME` of a source's prefix; a string of a source's own form (a factory); a bare name
    of a source that accepts them (a preset, torchvision, LitGPT, in the order of SOURCES)."""
    prefix, sep, rest = spec.partition(":")
    for entry in SOURCES:
        if sep and entry.prefix == prefix:
            return entry, entry.find(rest)
    for entry in SOURCES:
        if entry.matches is not None and entry.matches(spec):
            refused = entry.refusal(spec) if entry.refusal is not None else None
            if refused is not None:
                raise refused
            return entry, spec
    bare = [entry for entry in SOURCES if entry.bare]
    for entry in bare:
        if spec in entry.names():
            return entry, spec
    if spec.endswith(".py") or spec.rpartition(":")[0].endswith(".py"):
        file = spec.rpartition(":")[0] if spec.endswith(":") else spec.removesuffix(":")
        raise LayerprofError(f"model {spec!r} names a file but no factory in it; write {file}:FACTORY")
    for entry in SOURCES:
        if entry.prefix is not None and not entry.bare and spec in _installed_names(entry):
            raise LayerprofError(f"model {spec!r} is a {entry.name} name: give {entry.prefix}:{spec}")
    for entry in bare:
        refused = entry.refusal(spec) if entry.refusal is not None else None
        if refused is not None:
            raise refused
    raise unknown_name(spec, [name for entry in bare for name in entry.listed()], "model")


def _installed_names(entry: Source) -> list[str]:
    """An optional source's names, or none where its library is not installed."""
    try:
        return entry.names()
    except LayerprofError:
        return []
