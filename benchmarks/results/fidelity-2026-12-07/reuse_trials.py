"""Seed a new correlate study with the finished trials and continued runs of earlier studies of the same task.

usage: reuse_trials.py OUT TASK (--grid FILE | --grid-preset NAME) LAYERS FRACTIONS SEEDS CONTINUE SOURCE...

A record is copied when the new study plans it: the same configuration (matched by its values, not its index in
the earlier grid), z, budget fraction (or chain) and seed. Its config_index is rewritten to the new grid's. Where
a key is recorded in more than one source, the records' losses must agree exactly (the tasks are deterministic
for a configuration and seed), else the script stops. `layerprof correlate` with the same options then resumes
the study and trains only what is missing.
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

from layerprof.fidelity.correlate import (
    ContinuedResult,
    Trial,
    TrialStore,
    continued_key,
    fingerprint,
    plan_study,
    read_records,
)


def main() -> None:
    out, task, grid_flag, grid_value, layers, fractions, seeds, continued, *sources = sys.argv[1:]
    from layerprof.parsing import parse_fractions, parse_layer_selection

    grid = Path(grid_value) if grid_flag == "--grid" else None
    preset = grid_value if grid_flag == "--grid-preset" else "small"
    plan = plan_study(
        task,
        parse_layer_selection(layers),
        parse_fractions(fractions),
        int(seeds),
        grid,
        preset,
        continued.split(","),
    )
    identity = {"task": plan.task, "configs": plan.configs, "fingerprint": fingerprint(plan.task, plan.configs)}
    store = TrialStore(Path(out), identity)
    have, have_runs = store.load()
    wanted = {t.key for t in plan.trials()} | {c.key for c in plan.continued_trials()}
    copied: dict[str, object] = {}
    for source in sources:
        meta = json.loads((Path(source) / "study.json").read_text())
        configs = meta["configs"]
        results, runs = read_records(Path(source) / "trials.jsonl")
        for record in [*results.values(), *runs.values()]:
            config = configs[record.config_index]
            if config not in plan.configs:
                continue
            index = plan.configs.index(config)
            moved = replace(record, config_index=index)
            if isinstance(moved, ContinuedResult):
                key = continued_key(moved.cells, index, moved.seed)
                losses = [s.loss for s in moved.segments]
            else:
                key = Trial(index, moved.trainable_layers, moved.budget_fraction, moved.seed).key
                losses = [moved.loss]
            if key not in wanted or key in have or key in have_runs:
                continue
            if key in copied:
                earlier = copied[key]
                before = [s.loss for s in earlier.segments] if isinstance(earlier, ContinuedResult) else [earlier.loss]
                if before != losses:
                    sys.exit(f"{key}: {source} recorded {losses}, an earlier source {before}")
                continue
            copied[key] = moved
    for record in copied.values():
        store.append(record)
    print(f"{out}: {len(copied)} of {len(wanted)} planned records copied from {', '.join(sources)}")
    print(json.dumps({"copied": sorted(copied)})[:200])


if __name__ == "__main__":
    main()
