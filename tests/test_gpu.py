"""Real CUDA code paths: CUDA events, the caching allocator's peaks, NVML. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from layerprof.models import build_model
from layerprof.profile import SweepSettings
from layerprof.sweep import profile_model

pytestmark = pytest.mark.gpu


def test_cuda_sweep_allocator_peak_is_monotone_in_z() -> None:
    device = torch.device("cuda")
    loaded = build_model("paper-resnet18-cifar100", device=device)
    layers = loaded.split()
    settings = SweepSettings(batch_sizes=(64,), trainable_layer_counts=(1, 3, 6, 11), warmup_steps=3, max_steps=20)
    profile = profile_model(loaded, layers, settings, device)
    rows = profile.rows_for(64)
    assert all(row.status == "ok" for row in rows)
    assert all(row.memory_source == "cuda-allocator" for row in rows)
    peaks = [row.peak_memory_bytes for row in rows]
    assert peaks == sorted(peaks) and peaks[0] < peaks[-1]
    for row in rows:
        assert row.peak_reserved_bytes >= row.peak_memory_bytes
        if row.nvml_process_bytes is not None:  # NVML sees the context too
            assert row.nvml_process_bytes >= row.peak_reserved_bytes
        # the live-tensor tracker and the allocator agree to within the allocator's rounding
        assert row.tracked_peak_bytes == pytest.approx(row.peak_memory_bytes, rel=0.10)
    assert profile.environment.device_kind == "cuda" and profile.environment.total_memory_bytes > 0


def test_cuda_cell_memory_is_independent_of_order() -> None:
    from layerprof.sweep import run_cell

    device = torch.device("cuda")
    loaded = build_model("paper-gpt-14m", device=device)
    layers = loaded.split()
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 11), warmup_steps=2, max_steps=5)
    first = {z: run_cell(loaded, layers, 2, z, settings, device)[0].peak_memory_bytes for z in (1, 11)}
    second = {z: run_cell(loaded, layers, 2, z, settings, device)[0].peak_memory_bytes for z in (11, 1)}
    assert first == second
