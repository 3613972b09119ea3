"""Runs an exported snippet's `main(...)` as a user would, inside the HPO library's own environment, and
records every budget the library asked for and the trainable-layer count it was mapped to, and every training
call: its z, the z of the state it continued from (None: from scratch) and whether that state was the same
configuration's.

    python snippet_runner.py SNIPPET.py RECORD.json [KEY=VALUE ...]   # the arguments of main()

SNIPPET_CONTINUE=0 in the environment sets the snippet's CONTINUE to False.

Only the standard library here: the environment holds the HPO library and nothing of layerprof.
"""

import importlib.util
import json
import os
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
    trained, batches = [], []
    train = module.train_and_evaluate

    def recording_training(config, trainable_layers, steps, state=None):
        same = None if state is None else state["learning_rate"] == config["learning_rate"]
        trained.append([trainable_layers, None if state is None else state["trainable_layers"], same])
        batch = config.get("batch_size")
        batches.append([trainable_layers, None if batch is None else int(batch)])  # ConfigSpace's are numpy ints
        return train(config, trainable_layers, steps, state)

    module.train_and_evaluate = recording_training
    checked = []  # every fit check a snippet made before training: [batch, budget, fits]
    fits = getattr(module, "fits", None)

    def recording_fits(config, budget):
        answer = fits(config, budget)
        batch = config.get("batch_size")
        checked.append([None if batch is None else int(batch), float(budget), bool(answer)])  # numpy bools in SMAC
        return answer

    if fits is not None:
        module.fits = recording_fits
    if os.environ.get("SNIPPET_CONTINUE") == "0":
        module.CONTINUE = False
    result = module.main(**arguments)
    # an Optuna study: every trial's suggested batch and its state, trained or not
    suggested = [[t.params.get("batch_size"), t.state.name] for t in getattr(result, "trials", [])]
    with open(record, "w", encoding="utf-8") as handle:
        rungs = {str(k): v for k, v in module.RUNGS.items()}
        limits = {str(k): v for k, v in getattr(module, "MAX_BATCH", {}).items()}
        json.dump(
            {
                "asked": asked,
                "trained": trained,
                "rungs": rungs,
                "batches": batches,
                "suggested": suggested,
                "max_batch": limits,
                "checked": checked,
            },
            handle,
        )


if __name__ == "__main__":
    main()
