"""`grad-without-optimizer`: the optimizer trains only the head, but nothing was frozen.

    layerprof audit examples/audit/optimizer_mismatch.py:mistake   # exit 1
    layerprof audit examples/audit/optimizer_mismatch.py:lr_zero   # exit 1: "frozen" by a learning rate of 0
    layerprof audit examples/audit/optimizer_mismatch.py:fixed     # exit 0

Every parameter below the head still requires grad: backward computes and holds their gradients, and the
activations of every layer are saved for it, although the optimizer never uses them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from layerprof import CustomWorkload


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch_size, 16, device=device), torch.randint(0, 10, (batch_size,), device=device)


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    inputs, labels = batch
    return F.cross_entropy(model(inputs), labels)


def mistake() -> CustomWorkload:
    """The head alone in the optimizer; the rest still requires grad."""
    model = _model()
    optimizer = torch.optim.AdamW(model[4].parameters(), lr=1e-3)
    return CustomWorkload(model, _batch, _loss, optimizer=optimizer)


def lr_zero() -> CustomWorkload:
    """Everything in the optimizer, the layers below the head in a group with learning rate 0."""
    model = _model()
    groups = [{"params": model[:4].parameters(), "lr": 0.0}, {"params": model[4].parameters()}]
    return CustomWorkload(model, _batch, _loss, optimizer=torch.optim.AdamW(groups, lr=1e-3))


def fixed() -> CustomWorkload:
    """The same, with everything below the head frozen."""
    model = _model()
    model[:4].requires_grad_(False)
    optimizer = torch.optim.AdamW(model[4].parameters(), lr=1e-3)
    return CustomWorkload(model, _batch, _loss, optimizer=optimizer)
