"""Measured time per layer (`profile --per-layer`) on a scripted clock: marks at every layer boundary."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import layerprof.measure.layertimes as layertimes
from layerprof.cli.commands import app
from layerprof.measure.layertimes import measure_layer_times
from layerprof.profile import Layer

CLOCK = [0.0]  # seconds


class Advance(torch.autograd.Function):
    """Identity that spends `forward_s` of the scripted clock forward and `backward_s` backward."""

    @staticmethod
    def forward(ctx, x, forward_s, backward_s):  # noqa: ANN001, ANN205
        CLOCK[0] += forward_s
        ctx.backward_s = backward_s
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        CLOCK[0] += ctx.backward_s
        return grad, None, None


class Timed(nn.Module):
    def __init__(self, forward_ms: float, backward_ms: float) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.forward_s, self.backward_s = forward_ms / 1000, backward_ms / 1000

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Advance.apply(self.linear(x), self.forward_s, self.backward_s)


def test_each_layer_gets_its_forward_and_backward_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layertimes.time, "perf_counter", lambda: CLOCK[0])
    model = nn.Sequential(Timed(1, 10), Timed(2, 20), Timed(3, 30))
    batch = torch.randn(2, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def update() -> None:
        CLOCK[0] += 0.005  # the optimizer: outside every layer
        optimizer.step()
        optimizer.zero_grad()

    cell = SimpleNamespace(
        model=model, row=SimpleNamespace(batch_size=2), forward=lambda: model(batch).sum(),
        backward=lambda loss: loss.backward(), update=update,
    )  # fmt: skip
    layers = [Layer(i, str(i), "Timed", 20, (f"{i}.linear.weight", f"{i}.linear.bias"), 20) for i in range(3)]
    times = measure_layer_times(cell, layers, torch.device("cpu"))
    assert [round(t.forward_ms, 6) for t in times.layers] == [1.0, 2.0, 3.0]
    assert [round(t.backward_ms, 6) for t in times.layers] == [10.0, 20.0, 30.0]
    assert times.marked_step_ms == pytest.approx(1 + 2 + 3 + 10 + 20 + 30 + 5)
    assert times.source == "perf-counter" and times.batch_size == 2


def test_profile_per_layer_writes_the_times(tmp_path: Path) -> None:
    example = str(Path(__file__).parents[2] / "examples" / "custom_model.py")
    out = tmp_path / "p.json"
    result = CliRunner().invoke(app, ["profile", f"{example}:mlp", "--input-shape", "64", "--batch-sizes", "4",
                                      "--layers", "1,8", "--warmup", "1", "--min-steps", "3", "--steps", "3",
                                      "--per-layer", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    times = json.loads(out.read_text())["layer_times"]
    assert [entry["batch_size"] for entry in times] == [4] and len(times[0]["layers"]) == 8
    assert all(layer["forward_ms"] > 0 and layer["backward_ms"] > 0 for layer in times[0]["layers"])
