"""Split granularity (the paper's second open question): the same model split at other depths, and which split
gives the best ladder.

Depth 0 is Algorithm 1's split (`layers`). Depth k + 1 also descends into every class of depth k's layers that
holds two or more sub-modules with parameters (a ResNet's BasicBlock into its convolutions and norms, a
transformer block into attention, MLP and norms): the `--unwrap` classes that reproduce it are named. A finer split
has more z to choose rungs from, a coarser one fewer and larger steps.

The cost of each z at each depth is composed from one per-layer trace at the finest depth
(`layerprof.predict.layercosts`): every forward FLOP, and for the trainable layers their weight-gradient and internal
FLOPs and the gradient passed down by all but the lowest trainable sub-layer. At depth 0 this equals the
estimate's cells
exactly (tested), so no depth needs a sweep of its own. `choose_split` runs the ladder's rung selection on each
depth's staircase and prefers the most rungs whose neighbour ratios are close to eta, then the smallest distance
from eta.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from layerprof.errors import LayerprofError
from layerprof.fidelity.ladder import select_rungs
from layerprof.predict.layercosts import OUTSIDE, LayerCostTable, layer_costs
from layerprof.profile import Layer, Profile
from layerprof.sources.models import ModelOptions, split_without_memory


@dataclass
class SplitAtDepth:
    """The split at one depth: the --unwrap classes that give it, and its layers."""

    depth: int
    unwrap: tuple[str, ...]  # the --unwrap classes that give this split
    layers: list[Layer]


def splits_by_depth(spec: str, options: ModelOptions, deepest: int = 2) -> list[SplitAtDepth]:
    """The splits at depth 0, 1, ..., `deepest` (fewer where nothing is left to descend into)."""
    if deepest < 0:
        raise LayerprofError(f"--depth must be 0 or more, got {deepest}")
    _, layers = split_without_memory(spec, options)
    splits = [SplitAtDepth(0, tuple(options.unwrap), layers)]
    for depth in range(1, deepest + 1):
        finer = _descendable_classes(spec, options, splits[-1])
        if not finer:
            break
        unwrap = tuple(dict.fromkeys([*splits[-1].unwrap, *finer]))
        _, layers = split_without_memory(spec, replace(options, unwrap=unwrap))
        if len(layers) == len(splits[-1].layers):
            break
        splits.append(SplitAtDepth(depth, unwrap, layers))
    return splits


def _descendable_classes(spec: str, options: ModelOptions, split: SplitAtDepth) -> list[str]:
    """Classes of the split's layers whose modules hold two or more sub-modules with parameters."""
    loaded, _ = split_without_memory(spec, replace(options, unwrap=split.unwrap))
    modules = dict(loaded.model.named_modules())
    classes = []
    for layer in split.layers:
        module = modules.get(layer.name)
        if module is None:
            continue
        children = [child for child in module.children() if any(True for _ in child.parameters())]
        if len(children) >= 2 and type(module).__name__ not in classes:
            classes.append(type(module).__name__)
    return classes


@dataclass
class SplitChoice:
    """One depth's staircase and the rungs the ladder picks from it."""

    depth: int
    unwrap: tuple[str, ...]
    layer_count: int
    flops_by_z: dict[int, int]
    rungs: list[int]
    close_to_eta: bool
    distance_from_eta: float  # mean |log(ratio) - log(eta)| over neighbour rungs, in log steps of eta
    chosen: bool = False


@dataclass
class SplitReport:
    """The splits at every depth compared by the ladder each gives, and the one chosen with why."""

    model: str
    batch_size: int
    eta: float
    choices: list[SplitChoice] = field(default_factory=list)
    reason: str = ""

    @property
    def best(self) -> SplitChoice:
        """The split chosen (a finished report marks exactly one)."""
        return next(choice for choice in self.choices if choice.chosen)


def composed_flops(costs: LayerCostTable, fine_layers: Sequence[Layer], layers: Sequence[Layer]) -> dict[int, int]:
    """FLOPs of each z for a split whose layers are unions of the traced (finer) layers."""
    owner_of = _coarse_owner(fine_layers, layers)
    fine = {cost.index: cost for cost in costs.layers if cost.index != OUTSIDE}
    outside = next(cost for cost in costs.layers if cost.index == OUTSIDE)
    forward = sum(cost.forward_flops for cost in costs.layers)
    base = forward + outside.backward_input_flops + outside.backward_weight_flops
    n = len(layers)
    flops = {}
    for z in range(1, n + 1):
        lowest = n - z
        trained = sorted(index for index, coarse in owner_of.items() if coarse >= lowest)
        total = base
        for position, index in enumerate(trained):
            total += fine[index].backward_weight_flops + fine[index].backward_internal_flops
            if position > 0:  # the lowest trainable sub-layer passes no gradient down
                total += fine[index].backward_input_flops
        flops[z] = total
    return flops


def _coarse_owner(fine_layers: Sequence[Layer], layers: Sequence[Layer]) -> dict[int, int]:
    """For each fine layer, the index of the coarser layer holding its parameters."""
    holder = {name: layer.index for layer in layers for name in layer.parameter_names}
    owner = {}
    for layer in fine_layers:
        indices = {holder[name] for name in layer.parameter_names if name in holder}
        if len(indices) != 1:
            raise LayerprofError(f"layer {layer.name} does not sit inside one layer of the coarser split")
        owner[layer.index] = indices.pop()
    return owner


def choose_split(
    spec: str, options: ModelOptions, batch_size: int, eta: float, precision: str = "32-true", deepest: int = 2
) -> SplitReport:
    """Each depth's FLOP staircase, its rungs, and the depth whose ladder has the most rungs close to eta."""
    splits = splits_by_depth(spec, options, deepest)
    finest = splits[-1]
    costs = layer_costs(spec, replace(options, unwrap=finest.unwrap), batch_size, precision)
    report = SplitReport(spec, batch_size, eta)
    for split in splits:
        flops = composed_flops(costs, finest.layers, split.layers)
        rungs, close, _ = select_rungs({z: float(v) for z, v in flops.items()}, eta)
        ratios = [math.log(flops[b] / flops[a]) / math.log(eta) for a, b in zip(rungs, rungs[1:], strict=False)]
        distance = sum(abs(r - 1) for r in ratios) / len(ratios) if ratios else math.inf
        report.choices.append(SplitChoice(split.depth, split.unwrap, len(split.layers), flops, rungs, close, distance))
    best = best_choice(report.choices)
    best.chosen = True
    report.reason = (
        f"depth {best.depth} ({best.layer_count} layers) gives {len(best.rungs)} rungs "
        f"{'within half a step of' if best.close_to_eta else 'nearest to'} eta={eta:g} "
        f"(mean distance {best.distance_from_eta:.2f} log steps)"
        + ("" if not best.unwrap else f"; split it so with --unwrap {','.join(best.unwrap)}")
    )
    return report


def best_choice(choices: Sequence[SplitChoice]) -> SplitChoice:
    """Rungs close to eta first, then the most rungs, then the nearest to eta, then the coarser split."""
    return max(choices, key=lambda c: (c.close_to_eta, len(c.rungs), -c.distance_from_eta, -c.depth))


def choose_split_for_profile(profile: Profile, batch_size: int, eta: float) -> SplitReport:
    """`choose_split` for the model, batch size and precision of a profile."""
    return choose_split(
        profile.model.spec, ModelOptions.of_profile(profile), batch_size, eta, profile.settings.precision
    )
