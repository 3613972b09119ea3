"""Reuse's parts one at a time, on real CPU tensors of tiny models (no estimate, no fake tensors): a step with alike
frozen and trainable blocks replayed from their records gives the tracker's and the recorder's figures of the same
step run in full, to the byte; what a record is made of (the events of a call, the layout of its output), which
calls cannot be replayed, and records scaled across batch sizes. Written for layerprof/predict/reuse.py's mutants
(issue 40): tests/predict/test_reuse.py and test_reuse_batches.py check the same on real models' estimates, at
minutes a run."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch
from torch import nn

from layerprof.measure.instruments import FREED, RECATEGORISED, LiveTensorTracker, OpClass, OpCost, OpRecorder, Phase
from layerprof.predict import reuse
from layerprof.predict.reuse import ALLOC, FREE, GRAD, GRAD_OUT, BlockRecords, Layout, StepRecords, TrainedRecord
from layerprof.profile import MemoryCategory
from layerprof.sources.layers import split_layers

ACT, PARAMS, GRADS, STATE = (MemoryCategory.ACTIVATIONS, MemoryCategory.PARAMETERS, MemoryCategory.GRADIENTS,
                             MemoryCategory.OPTIMIZER_STATE)  # fmt: skip


class Block(nn.Module):
    """A residual block: its forward allocates a temporary it frees and one output."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.linear(x))


def blocks_model(blocks: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), *(Block() for _ in range(blocks)), nn.Linear(8, 2))


@dataclass
class Figures:
    peak: int
    at_peak: dict[MemoryCategory, int]
    category_peaks: dict[MemoryCategory, int]
    ops: list[tuple[str, Phase, int, int]]
    module_calls: int
    grads: list[tuple[int, ...] | None]


def step(model: nn.Module, z: int, blocks: BlockRecords | None, batch: int = 3, optimizer: str = "sgd") -> Figures:
    """One training step of `model` at z trainable layers on real CPU tensors, under the tracker and the recorder
    as an estimate runs it (its frozen and trainable blocks replayed from `blocks`' records where given)."""
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 4)))
    n = len(layers)
    trainable = {name for layer in layers[n - z :] for name in layer.parameter_names}
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
        param.grad = None
    params = [p for p in model.parameters() if p.requires_grad]
    optim: torch.optim.Optimizer = (
        torch.optim.SGD(params, lr=0.1, momentum=0.9) if optimizer == "sgd" else torch.optim.Adam(params, foreach=False)
    )
    for param in params:  # steady state: the optimizer's state exists before the step
        param.grad = torch.zeros_like(param)
    optim.step()
    for param in params:
        param.grad = None
    tracker, recorder = LiveTensorTracker(), OpRecorder()
    tracker.register(list(model.parameters()), PARAMS)
    tracker.register([t for state in optim.state.values() for t in state.values() if isinstance(t, torch.Tensor)],
                     STATE)  # fmt: skip
    x = torch.randn(batch, 4)
    tracker.register([x], MemoryCategory.INPUTS)
    tracker.watch_gradients(params)

    def backward(loss: torch.Tensor) -> None:
        loss.backward()

    update = optim.step
    replay = None
    if blocks is not None:
        replay = blocks.replaying(model, layers, z, tracker, recorder, batch_size=batch)
        backward = blocks.checked_backward(backward)
        update = blocks.steps.step(optim, tracker, recorder)  # type: ignore[assignment]
    with tracker, recorder:
        if replay is not None:
            replay.__enter__()
        try:
            loss = model(x).square().sum()
            recorder.phase = Phase.BACKWARD
            backward(loss)
            del loss
            recorder.phase = Phase.OPTIMIZER
            tracker.new_allocations = MemoryCategory.OPTIMIZER_TEMPORARIES
            update()
        finally:
            if replay is not None:
                replay.__exit__(None, None, None)
    return Figures(
        tracker.peak,
        dict(tracker.at_peak),
        dict(tracker.category_peaks),
        [(op.name, op.phase, op.flops, op.bytes_moved) for op in recorder.trace.ops],
        recorder.trace.module_calls,
        [None if p.grad is None else tuple(p.grad.shape) for p in model.parameters()],
    )


# ---------------------------------------------------------------- a step replayed gives the step run in full


def counts(records: BlockRecords) -> tuple[int, ...]:
    trained, steps = records.trained, records.steps
    return (records.traced, records.replayed, trained.traced, trained.replayed, trained.scaled, steps.traced,
            steps.replayed)  # fmt: skip


@pytest.mark.parametrize(
    ("z", "first", "second"),
    [
        # n = 6 (stem, 4 blocks, head). z = 1: the stem and four blocks frozen: the stem and the first block traced,
        # three replayed; the next step replays all five. The optimizer's step: recorded, then replayed.
        (1, (2, 3, 0, 0, 0, 1, 0), (2, 8, 0, 0, 0, 1, 1)),
        # z = 3: two frozen blocks (one replayed), two trainable ones and the head recorded in the first step (an
        # alike call while its record is pending runs as it is); the next step replays both blocks
        (3, (2, 1, 2, 0, 0, 1, 0), (2, 4, 2, 2, 0, 1, 1)),
        (5, (1, 0, 2, 0, 0, 1, 0), (1, 1, 2, 4, 0, 1, 1)),
        (6, (0, 0, 2, 0, 0, 1, 0), (0, 0, 2, 5, 0, 1, 1)),
    ],
)
def test_blocks_replayed_give_the_figures_of_the_step_run_in_full(
    z: int, first: tuple[int, ...], second: tuple[int, ...]
) -> None:
    full = step(blocks_model(), z, None)
    records = BlockRecords()
    assert step(blocks_model(), z, records) == full
    assert counts(records) == first
    assert step(blocks_model(), z, records) == full
    assert counts(records) == second


def test_an_adam_step_is_recorded_once_and_replayed_after() -> None:
    full = step(blocks_model(), 6, None, optimizer="adam")
    records = BlockRecords()
    assert step(blocks_model(), 6, records, optimizer="adam") == full
    assert step(blocks_model(), 6, records, optimizer="adam") == full
    assert counts(records) == (0, 0, 2, 5, 0, 1, 1)


def test_trainable_records_scaled_from_two_batch_sizes_replay_at_a_third() -> None:
    """Batches 3 and 5 record each trainable block's call; at 9 the alike blocks after the first replay a record
    scaled from those two (confirmed by the first block's own trace), at 2 too; every figure is the full step's."""
    records = BlockRecords()
    expected = {3: (0, 0, 2, 0, 0, 1, 0), 5: (0, 0, 4, 0, 0, 1, 1), 9: (0, 0, 6, 3, 3, 1, 2), 2: (0, 0, 8, 6, 6, 1, 3)}
    for batch, figures in expected.items():
        assert step(blocks_model(), 6, records, batch=batch) == step(blocks_model(), 6, None, batch=batch)
        assert counts(records) == figures
    assert sorted(sorted(batches) for batches in records.trained.families.values()) == [[2, 3, 5, 9]] * 2
    assert reuse.MAX_SCALED_FROM == 6


def test_a_record_scaled_from_batch_sizes_farther_than_the_six_nearest_is_not_used() -> None:
    records = BlockRecords()
    for batch in (2, 3, 4, 5, 6, 7, 8):
        step(blocks_model(), 6, records, batch=batch)
    scaled_before = records.trained.scaled
    # at 30 the six nearest recorded (3..8) give a line, as would any two: replayed from one scaled
    assert step(blocks_model(), 6, records, batch=30) == step(blocks_model(), 6, None, batch=30)
    assert records.trained.scaled == scaled_before + 3


class Keeping(Block):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.kept = self.linear(x)  # outlives the call: a record of it cannot be replayed
        return x + torch.relu(self.kept)


class Inner(Block):  # no residual of its own: the model adds its input after it
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))


class Outside(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.blocks = nn.ModuleList([Inner() for _ in range(4)])
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)  # each block's input is taken outside it
        return self.head(x)


def test_calls_that_cannot_be_replayed_are_traced_every_time() -> None:
    torch.manual_seed(0)
    keeping = nn.Sequential(nn.Linear(4, 8), *(Keeping() for _ in range(3)), nn.Linear(8, 2))
    full = step(keeping, 1, None)
    records = BlockRecords()
    assert step(keeping, 1, records) == full and step(keeping, 1, records) == full
    assert counts(records)[:2] == (2, 1)  # the stem and the first Keeping block traced (refused): the stem replayed
    # a hook inside the second block: it is traced, the others replayed
    hooked = blocks_model()
    hooked[2].linear.register_forward_hook(lambda module, args, output: None)
    full = step(hooked, 1, None)
    records = BlockRecords()
    assert step(hooked, 1, records) == full and counts(records)[:2] == (2, 2)
    # trainable blocks whose input the model also takes: never recorded, never replayed
    torch.manual_seed(0)
    outside = Outside()
    full = step(outside, 6, None)
    records = BlockRecords()
    assert step(outside, 6, records) == full and step(outside, 6, records) == full
    assert records.trained.replayed == 1  # the head, in the second step; no block


def test_a_tied_layer_and_a_layer_with_its_own_forward_are_run_as_they_are() -> None:
    model = blocks_model()
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 4)))
    tied = [replace(layer, shared_with=("x",)) if layer.index in (1, 2) else layer for layer in layers]
    own = model[3].forward
    model[3].forward = own  # replaced on the instance: left alone
    records = BlockRecords()
    tracker, recorder = LiveTensorTracker(), OpRecorder()
    for param in model.parameters():
        param.requires_grad_(False)
    with tracker, recorder, records.replaying(model, tied, 1, tracker, recorder):
        patched = [i for i, module in enumerate(model) if "forward" in vars(module)]
        model(torch.randn(3, 4))
    assert patched == [0, 3, 4, 5]  # the stem, block 4 and the head patched; block 3 keeps its own
    assert [i for i, module in enumerate(model) if "forward" in vars(module)] == [3]  # put back after
    assert vars(model[3])["forward"] is own
    assert (records.traced, records.replayed) == (2, 0)


# ---------------------------------------------------------------- what a record is made of


def test_a_call_s_events_are_numbered_from_its_first_allocation() -> None:
    log = [(70, 100, ACT), (71, 50, ACT), (70, FREED, None), (72, 20, ACT)]
    assert reuse._events(log) == ([(0, 100, ACT), (1, 50, ACT), (0, FREED, None), (2, 20, ACT)], {71: 1, 72: 2})
    assert reuse._events([(70, 100, ACT), (70, RECATEGORISED, GRADS)]) is None  # a change of category
    assert reuse._events([(69, FREED, None)]) is None  # a storage from before the call freed
    assert reuse._events([]) == ([], {})


def test_a_frozen_call_s_record_of_its_one_output() -> None:
    output = torch.ones(2, 3)[:, 1:]  # (2, 2) at stride (3, 1), offset 1, on 24 bytes
    key = id(output.untyped_storage())
    ops = (OpCost("mm", OpClass.GEMM, Phase.FORWARD, 1, 1, "float32", 1),)
    log = [(7, 40, ACT), (key, 24, ACT), (7, FREED, None)]
    record = reuse._recorded(log, output, ops, 3)
    assert record == reuse.ForwardRecord(((0, 40, ACT), (1, 24, ACT), (0, FREED, None)), 1, 24, (2, 2), (3, 1), 1,
                                         torch.float32, torch.device("cpu"), ops, 3)  # fmt: skip
    new = reuse._new_output(record)
    assert (new.shape, new.stride(), new.storage_offset(), new.untyped_storage().nbytes()) == ((2, 2), (3, 1), 1, 24)
    assert reuse._recorded(log, (output,), ops, 3) is None  # not one tensor
    assert reuse._recorded(log, output.clone().requires_grad_(), ops, 3) is None
    assert reuse._recorded([*log, (8, 4, ACT)], output, ops, 3) is None  # a temporary left alive
    assert reuse._recorded([(8, 4, ACT)], output, ops, 3) is None  # alive, but not the output
    assert reuse._recorded([*log, (key, RECATEGORISED, GRADS)], output, ops, 3) is None


def test_a_layout_read_and_made_again() -> None:
    cpu, f32 = torch.device("cpu"), torch.float32
    t = torch.zeros(4, 3).t()
    assert Layout.of(t) == Layout((3, 4), (1, 3), 0, 48, f32, cpu)
    made = Layout((3, 4), (1, 3), 0, 48, f32, cpu).new()  # the whole storage: made strided as it is
    assert (made.shape, made.stride(), made.untyped_storage().nbytes()) == ((3, 4), (1, 3), 48)
    wider = Layout((2,), (1,), 0, 32, f32, cpu).new()  # a storage larger than the view
    assert (wider.shape, wider.untyped_storage().nbytes()) == ((2,), 32)
    shifted = Layout((2,), (2,), 1, 16, f32, cpu).new()  # elements 1 and 3 of four
    assert (shifted.stride(), shifted.storage_offset(), shifted.untyped_storage().nbytes()) == ((2,), 1, 16)
    empty = Layout((0, 4), (4, 1), 0, 0, f32, cpu).new()
    assert empty.shape == (0, 4) and empty.untyped_storage().nbytes() == 0
    empty = Layout((0, 4), (4, 1), 0, 4, f32, cpu).new()  # no elements on a storage of one
    assert empty.shape == (0, 4) and empty.untyped_storage().nbytes() == 4
    half = Layout((4,), (1,), 0, 8, torch.float16, cpu).new()
    assert half.untyped_storage().nbytes() == 8 and half.dtype == torch.float16


# ---------------------------------------------------------------- which calls can be replayed


def test_a_frozen_layer_s_signature_and_what_keeps_it_from_replay() -> None:
    block = Block().requires_grad_(False)
    assert reuse._module_signature(block) == (Block, repr(block), (("linear.weight", (8, 8), torch.float32),
                                              ("linear.bias", (8,), torch.float32)), (), (True, True))  # fmt: skip
    block.linear.eval()
    assert reuse._module_signature(block)[4] == (True, False)  # type: ignore[index]
    norm = nn.BatchNorm1d(3).requires_grad_(False)
    assert reuse._module_signature(norm)[3][0] == ("running_mean", (3,), torch.float32)  # type: ignore[index]
    block.linear.weight.requires_grad_(True)
    assert reuse._module_signature(block) is None
    assert reuse._trainable_signature(block)[3][0] == ("linear.weight", (8, 8), torch.float32, True)  # type: ignore[index]
    for hook in ("register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
                 "register_full_backward_pre_hook"):  # fmt: skip
        inner = Block()
        handle = getattr(inner.linear, hook)(lambda *args: None)
        assert reuse._inner_hooks(inner) and reuse._trainable_signature(inner) is None, hook
        handle.remove()
        assert not reuse._inner_hooks(inner)
        own = getattr(inner, hook)(lambda *args: None)  # the layer's own hooks run outside its forward
        assert not reuse._inner_hooks(inner)
        own.remove()
    inner = Block()
    inner.linear.forward = inner.linear.forward
    assert reuse._inner_hooks(inner)
    own_backward = Block()
    own_backward.register_full_backward_hook(lambda *args: None)
    assert reuse._trainable_signature(own_backward) is None
    own_backward = Block()
    own_backward.register_full_backward_pre_hook(lambda *args: None)
    assert reuse._trainable_signature(own_backward) is None
    assert reuse._trainable_signature(Block())[0] == "trainable"  # type: ignore[index]
    norm = nn.BatchNorm1d(3)
    assert reuse._trainable_signature(norm) == ("trainable", nn.BatchNorm1d, repr(norm),
        (("weight", (3,), torch.float32, True), ("bias", (3,), torch.float32, True)),
        (("running_mean", (3,), torch.float32), ("running_var", (3,), torch.float32),
         ("num_batches_tracked", (), torch.int64)), (True,))  # fmt: skip


def test_a_frozen_call_s_key_and_the_arguments_that_refuse_it() -> None:
    tracker, recorder = LiveTensorTracker(), OpRecorder()
    x = torch.zeros(2, 3)
    key = reuse._call_key("sig", (x,), {"scale": 2.0, "flag": None}, tracker, recorder)
    assert key is not None and key[0] == "sig"  # type: ignore[index]
    assert key[2] == (((2, 3), (3, 1), 0, torch.float32, "cpu"), (float, 2.0), (type(None), None))  # type: ignore[index]
    assert key[3:] == reuse._modes(tracker, recorder)  # type: ignore[index]
    assert reuse._call_key("sig", (x.requires_grad_(),), {}, tracker, recorder) is None
    assert reuse._call_key("sig", (torch.zeros(2), object()), {}, tracker, recorder) is None
    assert reuse._call_key("sig", (torch.zeros(2).to_sparse(),), {}, tracker, recorder) is None
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *args: None)
    try:
        assert reuse._call_key("sig", (torch.zeros(2),), {}, tracker, recorder) is None
    finally:
        handle.remove()


def test_global_module_hooks_other_than_the_recorder_s() -> None:
    recorder = OpRecorder()
    assert not reuse._global_module_hooks(recorder)
    with recorder:  # its own pre-hook counts module calls
        assert not reuse._global_module_hooks(recorder)
        other = torch.nn.modules.module.register_module_forward_pre_hook(lambda *args: None)
        assert reuse._global_module_hooks(recorder)
        other.remove()
    module = torch.nn.modules.module
    registers = (module.register_module_forward_hook, module.register_module_full_backward_hook,
                 module.register_module_full_backward_pre_hook, module.register_module_forward_pre_hook)  # fmt: skip
    for register in registers:
        handle = register(lambda *args: None)
        try:
            assert reuse._global_module_hooks(recorder), register.__name__
        finally:
            handle.remove()


def test_a_call_s_modes() -> None:
    tracker, recorder = LiveTensorTracker(), OpRecorder()
    recorder.phase = Phase.BACKWARD
    tracker.new_allocations = MemoryCategory.OPTIMIZER_TEMPORARIES
    modes = reuse._modes(tracker, recorder)
    assert modes[2:] == (True, False, MemoryCategory.OPTIMIZER_TEMPORARIES, Phase.BACKWARD)
    with torch.no_grad():
        assert reuse._modes(tracker, recorder)[2] is False
    with torch.inference_mode():
        assert reuse._modes(tracker, recorder)[3] is True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert reuse._modes(tracker, recorder)[0][0] == (True, torch.bfloat16)
    assert modes[0][0][0] is False


# ---------------------------------------------------------------- optimizer steps


def test_an_optimizer_step_s_key_and_what_refuses_it() -> None:
    tracker, recorder = LiveTensorTracker(), OpRecorder()
    param = nn.Parameter(torch.zeros(3))
    param.grad = torch.ones(3)
    adam = torch.optim.Adam([param], lr=0.5, foreach=False)
    adam.step()
    key = reuse._step_key(adam, tracker, recorder)
    assert key is not None and key[0] == "torch.optim.adam.Adam"  # type: ignore[index]
    ((settings, params),) = key[1]  # type: ignore[index, misc]
    assert ("lr", "0.5") in settings and all(name != "params" for name, _ in settings)
    layout = ((3,), (1,), 0, torch.float32, "cpu")
    assert params == ((layout, True, layout, (("step", ((), (), 0, torch.float32, "cpu")), ("exp_avg", layout),
                       ("exp_avg_sq", layout))),)  # fmt: skip
    param.grad = None
    assert reuse._step_key(adam, tracker, recorder)[1][0][1][0][2] is None  # type: ignore[index]
    adam.state[param]["extra"] = 1.0  # a state that is not a tensor
    assert reuse._step_key(adam, tracker, recorder) is None
    del adam.state[param]["extra"]
    param.grad = torch.ones(3)

    class Mine(torch.optim.SGD):
        pass

    assert reuse._step_key(Mine([param], lr=0.1, momentum=0.9), tracker, recorder) is None
    handle = adam.register_step_pre_hook(lambda *args: None)
    assert reuse._step_key(adam, tracker, recorder) is None
    handle.remove()
    handle = adam.register_step_post_hook(lambda *args: None)
    assert reuse._step_key(adam, tracker, recorder) is None
    handle.remove()
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    for register in (register_optimizer_step_pre_hook, register_optimizer_step_post_hook):
        handle = register(lambda *args: None)
        try:
            assert reuse._step_key(adam, tracker, recorder) is None
        finally:
            handle.remove()
    assert reuse._step_key(adam, tracker, recorder) is not None


def test_an_optimizer_step_record_frees_every_temporary() -> None:
    ops = (OpCost("add", OpClass.ELEMENTWISE, Phase.OPTIMIZER, 1, 1, "float32", 1),)
    log = [(5, 12, ACT), (6, 12, ACT), (5, FREED, None), (6, FREED, None)]
    assert reuse._step_record(log, ops) == reuse.StepRecord(((0, 12, ACT), (1, 12, ACT), (0, FREED, None),
                                                             (1, FREED, None)), ops)  # fmt: skip
    assert reuse._step_record(log[:3], ops) is None  # one left alive
    assert reuse._step_record([(4, FREED, None)], ops) is None  # a tensor from before it freed
    assert StepRecords().records == {} and (StepRecords().traced, StepRecords().replayed) == (0, 0)


# ---------------------------------------------------------------- records across batch sizes


def test_a_key_s_family_leaves_its_integers_out() -> None:
    assert reuse._family((2, "a", (3, True, 1.5), torch.float32)) == (int, "a", (int, True, 1.5), torch.float32)
    assert reuse._family([1, 2]) == [1, 2]  # a list is no key's part: as it is


def test_values_scaled_along_the_line_through_two_batch_sizes() -> None:
    at = (2, 4, 7)  # from batch 2 and 4 to 7
    assert reuse._scaled(10, 20, at) == 35 and reuse._scaled(7, 7, at) == 7 and reuse._scaled(10, 0, at) == -15
    with pytest.raises(reuse._NotAlike):
        reuse._scaled(10, 11, at)  # 10 + 5 / 2
    assert reuse._scaled((1, (2, "x")), (3, (4, "x")), at) == (6, (7, "x"))
    assert reuse._scaled({"a": 1, "b": "x"}, {"a": 3, "b": "x"}, at) == {"a": 6, "b": "x"}
    cpu = torch.device("cpu")
    assert reuse._scaled(Layout((2, 8), (8, 1), 0, 64, torch.float32, cpu),
                         Layout((4, 8), (8, 1), 0, 128, torch.float32, cpu), at) == Layout(
        (7, 8), (8, 1), 0, 224, torch.float32, cpu)  # fmt: skip
    for first, second in (((1, 2), (1, 2, 3)), ({"a": 1}, {"b": 1}), ("x", "y"), (1, 1.0), (True, False),
                          (1.5, 2.5)):  # fmt: skip
        with pytest.raises(reuse._NotAlike):
            reuse._scaled(first, second, at)
    assert reuse._scaled(True, True, at) is True and reuse._scaled(Layout, Layout, at) is Layout


def record_at(batch: int, forward_bytes: int | None = None, backward_bytes: int | None = None) -> TrainedRecord:
    """A trainable block's record at `batch`: a temporary of 16 bytes a sample, an output of 32 a sample, the
    backward's gradient of 8 bytes a sample and a parameter's gradient of 40 bytes."""
    cpu = torch.device("cpu")
    forward = ((0, forward_bytes if forward_bytes is not None else 16 * batch, ACT), (1, 32 * batch, ACT),
               (0, FREED, None))  # fmt: skip
    backward = ((ALLOC, 2, backward_bytes if backward_bytes is not None else 8 * batch, ACT), (ALLOC, 3, 40, GRADS),
                (GRAD, 0, 3, None), (FREE, 2, 0, None))  # fmt: skip
    ops = (OpCost("mm", OpClass.GEMM, Phase.FORWARD, 100 * batch, 10 * batch, "float32", 1),)
    layouts = {1: Layout((batch, 8), (8, 1), 0, 32 * batch, torch.float32, cpu),
               3: Layout((10,), (1,), 0, 40, torch.float32, cpu)}  # fmt: skip
    return TrainedRecord(forward, 1, layouts, ops, 1, (0,), False, backward, ops, GRAD_OUT)


def key_at(batch: int) -> tuple[object, ...]:
    return ("trainable", "sig", ((batch, 8), (8, 1), 0, True), (bool, True))


def test_a_record_scaled_from_two_batch_sizes() -> None:
    found = reuse._scaled_from((2, key_at(2), record_at(2)), (4, key_at(4), record_at(4)), key_at(7), 7)
    assert found == record_at(7)
    assert reuse._scaled_from((4, key_at(4), record_at(4)), (2, key_at(2), record_at(2)), key_at(7), 7) == found
    assert reuse._scaled_from((2, key_at(2), record_at(2)), (4, key_at(4), record_at(4)), key_at(8), 7) is None
    assert reuse._scaled_from((2, key_at(2), None), (4, key_at(4), record_at(4)), key_at(7), 7) is None
    assert reuse._scaled_from((2, key_at(2), record_at(2)), (4, key_at(4), None), key_at(7), 7) is None
    other = replace(record_at(4), holds_output=True)  # another skeleton
    assert reuse._scaled_from((2, key_at(2), record_at(2)), (4, key_at(4), other), key_at(7), 7) is None
    odd = record_at(4, forward_bytes=65)  # 33 bytes from 2 to 4: 16.5 a sample
    assert reuse._scaled_from((2, key_at(2), record_at(2)), (4, key_at(4), odd), key_at(7), 7) is None
    # a temporary of 32 bytes at 2 and 8 at 4 (-12 a sample): 20 at 3, -28 at 7: no record there
    shrinking = (2, key_at(2), record_at(2, forward_bytes=32)), (4, key_at(4), record_at(4, forward_bytes=8))
    assert reuse._scaled_from(*shrinking, key_at(3), 3) == record_at(3, forward_bytes=20)
    assert reuse._scaled_from(*shrinking, key_at(7), 7) is None
    backward = (2, key_at(2), record_at(2, backward_bytes=16)), (4, key_at(4), record_at(4, backward_bytes=0))
    assert reuse._scaled_from(*backward, key_at(3), 3) == record_at(3, backward_bytes=8)
    assert reuse._scaled_from(*backward, key_at(5), 5) is None  # the backward's -8 bytes


class Gram(torch.autograd.Function):
    """Forward: twice the input; backward: also a (batch x batch) product of the saved input, whose bytes grow as
    the batch squared, on no line through two batch sizes."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * 2

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        flat = x.flatten(1)
        return grad * 2 + (flat @ flat.t()).sum() * 0


class Squaring(Block):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Gram.apply(torch.relu(self.linear(x)))  # type: ignore[no-any-return]


def test_a_scaled_record_its_block_s_trace_refutes_is_refused_and_the_step_traced_again() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), *(Squaring() for _ in range(4)), nn.Linear(8, 2))
    records = BlockRecords()
    for batch in (3, 5):
        assert step(model, 6, records, batch=batch) == step(model, 6, None, batch=batch)
    with pytest.raises(reuse.ReplayMismatch) as caught:
        step(model, 6, records, batch=9)
    assert caught.value.scaled is True
    records.refuse(caught.value.key, scaled=caught.value.scaled)
    assert caught.value.key in records.trained.unscaled and caught.value.key not in records.trained.records
    assert step(model, 6, records, batch=9) == step(model, 6, None, batch=9)
    assert records.trained.scaled == 3  # the three replays of the refuted record, before it was refuted


def test_refusing_a_key_for_good_and_a_scaled_one_for_scaling() -> None:
    records = BlockRecords()
    records.trained.records["k"] = record_at(2)
    records.refuse("k")
    assert records.trained.records == {"k": None} and records.trained.unscaled == set()
    records.trained.records["s"] = record_at(2)
    records.refuse("s", scaled=True)
    assert "s" not in records.trained.records and records.trained.unscaled == {"s"}
    assert records.trained.scaled_record("s", 9) is None
    mismatch = reuse.ReplayMismatch("k")
    assert (mismatch.key, mismatch.scaled) == ("k", False) and "does not stand for it" in str(mismatch)


SHARED_SCALE = nn.Parameter(torch.ones(8))  # a leaf no block holds


class ScaledBlock(Block):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.linear(x)) * SHARED_SCALE


class Exposing(Block):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inner = torch.relu(self.linear(x))
        return x + self.inner


class UsesInner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.blocks = nn.ModuleList([Exposing() for _ in range(4)])
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x) + block.inner  # a tensor inside the block taken outside it
        return self.head(x)


@pytest.mark.parametrize("kind", ["a leaf outside the block", "a tensor inside taken outside"])
def test_trainable_blocks_whose_graph_is_not_theirs_alone_are_never_replayed(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "a leaf outside the block":
        model: nn.Module = nn.Sequential(nn.Linear(4, 8), *(ScaledBlock() for _ in range(4)), nn.Linear(8, 2))
    else:
        model = UsesInner()

    def run(records: BlockRecords | None) -> Figures:
        SHARED_SCALE.grad = None  # each step accumulates its gradient afresh
        return step(model, 6, records)

    full = run(None)
    records = BlockRecords()
    assert run(records) == full and run(records) == full
    assert records.trained.replayed == 1  # the head, in the second step; no block


def test_a_step_inside_a_recording_runs_as_it_is() -> None:
    from layerprof.predict.reuse import StepRecord

    param = nn.Parameter(torch.zeros(3))
    param.grad = torch.ones(3)
    adam = torch.optim.Adam([param], lr=0.5, foreach=False)
    adam.step()
    tracker, recorder = LiveTensorTracker(), OpRecorder()
    steps = StepRecords()
    steps.records[reuse._step_key(adam, tracker, recorder)] = StepRecord((), ())
    tracker.log = []  # a call being recorded
    before = param.detach().clone()
    steps.step(adam, tracker, recorder)()
    assert steps.replayed == 0 and not torch.equal(param.detach(), before)
    tracker.log = None
    before = param.detach().clone()
    steps.step(adam, tracker, recorder)()  # replayed: the parameter untouched
    assert steps.replayed == 1 and torch.equal(param.detach(), before)


def test_a_traced_forward_is_the_scaled_record_s_only_to_the_byte() -> None:
    output = torch.ones(2, 8)
    key = id(output.untyped_storage())
    cpu = torch.device("cpu")
    scaled = replace(record_at(2), forward=((0, 32, ACT), (1, 64, ACT), (0, FREED, None)),
                     layouts={1: Layout((2, 8), (8, 1), 0, 64, torch.float32, cpu)})  # fmt: skip
    log = [(9, 32, ACT), (key, 64, ACT), (9, FREED, None)]
    ops = scaled.forward_ops
    assert reuse._forward_as_scaled(scaled, log, output, ops, 1)
    assert not reuse._forward_as_scaled(scaled, [*log, (key, RECATEGORISED, GRADS)], output, ops, 1)
    assert not reuse._forward_as_scaled(scaled, [(9, 33, ACT), *log[1:]], output, ops, 1)
    assert not reuse._forward_as_scaled(scaled, log, output, (), 1)
    assert not reuse._forward_as_scaled(scaled, log, output, ops, 2)
    assert not reuse._forward_as_scaled(scaled, log, torch.ones(2, 8).t(), ops, 1)


class Chunk(nn.Module):
    """A block whose output is the second output of its last node (a chunk): its output number is 1."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x)).chunk(2, dim=1)[1]


def test_a_block_s_output_is_known_by_its_node_and_its_number() -> None:
    """Block 1 (its input the stem's, contiguous) has a key of its own, blocks 2-4 (their input a chunk) share one,
    the head its own: three records, every one replayed in the next step (5 calls), each block's output at number 1
    of its node while its input (block 1's) is at 0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), *(Chunk() for _ in range(4)), nn.Linear(8, 2))
    full = step(model, 6, None)
    records = BlockRecords()
    assert step(model, 6, records) == full and step(model, 6, records) == full
    assert counts(records) == (0, 0, 3, 5, 0, 1, 1)


class SavingOnly(Block):
    """A block whose one tensor kept for backward past its forward is saved by a custom Function alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Gram.apply(torch.relu(self.linear(x)) + 1)  # type: ignore[no-any-return]


def test_what_a_custom_function_saved_may_outlive_the_forward() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), *(SavingOnly() for _ in range(4)), nn.Linear(8, 2))
    full = step(model, 6, None)
    records = BlockRecords()
    assert step(model, 6, records) == full and step(model, 6, records) == full
    assert counts(records) == (0, 0, 2, 5, 0, 1, 1)  # the four blocks and the head replayed in the second step


def with_layout_bytes(record: TrainedRecord, storage_bytes: int) -> TrainedRecord:
    """`record` with its parameter gradient's layout (index 3) on `storage_bytes`."""
    layout = replace(record.layouts[3], storage_bytes=storage_bytes)
    return replace(record, layouts={**record.layouts, 3: layout})


def test_a_scaled_record_at_zero_bytes_stands_and_at_minus_one_does_not() -> None:
    # a temporary of 11 bytes at 2 and 7 at 4 (-2 a sample): 1 at 7, -1 at 8
    shrinking = (2, key_at(2), record_at(2, forward_bytes=11)), (4, key_at(4), record_at(4, forward_bytes=7))
    assert reuse._scaled_from(*shrinking, key_at(7), 7) == record_at(7, forward_bytes=1)
    assert reuse._scaled_from(*shrinking, key_at(8), 8) is None
    # a temporary of 24 bytes at 2 and 12 at 4: none at 6
    to_zero = (2, key_at(2), record_at(2, forward_bytes=24)), (4, key_at(4), record_at(4, forward_bytes=12))
    assert reuse._scaled_from(*to_zero, key_at(6), 6) == record_at(6, forward_bytes=0)
    # a layout's storage of 4 bytes at 2 and 2 at 4: 0 at 6, -1 at 7 (the other layout's storage grows)
    layouts = (2, key_at(2), with_layout_bytes(record_at(2), 4)), (4, key_at(4), with_layout_bytes(record_at(4), 2))
    assert reuse._scaled_from(*layouts, key_at(6), 6) == with_layout_bytes(record_at(6), 0)
    assert reuse._scaled_from(*layouts, key_at(7), 7) is None


@pytest.mark.parametrize(
    "change",
    [
        {"output": 2},  # another allocation is the output
        {"module_calls": 2},
        {"held_inputs": (1,)},
        {"returned": 1},
        {"forward": ((0, 64, ACT), (2, 128, ACT), (0, FREED, None))},  # numbered otherwise
        {"backward": ((ALLOC, 2, 32, ACT), (ALLOC, 3, 40, GRADS), (GRAD, 1, 3, None), (FREE, 2, 0, None))},
    ],
)
def test_records_that_differ_but_for_their_bytes_are_not_one_record_at_two_batch_sizes(change: dict) -> None:
    """At batch 6, where a line through the two would give whole numbers for these too."""
    other = replace(record_at(4), **change)
    assert reuse._scaled_from((2, key_at(2), record_at(2)), (4, key_at(4), other), key_at(6), 6) is None
    assert reuse._scaled_from((2, key_at(2), record_at(2)), (4, key_at(4), record_at(4)), key_at(6), 6) == record_at(6)


def test_a_trainable_call_s_key_and_what_refuses_it() -> None:
    tracker, recorder = LiveTensorTracker(), OpRecorder()
    block = Block()
    params = list(block.parameters())
    x = torch.ones(2, 8, requires_grad=True) * 1  # not a leaf: it has a node
    found = reuse._trainable_call("sig", params, (x,), {"scale": 2}, tracker, recorder)
    assert found is not None
    key, needing, leaves = found
    assert needing is x and leaves == [x, 2]
    assert key[:3] == ("sig", key[1], (((2, 8), (8, 1), 0, torch.float32, "cpu", True), (int, 2)))  # type: ignore[index]
    assert key[3:] == reuse._modes(tracker, recorder)  # type: ignore[index]
    leaf = torch.ones(2, 8, requires_grad=True)  # a leaf: no node to hook
    assert reuse._trainable_call("sig", params, (leaf,), {}, tracker, recorder) is None
    assert reuse._trainable_call("sig", params, (x, x * 2), {}, tracker, recorder) is None  # two needing gradients
    assert reuse._trainable_call("sig", params, (torch.ones(2, 8),), {}, tracker, recorder) is None  # none
    assert reuse._trainable_call("sig", params, (x, object()), {}, tracker, recorder) is None
    assert reuse._trainable_call("sig", params, (x, torch.ones(2).to_sparse()), {}, tracker, recorder) is None
    tracker.watch_gradients(params)  # the tracker's own hooks: fine
    assert reuse._trainable_call("sig", params, (x,), {}, tracker, recorder) is not None
    params[0].register_post_accumulate_grad_hook(lambda param: None)  # another's
    assert reuse._trainable_call("sig", params, (x,), {}, tracker, recorder) is None
    other = Block()
    other_params = list(other.parameters())
    other_params[1].grad = torch.zeros(8)  # a gradient already
    assert reuse._trainable_call("sig", other_params, (x,), {}, tracker, recorder) is None
    other_params[1].grad = None
    assert reuse._trainable_call("sig", other_params, (x,), {}, tracker, recorder) is not None
    other_params[1].register_hook(lambda grad: grad)  # a hook on the parameter's gradient
    assert reuse._trainable_call("sig", other_params, (x,), {}, tracker, recorder) is None
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *args: None)
    try:
        assert reuse._trainable_call("sig", list(Block().parameters()), (x,), {}, tracker, recorder) is None
    finally:
        handle.remove()


def test_a_failed_step_leaves_no_pending_record_behind() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), *(Squaring() for _ in range(4)), nn.Linear(8, 2))
    records = BlockRecords()
    for batch in (3, 5):
        step(model, 6, records, batch=batch)
    with pytest.raises(reuse.ReplayMismatch):
        step(model, 6, records, batch=9)
    assert records.trained.pending == {}


class OwnParameter(nn.Parameter):
    pass


class OwnTensor(torch.Tensor):
    pass


def test_an_optimizer_step_over_tensors_of_other_types_is_never_replayed() -> None:
    tracker, recorder = LiveTensorTracker(), OpRecorder()
    own = OwnParameter(torch.zeros(3))
    assert reuse._step_key(torch.optim.Adam([own], foreach=False), tracker, recorder) is None  # no gradient yet
    param = nn.Parameter(torch.zeros(3))
    adam = torch.optim.Adam([param], foreach=False)
    adam.state[param]["extra"] = torch.zeros(3).as_subclass(OwnTensor)
    assert reuse._step_key(adam, tracker, recorder) is None
    adam.state[param]["extra"] = torch.zeros(3)
    assert reuse._step_key(adam, tracker, recorder) is not None
