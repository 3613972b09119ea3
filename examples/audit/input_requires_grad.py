"""`backward-through-frozen-prefix`: the input requires grad, so backward runs through the frozen stem.

    layerprof audit examples/audit/input_requires_grad.py:mistake   # exit 1
    layerprof audit examples/audit/input_requires_grad.py:hooked    # exit 1: as enable_input_require_grads does
    layerprof audit examples/audit/input_requires_grad.py:fixed     # exit 0

The first two layers are frozen, yet the batch's inputs require grad (as `enable_input_require_grads` makes an
embedding's output do): autograd saves the frozen layers' activations and computes their input gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from layerprof import CustomWorkload


def _model() -> nn.Sequential:
    model = nn.Sequential(
        nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 32), nn.ReLU(),
        nn.Linear(32, 10),
    )  # fmt: skip
    model[:4].requires_grad_(False)
    return model


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    inputs, labels = batch
    return F.cross_entropy(model(inputs), labels)


def _workload(requires_grad: bool) -> CustomWorkload:
    model = _model()

    def make_batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = torch.randn(batch_size, 16, device=device, requires_grad=requires_grad)
        return inputs, torch.randint(0, 10, (batch_size,), device=device)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return CustomWorkload(model, make_batch, _loss, optimizer=optimizer)


def mistake() -> CustomWorkload:
    """Inputs that require grad."""
    return _workload(requires_grad=True)


def hooked() -> CustomWorkload:
    """Plain inputs, but the first layer's output made to require grad by a forward hook, as transformers'
    `enable_input_require_grads` does to the input embeddings."""
    workload = _workload(requires_grad=False)
    workload.model[0].register_forward_hook(lambda _module, _args, output: output.requires_grad_(True))
    return workload


def fixed() -> CustomWorkload:
    """Plain inputs."""
    return _workload(requires_grad=False)
