"""Runs exported snippets' `main(...)` as a user would, inside the HPO library's own environment, and records every
budget the library asked for and the trainable-layer count it was mapped to, and every training call: its z, the z
of the state it continued from (None: from scratch) and whether that state was the same configuration's.

    python snippet_runner.py JOBS.json

JOBS.json: a list of jobs, run one after another in this process (a library's import is most of a short run),
each `{"snippet": PATH, "record": PATH, "cwd": PATH, "arguments": {...}, "continue": bool}`: the snippet's
`main(**arguments)` runs in `cwd` (`continue` false: with the snippet's CONTINUE set to False), and its record,
what it printed under "stdout" too, goes to `record`.

Only the standard library here: the environment holds the HPO library and nothing of layerprof.
"""

import contextlib
import importlib.util
import io
import json
import os
import sys


class Tee(io.TextIOBase):
    """What a job prints, kept for its record and shown as it goes (a failing job's output stays readable)."""

    def __init__(self, shown):
        self.shown, self.kept = shown, io.StringIO()

    def write(self, text):
        self.kept.write(text)
        return self.shown.write(text)

    def flush(self):
        self.shown.flush()

    def fileno(self):
        return self.shown.fileno()

    def isatty(self):
        return self.shown.isatty()


def run(job: dict) -> None:
    os.chdir(job["cwd"])
    spec = importlib.util.spec_from_file_location("snippet", job["snippet"])
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
    if not job["continue"]:
        module.CONTINUE = False
    output = Tee(sys.stdout)
    with contextlib.redirect_stdout(output):
        result = module.main(**job["arguments"])
    # an Optuna study: every trial's suggested batch and its state, trained or not
    suggested = [[t.params.get("batch_size"), t.state.name] for t in getattr(result, "trials", [])]
    with open(job["record"], "w", encoding="utf-8") as handle:
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
                # where the snippet maps each whole budget a library may ask for (not recorded as asked)
                "layers_for_budget": {str(b): original(b) for b in range(1, module.MAX_BUDGET + 1)},
                "stdout": output.kept.getvalue(),
            },
            handle,
        )


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        jobs = json.load(handle)
    for job in jobs:
        run(job)


if __name__ == "__main__":
    main()
