"""Writes layerprof/sources/model_names.json: each library source's model names for its installed release, so
that `layerprof models` and a model name's check need not import torch (tests/sources/test_sources.py checks the
table against the libraries).

    .venv/bin/python tools/model_names.py
"""

from __future__ import annotations

import json

from layerprof.sources import names
from layerprof.sources.names import LIVE_LISTERS, NAME_TABLE, installed_release


def main() -> None:
    table = {}
    for source, lister in LIVE_LISTERS.items():
        release = installed_release(source)
        if release is not None:
            table[source] = {"version": release, "names": lister()}
    names._table.cache_clear()
    if "torchvision" in table:
        table["torchvision"]["tasks"] = names.torchvision_task_names()  # asked of torchvision: no table yet
    NAME_TABLE.write_text(json.dumps(table, indent=0) + "\n")
    print(f"wrote {NAME_TABLE}: " + ", ".join(f"{s} {e['version']} ({len(e['names'])})" for s, e in table.items()))


if __name__ == "__main__":
    main()
