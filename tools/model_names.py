"""Writes layerprof/sources/model_names.json: each library source's model names for its installed release, so
that `layerprof models` and a model name's check need not import torch (tests/sources/test_names.py checks the
table against the libraries). The sources are the registry's entries whose names come from a library.

    .venv/bin/python tools/model_names.py
"""

from __future__ import annotations

import json

from layerprof.sources import names
from layerprof.sources.names import NAME_TABLE, installed_release
from layerprof.sources.registry import SOURCES


def main() -> None:
    table = {}
    for source in SOURCES:
        if source.package is None or source.lister is None:
            continue
        release = installed_release(source.package)
        if release is not None:
            table[source.name] = {"version": release, "names": source.lister()}
    names._table.cache_clear()
    if "torchvision" in table:
        table["torchvision"]["tasks"] = names.torchvision_task_names()  # asked of torchvision: no table yet
    NAME_TABLE.write_text(json.dumps(table, indent=0) + "\n")
    print(f"wrote {NAME_TABLE}: " + ", ".join(f"{s} {e['version']} ({len(e['names'])})" for s, e in table.items()))


if __name__ == "__main__":
    main()
