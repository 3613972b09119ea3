"""measure/layertimes.py part by part (issue 40's mutation survivors), on the scripted clock of test_layertimes:
the CUDA marks (events, stood in for here), the steps taken and the hooks left, time before the first layer,
and a layer whose output holds more than one tensor."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import layerprof.measure.layertimes as layertimes
from layerprof.measure.layertimes import measure_layer_times
from layerprof.profile import Layer
from tests.measure.test_layertimes import CLOCK, Advance, Timed


class Event:
    """Stands in for torch.cuda.Event on the scripted clock: recorded at the clock's time; its elapsed time to
    another needs both timed and recorded and the later one synchronised, as CUDA's does."""

    synchronized_until = -1.0

    def __init__(self, enable_timing: bool = False) -> None:
        self.timing, self.at = enable_timing, None

    def record(self) -> None:
        self.at = CLOCK[0]

    def synchronize(self) -> None:
        Event.synchronized_until = max(Event.synchronized_until, self.at)

    def elapsed_time(self, other: Event) -> float:
        assert self.timing and other.timing, "both events must be created with enable_timing=True"
        assert self.at is not None and other.at is not None, "record both events first"
        assert other.at <= Event.synchronized_until, "the later event has not completed"
        return (other.at - self.at) * 1000.0


def timed_cell(model: nn.Module, before_ms: float = 0.0) -> tuple[SimpleNamespace, list[int]]:
    """A cell of `model` whose forward spends `before_ms` before the first layer (the batch's own work), and
    whose updates are counted."""
    batch = torch.randn(2, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    updates = []

    def forward() -> torch.Tensor:
        CLOCK[0] += before_ms / 1000
        return model(batch).sum()

    def update() -> None:
        CLOCK[0] += 0.005
        optimizer.step()
        optimizer.zero_grad()
        updates.append(1)

    cell = SimpleNamespace(
        model=model,
        row=SimpleNamespace(batch_size=2),
        forward=forward,
        backward=lambda loss: loss.backward(),
        update=update,
    )
    return cell, updates


LAYERS = [Layer(i, str(i), "Timed", 20, (f"{i}.linear.weight", f"{i}.linear.bias"), 20) for i in range(2)]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_marked_step_starts_from_its_own_first_mark(monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    # CUDA's marks: events on the scripted clock, the host's clock never read there
    monkeypatch.setattr(layertimes.time, "perf_counter", (lambda: CLOCK[0]) if device == "cpu" else (lambda: 0.0))
    monkeypatch.setattr(torch.cuda, "Event", Event)
    model = nn.Sequential(Timed(1, 10), Timed(2, 20))
    cell, updates = timed_cell(model, before_ms=4)
    times = measure_layer_times(cell, LAYERS, torch.device(device))
    assert [round(t.forward_ms, 6) for t in times.layers] == [1.0, 2.0]
    assert [round(t.backward_ms, 6) for t in times.layers] == [10.0, 20.0]
    # the batch's 4 ms before the first layer count in the marked step: it starts at the step's own first mark
    assert times.marked_step_ms == pytest.approx(4 + 1 + 2 + 10 + 20 + 5)
    assert (times.source, times.device) == ({"cpu": "perf-counter", "cuda": "cuda-events"}[device], device)
    assert len(updates) == 2 + layertimes.MARKED_STEPS == 2 + 5  # two warm-up steps, then the marked ones
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in model.modules())


class Pair(nn.Module):
    """A layer whose output is (a mask without gradient, its hidden state, a second view of it that spends
    `between_ms` backward before the gradient reaches the hidden state)."""

    def __init__(self, forward_ms: float, backward_ms: float, between_ms: float) -> None:
        super().__init__()
        self.timed = Timed(forward_ms, backward_ms)
        self.between_s = between_ms / 1000

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.timed(x)
        return torch.ones(2, 1), hidden, Advance.apply(hidden, 0.0, self.between_s)


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.timed = Timed(3, 30)

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mask, hidden, view = pair
        return self.timed(hidden * mask + view)


def test_a_layers_backward_starts_when_its_first_output_tensor_with_a_gradient_gets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(layertimes.time, "perf_counter", lambda: CLOCK[0])
    model = nn.Sequential(Pair(1, 10, between_ms=7), Head())
    cell, _ = timed_cell(model)
    times = measure_layer_times(
        cell, [Layer(0, "0", "Pair", 20, (), 20), Layer(1, "1", "Head", 20, (), 20)], torch.device("cpu")
    )
    assert [round(t.forward_ms, 6) for t in times.layers] == [1.0, 3.0]
    # the mask holds no gradient: the hidden state's marks the layer; the 7 ms before it reaches it are the head's
    assert [round(t.backward_ms, 6) for t in times.layers] == [10.0, 30.0 + 7.0]
