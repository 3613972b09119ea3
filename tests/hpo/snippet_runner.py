"""Runs an exported snippet's `main(...)` as a user would, inside the HPO library's own environment, and
records every budget the library asked for and the trainable-layer count it was mapped to.

    python snippet_runner.py SNIPPET.py RECORD.json [KEY=VALUE ...]   # the arguments of main()

Only the standard library here: the environment holds the HPO library and nothing of layerprof.
"""

import importlib.util
import json
import sys


def main() -> None:
    snippet, record = sys.argv[1], sys.argv[2]
    arguments = {key: json.loads(value) for key, value in (item.split("=", 1) for item in sys.argv[3:])}
    spec = importlib.util.spec_from_file_location("snippet", snippet)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    asked = []
    original = module.layers_for_budget

    def recording(budget):
        layers = original(budget)
        asked.append([float(budget), layers])
        return layers

    module.layers_for_budget = recording
    module.main(**arguments)
    with open(record, "w", encoding="utf-8") as handle:
        json.dump({"asked": asked, "rungs": {str(k): v for k, v in module.RUNGS.items()}}, handle)


if __name__ == "__main__":
    main()
