"""`no-gradient-reaches-trained`: reentrant checkpointing over a frozen boundary trains nothing inside it.

    layerprof audit examples/audit/reentrant_checkpoint.py:mistake   # exit 1
    layerprof audit examples/audit/reentrant_checkpoint.py:fixed     # exit 0

The stem is frozen and the first trained block runs under `checkpoint(..., use_reentrant=True)`: its input does
not require grad, so its output does not either, and the block's parameters never get a gradient
(transformers#21381). `use_reentrant=False` fixes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from layerprof import CustomWorkload


class Checkpointed(nn.Module):
    """A block run under activation checkpointing."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(32, 32)
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(lambda t: torch.relu(self.linear(t)), x, use_reentrant=self.reentrant)


class Net(nn.Module):
    """A frozen stem, a checkpointed block, a head."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.stem = nn.Linear(16, 32)
        self.block = Checkpointed(reentrant)
        self.head = nn.Linear(32, 10)
        self.stem.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(torch.relu(self.stem(x))))


def _batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch_size, 16, device=device), torch.randint(0, 10, (batch_size,), device=device)


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    inputs, labels = batch
    return F.cross_entropy(model(inputs), labels)


def _workload(reentrant: bool) -> CustomWorkload:
    model = Net(reentrant)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return CustomWorkload(model, _batch, _loss, optimizer=optimizer)


def mistake() -> CustomWorkload:
    """Reentrant checkpointing above the frozen stem."""
    return _workload(reentrant=True)


def fixed() -> CustomWorkload:
    """Non-reentrant checkpointing."""
    return _workload(reentrant=False)
