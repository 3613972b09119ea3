"""Two ways to profile your own model with layerprof.

    layerprof layers examples/custom_model.py:mlp --input-shape 64 --num-classes 10
    layerprof profile examples/custom_model.py:mlp --input-shape 64 --num-classes 10
    layerprof profile examples/custom_model.py:regression_task --set width=512

A factory is any callable. It may return

* a bare `nn.Module`: layerprof feeds it random inputs of `--input-shape` (per sample) and trains it with
  cross-entropy against random labels when `--num-classes` is given, else with the mean square of its output;
* a `layerprof.CustomWorkload` (or any object with `model`, `make_batch` and `loss`): you decide what a batch
  is and which loss trains on it.

`--set key=value` passes keyword arguments to the factory. Build parameters with plain `nn.Module`
constructors: layerprof calls the factory inside `torch.device(...)`, so the model is created directly on
the profiling device (or on the meta device, for free, by `layerprof layers`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from layerprof import CustomWorkload


class ResidualBlock(nn.Module):
    """Not a Sequential: layerprof treats it as one layer unless told `--unwrap ResidualBlock`."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(F.gelu(self.norm(x)))


def mlp(width: int = 256, depth: int = 6, classes: int = 10, features: int = 64) -> nn.Module:
    """A residual MLP: input projection, `depth` residual blocks, output head."""
    return nn.Sequential(
        nn.Linear(features, width),
        *(ResidualBlock(width) for _ in range(depth)),
        nn.Linear(width, classes),
    )


def regression_task(width: int = 256, depth: int = 6, features: int = 64) -> CustomWorkload:
    """The same network with its own batch and loss: regression of random targets."""
    model = mlp(width=width, depth=depth, classes=1, features=features)

    def make_batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(batch_size, features, device=device), torch.randn(batch_size, 1, device=device)

    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        return F.mse_loss(model(inputs), targets)

    return CustomWorkload(model=model, make_batch=make_batch, loss=loss)
