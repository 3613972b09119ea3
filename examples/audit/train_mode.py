"""`frozen-in-train-mode`: the frozen stem's dropout and BatchNorm still run in train mode.

    layerprof audit examples/audit/train_mode.py:mistake   # exit 1
    layerprof audit examples/audit/train_mode.py:fixed     # exit 0

`model.train()` at the start of each step puts every module in train mode, the frozen stem's too: its BatchNorm
keeps updating its running statistics and its dropout keeps masking, so the "frozen" stem changes and
computes what eval mode would not. The fix puts the stem back in eval mode after `model.train()`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from layerprof import CustomWorkload


def _model() -> nn.Sequential:
    stem = nn.Sequential(nn.Linear(16, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.1))
    model = nn.Sequential(stem, nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))
    stem.requires_grad_(False)
    return model


def _batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch_size, 16, device=device), torch.randint(0, 10, (batch_size,), device=device)


def _workload(stem_eval: bool) -> CustomWorkload:
    model = _model()

    def step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
        model.train()
        if stem_eval:
            model[0].eval()
        optimizer.zero_grad(set_to_none=True)
        inputs, labels = batch
        F.cross_entropy(model(inputs), labels).backward()
        optimizer.step()

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return CustomWorkload(model, _batch, step=step, optimizer=optimizer)


def mistake() -> CustomWorkload:
    """model.train() on every step, the frozen stem included."""
    return _workload(stem_eval=False)


def fixed() -> CustomWorkload:
    """The frozen stem back in eval mode after model.train()."""
    return _workload(stem_eval=True)
