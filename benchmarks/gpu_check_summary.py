"""Side by side, per cell: measured against estimated memory, the tracker against the allocator, the
workspace no tensor holds, host-bound cells, and the full/lowest ratios the paper reports (Figure 2: at least
4x in time and 3x in memory for pythia-1.4b); then the recipes (LoRA, checkpointing, 8-bit AdamW: measured against
estimated; torch.compile: step time and cold compile time beside eager). Part of benchmarks/gpu_check.sh.

    python benchmarks/gpu_check_summary.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from layerprof.errors import LayerprofError
from layerprof.profile import Profile, load_profile

MIB = 2**20


def load(folder: Path, name: str) -> Profile | None:
    try:
        return load_profile(folder / name)
    except LayerprofError as error:
        print(f"(no {name}: {error})")
        return None


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:,.1f}"


def number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def environment_line(profile: Profile) -> str:
    env = profile.environment
    return (
        f"{env.device_name}, driver {env.driver_version} (CUDA {env.cuda_driver_version}), torch {env.torch_version} "
        f"(CUDA {env.cuda_version}, cuDNN {env.cudnn_version}), TF32 matmul {env.numerics.get('matmul_tf32')} "
        f"conv {env.numerics.get('cudnn_conv_tf32')}"
    )


def cells(measured: Profile, estimated: Profile | None) -> None:
    print(
        f"{'B':>4} {'z':>3} {'status':7} {'step ms':>9} {'host ms':>8} {'host-bd':>7} {'alloc MiB':>10} "
        f"{'estim MiB':>10} {'alloc/est':>9} {'track+ws':>9} {'ws MiB':>7} {'est ws':>7} {'reserv MiB':>10} "
        f"{'GFLOPs':>9}"
    )
    for row in sorted(measured.rows, key=lambda r: r.key):
        guess = estimated.row(*row.key) if estimated else None
        tracked = None if row.tracked_peak_bytes is None else row.tracked_peak_bytes + (row.memory_workspace_bytes or 0)
        print(
            f"{row.batch_size:>4} {row.trainable_layers:>3} {row.status:7} {number(row.step_time_ms):>9} "
            f"{number(row.host_time_ms):>8} {str(row.host_bound):>7} {mib(row.peak_memory_bytes):>10} "
            f"{mib(guess.peak_memory_bytes if guess else None):>10} "
            f"{number(ratio(row.peak_memory_bytes, guess.peak_memory_bytes if guess else None), 3):>9} "
            f"{number(ratio(tracked, row.peak_memory_bytes), 3):>9} {mib(row.memory_workspace_bytes):>7} "
            f"{mib(guess.memory_workspace_bytes if guess else None):>7} "
            f"{mib(row.peak_reserved_bytes):>10} {number((row.flops or 0) / 1e9, 0):>9}"
        )
        if not row.ok:
            print(f"        {row.message}")
    for batch_size in measured.batch_sizes():
        ok = {r.trainable_layers: r for r in measured.rows_for(batch_size) if r.ok}
        full = measured.layer_count
        if full not in ok or len(ok) < 2:
            print(f"  batch {batch_size}: no full-training cell and lower one to compare")
            continue
        low = ok[min(ok)]
        time_ratio = ratio(ok[full].step_time_ms, low.step_time_ms)
        memory_ratio = ratio(ok[full].peak_memory_bytes, low.peak_memory_bytes)
        host_bound = [z for z, r in ok.items() if r.host_bound]
        print(
            f"  batch {batch_size}: full (z={full}) / lowest (z={low.trainable_layers}): time x{number(time_ratio)}, "
            f"memory x{number(memory_ratio)}; host-bound cells: {host_bound or 'none'}"
        )


def main(folder: Path) -> None:
    for title, measured_name, estimated_name in (
        ("pythia-1.4b, batch 1, T=2048, 32-true", "p14b-32-true.json", "e14b-32-true.json"),
        ("pythia-1.4b, batch 1, T=2048, bf16-mixed", "p14b-bf16-mixed.json", "e14b-bf16-mixed.json"),
        ("paper-resnet18-cifar100, batch 32 and 256", "r18.json", "e-r18.json"),
        ("paper-resnet18-cifar100, batch 256, 16-mixed (gradient scaler)", "r18-16-mixed.json", None),
    ):
        print(f"\n#### {title}  (paper, Figure 2: time >= 4x, memory >= 3x between full and lowest)")
        measured = load(folder, measured_name)
        if measured is None:
            continue
        print(environment_line(measured))
        cells(measured, load(folder, estimated_name) if estimated_name else None)
    recipes(folder)


RECIPES = (
    ("LoRA (PEFT, r=8, last z layers)", "r18-lora.json", "e-r18-lora.json"),
    ("activation checkpointing of the trainable layers", "r18-ckpt.json", "e-r18-ckpt.json"),
    ("8-bit AdamW (torchao; the estimate leaves its step's temporaries out)", "r18-8bit.json", "e-r18-8bit.json"),
)


def recipes(folder: Path) -> None:
    """Each recipe's cells, measured against estimated; then torch.compile against eager (r18.json's cells)."""
    for title, measured_name, estimated_name in RECIPES:
        print(f"\n#### recipe: {title}, paper-resnet18-cifar100")
        measured = load(folder, measured_name)
        if measured is not None:
            cells(measured, load(folder, estimated_name))
            for row in sorted(measured.rows, key=lambda r: r.key):
                if row.recompute_flops is not None:
                    print(f"  z={row.trainable_layers}: recompute {number(row.recompute_flops / 1e9, 1)} GFLOPs")
    print("\n#### recipe: torch.compile (default mode), paper-resnet18-cifar100: measured only")
    compiled, eager = load(folder, "r18-compile.json"), load(folder, "r18.json")
    if compiled is None:
        return
    print(
        f"{'B':>4} {'z':>3} {'status':7} {'step ms':>9} {'eager ms':>9} {'compile s':>9} {'host-bd':>7} "
        f"{'alloc MiB':>10}"
    )
    for row in sorted(compiled.rows, key=lambda r: r.key):
        plain = eager.row(*row.key) if eager else None
        print(
            f"{row.batch_size:>4} {row.trainable_layers:>3} {row.status:7} {number(row.step_time_ms):>9} "
            f"{number(plain.step_time_ms if plain else None):>9} "
            f"{number(None if row.compile_time_ms is None else row.compile_time_ms / 1000, 1):>9} "
            f"{str(row.host_bound):>7} {mib(row.peak_memory_bytes):>10}"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
