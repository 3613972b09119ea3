"""`profile --compile`: timed steps run torch.compile's model, the cold compile is reported apart from the step
time, memory and FLOPs come from the eager instrumented step, and an estimate refuses it (measured only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from layerprof.errors import LayerprofError
from layerprof.measure import sweep
from layerprof.measure.sweep import CellContext, run_cell
from layerprof.predict.estimate import estimate_model
from layerprof.profile import SweepSettings
from layerprof.sources.models import ModelOptions, build_model

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "custom_model.py")
OPTIONS = ModelOptions(input_shape=(64,), num_classes=10, overrides={"width": 64, "depth": 2})


def settings(mode: str) -> SweepSettings:
    return SweepSettings(batch_sizes=(2,), trainable_layer_counts=(2,), warmup_steps=2, min_steps=3, max_steps=3,
                         compile_mode=mode)  # fmt: skip


def test_a_compiled_cell_reports_its_compile_time_apart_and_eager_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[str] = []
    real_compile = sweep.compiled_model

    def dynamo_only(model: torch.nn.Module, mode: str):  # noqa: ANN202 - dynamo's graphs without inductor's minutes
        compiled.append(mode)
        real_compile(model, mode)  # the cache room it makes
        return torch.compile(model, backend="eager")

    monkeypatch.setattr(sweep, "compiled_model", dynamo_only)
    loaded = build_model(f"{EXAMPLE}:mlp", OPTIONS)
    layers = loaded.split()
    eager, _ = run_cell(CellContext(loaded, layers, settings("eager"), torch.device("cpu")), 2, 2)
    assert compiled == [] and eager.compile_time_ms is None
    row, _ = run_cell(CellContext(loaded, layers, settings("max-autotune"), torch.device("cpu")), 2, 2)
    assert compiled and set(compiled) == {"max-autotune"}
    assert row.ok and row.compile_time_ms is not None and row.compile_time_ms >= 0
    for field in ("peak_memory_bytes", "memory_activations_bytes", "flops", "optimizer_state_bytes"):
        assert getattr(row, field) == getattr(eager, field), field
    assert torch._dynamo.config.cache_size_limit >= sweep.COMPILE_CACHE_ENTRIES


def test_an_estimate_says_compile_is_measured_only() -> None:
    with pytest.raises(LayerprofError, match="--compile is measured only"):
        estimate_model(f"{EXAMPLE}:mlp", OPTIONS, settings("default"))
