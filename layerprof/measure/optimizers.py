"""The one place optimizers are built: for the profiled step and for the built-in correlate tasks alike.

torch is imported on use, so that the command line can list the choices without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from layerprof.errors import LayerprofError

if TYPE_CHECKING:
    import torch

OptimizerName = Literal["adamw", "adam", "sgd"]
OPTIMIZERS: tuple[OptimizerName, ...] = get_args(OptimizerName)


def make_optimizer(
    name: str,
    params: list[torch.nn.Parameter],
    learning_rate: float,
    *,
    weight_decay: float | None = None,
    beta1: float = 0.9,
    beta2: float = 0.999,
    foreach: bool | None = None,
) -> torch.optim.Optimizer:
    """Adam/AdamW with betas (beta1, beta2), or SGD with beta1 as its momentum.

    `weight_decay=None` keeps PyTorch's default; `foreach=None` is PyTorch's own choice of implementation (the
    multi-tensor kernels on CUDA, a per-tensor loop on the CPU).
    """
    import torch

    options: dict = {"lr": learning_rate, "foreach": foreach}
    if weight_decay is not None:
        options["weight_decay"] = weight_decay
    name = name.lower()
    if name in ("adam", "adamw"):
        optimizer_class = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return optimizer_class(params, betas=(beta1, beta2), **options)
    if name == "sgd":
        return torch.optim.SGD(params, momentum=beta1, **options)
    raise LayerprofError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
