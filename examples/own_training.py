"""Layer freezing in your own training loop, end to end through Optuna (docs/api.md).

A real model trained on real data: a small MLP on scikit-learn's handwritten digits (shipped with scikit-learn,
no download). layerprof measures what each z costs, recommends the rungs, and writes an Optuna script that calls
`train_and_evaluate` below at every rung; the function splits and freezes the model with layerprof's Python
API, exactly as the profiler did.

    layerprof estimate examples/own_training.py:digits_model --input-shape 64 --num-classes 10 \\
        --target cpu --batch-sizes 64 --out profiles/digits.json
    layerprof ladder profiles/digits.json --eta 2 --export optuna \\
        --objective examples/own_training.py:train_and_evaluate > digits_optuna.py
    python digits_optuna.py      # 50 trials of Hyperband, each rung trained by train_and_evaluate

(`layerprof profile` instead of `estimate` measures the costs on your machine.)
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

import layerprof

FULL_STEPS = 100  # the full budget, in training steps, where the ladder has no step fidelity
BATCH_SIZE = 64


def digits_model(width: int = 64, depth: int = 4) -> nn.Module:
    """The model: `depth` linear layers (the layers layerprof splits it into), ReLU between them."""
    layers: list[nn.Module] = [nn.Linear(64, width), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


@functools.cache
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 1,797 digits as (train inputs, train labels, validation inputs, validation labels): 80/20, fixed."""
    from sklearn.datasets import load_digits

    data = load_digits()
    inputs = torch.tensor(data.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(labels))
    return inputs[order[:cut]], labels[order[:cut]], inputs[order[cut:]], labels[order[cut:]]


def train_and_evaluate(config: dict, trainable_layers: int, steps: int | None, state: dict | None = None) -> tuple:
    """The contract every exported script calls: train the last `trainable_layers` layers for `steps` steps in all
    (None: FULL_STEPS), continuing from `state` (the previous rung's) where there is one; return the validation
    loss and the state a later rung continues from.

    A continued rung keeps the weights and the step reached; Adam's moments start afresh at each rung (the
    contract keeps those of the layers already trained: save `optimizer.state_dict()` where that matters).
    """
    train_x, train_y, val_x, val_y = digits()
    torch.manual_seed(0)  # every configuration starts from the same random initialisation, as in the paper
    model = digits_model()
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        start = state["step"] if steps is not None else 0  # no step fidelity: every rung trains the full budget
    total = steps if steps is not None else FULL_STEPS
    layers = layerprof.split_for_freezing(model, train_x[:2])  # traced forward order, as the profiler split it
    with layerprof.freeze(model, layers, trainable_layers) as frozen:
        optimizer = torch.optim.Adam(frozen.trainable_parameters(), lr=config["learning_rate"])
        batches = torch.Generator().manual_seed(start)
        for _ in range(start, total):
            chosen = torch.randint(len(train_y), (BATCH_SIZE,), generator=batches)
            loss = F.cross_entropy(model(train_x[chosen]), train_y[chosen])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        trained = sum(param.numel() for param in frozen.trainable_parameters())
    with torch.no_grad():
        validation_loss = F.cross_entropy(model(val_x), val_y).item()
    return validation_loss, {
        "model": model.state_dict(),
        "step": total,
        "trainable_layers": trainable_layers,
        "trained_params": trained,
        "learning_rate": config["learning_rate"],
    }
