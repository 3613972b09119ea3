"""Layer freezing in your own training loop: split a model as the command line does, freeze it for z with the
profiler's cut, and read a profile's ladder as data (docs/api.md).

    layers = layerprof.split_for_freezing(model, example_inputs)   # traced forward order, as `layerprof layers`
    with layerprof.freeze(model, layers, trainable_layers=z) as frozen:
        optimizer = torch.optim.SGD(frozen.trainable_parameters(), lr=0.1)
        ...                                                          # train: the first n - z layers stay frozen
    ladder = layerprof.ladder_of("profiles/my-model-cpu.json", eta=3)  # rungs: budget index -> z

The same three are what an exported snippet's training function (`ladder --export LIB --objective FILE.py:FN`)
uses; the contract of that function is `EXPORT_CONTRACT` in `layerprof.outputs.exporters`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from layerprof.errors import LayerprofError, LayerprofWarning

if TYPE_CHECKING:
    from torch import nn

    from layerprof.fidelity.ladder import Ladder
    from layerprof.profile import Layer, Profile
    from layerprof.sources.layers import FrozenModel

__all__ = ["split_for_freezing", "freeze", "ladder_of"]


def _call(model: nn.Module, example: object) -> object:
    """The model run on example inputs: a tuple or list as positional arguments, a dict as keyword arguments,
    anything else (a tensor) as the one argument."""
    if isinstance(example, Mapping):
        return model(**example)
    if isinstance(example, (tuple, list)):
        return model(*example)
    return model(example)


def split_for_freezing(
    model: nn.Module, example: object = None, *, workload: Any = None, unwrap: Sequence[str | type] = ()
) -> list[Layer]:
    """`model`'s layers in the order one forward pass runs them, split as `layerprof layers` and the profiler
    split it (Algorithm 1: Sequentials, ModuleLists, torch's Transformer stacks and the classes in `unwrap` are
    descended into; leaves that own parameters are the layers).

    The forward pass runs once, without gradients, on `example` (the inputs the model takes: a tensor, a tuple
    of positional arguments or a dict of keyword arguments; a small batch is enough), or on a batch of
    `workload` (a `layerprof.CustomWorkload`, or any object with `make_batch(batch_size, device)` and
    `loss(model, batch)`, whose `unwrap` joins `unwrap`). A forward pass that fails is an error, never a silent
    fall-back to registration order.
    """
    from layerprof.sources.layers import TraceFailed, trace_split

    if (example is None) == (workload is None):
        raise LayerprofError(
            "split_for_freezing needs one of example (the inputs the model takes) or workload (make_batch and loss)"
        )
    if workload is not None:
        unwrap = (*tuple(getattr(workload, "unwrap", ())), *unwrap)

    def run_forward(traced: nn.Module) -> None:
        if workload is None:
            _call(traced, example)
            return
        parameter = next(traced.parameters())
        workload.loss(traced, workload.make_batch(2, parameter.device))

    try:
        return trace_split(model, tuple(unwrap), run_forward, trace_required=True).layers
    except TraceFailed as error:
        given = "example" if workload is None else "workload's batch"
        raise LayerprofError(
            f"the forward pass on the {given} failed ({error}); pass inputs the model accepts"
        ) from None


def freeze(
    model: nn.Module, layers: Sequence[Layer], trainable_layers: int, *, eval_frozen: bool = False
) -> FrozenModel:
    """Freeze all but the last `trainable_layers` of `layers` (from `split_for_freezing`) with the cut the
    profiler measures: frozen parameters get `requires_grad=False` and the graph is cut where the frozen prefix
    ends, so that it holds no activations for backward. With `eval_frozen` the frozen layers run in eval mode
    (BatchNorm keeps its running statistics, dropout is off).

    The result undoes the freezing (the cut, eval mode, every `requires_grad` as it was) with `remove()` or at the
    end of a `with` block; `trainable_parameters()` is what to give the optimizer. Freezing the model again (the
    next rung, a larger `trainable_layers`) first undoes this freezing, then thaws more layers.
    """
    from layerprof.sources.layers import freeze_layers

    previous = getattr(model, "_layerprof_frozen", None)
    if previous is not None:
        previous.remove()  # its cut sits at the old boundary
    frozen = freeze_layers(model, layers, trainable_layers, eval_frozen=eval_frozen)
    object.__setattr__(model, "_layerprof_frozen", frozen)
    return frozen


class _LadderOptions(TypedDict):
    """`ladder_of`'s options as `build_ladder` takes them (the cost apart: a profile file picks its default)."""

    eta: float
    batch_size: int | None
    min_layers: int
    gpu_memory: int | None
    configs: int | None
    budget_steps: int | None


def ladder_of(
    profile: Profile | str | Path,
    *,
    eta: float = 3.0,
    cost: str | None = None,
    batch_size: int | None = None,
    min_layers: int = 1,
    gpu_memory_bytes: int | None = None,
    configs: int | None = None,
    budget_steps: int | None = None,
) -> Ladder:
    """The ladder `layerprof ladder PROFILE` recommends, as data: `rungs` (each with `budget_index`, the budget an
    HPO library sees, `trainable_layers` z, `steps` on a joint ladder, step time and memory), the brackets
    halving runs, and `to_dict()` for JSON. `profile` is a Profile or a profile file; `cost` is "time" or
    "flops" (default: time where the profile has step times). Notes about the profile (an interrupted sweep)
    come as LayerprofWarning."""
    from layerprof.fidelity.ladder import build_ladder, default_cost, ladder_for

    options: _LadderOptions = {
        "eta": eta,
        "batch_size": batch_size,
        "min_layers": min_layers,
        "gpu_memory": gpu_memory_bytes,
        "configs": configs,
        "budget_steps": budget_steps,
    }
    if isinstance(profile, (str, Path)):
        ladder, notes = ladder_for(profile, cost_kind=cost, **options)
        for note in notes:
            warnings.warn(note, LayerprofWarning, stacklevel=2)
        return ladder
    return build_ladder(profile, cost_kind=cost or default_cost(profile), **options)
