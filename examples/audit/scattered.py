"""`scattered-frozen`: a frozen middle block with a trained stem below it is no prefix.

    layerprof audit examples/audit/scattered.py:mistake   # exit 1
    layerprof audit examples/audit/scattered.py:fixed     # exit 0

Freezing the middle saves its weight gradients and optimizer state, but backward still runs through it to reach
the trained stem, and every activation above the stem is saved. A prefix of the same size (the stem frozen, the
middle trained) saves far more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from layerprof import CustomWorkload


def _model() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )  # fmt: skip


def _batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch_size, 16, device=device), torch.randint(0, 10, (batch_size,), device=device)


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    inputs, labels = batch
    return F.cross_entropy(model(inputs), labels)


def _workload(frozen: list[int]) -> CustomWorkload:
    model = _model()
    for index in frozen:
        model[index].requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return CustomWorkload(model, _batch, _loss, optimizer=optimizer)


def mistake() -> CustomWorkload:
    """The two middle layers frozen, the stem and the head trained."""
    return _workload(frozen=[2, 4])


def fixed() -> CustomWorkload:
    """The two lowest layers frozen (a prefix), the rest trained."""
    return _workload(frozen=[0, 2])
