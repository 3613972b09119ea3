"""Probes of layerprof's CUDA assumptions, each printing what it found (part of benchmarks/gpu_check.sh).

Exit code 3 where torch cannot use CUDA: nothing else of the GPU check can run then.
"""

from __future__ import annotations

import sys
import time

import torch

MIB = 2**20


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def guarded(probe) -> None:  # noqa: ANN001
    try:
        probe()
    except Exception as error:  # noqa: BLE001 - a probe that fails says why, and the next one runs
        text = str(error).strip().splitlines()
        print(f"  !! {type(error).__name__}: {text[0] if text else ''}")


def settings() -> None:
    from layerprof.measure.environment import describe_environment, resolve_device

    environment = describe_environment(resolve_device("cuda"))
    for key in ("device_name", "gpu_uuid", "compute_capability", "driver_version", "cuda_driver_version",
                "cuda_version", "cudnn_version", "mig_enabled", "total_memory_bytes"):  # fmt: skip
        print(f"  {key:28s} {getattr(environment, key)}")
    for key, value in {**environment.numerics, **environment.variables}.items():
        print(f"  {key:28s} {value}")


def workspace() -> None:
    """(1) Each thread that runs a matrix product holds its own cuBLAS workspace: the forward's and autograd's
    backward thread. Must run before any other matrix product of this process."""
    from layerprof.devices import cublas_workspace_sizes

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    cublas, cublas_lt = cublas_workspace_sizes((props.major, props.minor))
    x = torch.randn(1024, 1024, device="cuda", requires_grad=True)
    w = torch.randn(1024, 1024, device="cuda", requires_grad=True)
    bias = torch.randn(1024, device="cuda")

    def growth(work) -> float:  # noqa: ANN001
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        work()
        torch.cuda.synchronize()
        return (torch.cuda.memory_allocated() - before) / MIB

    def backward() -> None:
        (x @ w).sum().backward()
        x.grad = w.grad = None

    plain = growth(lambda: (x @ w).sum().item())  # cuBLAS on this thread
    fused = growth(lambda: torch.nn.functional.linear(x, w, bias).sum().item())  # cuBLASLt (bias epilogue)
    again = growth(lambda: (x @ w).sum().item())  # nothing new: the workspaces are kept
    autograd = growth(backward)  # the backward's products run on autograd's device thread
    print(f"  first product on this thread: {plain:.3f} MiB (model: cuBLAS {cublas / MIB:.3f} MiB)")
    print(f"  first fused-bias product:      {fused:.3f} MiB (model: cuBLASLt {cublas_lt / MIB:.3f} MiB)")
    print(f"  another product:               {again:.3f} MiB (model: 0)")
    print(f"  first backward:                {autograd:.3f} MiB (model: cuBLAS {cublas / MIB:.3f} MiB, its own thread)")


def blocks() -> None:
    from layerprof.devices import cuda_block_bytes

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    print(f"  {'request B':>12s} {'model':>12s} {'allocated':>12s} {'requested':>12s}  match")
    for mib in (0.3, 5.0, 10.9, 11.0, 11.5, 19.6, 21.5):
        n = int(mib * MIB) + 7
        stats = torch.cuda.memory_stats()
        a0, r0 = stats["allocated_bytes.all.current"], stats.get("requested_bytes.all.current", 0)
        x = torch.empty(n, dtype=torch.uint8, device="cuda")
        stats = torch.cuda.memory_stats()
        a1, r1 = stats["allocated_bytes.all.current"], stats.get("requested_bytes.all.current", 0)
        print(f"  {n:12d} {cuda_block_bytes(n):12d} {a1 - a0:12d} {r1 - r0:12d}  {cuda_block_bytes(n) == a1 - a0}")
        del x
        torch.cuda.empty_cache()


def nvml() -> None:
    from layerprof.measure.environment import gpu_uuid
    from layerprof.measure.nvml import measure_process_memory

    device = torch.device("cuda", torch.cuda.current_device())
    uuid = gpu_uuid(device)
    memory = measure_process_memory(uuid, mig=str(uuid).startswith("MIG-"))
    print(f"  uuid {uuid}: process {memory.process_bytes} ({memory.note or 'found'}); device used "
          f"{memory.device_used_bytes} via {memory.device_used_source}")  # fmt: skip


def other_device_events() -> None:
    if torch.cuda.device_count() < 2:
        print("  one CUDA device visible: nothing to check (CUDA_VISIBLE_DEVICES=0,1 on a multi-GPU host)")
        return
    from layerprof.measure.instruments import time_window

    other = torch.device("cuda", 1)
    x = torch.randn(8192, 8192, device=other)

    def work() -> None:
        for _ in range(4):
            x @ x

    with torch.cuda.device(other):
        times = time_window(work, other, 10)
    print(f"  4 matmuls of 8192^2 on cuda:1: median {sorted(times.step_ms)[5]:.2f} ms")


def out_of_memory_recovery() -> None:
    """(2) After an out-of-memory cell, the next cell starts from the same memory: the failed step's tensors are
    freed before the cache is emptied."""
    from layerprof.measure.cells import CellContext, run_cell
    from layerprof.measure.environment import gpu_uuid
    from layerprof.measure.nvml import measure_process_memory
    from layerprof.profile import SweepSettings
    from layerprof.sources.models import build_model

    device = torch.device("cuda", torch.cuda.current_device())
    loaded = build_model("paper-gpt-14m", device=device)
    layers = loaded.split()
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(11,), warmup_steps=2, min_steps=3, max_steps=3)

    def held() -> str:
        nvml = measure_process_memory(gpu_uuid(device)).process_bytes
        process = "-" if nvml is None else f"{nvml / MIB:.0f}"
        allocated, reserved = torch.cuda.memory_allocated(device) / MIB, torch.cuda.memory_reserved(device) / MIB
        return f"allocated {allocated:.1f} MiB, reserved {reserved:.1f} MiB, NVML process {process} MiB"

    first, _ = run_cell(CellContext(loaded, layers, settings, device), 2, 11)
    print(f"  after a cell:        {held()}")
    huge, _ = run_cell(CellContext(loaded, layers, settings, device), 1_000_000, 11)
    print(f"  after an OOM cell:   {held()}  ({huge.status}: {huge.message[:80]})")
    again, _ = run_cell(CellContext(loaded, layers, settings, device), 2, 11)
    print(f"  after the next cell: {held()}")
    same = first.peak_memory_bytes == again.peak_memory_bytes and first.peak_reserved_bytes == again.peak_reserved_bytes
    print(f"  peaks before {first.peak_memory_bytes}/{first.peak_reserved_bytes}, after "
          f"{again.peak_memory_bytes}/{again.peak_reserved_bytes} (same: {same})")  # fmt: skip


def scaler_host_time() -> None:
    """(3) 16-mixed's gradient scaler synchronises every step; the cell must not read as host-bound for it."""
    from layerprof.measure.cells import CellContext, run_cell
    from layerprof.profile import SweepSettings
    from layerprof.sources.models import build_model

    device = torch.device("cuda", torch.cuda.current_device())
    loaded = build_model("paper-resnet18-cifar100", device=device)
    layers = loaded.split()
    for precision in ("32-true", "16-mixed", "bf16-mixed"):
        settings = SweepSettings(batch_sizes=(256,), trainable_layer_counts=(11,), warmup_steps=3, min_steps=10,
                                 max_steps=10, precision=precision)  # fmt: skip
        row, _ = run_cell(CellContext(loaded, layers, settings, device), 256, 11)
        print(f"  resnet18 b256 z=11 {precision:10s}: step {row.step_time_ms:.2f} ms, "
              f"launch {row.host_time_ms:.2f} ms, host-bound {row.host_bound}")  # fmt: skip


def pipelining() -> None:
    from layerprof.measure.cells import CellContext, prepared_cell
    from layerprof.measure.instruments import StepTimes, time_window
    from layerprof.profile import SweepSettings
    from layerprof.sources.models import build_model

    device = torch.device("cuda", torch.cuda.current_device())
    loaded = build_model("paper-resnet18-cifar100", device=device)
    layers = loaded.split()
    settings = SweepSettings(batch_sizes=(32,), trainable_layer_counts=(11,))
    with prepared_cell(CellContext(loaded, layers, settings, device), 32, 11) as cell:
        for _ in range(10):
            cell.step()
        windows = StepTimes()
        for _ in range(3):  # three windows of ten, as a sweep times a cell
            windows.extend(time_window(cell.step, device, 10))
        synced = []
        for _ in range(30):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            cell.step()
            end.record()
            end.synchronize()
            synced.append(start.elapsed_time(end))
        began = time.perf_counter()
        for _ in range(30):
            cell.step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - began) * 1000 / 30
    median = sorted(windows.step_ms)[15]
    print(f"  resnet18 b32: pipelined {median:.2f} ms, synchronised per step {sorted(synced)[15]:.2f} ms, "
          f"wall {wall:.2f} ms, host launch {sorted(windows.host_ms)[len(windows.host_ms) // 2]:.2f} ms, "
          f"host-bound {windows.host_bound}")  # fmt: skip


def main() -> int:
    print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
    if not torch.cuda.is_available():
        from layerprof.measure.environment import cuda_unusable_reason

        print(f"CUDA IS NOT AVAILABLE: {cuda_unusable_reason() or 'no GPU torch can use'}")
        return 3
    for title, probe in (
        ("1. environment and numeric settings as a profile records them", settings),
        ("2. cuBLAS/cuBLASLt workspaces per thread against layerprof's model", workspace),
        ("3. the caching allocator's blocks against cuda_block_bytes", blocks),
        ("4. NVML by UUID", nvml),
        ("5. events on cuda:1", other_device_events),
        ("6. a cell after an out-of-memory cell", out_of_memory_recovery),
        ("7. pipelined windows against per-step synchronisation", pipelining),
        ("8. 16-mixed's gradient scaler and the host-bound flag", scaler_host_time),
    ):
        section(title)
        guarded(probe)
    print("\ndiagnostics done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
