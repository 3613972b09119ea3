"""The command line's typed options: each choice's values come from the library's own lists, each shared option
(model, batch sizes, precision, GPU) is defined once with its help, and the few checks that span options live here.

Typer reads these `Annotated` types; `layerprof.cli.commands` only names them. Nothing heavy is imported at module
level.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, TypedDict

import typer

from layerprof.devices import CUDA_CONTEXT_RESERVE_BYTES, GPU_ALIASES, GPU_KINDS, MIB, TargetName
from layerprof.errors import LayerprofError
from layerprof.fidelity.grids import GridPresetName
from layerprof.fidelity.ladder import CostName
from layerprof.fidelity.trials import CONTINUED_PATHS, PATHS, ExecutorName
from layerprof.measure.optimizers import OptimizerName
from layerprof.outputs.exporters import ExportName, parse_objective
from layerprof.outputs.report import ImageFormat
from layerprof.precision import PRECISIONS, PrecisionName
from layerprof.profile import (
    ADAPTER_LAYERS,
    ADAPTERS,
    CHECKPOINTING_MODES,
    OPTIMIZER_NAMES,
    AdapterLayers,
    AdapterName,
    CheckpointingMode,
    RecipeOptions,
)
from layerprof.sources.registry import listed_sources, model_help

if TYPE_CHECKING:
    from layerprof.devices import GpuKind, PriceBook
    from layerprof.sources.names import ModelOptions

# The closed sets of names an option takes, typed (Typer makes each Literal a choice): the library's own where the
# library has the list, the command line's where only it has one.
OutputFormat = Literal["table", "md"]
PlanExport = Literal["ray"]
SplitMode = Literal["profile", "auto"]
# --dtype (before --precision) names the *-true precisions by their dtype
Dtype = Literal["float32", "bfloat16", "float16"]
DTYPE_PRECISIONS: dict[str, PrecisionName] = {
    PRECISIONS[name].dtype: name for name in PRECISIONS if not PRECISIONS[name].mixed
}
# one list of GPUs for every --gpu: the table in layerprof.devices
GPU_LIST = ", ".join(GPU_KINDS)
GPU_SXM_NOTE = (
    f"One entry per SKU; {', '.join(GPU_ALIASES.values())} are the SXM boards "
    f"(also {', '.join(GPU_ALIASES)}), the PCIe and NVL boards have their own."
)

ModelArgument = Annotated[
    str,
    typer.Argument(
        metavar="MODEL",
        help=model_help(),
        show_default=False,
    ),
]
NumClassesOption = Annotated[
    int | None, typer.Option("--num-classes", min=1, metavar="N", help="Classes of an image model.")
]
InputShapeOption = Annotated[
    str | None,
    typer.Option(
        "--input-shape",
        metavar="SHAPE",
        help="Per-sample input shape, comma-separated: C,H,W for images (3,224,224), one number for vectors (64) "
        "(default: the model's own).",
    ),
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
        help="Set a field of the model's config (LitGPT, timm, Hugging Face) or an argument of a factory: "
        "KEY=VALUE, typed as the field or argument declares. Repeatable.",
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
    str,
    typer.Option(
        "--layers", metavar="Z", help="Trainable-layer counts z to run: all, doubling (1,2,4,...,n), 1,2,4 or 1-5."
    ),
]
OptimizerOption = Annotated[
    OptimizerName,
    typer.Option(
        "--optimizer",
        help="Over trainable parameters: sgd has momentum 0.9, sgd-plain none; adamw8bit is torchao's "
        "(docs/recipes.md).",
    ),
]
CompileModeChoice = Literal["default", "reduce-overhead", "max-autotune"]  # CompileMode less eager (--compile)
CheckpointingOption = Annotated[
    CheckpointingMode,
    typer.Option(
        "--checkpointing",
        help="trainable: recompute each trainable layer's forward in backward (non-reentrant activation "
        "checkpointing; the frozen prefix keeps no activations anyway).",
    ),
]
AdapterOption = Annotated[
    AdapterName,
    typer.Option("--adapter", help="lora: LoRA adapters (PEFT) train in the trainable layers, nothing else."),
]
AdapterLayersOption = Annotated[
    AdapterLayers,
    typer.Option(
        "--adapter-layers", help="trainable: adapters in the last z layers only; all: in every layer (plain LoRA, z=n)."
    ),
]
LoraRankOption = Annotated[int, typer.Option("--lora-rank", min=1, metavar="R", help="LoRA rank r.")]
LoraAlphaOption = Annotated[float, typer.Option("--lora-alpha", min=0.0, metavar="ALPHA", help="LoRA alpha.")]
LoraDropoutOption = Annotated[
    float, typer.Option("--lora-dropout", min=0.0, max=1.0, metavar="P", help="Dropout before the adapters.")
]
AdapterTargetsOption = Annotated[
    str | None,
    typer.Option(
        "--adapter-targets",
        metavar="NAME,NAME",
        help="Modules that get adapters (names or name suffixes, e.g. qkv,proj); default: an LM's projections "
        "below the output head, every Linear and Conv elsewhere.",
    ),
]
CompileOption = Annotated[
    bool, typer.Option("--compile", help="torch.compile the model (measured only; cold compile time reported apart).")
]
CompileModeOption = Annotated[CompileModeChoice, typer.Option("--compile-mode", help="torch.compile's mode.")]


class RecipeChoices(TypedDict):
    """The recipe options' values as `with_recipe_options` hands them to a command: `recipe_settings`'s arguments."""

    checkpointing: CheckpointingMode
    adapter: AdapterName
    adapter_layers: AdapterLayers
    rank: int
    alpha: float
    dropout: float
    targets: str | None
    compile_model: bool
    compile_mode: CompileModeChoice


# The recipe's options, which `with_recipe_options` adds to a command: (parameter, its type, its default)
RECIPE_OPTIONS: tuple[tuple[str, object, object], ...] = (
    ("checkpointing", CheckpointingOption, "none"),
    ("adapter", AdapterOption, "none"),
    ("adapter_layers", AdapterLayersOption, "trainable"),
    ("rank", LoraRankOption, 8),
    ("alpha", LoraAlphaOption, 16.0),
    ("dropout", LoraDropoutOption, 0.0),
    ("targets", AdapterTargetsOption, None),
    ("compile_model", CompileOption, False),
    ("compile_mode", CompileModeOption, "default"),
)


def with_recipe_options(command: Callable[..., None]) -> Callable[..., None]:
    """The command with the recipe's options (`RECIPE_OPTIONS`) added to its signature; it receives their values as
    one dict, `recipe`, for `recipe_settings` (called inside its error handling)."""
    import functools
    import inspect

    signature = inspect.signature(command, eval_str=True)
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, annotation, default in RECIPE_OPTIONS
    ]
    kept = [param for name, param in signature.parameters.items() if name != "recipe"]
    kept = [param.replace(kind=inspect.Parameter.KEYWORD_ONLY) for param in kept]

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        recipe = {name: kwargs.pop(name) for name, _, _ in RECIPE_OPTIONS}
        command(*args, recipe=recipe, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=kept + added)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {
        **{name: param.annotation for name, param in signature.parameters.items() if name != "recipe"},
        **{name: annotation for name, annotation, _ in RECIPE_OPTIONS},
    }
    return wrapper


def recipe_settings(recipe: RecipeChoices | None) -> RecipeOptions:
    """The recipe options (as `with_recipe_options` hands them to a command) as SweepSettings fields; LoRA options
    without --adapter lora are refused."""
    if recipe is None:
        raise TypeError("a command's recipe options come through with_recipe_options")
    adapter, adapter_layers, targets = recipe["adapter"], recipe["adapter_layers"], recipe["targets"]
    lora_given = adapter_layers != "trainable" or targets is not None
    if adapter == "none" and lora_given:
        raise LayerprofError("--adapter-layers and --adapter-targets need --adapter lora")
    names = tuple(name.strip() for name in (targets or "").split(",") if name.strip())
    if targets is not None and not names:
        raise LayerprofError(f"--adapter-targets {targets!r} names no module (give NAME,NAME, e.g. qkv,proj)")
    return {
        "checkpointing": recipe["checkpointing"],
        "adapter": adapter,
        "adapter_layers": adapter_layers,
        "adapter_rank": recipe["rank"],
        "adapter_alpha": recipe["alpha"],
        "adapter_dropout": recipe["dropout"],
        "adapter_targets": names,
        "compile_mode": recipe["compile_mode"] if recipe["compile_model"] else "eager",
    }


RecipesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--recipe",
        metavar="KEY=VALUE,...",
        help="Another recipe to fit beside the options' own (repeatable): the options with these changed, e.g. "
        "checkpointing=trainable or adapter=lora,lora-rank=16 or optimizer=adamw8bit; keys: "
        "optimizer, precision, checkpointing, adapter, adapter-layers, lora-rank, lora-alpha, lora-dropout.",
    ),
]
# --recipe's keys: the option's name -> (the SweepSettings field, its choices or its number type)
RECIPE_KEYS: dict[str, tuple[str, tuple[str, ...] | type[int] | type[float]]] = {
    "optimizer": ("optimizer", OPTIMIZER_NAMES),
    "precision": ("precision", tuple(PRECISIONS)),
    "checkpointing": ("checkpointing", CHECKPOINTING_MODES),
    "adapter": ("adapter", ADAPTERS),
    "adapter-layers": ("adapter_layers", ADAPTER_LAYERS),
    "lora-rank": ("adapter_rank", int),
    "lora-alpha": ("adapter_alpha", float),
    "lora-dropout": ("adapter_dropout", float),
}


def parse_recipes(specs: list[str] | None) -> list[dict[str, object]]:
    """Each `--recipe KEY=VALUE,...` as the SweepSettings fields it changes; one clear line for a bad one."""
    recipes = []
    for spec in specs or ():
        fields: dict[str, object] = {}
        for part in filter(None, (piece.strip() for piece in spec.split(","))):
            key, equals, value = part.partition("=")
            if key not in RECIPE_KEYS or not equals:
                raise LayerprofError(
                    f"--recipe {spec!r}: {part!r} is not KEY=VALUE with KEY one of {', '.join(RECIPE_KEYS)}"
                )
            field, kind = RECIPE_KEYS[key]
            if isinstance(kind, tuple):
                if value not in kind:
                    raise LayerprofError(f"--recipe {spec!r}: {key} must be one of {', '.join(kind)}, got {value!r}")
                fields[field] = value
                continue
            try:
                number = kind(value)
            except ValueError:
                raise LayerprofError(f"--recipe {spec!r}: {key} must be a number, got {value!r}") from None
            if number < (1 if kind is int else 0) or (key == "lora-dropout" and number > 1):
                raise LayerprofError(f"--recipe {spec!r}: {key} {value} is out of range")
            fields[field] = number
        if not fields:
            raise LayerprofError(f"--recipe {spec!r} changes nothing (give KEY=VALUE, e.g. checkpointing=trainable)")
        recipes.append(fields)
    return recipes


PrecisionOption = Annotated[
    PrecisionName,
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
        "--restart",
        "--force",
        help="Measure every cell anew, replacing what --out holds, a finished profile of another model included "
        "(default: resume an interrupted run of this sweep; refuse to replace another model's profile).",
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
TargetOption = Annotated[TargetName, typer.Option("--target", help="Device to predict for.")]


# a plain string, so that an unknown source is one line from `known_names` (that also says how to install one)
SourceOption = Annotated[
    str | None, typer.Option("--source", metavar="SOURCE", help=f"Only this source: {', '.join(listed_sources())}.")
]


def gpu_option(purpose: str) -> Any:
    """A --gpu option: what this command does with the GPU, then the one list of GPUs every --gpu accepts."""
    return Annotated[
        str | None,
        typer.Option(
            "--gpu", metavar="NAME", help=f"{purpose} {GPU_SXM_NOTE} Known GPUs and MIG slices (any case): {GPU_LIST}."
        ),
    ]


def precision_name(precision: PrecisionName, dtype: Dtype | None) -> PrecisionName:
    """--precision, or the *-true precision an old --dtype names."""
    if dtype is None:
        return precision
    named = DTYPE_PRECISIONS[dtype]
    if precision not in ("32-true", named):
        raise LayerprofError(f"--dtype {dtype} contradicts --precision {precision}; give --precision only")
    return named


def model_options(
    num_classes: int | None,
    input_shape: str | None,
    seq_len: int | None,
    overrides: list[str] | None,
    unwrap: list[str] | None,
    model: str | None = None,
) -> ModelOptions:
    """The model options (`layerprof.sources.names.ModelOptions`) the shared model flags give; with `model`, the
    MODEL string is checked too (`resolve`): a wrong name or value is refused before torch is imported."""
    from layerprof.parsing import parse_input_shape, parse_overrides
    from layerprof.sources.names import ModelOptions
    from layerprof.sources.registry import resolve

    if model is not None:
        resolve(model)
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


def check_one_output(as_json: bool, export: object | None, objective: str | None = None) -> None:
    """--json and --export each replace the table on stdout: given both, one would be dropped without a word.
    --objective names the training an exported script calls: only with --export, and a function that is there
    (read, not run: before anything heavy is imported)."""
    if as_json and export is not None:
        raise LayerprofError("--json and --export both print to stdout; give one of them")
    if objective is None:
        return
    if export is None:
        raise LayerprofError("--objective names the training of an exported script; give --export too")
    parse_objective(objective)


class PricedArguments(TypedDict, total=False):
    """`priced`'s keyword arguments of a library call."""

    prices: PriceBook | None
    gpu: GpuKind


def priced(
    prices: list[str] | None, prices_file: Path | None, gpu: str | None = None, gpu_needed: bool = False
) -> PricedArguments:
    """The price book of --price and --prices (or LAYERPROF_PRICES), and --gpu's kind where given, as keyword
    arguments of the library call. With `gpu_needed` (ladder), prices without --gpu are an input error: they would
    price nothing."""
    from layerprof.devices import gpu_kind
    from layerprof.parsing import price_book

    if gpu_needed and (prices or prices_file) and gpu is None:
        raise LayerprofError("--price and --prices price each rung's trial on --gpu KIND; give --gpu too")
    arguments: PricedArguments = {"prices": price_book(prices, prices_file) if gpu or not gpu_needed else None}
    if gpu is not None:
        arguments["gpu"] = gpu_kind(gpu)
    return arguments


def deadline_seconds(deadline: str | None) -> float | None:
    """--deadline in seconds, where given."""
    from layerprof.parsing import parse_duration

    return None if deadline is None else parse_duration(deadline)


# ---------------------------------------------------------------- options of one command (or one meaning)

ModelsJsonOption = Annotated[bool, typer.Option("--json", help="Print the names as JSON.")]
LayersJsonOption = Annotated[bool, typer.Option("--json", help="Print the split as a JSON list.")]
CostsOption = Annotated[
    bool,
    typer.Option(
        "--costs",
        help="Per layer, from one full-training step on fake tensors: what it adds when it trains, forward and "
        "backward FLOPs (weight gradients, inside, passed down), activations it saves, its output.",
    ),
]
LayersBatchSizeOption = Annotated[
    int, typer.Option("--batch-size", metavar="B", min=1, help="--costs: the batch size.")
]
DepthOption = Annotated[
    int,
    typer.Option(
        "--depth",
        metavar="N",
        min=0,
        help="Split N levels deeper: also descend into the classes of the layers that hold two or more "
        "sub-modules with parameters (the --unwrap classes that reproduce it are printed).",
    ),
]
LayersOutOption = Annotated[
    Path | None, typer.Option("--out", metavar="PATH", help="--costs: also write JSON (and CSV beside it).")
]
AuditSetupArgument = Annotated[
    str,
    typer.Argument(
        metavar="FILE.py:FN",
        help="Your training set-up: FILE.py:FN or package.module:FN returning layerprof.CustomWorkload with the model "
        "(your requires_grad flags), optimizer= (scheduler= optional), make_batch and loss or step= (docs/audit.md).",
        show_default=False,
    ),
]
AuditBatchSizeOption = Annotated[
    int, typer.Option("--batch-size", metavar="B", min=1, help="The batch size of the audited steps.")
]
AuditToleranceOption = Annotated[
    float,
    typer.Option(
        "--tolerance",
        metavar="SHARE",
        min=0.0,
        max=0.99,
        help="Exit 1 when a finding (or the bottom line) costs more than this share of the step's peak memory or "
        "FLOPs, or nothing trains as meant.",
    ),
]
AuditJsonOption = Annotated[bool, typer.Option("--json", help="Print the findings and the bottom line as JSON.")]
WarmupOption = Annotated[int, typer.Option("--warmup", metavar="STEPS", help="Unmeasured steps per cell (at least 1).")]
MinStepsOption = Annotated[
    int, typer.Option("--min-steps", min=1, metavar="STEPS", help="Timed steps per cell before it may stop.")
]
StepsOption = Annotated[
    int, typer.Option("--steps", min=1, metavar="STEPS", help="At most this many timed steps per cell.")
]
StepsPerVisitOption = Annotated[
    int, typer.Option("--steps-per-visit", min=1, metavar="STEPS", help="Timed steps per visit of a cell.")
]
FIT_HELP = (
    "For each z, the largest batch that fits in --memory or on --gpu (estimated; "
    f"{CUDA_CONTEXT_RESERVE_BYTES // MIB} MiB kept for the CUDA context)."
)
QuickOption = Annotated[
    bool,
    typer.Option(
        "--quick",
        help="A first look in minutes: --layers doubling --warmup 3 --min-steps 5 --steps 10 --max-time 120, "
        "except where you give them.",
    ),
]


class ProfileProtocol(NamedTuple):
    """`profile`'s cells and timing protocol as the options give them (by their parameter names)."""

    layer_counts: str
    warmup: int
    min_steps: int
    steps: int
    max_time: float | None


QUICK_PROTOCOL = ProfileProtocol(layer_counts="doubling", warmup=3, min_steps=5, steps=10, max_time=120.0)


def quick_profile(ctx: typer.Context, quick: bool, given: ProfileProtocol) -> ProfileProtocol:
    """`profile --quick`: QUICK_PROTOCOL's values for the options not written on the command line; without
    --quick, the options as given."""
    if not quick:
        return given
    written = {
        name for name in given._fields if (source := ctx.get_parameter_source(name)) and source.name == "COMMANDLINE"
    }
    return ProfileProtocol(*(getattr(given if name in written else QUICK_PROTOCOL, name) for name in given._fields))


MaxTimeOption = Annotated[
    float | None,
    typer.Option("--max-time", metavar="SECONDS", help="Stop re-measuring cells other work disturbed after this long."),
]
ProfileThreadsOption = Annotated[
    int | None, typer.Option("--threads", min=1, metavar="N", help="torch's threads (default: torch's own).")
]
CpusOption = Annotated[
    str | None, typer.Option("--cpus", metavar="LIST", help="Run on these CPUs only, e.g. 0-3 or 0,2.")
]
DeviceOption = Annotated[
    str, typer.Option("--device", metavar="DEVICE", help="auto (CUDA if available), cpu, cuda, cuda:N.")
]
Tf32Option = Annotated[
    bool | None,
    typer.Option(
        "--tf32/--no-tf32",
        help="TensorFloat-32 for float32 matmuls and cuDNN convolutions, on or off. "
        "Default: PyTorch's own (matmuls in full float32, convolutions in TF32).",
        show_default=False,
    ),
]
PerLayerOption = Annotated[
    bool,
    typer.Option(
        "--per-layer",
        help="After the sweep, time each layer's forward and backward in full training (CUDA events on a GPU, "
        "perf counters on the CPU), at every batch size.",
    ),
]
ProfileOutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        metavar="PATH",
        help="Profile JSON (CSV beside it). Default profiles/MODEL-DEVICE.json; with Ray, a directory.",
    ),
]
ProfileExecutorOption = Annotated[
    ExecutorName, typer.Option("--executor", help="Here, or one sweep per GPU kind and batch size as Ray tasks.")
]
GpuKindsOption = Annotated[
    str | None,
    typer.Option("--gpu-kinds", metavar="KINDS", help="Ray: L4,H100 (accelerator types) or small=RESOURCE (custom)."),
]
EstimateGpuOption = gpu_option(
    "Its cuBLAS workspace, its peaks for predicted step times and, for ladders, its memory (default: H100's "
    "workspace and peaks, no memory)."
)
CalibrateOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--calibrate",
        metavar="PROFILE",
        help="Fit the time model to measured profiles (any models) of the target device kind, or reuse the one "
        "an earlier estimate holds. Repeatable. Default: documented default constants.",
    ),
]
AgainstOption = Annotated[
    Path | None,
    typer.Option("--against", metavar="PROFILE", help="A measured profile of MODEL: predicted against measured."),
]
EstimateThreadsOption = Annotated[
    int | None,
    typer.Option("--threads", min=1, metavar="N", help="--target cpu: the threads step times are predicted for."),
]
EstimateOutOption = Annotated[
    Path | None,
    typer.Option(
        "--out", metavar="PATH", help="Profile JSON (CSV beside it). Default profiles/MODEL-estimate-TARGET.json."
    ),
]
LadderProfileArgument = Annotated[
    list[Path],
    typer.Argument(
        metavar="PROFILE...",
        help="A profile JSON written by `layerprof profile` or `layerprof estimate`; several of one model, one per "
        "recipe, say which recipe gives each rung.",
    ),
]
LadderBatchSizeOption = Annotated[
    int | None, typer.Option("--batch-size", metavar="B", help="Batch size to use (default: the most complete).")
]
EtaOption = Annotated[float, typer.Option("--eta", metavar="ETA", help="Cost growth between rungs (> 1).")]
CostOption = Annotated[
    CostName | None,
    typer.Option(
        "--cost",
        help="What the rungs are spaced by: step time (measured, or predicted in an estimate) or FLOPs "
        "(default: time where the profile has it, else flops).",
    ),
]
MinLayersOption = Annotated[int, typer.Option("--min-layers", metavar="Z", help="The lowest z a rung may use.")]
LadderGpuMemoryOption = Annotated[
    str | None,
    typer.Option("--gpu-memory", metavar="SIZE", help="GPU memory for slots, e.g. 80GiB (default: the profile's GPU)."),
]
LadderConfigsOption = Annotated[
    int | None, typer.Option("--configs", metavar="N", help="Initial configurations: brackets and their cost.")
]
LadderBudgetStepsOption = Annotated[
    int | None, typer.Option("--budget-steps", metavar="STEPS", help="Add training steps as a second fidelity.")
]
CorrelationOption = Annotated[
    Path | None,
    typer.Option("--correlation", metavar="RESULT", help="A correlate result.json: show each rung's rho."),
]
LadderJsonOption = Annotated[bool, typer.Option("--json", help="Print the ladder as JSON.")]
LadderExportOption = Annotated[
    ExportName | None, typer.Option("--export", help="Print a runnable snippet for this HPO library.")
]
SplitOption = Annotated[
    SplitMode,
    typer.Option(
        "--split",
        help="auto: also compare the model's splits at other depths (finer layers) by the ladder each gives, "
        "from one per-layer trace, and name the best.",
    ),
]
BatchLimitsOption = Annotated[
    Path | None,
    typer.Option(
        "--batch-limits",
        metavar="FIT_JSON",
        help="`fit --json`'s output: each rung's largest batch, which --export snippets never exceed.",
    ),
]
LadderGpuOption = gpu_option(
    "Its memory for slots (unless --gpu-memory) and each rung's trial in dollars at its price (--price, --prices)."
)
MemoryOption = Annotated[str | None, typer.Option("--memory", metavar="SIZE", help="GPU memory budget, e.g. 24GiB.")]
FitGpuOption = gpu_option("The GPU whose memory is the budget.")
FitBatchSizeOption = Annotated[
    int | None,
    typer.Option(
        "--batch-size", metavar="B", min=1, help="Also name the smallest and the cheapest GPU that run this batch."
    ),
]
FitJsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ReportProfilesArgument = Annotated[
    list[Path], typer.Argument(metavar="PROFILE...", help="One or more profiles; several are overlaid.")
]
ReportOutOption = Annotated[Path, typer.Option("--out", metavar="DIR", help="Where the figures and index.md go.")]
ImageFormatOption = Annotated[ImageFormat, typer.Option("--format", help="Image format.")]
TaskArgument = Annotated[
    str,
    typer.Argument(metavar="TASK", help="digits, pydoc-lm, or file.py:fn / pkg.mod:fn (docs/commands/correlate.md)."),
]
GridOption = Annotated[Path | None, typer.Option("--grid", metavar="FILE", help="JSON/YAML: name -> list of values.")]
GridPresetOption = Annotated[
    GridPresetName, typer.Option("--grid-preset", help="small (12 configs) or paper (Table 1).")
]
CorrelateLayerCountsOption = Annotated[
    str | None,
    typer.Option(
        "--layers",
        metavar="Z",
        help="Trainable-layer counts, e.g. 1,2,4,all (default: those of 1,2,4,all the task has).",
    ),
]
BudgetFractionsOption = Annotated[
    str, typer.Option("--budget-fractions", metavar="F,F,...", help="Training-budget fractions; 1 is added.")
]
SeedsOption = Annotated[int, typer.Option("--seeds", min=1, metavar="K", help="Repetitions per trial (mean loss).")]
JudgeSeedsOption = Annotated[
    int,
    typer.Option(
        "--judge-seeds",
        min=0,
        metavar="N",
        help="Also N seeds at full fidelity only: they judge the others held out (a 1-seed study judges itself).",
    ),
]
ContinuedOption = Annotated[
    list[str] | None,
    typer.Option(
        "--continue",
        metavar="PATHS|RUNGS",
        help=f"Also run each configuration through these rungs in one continued run: {','.join(CONTINUED_PATHS)} "
        "or rungs like 1@0.25,3@0.5,6@1 (repeatable).",
    ),
]
CorrelateExecutorOption = Annotated[
    ExecutorName, typer.Option("--executor", help="Worker processes here, or Ray tasks.")
]
WorkersOption = Annotated[
    int | None, typer.Option("--workers", min=1, metavar="N", help="Local worker processes (default: cores).")
]
CorrelateOutOption = Annotated[
    Path, typer.Option("--out", metavar="DIR", help="Trials, results and heatmap (resumable).")
]
StudyArgument = Annotated[
    Path, typer.Argument(metavar="STUDY", help="A `layerprof correlate` --out directory (its recorded trials).")
]
SimulateProfilePathOption = Annotated[
    Path | None,
    typer.Option(
        "--profile", metavar="PROFILE", help="A profile of the task's model: GPU cost, memory, the ladder paths."
    ),
]
SimulateEtaOption = Annotated[
    float, typer.Option("--eta", metavar="ETA", help="Keep 1/eta of the trials at each rung.")
]
SimulateConfigsOption = Annotated[
    int | None,
    typer.Option("--configs", metavar="N", help="Starting configurations (default: eta^(rungs-1) of budget)."),
]
RepeatsOption = Annotated[
    str,
    typer.Option("--repeats", metavar="R|auto", help="Sampled runs per path, or auto: batches of 1000 until stable."),
]
PathsOption = Annotated[
    str | None,
    typer.Option("--paths", metavar="NAMES", help=f"Some of {','.join(PATHS)} (default: all the inputs allow)."),
]
CustomOption = Annotated[
    list[str] | None, typer.Option("--path", metavar="RUNGS", help="Your own rungs, e.g. 1@0.25,3@0.5,6@1.")
]
SimulateLayerCountsOption = Annotated[
    str | None, typer.Option("--layers", metavar="Z", help="The study's z values paths may use (default: all).")
]
BudgetsOption = Annotated[
    str | None,
    typer.Option("--budgets", metavar="F,F,...", help="The study's budget fractions paths may use (default: all)."),
]
SimulateGpuMemoryOption = Annotated[
    str | None,
    typer.Option("--gpu-memory", metavar="SIZE", help="GPU memory for side-by-side trials (default: the profile's)."),
]
FullStepsOption = Annotated[
    int | None,
    typer.Option("--full-steps", min=1, metavar="STEPS", help="Steps at budget 1, for a task that does not say."),
]
SeedOption = Annotated[int, typer.Option("--seed", metavar="S", help="Seed of the sampled runs.")]
SimulateWorkersOption = Annotated[
    int,
    typer.Option(
        "--workers", min=1, metavar="N", help="Trials at once for wall times: halving waits for each rung, ASHA not."
    ),
]
SimulateGpuOption = gpu_option(
    "Each path's dollars on this kind: the profile's device seconds (scaled by peak from the profile's GPU) at its "
    "price (--price, --prices)."
)
SimulateOutOption = Annotated[
    Path | None, typer.Option("--out", metavar="DIR", help="Where the JSON and figure go (default: STUDY).")
]
SimulateJsonOption = Annotated[bool, typer.Option("--json", help="Print the simulation as JSON.")]
PlanProfilesArgument = Annotated[
    list[Path],
    typer.Argument(
        metavar="PROFILE...",
        help="Profiles of one model measured on GPUs, and/or an estimate (--target cuda); of several recipes, a plan "
        "per recipe and the one that ends soonest.",
    ),
]
ClusterOption = Annotated[
    str,
    typer.Option(
        "--cluster",
        metavar="GPUS",
        help="The GPUs you have, e.g. 16xL4,4xA100-80GB,1xH100 or 7xH100-1g.10gb; `ray` or ray:ADDR reads "
        "a running Ray cluster.",
    ),
]
PlanConfigsOption = Annotated[
    int | None, typer.Option("--configs", min=1, metavar="N", help="Starting configurations (default eta^(K-1)).")
]
PlanBudgetStepsOption = Annotated[
    int, typer.Option("--budget-steps", min=1, metavar="STEPS", help="Training steps of a full-budget trial.")
]
PlanBatchSizeOption = Annotated[
    int | None, typer.Option("--batch-size", metavar="B", help="The batch size (default: the one they share).")
]
PlanJsonOption = Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")]
WideOption = Annotated[
    bool, typer.Option("--wide", help="Every column in the tables (default: those that fit 100 columns).")
]
PlanExportOption = Annotated[
    PlanExport | None, typer.Option("--export", help="Print a runnable script that runs the plan's halving.")
]
PriceOption = Annotated[
    list[str] | None,
    typer.Option(
        "--price",
        metavar="KIND=USD",
        help="What one GPU of KIND costs per hour, e.g. H100=2.49 (a MIG slice: its share unless given). "
        "Repeatable; before --prices and the built-in list prices.",
    ),
]
PricesOption = Annotated[
    Path | None,
    typer.Option(
        "--prices",
        metavar="FILE",
        help='Prices per GPU-hour: JSON {"H100": 2.49} or lines KIND=USD (default: $LAYERPROF_PRICES, if set).',
    ),
]
DeadlineOption = Annotated[
    str | None,
    typer.Option(
        "--deadline",
        metavar="DURATION",
        help="e.g. 6h: for successive halving, Hyperband and ASHA over the ladder, the cheapest composition of "
        "--cluster's kinds (each up to its count) that ends by then, rented for the whole run; or why none does.",
    ),
]
ObjectiveOption = Annotated[
    str | None,
    typer.Option(
        "--objective",
        metavar="FILE.py:FN",
        help="With --export: the script trains with your FN(config, trainable_layers, steps, state) -> (loss, "
        "state), freezing with layerprof.freeze (docs/api.md); without, a stand-in to replace.",
    ),
]
CurrentArgument = Annotated[Path, typer.Argument(metavar="CURRENT", help="The profile to gate.")]
BaselineArgument = Annotated[Path, typer.Argument(metavar="BASELINE", help="The accepted profile to compare against.")]
TimeToleranceOption = Annotated[
    str, typer.Option("--time-tolerance", metavar="SHARE", help="Allowed slowdown beyond the measured spread.")
]
MemoryToleranceOption = Annotated[
    str, typer.Option("--memory-tolerance", metavar="SHARE", help="Allowed growth of measured memory.")
]
AcceptChangesOption = Annotated[
    bool, typer.Option("--accept-changes", help="Report changed deterministic figures without failing.")
]
AllowDeviceMismatchOption = Annotated[
    bool, typer.Option("--allow-device-mismatch", help="Compare profiles from different devices.")
]
SummaryMdOption = Annotated[
    Path | None,
    typer.Option("--summary-md", metavar="PATH", help="Write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)."),
]
JunitOption = Annotated[
    Path | None, typer.Option("--junit", metavar="PATH", help="Write JUnit XML, a case per cell and figure.")
]
UpdateBaselineOption = Annotated[
    bool, typer.Option("--update-baseline", help="Write CURRENT as the new BASELINE instead of comparing.")
]
