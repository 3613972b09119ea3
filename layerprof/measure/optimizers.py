"""The one place optimizers are built: for the profiled step and for the built-in correlate tasks alike.

One registry entry per optimizer (`OPTIMIZER_SPECS`): how it is built, what state it keeps per parameter, and
whether its step runs on fake tensors (an estimate traces it) or only its state can be made there, by the
library's own rules (Adafactor and torchao's 8-bit AdamW: their steps read values back to the host). torch is imported
on use, so that the command line can list the choices without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypedDict, cast

from layerprof.errors import LayerprofError
from layerprof.profile import OPTIMIZER_NAMES, OptimizerName

if TYPE_CHECKING:
    import torch

OPTIMIZERS = OPTIMIZER_NAMES  # the names every --optimizer and a grid's "optimizer" accept


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer: what it is, the state it keeps per parameter, and how it is built."""

    name: OptimizerName
    description: str
    state: str  # the state per parameter, in words (docs/recipes.md's table)
    build: Callable[..., torch.optim.Optimizer]  # (params, lr, weight_decay, beta1, beta2, foreach)
    traced: bool = True  # its step runs on fake tensors: an estimate traces it (else: state by the library's rules)
    package: str = "torch"  # where it comes from (the import that names an extra)

    def prime_state(self, optimizer: torch.optim.Optimizer, param: torch.nn.Parameter) -> dict[str, torch.Tensor]:
        """The state a first step gives `param`, made without a step (optimizers that are not `traced`)."""
        return PRIMERS[self.name](optimizer, param)


class _QuantizedBuffers(Protocol):
    """torchao's 8-bit AdamW (torchao has no type information): the buffer maker its first step calls."""

    def _new_buffer(self, p: torch.Tensor, signed: bool) -> torch.Tensor: ...


class OptimizerOptions(TypedDict, total=False):
    """The keyword arguments every torch optimizer here takes."""

    lr: float
    foreach: bool | None
    weight_decay: float


class AdamOptions(OptimizerOptions, total=False):
    """Adam's and AdamW's: the fused implementation may stand in for foreach."""

    fused: bool


def _options(lr: float, weight_decay: float | None, foreach: bool | None) -> OptimizerOptions:
    options: OptimizerOptions = {"lr": lr, "foreach": foreach}
    if weight_decay is not None:
        options["weight_decay"] = weight_decay
    return options


def _adam(
    which: str, *, foreach_forced: bool | None = None, fused: bool = False
) -> Callable[..., torch.optim.Optimizer]:
    def build(params, lr, weight_decay, beta1, beta2, foreach):  # noqa: ANN001, ANN202
        import torch

        options: AdamOptions = {**_options(lr, weight_decay, foreach if foreach_forced is None else foreach_forced)}
        if fused:
            options.pop("foreach")
            options["fused"] = True
        optimizer_class = torch.optim.AdamW if which == "adamw" else torch.optim.Adam
        return optimizer_class(params, betas=(beta1, beta2), **options)

    return build


def _sgd(momentum: bool) -> Callable[..., torch.optim.Optimizer]:
    def build(params, lr, weight_decay, beta1, beta2, foreach):  # noqa: ANN001, ANN202, ARG001
        import torch

        return torch.optim.SGD(params, momentum=beta1 if momentum else 0.0, **_options(lr, weight_decay, foreach))

    return build


def _adafactor(params, lr, weight_decay, beta1, beta2, foreach):  # noqa: ANN001, ANN202, ARG001
    import torch

    return torch.optim.Adafactor(params, **_options(lr, weight_decay, foreach))


def _adamw8bit(params, lr, weight_decay, beta1, beta2, foreach):  # noqa: ANN001, ANN202, ARG001
    try:
        from torchao.optim import AdamW8bit
    except ImportError:
        raise LayerprofError(
            "--optimizer adamw8bit needs torchao: pip install 'layerprof[recipes]' (or pip install torchao)"
        ) from None
    options = {} if weight_decay is None else {"weight_decay": weight_decay}
    return AdamW8bit(params, lr=lr, betas=(beta1, beta2), **options)


def _adamw8bit_state(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter) -> dict[str, torch.Tensor]:
    """torchao's own first-step state: a float32 step count and two buffers from its `_new_buffer` (8-bit codes,
    a float32 scale per block of 256 and a 256-entry float32 code map for tensors of >= 4096 values divisible by
    the block; a plain tensor like the parameter otherwise)."""
    import torch
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    from torchao.optim.subclass_8bit import get_qmap_signed, get_qmap_unsigned

    with unset_fake_temporarily():  # the code maps are computed once from real values, then cached by torchao
        get_qmap_signed(), get_qmap_unsigned()
    buffers = cast(_QuantizedBuffers, optimizer)  # an AdamW8bit: PRIMERS holds this primer under its name
    return {
        "step": torch.tensor(0.0),
        "exp_avg": buffers._new_buffer(param, True),
        "exp_avg_sq": buffers._new_buffer(param, False),
    }


def _adafactor_state(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter) -> dict[str, torch.Tensor]:
    """torch's own state initialisation (`Adafactor._init_group`) for `param` alone: a float32 step, and row and
    column variances for a matrix or a full variance for a vector. Its step reads norms back to the host
    (`.item()`), which fake tensors cannot."""
    import torch

    assert isinstance(optimizer, torch.optim.Adafactor)  # PRIMERS holds this primer under its name
    group = next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))
    param.grad = torch.zeros_like(param)
    try:
        optimizer._init_group({**group, "params": [param]}, [], [], [], [], [], [])
    finally:
        param.grad = None
    state: dict[str, torch.Tensor] = optimizer.state[param]
    return state


PRIMERS: dict[str, Callable[[torch.optim.Optimizer, torch.nn.Parameter], dict[str, torch.Tensor]]] = {
    "adamw8bit": _adamw8bit_state,
    "adafactor": _adafactor_state,
}

OPTIMIZER_SPECS: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        OptimizerSpec(
            "adamw", "AdamW (torch; PyTorch picks foreach or per-tensor)", "step, exp_avg, exp_avg_sq", _adam("adamw")
        ),
        OptimizerSpec("adam", "Adam (torch)", "step, exp_avg, exp_avg_sq", _adam("adam")),
        OptimizerSpec("sgd", "SGD with momentum beta1 (0.9)", "momentum_buffer", _sgd(momentum=True)),
        OptimizerSpec("sgd-plain", "SGD without momentum", "none", _sgd(momentum=False)),
        OptimizerSpec(
            "adafactor",
            "Adafactor (torch.optim.Adafactor)",
            "step; row and column variances (matrices) or a variance (vectors)",
            _adafactor,
            traced=False,
        ),
        OptimizerSpec(
            "adamw-fused",
            "AdamW, fused kernel (torch, fused=True)",
            "step, exp_avg, exp_avg_sq",
            _adam("adamw", fused=True),
        ),
        OptimizerSpec(
            "adamw-foreach",
            "AdamW, multi-tensor kernels (torch, foreach=True)",
            "step, exp_avg, exp_avg_sq",
            _adam("adamw", foreach_forced=True),
        ),
        OptimizerSpec(
            "adamw8bit",
            "8-bit AdamW (torchao.optim.AdamW8bit, block 256)",
            "step; exp_avg and exp_avg_sq as 8-bit codes + a float32 scale per 256 + a 1 KiB code map",
            _adamw8bit,
            traced=False,
            package="torchao",
        ),
    )
}
assert tuple(OPTIMIZER_SPECS) == OPTIMIZER_NAMES, "one OptimizerSpec per OptimizerName, in its order"


def optimizer_spec(name: str) -> OptimizerSpec:
    """The registry entry of an optimizer name (any case); LayerprofError naming the choices otherwise."""
    spec = OPTIMIZER_SPECS.get(name.lower())
    if spec is None:
        raise LayerprofError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    return spec


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
    """The optimizer `name` over `params`: Adam/AdamW with betas (beta1, beta2), SGD with beta1 as its momentum
    (sgd-plain none), Adafactor with torch's defaults, fused or foreach AdamW, torchao's 8-bit AdamW.

    `weight_decay=None` keeps the library's default; `foreach=None` is PyTorch's own choice of implementation (the
    multi-tensor kernels on CUDA, a per-tensor loop on the CPU); adamw-fused and adamw-foreach fix their own.
    """
    return optimizer_spec(name).build(params, learning_rate, weight_decay, beta1, beta2, foreach)
