"""The built-in pydoc-lm task at 75 steps of full budget (the built-in trains 150), so that a 3-seed study of 12
configurations fits well under an hour of one busy core: the same model, data, batches, schedule (warm-up and
cool-down as fractions of the run) and evaluation. `correlate` and `simulate` name it `pydoc_lm_75.py:pydoc_lm_75`
(run them in this folder)."""

from layerprof.fidelity import tasks
from layerprof.fidelity.grids import Config

tasks.LM_FULL_STEPS = 75  # read by pydoc_lm_run when a run starts


def pydoc_lm_75(config: Config, trainable_layers: int, budget_fraction: float) -> float:
    """Validation loss of the pydoc-lm model after `budget_fraction` of 75 steps."""
    return tasks.pydoc_lm_task(config, trainable_layers, budget_fraction)


tasks.describe_task(
    pydoc_lm_75, 7, 75, tasks.LM_BATCH, "layerprof.fidelity.tasks:pydoc_lm_workload", tasks.pydoc_lm_resume, 64
)
