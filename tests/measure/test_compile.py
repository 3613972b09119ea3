"""`profile --compile`: timed steps run torch.compile's model, the cold compile is reported apart from the step
time, memory and FLOPs come from the eager instrumented step, and an estimate refuses it (measured only)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import layerprof.measure.cells as cells
from layerprof.errors import LayerprofError
from layerprof.measure.cells import CellContext, run_cell
from layerprof.predict.estimate import estimate_model
from layerprof.profile import SweepSettings
from layerprof.sources.models import ModelOptions, build_model

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "custom_model.py")
OPTIONS = ModelOptions(input_shape=(64,), num_classes=10, overrides={"width": 64, "depth": 2})


def settings(mode: str) -> SweepSettings:
    return SweepSettings(batch_sizes=(2,), trainable_layer_counts=(2,), warmup_steps=2, min_steps=3, max_steps=3,
                         compile_mode=mode)  # fmt: skip


def dynamo_limit() -> int:
    import torch._dynamo

    return torch._dynamo.config.cache_size_limit


def test_a_compiled_cell_reports_its_compile_time_apart_and_eager_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[str] = []
    limits: list[int] = []
    real_compile = cells.compiled_model

    def dynamo_only(model: torch.nn.Module, mode: str):  # noqa: ANN202 - dynamo's graphs without inductor's minutes
        compiled.append(mode)
        limits.append(dynamo_limit())  # room for every cell while the cell runs
        real_compile(model, mode)
        return torch.compile(model, backend="eager")

    monkeypatch.setattr(cells, "compiled_model", dynamo_only)
    before = dynamo_limit()
    loaded = build_model(f"{EXAMPLE}:mlp", OPTIONS)
    layers = loaded.split()
    eager, _ = run_cell(CellContext(loaded, layers, settings("eager"), torch.device("cpu")), 2, 2)
    assert compiled == [] and eager.compile_time_ms is None
    row, _ = run_cell(CellContext(loaded, layers, settings("max-autotune"), torch.device("cpu")), 2, 2)
    assert compiled and set(compiled) == {"max-autotune"}
    assert row.ok and row.compile_time_ms is not None and row.compile_time_ms >= 0
    for field in ("peak_memory_bytes", "memory_activations_bytes", "flops", "optimizer_state_bytes"):
        assert getattr(row, field) == getattr(eager, field), field
    assert limits and min(limits) >= cells.COMPILE_CACHE_ENTRIES > before
    assert dynamo_limit() == before  # restored: the process keeps torch's own limit after the cell


def test_a_compiled_cell_without_warm_up_still_compiles_in_an_untimed_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library takes --warmup 0 (the CLI refuses it): the compile is still a step of its own, never timed."""
    monkeypatch.setattr(cells, "compiled_model", lambda model, mode: torch.compile(model, backend="eager"))
    loaded = build_model(f"{EXAMPLE}:mlp", OPTIONS)
    cold = dataclasses.replace(settings("default"), warmup_steps=0)
    row, _ = run_cell(CellContext(loaded, loaded.split(), cold, torch.device("cpu")), 2, 2)
    assert row.ok and row.compile_time_ms is not None  # before: no figure, the compile inside the first timed step


def test_an_estimate_says_compile_is_measured_only() -> None:
    with pytest.raises(LayerprofError, match="--compile is measured only"):
        estimate_model(f"{EXAMPLE}:mlp", OPTIONS, settings("default"))
