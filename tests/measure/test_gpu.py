"""Real CUDA code paths: CUDA events, the caching allocator's peaks, NVML. Skipped without CUDA."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from layerprof.measure.jobs import profile_model
from layerprof.profile import SweepSettings
from layerprof.sources.models import LoadedModel, build_model

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
        # the tracker's tensors and the workspaces make the allocator's peak, but for cuDNN's transient
        # convolution workspaces
        assert row.tracked_peak_bytes + row.memory_workspace_bytes == pytest.approx(row.peak_memory_bytes, rel=0.10)
    assert profile.environment.device_kind == "cuda" and profile.environment.total_memory_bytes > 0


def test_cuda_cell_memory_is_independent_of_order() -> None:
    from layerprof.measure.cells import CellContext, run_cell

    device = torch.device("cuda")
    loaded = build_model("paper-gpt-14m", device=device)
    layers = loaded.split()
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 11), warmup_steps=2, max_steps=5)
    first = {z: run_cell(CellContext(loaded, layers, settings, device), 2, z)[0].peak_memory_bytes for z in (1, 11)}
    second = {z: run_cell(CellContext(loaded, layers, settings, device), 2, z)[0].peak_memory_bytes for z in (11, 1)}
    assert first == second


def test_cells_run_and_are_timed_on_the_device_they_name() -> None:
    """--device cuda:N with N not the current device: the work and the events belong to N."""
    from layerprof.sources.workloads import CustomWorkload, Workload

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices")
    device = torch.device("cuda", torch.cuda.device_count() - 1)
    seen: list[int] = []
    model = torch.nn.Sequential(*(torch.nn.Linear(2048, 2048) for _ in range(4))).to(device)

    def loss(module, batch):
        seen.append(torch.cuda.current_device())
        return module(batch).pow(2).mean()

    custom = CustomWorkload(model, lambda b, d: torch.randn(b, 2048, device=d), loss)
    loaded = LoadedModel("stack", "user", "stack", model, Workload(family="custom", custom=custom), (), {})
    layers = loaded.split()
    seen.clear()  # the split's traced forward ran outside the sweep
    settings = SweepSettings(batch_sizes=(256,), trainable_layer_counts=(1, 4), warmup_steps=2, max_steps=10)
    profile = profile_model(loaded, layers, settings, device)
    assert set(seen) == {device.index}
    full = profile.row(256, 4)
    # 4 matmuls of 256 x 2048 x 2048 forward, ~12 in all per step: milliseconds, never the microseconds an event
    # pair on another device's idle stream would read
    assert full.ok and full.step_time_ms > 0.05 and full.memory_source == "cuda-allocator"


def test_pipelined_windows_flag_launch_bound_cells() -> None:
    """A model of many tiny layers is limited by Python launching kernels; a few large matmuls are not."""
    device = torch.device("cuda")

    def sweep(width: int, depth: int, batch: int):
        from layerprof.sources.workloads import Workload

        model = torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(depth))).to(device)
        loaded = LoadedModel("stack", "user", "stack", model, Workload("tensor-input", input_shape=(width,)), (), {})
        layers = loaded.split()
        settings = SweepSettings(batch_sizes=(batch,), trainable_layer_counts=(depth,), warmup_steps=3, max_steps=30)
        return profile_model(loaded, layers, settings, device).rows[0]

    tiny = sweep(width=16, depth=48, batch=1)
    large = sweep(width=8192, depth=4, batch=4096)
    assert tiny.time_source == large.time_source == "cuda-events-pipelined"
    assert tiny.host_bound is True and tiny.host_time_ms >= 0.9 * tiny.step_time_ms
    assert large.host_bound is False and large.host_time_ms < 0.5 * large.step_time_ms


def test_workspace_bytes_close_the_gap_between_tracker_and_allocator() -> None:
    from layerprof.devices import cublas_workspace_bytes

    device = torch.device("cuda")
    loaded = build_model("paper-gpt-14m", device=device)
    layers = loaded.split()
    settings = SweepSettings(batch_sizes=(4,), trainable_layer_counts=(1, 11), warmup_steps=2, max_steps=5)
    profile = profile_model(loaded, layers, settings, device)
    props = torch.cuda.get_device_properties(device)
    for row in profile.rows:
        assert row.ok
        # the persistent cuBLAS/cuBLASLt workspaces are allocator memory no tensor holds
        assert row.memory_workspace_bytes >= cublas_workspace_bytes((props.major, props.minor)) - 2**20
        assert row.tracked_peak_bytes + row.memory_workspace_bytes == pytest.approx(row.peak_memory_bytes, rel=0.05)
        assert row.peak_requested_bytes is not None and row.peak_requested_bytes <= row.peak_memory_bytes
        assert row.alloc_retries == 0


def test_cuda_estimate_matches_the_allocator_peak() -> None:
    from layerprof.predict.estimate import estimate_model
    from layerprof.sources.models import ModelOptions

    device = torch.device("cuda")
    loaded = build_model("paper-gpt-14m", device=device)
    layers = loaded.split()
    settings = SweepSettings(batch_sizes=(4,), trainable_layer_counts=(1, 6, 11), warmup_steps=2, max_steps=5)
    measured = profile_model(loaded, layers, settings, device)
    estimated = estimate_model("paper-gpt-14m", ModelOptions(), replace(settings, target="cuda"))
    for z in (1, 6, 11):
        assert estimated.row(4, z).peak_memory_bytes == pytest.approx(measured.row(4, z).peak_memory_bytes, rel=0.05)
