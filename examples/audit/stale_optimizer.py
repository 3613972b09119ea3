"""`frozen-in-optimizer`: the stem is frozen after the optimizer was built (and had trained it).

    layerprof audit examples/audit/stale_optimizer.py:mistake   # exit 1
    layerprof audit examples/audit/stale_optimizer.py:fixed     # exit 0

A run resumed from a checkpoint of full training, then frozen (mmdetection#9952): the optimizer still holds the
stem, with AdamW's two moments for each of its parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from layerprof import CustomWorkload


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))


def _batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch_size, 16, device=device), torch.randint(0, 10, (batch_size,), device=device)


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    inputs, labels = batch
    return F.cross_entropy(model(inputs), labels)


def _trained_once(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """One step of full training: the optimizer now holds state for every parameter (a resumed checkpoint)."""
    device = next(model.parameters()).device
    _loss(model, _batch(4, device)).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def mistake() -> CustomWorkload:
    """Frozen after the optimizer was built and had stepped: it keeps the stem's state."""
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    _trained_once(model, optimizer)
    model[0].requires_grad_(False)
    return CustomWorkload(model, _batch, _loss, optimizer=optimizer)


def fixed() -> CustomWorkload:
    """Frozen first, then the optimizer built from what requires grad."""
    model = _model()
    model[0].requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    _trained_once(model, optimizer)
    return CustomWorkload(model, _batch, _loss, optimizer=optimizer)
