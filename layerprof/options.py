"""The command line's typed options: each choice's values come from the library's own lists, each shared option
(model, batch sizes, precision, GPU) is defined once with its help, and the few checks that span options live here.

Typer reads these `Annotated` types; `layerprof.cli` only names them. Nothing heavy is imported at module level.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from layerprof.correlate import EXECUTORS
from layerprof.devices import GPU_KINDS, TARGETS
from layerprof.errors import LayerprofError
from layerprof.exporters import EXPORTERS
from layerprof.grids import GRID_PRESETS
from layerprof.ladder import COSTS
from layerprof.optimizers import OPTIMIZERS
from layerprof.precision import PRECISIONS
from layerprof.profile import MODEL_SOURCES
from layerprof.report import IMAGE_FORMATS


def choices(name: str, values: Iterable[str]) -> Any:
    """A Typer choice type whose values come from the library's own list."""
    return Enum(name, {value: value for value in values}, type=str)


OutputFormat = choices("OutputFormat", ("table", "md"))
Optimizer = choices("Optimizer", OPTIMIZERS)
Cost = choices("Cost", COSTS)
ExportFormat = choices("ExportFormat", EXPORTERS)
PlanExport = choices("PlanExport", ("ray",))
Target = choices("Target", TARGETS)
ImageFormat = choices("ImageFormat", IMAGE_FORMATS)
SplitMode = choices("SplitMode", ("profile", "auto"))
Executor = choices("Executor", EXECUTORS)
GridPreset = choices("GridPreset", GRID_PRESETS)
Precision = choices("Precision", PRECISIONS)
# --dtype (before --precision) names the *-true precisions by their dtype
DTYPE_PRECISIONS = {PRECISIONS[name].dtype: name for name in PRECISIONS if not PRECISIONS[name].mixed}
Dtype = choices("Dtype", DTYPE_PRECISIONS)
# one list of GPUs for every --gpu: the table in layerprof.devices
GPU_LIST = ", ".join(GPU_KINDS)

ModelArgument = Annotated[
    str,
    typer.Argument(
        metavar="MODEL",
        help="A preset (paper-resnet18-cifar100), a torchvision model (resnet50), a LitGPT config (pythia-14m), "
        "or a factory: path/to/file.py:fn or package.module:fn. Prefix torchvision: or litgpt: to disambiguate.",
        show_default=False,
    ),
]
NumClassesOption = Annotated[
    int | None, typer.Option("--num-classes", min=1, metavar="N", help="Classes of an image model.")
]
InputShapeOption = Annotated[
    str | None,
    typer.Option("--input-shape", metavar="C,H,W", help="Per-sample input shape C,H,W (default: the model's own)."),
]
SeqLenOption = Annotated[
    int | None,
    typer.Option("--seq-len", min=1, metavar="TOKENS", help="Tokens per sequence (default: block size, at most 512)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a LitGPT config field or a factory argument: KEY=VALUE. Repeatable.",
    ),
]
UnwrapOption = Annotated[
    list[str] | None,
    typer.Option("--unwrap", metavar="CLASS", help="Also split inside modules of this class name. Repeatable."),
]
AddressOption = Annotated[
    str | None, typer.Option("--address", metavar="ADDR", help="Ray cluster address (default: RAY_ADDRESS or local).")
]
BatchSizesOption = Annotated[
    str | None,
    typer.Option("--batch-sizes", metavar="B,B,...", help="Comma-separated, e.g. 1,8,32 (default per family)."),
]
LayersOption = Annotated[
    str, typer.Option("--layers", metavar="Z", help="Trainable-layer counts z to run: all, 1,2,4 or 1-5.")
]
OptimizerOption = Annotated[Optimizer, typer.Option("--optimizer", help="Over trainable parameters.")]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="As in Lightning: *-true holds everything in that dtype; *-mixed keeps float32 weights, gradients "
        "and optimizer state and runs the forward under autocast (16-mixed with a gradient scaler).",
    ),
]
DtypeOption = Annotated[Dtype | None, typer.Option("--dtype", hidden=True, help="Old name for the *-true precisions.")]


RestartOption = Annotated[
    bool,
    typer.Option(
        "--restart", help="Measure every cell anew, replacing what --out holds (default: resume an interrupted run)."
    ),
]
EvalFrozenOption = Annotated[
    bool,
    typer.Option(
        "--eval-frozen",
        help="Run frozen layers in eval mode: BatchNorm keeps its running statistics instead of updating them, "
        "dropout is off (default: train mode, as requires_grad_(False) leaves them).",
    ),
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="Table style.")]
TargetOption = Annotated[Target, typer.Option("--target", help="Device to predict for.")]


# a plain string, so that an unknown source is one line from `known_names` (that also says how to install one)
SourceOption = Annotated[
    str | None, typer.Option("--source", metavar="SOURCE", help=f"Only this source: {', '.join(MODEL_SOURCES)}.")
]


def gpu_option(purpose: str) -> Any:
    """A --gpu option: what this command does with the GPU, then the one list of GPUs every --gpu accepts."""
    return Annotated[
        str | None,
        typer.Option("--gpu", metavar="NAME", help=f"{purpose} Known GPUs and MIG slices (any case): {GPU_LIST}."),
    ]


def precision_name(precision: Any, dtype: Any) -> str:
    """--precision, or the *-true precision an old --dtype names."""
    if dtype is None:
        return precision.value
    named = DTYPE_PRECISIONS[dtype.value]
    if precision.value not in ("32-true", named):
        raise LayerprofError(f"--dtype {dtype.value} contradicts --precision {precision.value}; give --precision only")
    return named


def model_options(
    num_classes: int | None,
    input_shape: str | None,
    seq_len: int | None,
    overrides: list[str] | None,
    unwrap: list[str] | None,
) -> Any:
    """The model options (`layerprof.models.ModelOptions`) the shared model flags give."""
    from layerprof.models import ModelOptions
    from layerprof.parsing import parse_input_shape, parse_overrides

    return ModelOptions(
        num_classes=num_classes,
        input_shape=parse_input_shape(input_shape) if input_shape else None,
        seq_len=seq_len,
        overrides=parse_overrides(overrides or []),
        unwrap=tuple(unwrap or ()),
    )


def parse_batch_sizes(text: str | None) -> tuple[int, ...]:
    """Not given: the model family's default (given but empty is an error)."""
    from layerprof.parsing import parse_positive_ints

    return parse_positive_ints(text, "--batch-sizes") if text is not None else ()


def check_profile_executor(
    on_ray: bool, cpus: str | None, gpu_kinds: str | None, address: str | None, out: Path | None
) -> None:
    """`profile`'s options that belong to one executor: --cpus here only; --gpu-kinds and --address with Ray,
    where --gpu-kinds is required and --out is a directory."""
    if on_ray:
        if cpus is not None:
            raise LayerprofError("--cpus names this machine's CPUs; it does not apply with --executor ray")
        if not gpu_kinds:
            raise LayerprofError("--executor ray needs --gpu-kinds, e.g. L4,H100 or small=RESOURCE,big=RESOURCE")
        if out is not None and out.suffix == ".json":
            raise LayerprofError(f"with --executor ray, --out is a directory (one profile per kind), got {str(out)!r}")
    elif gpu_kinds is not None or address is not None:
        raise LayerprofError("--gpu-kinds and --address need --executor ray")
