"""`layerprof audit`: does the user's own freezing save what it should?

The user's factory hands over the training set-up as it runs it (`layerprof.CustomWorkload` with `optimizer` and
`loss` or `step`; docs/audit.md). The audit runs the step as written, a few times, with the live-tensor tracker,
the FLOP recorder and a timer, and watches it: which parameters get a gradient, which layers' outputs carry a
graph, which dropout and BatchNorm modules run in train mode, what the optimizer holds. Each finding is measured,
not guessed: its cost is the step as written against the same step with that one thing fixed (the fix applied
for one run and undone). The bottom line sets the step as written against layerprof's own freezing of the same
trained parameters (`freeze_layers` at the z that reaches the lowest trained layer, the rest kept frozen) and
against full training, with the same batch, precision and optimizer class.

"Trained" means what the user means: in the optimizer, with a learning rate above zero, and requiring grad.
Everything else is meant frozen.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Literal, Protocol, TypedDict

import torch
from torch import nn
from torch.utils._pytree import tree_flatten
from torch.utils.hooks import RemovableHandle

from layerprof.errors import LayerprofError
from layerprof.measure.instruments import (
    LiveTensorTracker,
    OpRecorder,
    detached,
    first_line,
    optimizer_state_bytes,
    optimizer_state_tensors,
    tensors_in,
)
from layerprof.profile import Layer, MemoryCategory
from layerprof.sources.layers import freeze_layers, trace_split

FindingKind = Literal[
    "grad-without-optimizer",
    "frozen-in-optimizer",
    "backward-through-frozen-prefix",
    "no-gradient-reaches-trained",
    "frozen-in-train-mode",
    "scattered-frozen",
]
# One entry per kind: its title.
FINDING_KINDS: dict[str, str] = {
    "grad-without-optimizer": "parameters meant frozen still require grad",
    "frozen-in-optimizer": "frozen parameters are still in the optimizer",
    "backward-through-frozen-prefix": "backward runs through the frozen prefix",
    "no-gradient-reaches-trained": "no gradient reaches parameters the optimizer trains",
    "frozen-in-train-mode": "frozen layers run dropout or BatchNorm in train mode",
    "scattered-frozen": "the frozen layers are not a prefix",
}
DEFAULT_TOLERANCE = 0.01  # a finding fails when it costs more than this share of the step's peak memory or FLOPs
TIMED_STEPS = 3


Step = Callable[[nn.Module, object, torch.optim.Optimizer], object]  # the user's step(model, batch, optimizer)


class Scheduler(Protocol):
    """Anything the factory hands over as its scheduler: stepped after each optimizer step (a torch LR scheduler)."""

    def step(self) -> object:
        """Advance by one optimizer step."""


class Cost(TypedDict):
    """What fixing one finding saves: `Finding`'s cost fields."""

    cost_bytes: int
    cost_flops: int
    cost_ms: float


Measured = Callable[..., "StepCost"]  # the audit's step runner: (optimizer, batch, ..., in_eval) -> StepCost


@dataclass
class StepCost:
    """One training step as run: peak tensor memory, matrix FLOPs, median step time, and what it trains."""

    peak_bytes: int
    flops: int
    step_time_ms: float
    gradient_bytes: int
    optimizer_state_bytes: int
    trained_params: int


@dataclass
class Finding:
    """One mistake: its kind, where (parameter or module names), what it costs the step (measured: the step as
    written less the step with this one thing fixed; costs of several findings may overlap), and the fix."""

    kind: FindingKind
    where: list[str]
    message: str
    fix: str
    cost_bytes: int = 0
    cost_flops: int = 0
    cost_ms: float = 0.0
    blocking: bool = False  # fails whatever it costs: nothing trains as meant, or frozen weights change
    fails: bool = False  # set by the audit: beyond the tolerance, or blocking

    @property
    def title(self) -> str:
        """The kind in words."""
        return FINDING_KINDS[self.kind]


@dataclass
class BottomLine:
    """The step as written against full training and against layerprof's freezing of the same trained
    parameters (`ideal`, z = `trainable_layers`): "you save X of the Y you could"."""

    trainable_layers: int
    layer_count: int
    full: StepCost
    as_written: StepCost
    ideal: StepCost

    def saved(self, metric: str) -> tuple[float, float]:
        """(saved as written, could be saved) against full training, for peak_bytes, flops or step_time_ms."""
        full = getattr(self.full, metric)
        return full - getattr(self.as_written, metric), full - getattr(self.ideal, metric)


@dataclass
class AuditReport:
    """What `layerprof audit` found: the split, the findings, the bottom line; plain data (`to_dict`)."""

    spec: str
    batch_size: int
    device: str
    tolerance: float
    layers: list[str]
    trained_params: int
    total_params: int
    findings: list[Finding]
    bottom_line: BottomLine
    notes: list[str] = field(default_factory=list)

    @property
    def missed_bytes(self) -> int:
        """Peak memory the step as written holds beyond layerprof's freezing of the same parameters."""
        return max(0, self.bottom_line.as_written.peak_bytes - self.bottom_line.ideal.peak_bytes)

    @property
    def missed_flops(self) -> int:
        """FLOPs the step as written runs beyond layerprof's freezing of the same parameters."""
        return max(0, self.bottom_line.as_written.flops - self.bottom_line.ideal.flops)

    @property
    def exit_code(self) -> int:
        """0 clean, 1 when a finding fails (or the bottom line misses more than the tolerance)."""
        written = self.bottom_line.as_written
        missed = self.missed_bytes > self.tolerance * written.peak_bytes or (
            self.missed_flops > self.tolerance * max(1, written.flops)
        )
        return 1 if missed or any(finding.fails for finding in self.findings) else 0

    def to_dict(self) -> dict[str, object]:
        """The JSON form (`--json`)."""
        data = asdict(self)
        for finding, out in zip(self.findings, data["findings"], strict=True):
            out["title"] = finding.title
        data["missed_bytes"], data["missed_flops"], data["exit_code"] = (
            self.missed_bytes,
            self.missed_flops,
            self.exit_code,
        )
        return data


# ---------------------------------------------------------------- the set-up


@dataclass
class Setup:
    """The user's training set-up, checked: model, optimizer, batch, and the step that runs them."""

    spec: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    batch: object  # what make_batch returned: handed to the step as it is
    step: Step
    loss: Callable[[nn.Module, object], torch.Tensor] | None
    scheduler: Scheduler | None
    unwrap: tuple[str, ...]


def load_setup(spec: str, overrides: dict[str, str], batch_size: int, device: torch.device) -> Setup:
    """Call the factory FILE.py:FN or pkg.module:FN and check what it returns (docs/audit.md)."""
    from layerprof.sources.builders import call_factory

    if batch_size < 1:
        raise LayerprofError(f"--batch-size must be at least 1, got {batch_size}")
    result, _, _ = call_factory(spec, overrides, device)
    missing = [name for name in ("model", "make_batch", "optimizer") if getattr(result, name, None) is None]
    if missing:
        raise LayerprofError(
            f"factory {spec} returned {type(result).__name__} without {', '.join(missing)}; audit needs a "
            "layerprof.CustomWorkload(model, make_batch, loss or step, optimizer=...) (docs/audit.md)"
        )
    loss = getattr(result, "loss", None)
    step = getattr(result, "step", None)
    if loss is None and step is None:
        raise LayerprofError(f"factory {spec} gives neither loss(model, batch) nor step(model, batch, optimizer)")
    model, optimizer = result.model, result.optimizer
    if not isinstance(model, nn.Module) or not any(True for _ in model.parameters()):
        raise LayerprofError(f"factory {spec} gave no nn.Module with parameters to audit")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise LayerprofError(f"factory {spec} gave optimizer={type(optimizer).__name__}; expected a torch.optim one")
    held = {id(p) for p in model.parameters()}
    foreign = [i for i, group in enumerate(optimizer.param_groups) for p in group["params"] if id(p) not in held]
    if foreign:
        raise LayerprofError(
            f"factory {spec}: the optimizer holds parameters that are not the model's (group {foreign[0]})"
        )
    scheduler = getattr(result, "scheduler", None)
    batch = result.make_batch(batch_size, device)
    if step is None:
        assert loss is not None

        def step(model: nn.Module, batch: object, optimizer: torch.optim.Optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            loss(model, batch).backward()
            optimizer.step()

    return Setup(spec, model, optimizer, batch, step, loss, scheduler, tuple(getattr(result, "unwrap", ())))


# ---------------------------------------------------------------- one step, measured


@dataclass
class Watch:
    """What one step as written showed: gradients produced, layers whose output carried a graph, modules that
    ran in train mode, the warnings it raised."""

    graded: set[int] = field(default_factory=set)  # id of each parameter that received a gradient
    graph_layers: set[str] = field(default_factory=set)
    train_mode: set[str] = field(default_factory=set)  # dropout/BatchNorm modules that ran with training=True
    first_call: dict[str, int] = field(default_factory=dict)  # layer or dropout/BatchNorm module -> first call
    warnings: list[str] = field(default_factory=list)


def _carries_graph(value: object) -> bool:
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in tree_flatten(value)[0])


@contextmanager
def _watching(model: nn.Module, layers: Sequence[Layer], watch: Watch) -> Iterator[None]:
    handles: list[RemovableHandle] = []
    for param in model.parameters():
        if param.requires_grad:
            handles.append(param.register_post_accumulate_grad_hook(lambda p: watch.graded.add(id(p))))

    def called(name: str) -> None:
        watch.first_call.setdefault(name, len(watch.first_call))

    for layer in layers:
        module = model.get_submodule(layer.name)
        handles.append(module.register_forward_pre_hook(lambda _m, _a, name=layer.name: called(name)))

        def on_output(_module: nn.Module, _args: object, output: object, name: str = layer.name) -> None:
            if _carries_graph(output):
                watch.graph_layers.add(name)

        handles.append(model.get_submodule(layer.name).register_forward_hook(on_output))
    for name, module in model.named_modules():
        if _stateful_in_train(module):

            def on_input(module: nn.Module, _args: object, name: str = name) -> None:
                called(name)
                if module.training:
                    watch.train_mode.add(name)

            handles.append(module.register_forward_pre_hook(on_input))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        watch.warnings.extend(str(w.message) for w in caught)
    finally:
        for handle in handles:
            handle.remove()


def _stateful_in_train(module: nn.Module) -> bool:
    """Dropout with p > 0, or a normalisation that updates running statistics in train mode."""
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    return isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats


def measure_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: object,
    step: Step,
    device: torch.device,
    scheduler: Scheduler | None = None,
) -> StepCost:
    """One warm-up step (the optimizer's state exists), one step under the tracker and the FLOP recorder
    (starting with no gradient held, as zero_grad(set_to_none=True) leaves it), then the median of a few timed
    steps."""

    def run() -> None:
        step(model, batch, optimizer)
        if scheduler is not None:
            scheduler.step()

    run()
    for param in model.parameters():
        param.grad = None
    tracker = LiveTensorTracker()
    tracker.register(list(model.parameters()) + list(model.buffers()), MemoryCategory.PARAMETERS)
    tracker.register(optimizer_state_tensors(optimizer), MemoryCategory.OPTIMIZER_STATE)
    tracker.register(tensors_in(batch), MemoryCategory.INPUTS)
    tracker.watch_gradients(model.parameters())
    recorder = OpRecorder()
    with tracker, recorder:
        run()
    times = []
    for _ in range(TIMED_STEPS):
        began = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - began) * 1000.0)
    trained = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad and group["lr"] > 0]
    return StepCost(
        peak_bytes=tracker.peak,
        flops=sum(op.flops for op in recorder.ops),
        step_time_ms=statistics.median(times),
        gradient_bytes=tracker.category_peaks[MemoryCategory.GRADIENTS],
        optimizer_state_bytes=optimizer_state_bytes(optimizer),
        trained_params=sum(p.numel() for p in {id(p): p for p in trained}.values()),
    )


def rebuilt_optimizer(optimizer: torch.optim.Optimizer, keep: Callable[[nn.Parameter], bool]) -> torch.optim.Optimizer:
    """A fresh optimizer of the same class and groups, holding only the parameters `keep` accepts."""
    groups = [{**group, "params": [p for p in group["params"] if keep(p)]} for group in optimizer.param_groups]
    groups = [group for group in groups if group["params"]]
    if not groups:
        raise LayerprofError("the optimizer would hold no parameter: nothing trains")
    return type(optimizer)(groups)  # type: ignore[call-arg]  # a subclass takes its groups alone


def optimizer_like(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """A fresh optimizer of the same class and the first group's settings over `params`."""
    return type(optimizer)([{**optimizer.param_groups[0], "params": list(params)}])  # type: ignore[call-arg]


@contextmanager
def _flags(params: Sequence[nn.Parameter], requires_grad: bool) -> Iterator[None]:
    before = [(p, p.requires_grad) for p in params]
    for param in params:
        param.requires_grad_(requires_grad)
    try:
        yield
    finally:
        for param, flag in before:
            param.requires_grad_(flag)


@contextmanager
def _eval_modules(modules: Sequence[nn.Module]) -> Iterator[None]:
    """These modules in eval mode, even where the step calls model.train() (their `train` is held off)."""
    before = [(m, m.training, m.__dict__.get("train")) for m in modules]
    for module in modules:
        module.training = False
        module.train = lambda mode=True, module=module: module  # type: ignore[method-assign, misc]
    try:
        yield
    finally:
        for module, training, own in before:
            module.training = training
            if own is None:
                del module.train
            else:
                module.train = own  # type: ignore[method-assign]


@contextmanager
def _cut_outputs(modules: Sequence[nn.Module]) -> Iterator[None]:
    handles = [m.register_forward_hook(lambda _m, _a, out: detached(out)) for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------- the audit


def audit(
    spec: str,
    batch_size: int = 8,
    overrides: dict[str, str] | None = None,
    device: str | torch.device = "cpu",
    tolerance: float = DEFAULT_TOLERANCE,
) -> AuditReport:
    """Audit the freezing of the training set-up FN returns (FILE.py:FN or pkg.module:FN): run its step, report
    each finding with where it is, what it costs and the fix, and the bottom line against layerprof's freezing."""
    if not 0 <= tolerance < 1:
        raise LayerprofError(f"--tolerance must be a share in [0, 1), got {tolerance}")
    device = torch.device(device)
    setup = load_setup(spec, overrides or {}, batch_size, device)
    model, optimizer, batch = setup.model, setup.optimizer, setup.batch
    loss = setup.loss

    def run_forward(m: nn.Module) -> None:
        if loss is not None:
            loss(m, batch)
        else:  # the step alone: it runs its backward too (the split is traced under no_grad)
            with torch.enable_grad():
                setup.step(m, batch, optimizer)

    with warnings.catch_warnings():  # a split that falls back to registration order says so in the notes
        warnings.simplefilter("ignore")
        split = trace_split(model, setup.unwrap, run_forward)
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    params = {id(p): p for p in model.parameters()}
    in_optimizer: dict[int, float] = {}  # each parameter the optimizer holds: its group's learning rate
    for group in optimizer.param_groups:
        for param in group["params"]:
            in_optimizer[id(param)] = group["lr"]
    trained = {key for key, lr in in_optimizer.items() if lr > 0 and params[key].requires_grad}
    # the split, with every parameter not trained named frozen: layerprof's own freezing keeps them frozen
    layers = [
        replace(
            layer,
            frozen_names=tuple(n for n in layer.parameter_names if id(model.get_parameter(n)) not in trained),
        )
        for layer in split.layers
    ]
    trains = [any(id(model.get_parameter(n)) in trained for n in layer.parameter_names) for layer in layers]
    if not any(trains):
        raise LayerprofError(f"{spec}: no parameter is in the optimizer with lr > 0 and requires grad: nothing trains")
    first = trains.index(True)
    training = [m.training for m in model.modules()]

    def measured(
        opt: torch.optim.Optimizer | None = None,
        the_batch: object = None,
        scheduler: Scheduler | None = None,
        quiet: bool = True,
        in_eval: Sequence[nn.Module] = (),
    ) -> StepCost:
        """The step with the modules' modes as the factory left them (those `in_eval` held in eval mode); the
        warnings of a fixed run are its own."""
        for module, mode in zip(model.modules(), training, strict=True):
            module.training = mode
        with warnings.catch_warnings(), _eval_modules(in_eval):
            if quiet:
                warnings.simplefilter("ignore")
            return measure_step(
                model, opt or optimizer, batch if the_batch is None else the_batch, setup.step, device, scheduler
            )

    watch = Watch()
    try:
        with _watching(model, layers, watch):
            as_written = measured(scheduler=setup.scheduler, quiet=False)
    except LayerprofError:
        raise
    except Exception as error:  # noqa: BLE001 - the user's step may raise anything: an input error, named
        raise LayerprofError(f"{spec}: the training step raised {first_line(error)}") from None
    findings = []
    findings += _grad_without_optimizer(model, names, params, in_optimizer, watch, as_written, measured)
    findings += _frozen_in_optimizer(names, params, optimizer, as_written, measured)
    findings += _backward_through_prefix(
        model, layers, first, names, params, trained, batch, watch, as_written, measured
    )
    findings += _no_gradient(names, params, trained, watch)
    findings += _frozen_in_train_mode(model, layers, trains, watch, as_written, measured)
    findings += _scattered(model, layers, trains, optimizer, trained, batch, as_written, measured)
    bottom_line = _bottom_line(model, layers, first, optimizer, trained, batch, as_written, measured)
    for module, mode in zip(model.modules(), training, strict=True):
        module.training = mode
    for finding in findings:
        finding.fails = (
            finding.blocking
            or finding.cost_bytes > tolerance * as_written.peak_bytes
            or (finding.cost_flops > tolerance * max(1, as_written.flops))
        )
    return AuditReport(
        spec=spec,
        batch_size=batch_size,
        device=str(device),
        tolerance=tolerance,
        layers=[layer.name or "(the model itself)" for layer in layers],
        trained_params=sum(params[key].numel() for key in trained),
        total_params=sum(p.numel() for p in params.values()),
        findings=findings,
        bottom_line=bottom_line,
        notes=[] if split.order == "forward" else [f"layers are in registration order: {split.reason}"],
    )


def _bottom_line(
    model: nn.Module,
    layers: Sequence[Layer],
    first: int,
    optimizer: torch.optim.Optimizer,
    trained: set[int],
    batch: object,
    as_written: StepCost,
    measured: Measured,
) -> BottomLine:
    """The step as written against layerprof's freezing of the same trained parameters (z reaching the lowest
    trained layer, every parameter not trained kept frozen, the batch detached) and against full training."""
    z = len(layers) - first
    frozen = freeze_layers(model, layers, z)  # `layers` name every parameter not trained as frozen
    try:
        ideal = measured(rebuilt_optimizer(optimizer, lambda p: id(p) in trained), detached(batch))
    finally:
        frozen.remove()
    frozen = freeze_layers(model, [replace(layer, frozen_names=()) for layer in layers], len(layers))
    try:
        full = measured(optimizer_like(optimizer, model.parameters()), detached(batch))
    finally:
        frozen.remove()
    return BottomLine(z, len(layers), full, as_written, ideal)


def _difference(as_written: StepCost, fixed: StepCost) -> Cost:
    return {
        "cost_bytes": max(0, as_written.peak_bytes - fixed.peak_bytes),
        "cost_flops": max(0, as_written.flops - fixed.flops),
        "cost_ms": max(0.0, as_written.step_time_ms - fixed.step_time_ms),
    }


def _listed(names: Sequence[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _grad_without_optimizer(
    model: nn.Module,
    names: dict[int, str],
    params: dict[int, nn.Parameter],
    in_optimizer: dict[int, float],
    watch: Watch,
    as_written: StepCost,
    measured: Measured,
) -> list[Finding]:
    """Parameters that require grad, and got one, but that no optimizer group trains (absent, or lr 0)."""
    idle = [key for key in watch.graded if key not in in_optimizer or in_optimizer[key] == 0]
    if not idle:
        return []
    where = sorted((names[key] for key in idle), key=list(names.values()).index)
    with _flags([params[key] for key in idle], False):
        fixed = measured()
    return [
        Finding(
            "grad-without-optimizer",
            where,
            f"{len(where)} parameters ({_listed(where)}) are not trained (not in the optimizer, or lr 0) but require "
            "grad: their gradients are computed and held for nothing",
            f"call requires_grad_(False) on {_listed(where)} (or on the modules holding them) before training",
            **_difference(as_written, fixed),
        )
    ]


def _frozen_in_optimizer(
    names: dict[int, str],
    params: dict[int, nn.Parameter],
    optimizer: torch.optim.Optimizer,
    as_written: StepCost,
    measured: Measured,
) -> list[Finding]:
    """Parameters that do not require grad but sit in the optimizer: state held, weight decay on a stale grad."""
    frozen = [p for group in optimizer.param_groups for p in group["params"] if not p.requires_grad]
    if not frozen:
        return []
    where = [names[id(p)] for p in frozen]
    state = sum(
        t.untyped_storage().nbytes()
        for p in frozen
        for t in optimizer.state.get(p, {}).values()
        if isinstance(t, torch.Tensor)
    )
    decayed = [
        names[id(p)]
        for group in optimizer.param_groups
        if group.get("weight_decay", 0) > 0
        for p in group["params"]
        if not p.requires_grad
    ]
    fixed = measured(rebuilt_optimizer(optimizer, lambda p: p.requires_grad))
    cost = _difference(as_written, fixed)
    cost["cost_bytes"] = max(cost["cost_bytes"], state)
    decay = f"; {len(decayed)} of them in a group with weight decay" if decayed else ""
    return [
        Finding(
            "frozen-in-optimizer",
            where,
            f"{len(where)} parameters that do not require grad ({_listed(where)}) are in the optimizer, holding "
            f"{state:,} bytes of its state{decay}",
            "build the optimizer from [p for p in model.parameters() if p.requires_grad], after freezing",
            **cost,
        )
    ]


def _backward_through_prefix(
    model: nn.Module,
    layers: Sequence[Layer],
    first: int,
    names: dict[int, str],
    params: dict[int, nn.Parameter],
    trained: set[int],
    batch: object,
    watch: Watch,
    as_written: StepCost,
    measured: Measured,
) -> list[Finding]:
    """Layers below the lowest trained one whose outputs carried a graph: backward runs through them."""
    prefix = layers[:first]
    through = [layer.name for layer in prefix if layer.name in watch.graph_layers]
    if not through:
        return []
    causes = []
    if any(t.requires_grad for t in tensors_in(batch)):
        causes.append("an input of the batch requires grad")
    graded = [
        names[id(model.get_parameter(n))]
        for layer in prefix
        for n in layer.parameter_names
        if model.get_parameter(n).requires_grad
    ]
    if graded:
        causes.append(f"parameters in the prefix require grad ({_listed(graded)})")
    tied = [n for layer in prefix for n in layer.parameter_names if id(model.get_parameter(n)) in trained]
    if tied:
        causes.append(f"a trained parameter is used in the prefix too ({_listed(tied)})")
    if not causes:
        causes.append("a forward hook or the forward makes a prefix output require grad (enable_input_require_grads?)")
    with _cut_outputs([model.get_submodule(layer.name) for layer in prefix]):
        fixed = measured(the_batch=detached(batch))
    return [
        Finding(
            "backward-through-frozen-prefix",
            through,
            f"the frozen prefix ({_listed(through)}) builds a graph below the lowest trained layer "
            f"({layers[first].name}): {'; '.join(causes)}; its activations are saved and its backward runs for "
            "nothing",
            "run the frozen prefix under torch.no_grad() (or detach its output), keep inputs without requires_grad, "
            "and drop enable_input_require_grads where no checkpointing needs it",
            **_difference(as_written, fixed),
        )
    ]


def _no_gradient(
    names: dict[int, str], params: dict[int, nn.Parameter], trained: set[int], watch: Watch
) -> list[Finding]:
    """Parameters the optimizer trains that received no gradient in the step (reentrant checkpointing over a
    frozen boundary: transformers#21381)."""
    starved = [names[key] for key in trained if key not in watch.graded]
    if not starved:
        return []
    reentrant = any("None of the inputs have requires_grad=True" in message for message in watch.warnings)
    cause = (
        "reentrant activation checkpointing whose inputs do not require grad (a frozen layer below) cuts them off"
        if reentrant
        else "they are not used in the forward, or the graph is cut (detach, no_grad) above them"
    )
    return [
        Finding(
            "no-gradient-reaches-trained",
            sorted(starved, key=list(names.values()).index),
            f"{len(starved)} parameters the optimizer trains got no gradient ({_listed(sorted(starved))}): {cause}; "
            "they never train",
            "use torch.utils.checkpoint.checkpoint(..., use_reentrant=False) (gradient_checkpointing_enable("
            "gradient_checkpointing_kwargs={'use_reentrant': False})), or make the checkpointed input require grad",
            blocking=True,
        )
    ]


def _frozen_in_train_mode(
    model: nn.Module,
    layers: Sequence[Layer],
    trains: Sequence[bool],
    watch: Watch,
    as_written: StepCost,
    measured: Measured,
) -> list[Finding]:
    """Dropout and BatchNorm modules that ran in train mode inside a layer that trains nothing, or before the
    lowest trained layer (a parameter-free dropout of a frozen stem). A BatchNorm's running statistics change
    the frozen layers: that fails whatever it costs."""
    frozen_layers = [layer.name for layer, train in zip(layers, trains, strict=True) if not train]
    lowest = layers[list(trains).index(True)].name
    boundary = watch.first_call.get(lowest, -1)

    def frozen(name: str) -> bool:
        inside = any(layer == "" or name == layer or name.startswith(f"{layer}.") for layer in frozen_layers)
        return inside or watch.first_call.get(name, boundary) < boundary

    inside = [name for name in sorted(watch.train_mode) if frozen(name)]
    if not inside:
        return []
    modules = [model.get_submodule(name) for name in inside]
    statistics_move = [
        name for name, m in zip(inside, modules, strict=True) if isinstance(m, nn.modules.batchnorm._NormBase)
    ]
    fixed = measured(in_eval=modules)
    moving = f"; the running statistics of {_listed(statistics_move)} change on every step" if statistics_move else ""
    return [
        Finding(
            "frozen-in-train-mode",
            inside,
            f"frozen layers run {_listed(inside)} in train mode: dropout still masks and BatchNorm still normalises "
            f"with the batch's statistics{moving}, so the frozen layers compute what eval mode would not",
            f"after model.train(), put the frozen modules back in eval mode ({_listed(inside)}: .eval()); "
            "`layerprof profile --eval-frozen` measures freezing so",
            blocking=bool(statistics_move),
            **_difference(as_written, fixed),
        )
    ]


def _scattered(
    model: nn.Module,
    layers: Sequence[Layer],
    trains: Sequence[bool],
    optimizer: torch.optim.Optimizer,
    trained: set[int],
    batch: object,
    as_written: StepCost,
    measured: Measured,
) -> list[Finding]:
    """Layers that train nothing above the lowest trained one: the frozen set is no prefix. Its cost: the step
    as written against layerprof's freezing of a prefix with as many trained layers."""
    first = trains.index(True)
    gaps = [layer.name for layer, train in zip(layers[first:], trains[first:], strict=True) if not train]
    if not gaps:
        return []
    count = sum(trains)
    whole = [replace(layer, frozen_names=()) for layer in layers]
    frozen = freeze_layers(model, whole, count)
    try:
        prefix = measured(
            optimizer_like(optimizer, (p for p in model.parameters() if p.requires_grad)), detached(batch)
        )
    finally:
        frozen.remove()
    cost = _difference(as_written, prefix)
    return [
        Finding(
            "scattered-frozen",
            gaps,
            f"{len(gaps)} frozen layers ({_listed(gaps)}) sit above the lowest trained layer "
            f"({layers[first].name}): backward runs through them all the same. A prefix of the same size (the last "
            f"{count} layers trained) would peak at {prefix.peak_bytes:,} bytes and {prefix.flops:,} FLOPs, against "
            f"{as_written.peak_bytes:,} and {as_written.flops:,}",
            f"freeze a prefix instead: train the last {count} layers (layerprof freeze_layers z={count}), or accept "
            "the cost of the frozen layers in between",
            **cost,
        )
    ]
