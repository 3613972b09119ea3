"""The `layerprof` command line: a map from command name to a library function.

Every command parses its options (`layerprof.parsing`), calls one library function and renders the result
with `layerprof.tables`. Nothing heavy is imported at module level, so that `--help` answers without torch.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from layerprof import __version__
from layerprof.correlate import EXECUTORS
from layerprof.devices import TARGETS
from layerprof.errors import CellsFailed, LayerprofError, LayerprofWarning
from layerprof.exporters import EXPORTERS
from layerprof.grids import GRID_PRESETS
from layerprof.ladder import COSTS
from layerprof.optimizers import OPTIMIZERS
from layerprof.precision import PRECISIONS
from layerprof.report import IMAGE_FORMATS
from layerprof.simulate import PATHS

app = typer.Typer(
    name="layerprof",
    help="Hardware profiler and fidelity explorer for layer-freezing hyperparameter optimisation.\n\n"
    "Train only the last z of a network's n layers as a cheap fidelity: layerprof measures what each z "
    "costs in memory, time and FLOPs for your model, batch size and GPU.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)
# emoji off: a name like hf:llama or a message with :word: in it is printed as written, not as a picture
console = Console(emoji=False)
errors = Console(stderr=True, soft_wrap=True, emoji=False)


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


@contextmanager
def user_errors(unexpected_exit: int = 1) -> Iterator[None]:
    """Input errors become one red line and exit 2; anything unexpected, one line and `unexpected_exit` (1; a
    gate whose exit 1 means a regression makes it 2, so that a CI job never reads a crash as a regression)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                shown = set()  # a model built twice (split, then the sweep) warns twice: say it once
                for warning in caught:
                    if issubclass(warning.category, LayerprofWarning) and str(warning.message) not in shown:
                        shown.add(str(warning.message))
                        errors.print(f"[yellow]warning:[/] {warning.message}", highlight=False)
    except LayerprofError as error:
        errors.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(error.exit_code) from None
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as error:  # noqa: BLE001
        if os.environ.get("LAYERPROF_DEBUG"):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        errors.print(
            f"[red]error:[/] unexpected {type(error).__name__}: {message} (set LAYERPROF_DEBUG=1 for a traceback)",
            highlight=False,
        )
        raise typer.Exit(unexpected_exit) from None


def _version(value: bool) -> None:
    if value:
        console.print(f"layerprof {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


# ---------------------------------------------------------------- shared options

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


def _precision(precision: Any, dtype: Any) -> str:
    """--precision, or the *-true precision an old --dtype names."""
    if dtype is None:
        return precision.value
    named = DTYPE_PRECISIONS[dtype.value]
    if precision.value not in ("32-true", named):
        raise LayerprofError(f"--dtype {dtype.value} contradicts --precision {precision.value}; give --precision only")
    return named


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


def _model_options(
    num_classes: int | None,
    input_shape: str | None,
    seq_len: int | None,
    overrides: list[str] | None,
    unwrap: list[str] | None,
) -> Any:
    from layerprof.models import ModelOptions
    from layerprof.parsing import parse_input_shape, parse_overrides

    return ModelOptions(
        num_classes=num_classes,
        input_shape=parse_input_shape(input_shape) if input_shape else None,
        seq_len=seq_len,
        overrides=parse_overrides(overrides or []),
        unwrap=tuple(unwrap or ()),
    )


def _batch_sizes(text: str | None) -> tuple[int, ...]:
    """Not given: the model family's default (given but empty is an error)."""
    from layerprof.parsing import parse_positive_ints

    return parse_positive_ints(text, "--batch-sizes") if text is not None else ()


# ---------------------------------------------------------------- commands


@app.command()
def models(
    source: Annotated[
        str | None, typer.Option("--source", metavar="SOURCE", help="Only this source: preset, torchvision or litgpt.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the names as JSON.")] = False,
) -> None:
    """List the model names layerprof accepts, grouped by source."""
    with user_errors():
        from layerprof.models import PRESETS, known_names
        from layerprof.tables import print_model_names

        names = known_names(source)
        if as_json:
            console.print_json(json.dumps(names))
            return
        print_model_names(console, names, {name: preset["description"] for name, preset in PRESETS.items()})


@app.command()
def layers(
    model: ModelArgument,
    unwrap: UnwrapOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the split as a JSON list.")] = False,
    output_format: FormatOption = OutputFormat.table,
    costs: Annotated[
        bool,
        typer.Option(
            "--costs",
            help="Per layer, from one full-training step on fake tensors: what it adds when it trains, forward and "
            "backward FLOPs (weight gradients, inside, passed down), activations it saves, its output.",
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="B", min=1, help="--costs: the batch size.")] = 1,
    depth: Annotated[
        int,
        typer.Option(
            "--depth",
            metavar="N",
            min=0,
            help="Split N levels deeper: also descend into the classes of the layers that hold two or more "
            "sub-modules with parameters (the --unwrap classes that reproduce it are printed).",
        ),
    ] = 0,
    target: TargetOption = Target.cuda,
    precision: PrecisionOption = Precision["32-true"],
    out: Annotated[
        Path | None, typer.Option("--out", metavar="PATH", help="--costs: also write JSON (and CSV beside it).")
    ] = None,
    num_classes: NumClassesOption = None,
    input_shape: InputShapeOption = None,
    seq_len: SeqLenOption = None,
    overrides: SetOption = None,
) -> None:
    """Show how MODEL splits into layers, in forward order, and how much trains at each z (--costs: what each
    layer costs)."""
    with user_errors():
        from layerprof.layers import ORDER_TITLES
        from layerprof.models import CONSTRUCTION_NOTES, split_model
        from layerprof.tables import markdown_layer_table, rich_layer_table

        options = _model_options(num_classes, input_shape, seq_len, overrides, unwrap)
        if depth:
            from layerprof.granularity import splits_by_depth

            deepest = splits_by_depth(model, options, depth)[-1]
            if deepest.depth < depth:
                errors.print(f"[dim]note:[/] nothing below depth {deepest.depth} to descend into", highlight=False)
            options = replace(options, unwrap=deepest.unwrap)
            if not as_json:
                console.print(f"depth {deepest.depth}: --unwrap {','.join(deepest.unwrap)}", highlight=False)
        if costs:
            _print_layer_costs(model, options, batch_size, precision.value, target.value, out, as_json,
                               output_format.value)  # fmt: skip
            return

        info = split_model(model, options)
        split = info.layers
        if as_json:
            print(json.dumps([layer.to_dict() for layer in split], indent=2))
        elif output_format.value == "md":
            print(markdown_layer_table(split))
        else:
            console.print(rich_layer_table(f"{model}: {len(split)} layers, {ORDER_TITLES[info.order]}", split))
        if info.construction in CONSTRUCTION_NOTES and not as_json:
            errors.print(f"[dim]note:[/] {CONSTRUCTION_NOTES[info.construction]}", highlight=False)


@app.command()
def profile(
    model: ModelArgument,
    batch_sizes: BatchSizesOption = None,
    layer_counts: LayersOption = "all",
    warmup: Annotated[
        int, typer.Option("--warmup", metavar="STEPS", help="Unmeasured steps per cell (at least 1).")
    ] = 10,
    min_steps: Annotated[
        int, typer.Option("--min-steps", min=1, metavar="STEPS", help="Timed steps per cell before it may stop.")
    ] = 15,
    steps: Annotated[
        int, typer.Option("--steps", min=1, metavar="STEPS", help="At most this many timed steps per cell.")
    ] = 30,
    steps_per_visit: Annotated[
        int, typer.Option("--steps-per-visit", min=1, metavar="STEPS", help="Timed steps per visit of a cell.")
    ] = 5,
    max_time: Annotated[
        float | None,
        typer.Option(
            "--max-time", metavar="SECONDS", help="Stop re-measuring cells other work disturbed after this long."
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, metavar="N", help="torch's threads (default: torch's own).")
    ] = None,
    cpus: Annotated[
        str | None, typer.Option("--cpus", metavar="LIST", help="Run on these CPUs only, e.g. 0-3 or 0,2.")
    ] = None,
    optimizer: OptimizerOption = Optimizer.adamw,
    precision: PrecisionOption = Precision["32-true"],
    dtype: DtypeOption = None,
    device: Annotated[
        str, typer.Option("--device", metavar="DEVICE", help="auto (CUDA if available), cpu, cuda, cuda:N.")
    ] = "auto",
    tf32: Annotated[
        bool | None,
        typer.Option(
            "--tf32/--no-tf32",
            help="TensorFloat-32 for float32 matmuls and cuDNN convolutions, on or off. "
            "Default: PyTorch's own (matmuls in full float32, convolutions in TF32).",
            show_default=False,
        ),
    ] = None,
    per_layer: Annotated[
        bool,
        typer.Option(
            "--per-layer",
            help="After the sweep, time each layer's forward and backward in full training (CUDA events on a GPU, "
            "perf counters on the CPU), at every batch size.",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="PATH",
            help="Profile JSON (CSV beside it). Default profiles/MODEL-DEVICE.json; with Ray, a directory.",
        ),
    ] = None,
    executor: Annotated[
        Executor, typer.Option("--executor", help="Here, or one sweep per GPU kind and batch size as Ray tasks.")
    ] = Executor.local,
    address: AddressOption = None,
    gpu_kinds: Annotated[
        str | None,
        typer.Option(
            "--gpu-kinds", metavar="KINDS", help="Ray: L4,H100 (accelerator types) or small=RESOURCE (custom)."
        ),
    ] = None,
    restart: RestartOption = False,
    eval_frozen: EvalFrozenOption = False,
    output_format: FormatOption = OutputFormat.table,
    num_classes: NumClassesOption = None,
    input_shape: InputShapeOption = None,
    seq_len: SeqLenOption = None,
    overrides: SetOption = None,
    unwrap: UnwrapOption = None,
) -> None:
    """Measure memory, step time and FLOPs of MODEL for every trainable-layer count z and batch size.

    The paper's protocol exactly: --warmup 100 --min-steps 100 --steps 100.
    """
    with user_errors():
        from layerprof.parsing import parse_cpu_list, parse_layer_selection
        from layerprof.profile import SweepSettings
        from layerprof.sweep import plan_profile

        settings = SweepSettings(
            batch_sizes=_batch_sizes(batch_sizes),
            trainable_layer_counts=(),
            warmup_steps=warmup,
            min_steps=min_steps,
            max_steps=steps,
            optimizer=optimizer.value,
            precision=_precision(precision, dtype),
            steps_per_visit=steps_per_visit,
            max_time_s=max_time,
            eval_frozen=eval_frozen,
        )
        selection = parse_layer_selection(layer_counts)
        options = _model_options(num_classes, input_shape, seq_len, overrides, unwrap)
        if executor.value == "ray":
            if cpus is not None:
                raise LayerprofError("--cpus names this machine's CPUs; it does not apply with --executor ray")
            _profile_on_ray(model, options, settings, selection, device, tf32, threads, gpu_kinds, address, out)
            return
        if gpu_kinds is not None or address is not None:
            raise LayerprofError("--gpu-kinds and --address need --executor ray")
        cpu_list = parse_cpu_list(cpus) if cpus is not None else None
        with console.status(f"building {model} on {device}"):
            job = plan_profile(model, options, settings, selection, device, out, tf32, threads, cpu_list, restart)
        job.per_layer = per_layer
        result = _run_job(job, f"{job.device}")
        _print_cell_tables(result, output_format.value)
        _print_layer_times(result, output_format.value)
        failure = result.failure_summary()
        if failure is None:
            _print_recommended_ladder(result, output_format.value)
        console.print(
            f"wrote {job.path} and {job.path.with_suffix('.csv')} · sweep {result.timing.sweep_wall_s:.0f} s, "
            f"{result.timing.share_in_steps:.0%} inside training steps",
            highlight=False,
        )
        if failure is not None:
            raise CellsFailed(failure)
        failed = [row for row in result.rows if row.status == "error"]
        if failed:
            errors.print(f"[yellow]warning:[/] {len(failed)} cell(s) failed; see the status column")
        disturbed = [row for row in result.rows if row.disturbed]
        if disturbed:
            named = ", ".join(f"batch {row.batch_size} z={row.trainable_layers}" for row in disturbed[:6])
            more = f" and {len(disturbed) - 6} more" if len(disturbed) > 6 else ""
            errors.print(
                f"[yellow]warning:[/] other work on the machine disturbed {named}{more}: their step times may be "
                "off (see disturbed_reason in the profile); measure on a quiet machine or give --max-time",
                highlight=False,
            )


def _profile_on_ray(
    model: str,
    options: Any,
    settings: Any,
    selection: Any,
    device: str,
    tf32: bool | None,
    threads: int | None,
    gpu_kinds: str | None,
    address: str | None,
    out: Path | None,
) -> None:
    """One sweep per (GPU kind, batch size) on the cluster; a line per sweep as it ends; exit 1 if any is lost."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from layerprof.cluster import parse_gpu_kinds, plan_cluster_profile, profile_on_ray

    if not gpu_kinds:
        raise LayerprofError("--executor ray needs --gpu-kinds, e.g. L4,H100 or small=RESOURCE,big=RESOURCE")
    kinds = parse_gpu_kinds(gpu_kinds)
    directory = out or Path("profiles")
    if directory.suffix == ".json":
        raise LayerprofError(
            f"with --executor ray, --out is a directory (one profile per kind), got {str(directory)!r}"
        )
    with console.status(f"splitting {model}"):
        request = plan_cluster_profile(model, options, settings, selection, device, tf32, threads)
    sweeps = len(kinds) * len(request.settings.batch_sizes)
    console.print(
        f"{model}: {len(kinds)} GPU kind(s) x batch sizes {', '.join(map(str, request.settings.batch_sizes))} = "
        f"{sweeps} sweeps · Ray {address or '(local instance)'}",
        highlight=False,
    )
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("sweeps ·"),
                        TimeElapsedColumn(), console=console, transient=True)  # fmt: skip
    task = progress.add_task("submitting", total=sweeps)
    running: set[str] = set()

    def on_event(event: str, outcome: Any, batch_size: int, detail: str) -> None:
        name = f"{outcome.kind.label} batch {batch_size}"
        if event == "submitted":
            running.add(name)
        elif event == "skipped":
            progress.advance(task)
        elif event in ("done", "failed"):
            running.discard(name)
            progress.advance(task)
            style = "green" if event == "done" else "red"
            progress.console.print(f"[{style}]{name}:[/] {detail if event == 'failed' else 'wrote ' + detail}",
                                   highlight=False)  # fmt: skip
        elif event == "retry":
            progress.console.print(f"[yellow]{name}: {detail}; retrying[/]", highlight=False)
        progress.update(task, description=f"running: {', '.join(sorted(running)) or '-'}")

    try:
        with progress:
            run = profile_on_ray(request, kinds, directory, address, on_event)
    except KeyboardInterrupt:
        errors.print(f"[yellow]interrupted:[/] finished kinds are in {directory}; rerun to run the rest")
        raise typer.Exit(130) from None
    for outcome in run.outcomes:
        state = "complete" if set(outcome.done) >= set(outcome.batch_sizes) else "incomplete"
        skipped = f" ({', '.join(map(str, outcome.skipped))} already there)" if outcome.skipped else ""
        done = ", ".join(map(str, sorted(outcome.done))) or "-"
        console.print(
            f"{outcome.kind.label} ({outcome.kind.resource}): batch sizes {done}{skipped} · {state} · {outcome.path}",
            highlight=False,
        )
    finished = [str(o.path) for o in run.outcomes if o.done]
    if len(finished) > 1:
        console.print(f"next: layerprof plan {' '.join(finished)} --cluster COUNTxGPU,...", highlight=False)
    if run.failed:
        for outcome in run.outcomes:
            for failure in outcome.failures:
                errors.print(f"[red]{outcome.kind.label}:[/] {failure}", highlight=False)
        errors.print("rerun the same command to run what is missing: finished sweeps are skipped")
        raise typer.Exit(1)


@app.command()
def estimate(
    model: ModelArgument,
    batch_sizes: BatchSizesOption = None,
    layer_counts: LayersOption = "all",
    target: TargetOption = Target.cuda,
    gpu: Annotated[
        str | None,
        typer.Option(
            "--gpu",
            metavar="NAME",
            help="A GPU from `layerprof fit --help`'s list: its cuBLAS workspace, its peaks for predicted step "
            "times and, for ladders, its memory (default: H100's workspace and peaks, no memory).",
        ),
    ] = None,
    calibrate: Annotated[
        list[Path] | None,
        typer.Option(
            "--calibrate",
            metavar="PROFILE",
            help="Fit the time model to measured profiles (any models) of the target device kind, or reuse the one "
            "an earlier estimate holds. Repeatable. Default: documented default constants.",
        ),
    ] = None,
    against: Annotated[
        Path | None,
        typer.Option("--against", metavar="PROFILE", help="A measured profile of MODEL: predicted against measured."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, metavar="N", help="--target cpu: the threads step times are predicted for."),
    ] = None,
    optimizer: OptimizerOption = Optimizer.adamw,
    precision: PrecisionOption = Precision["32-true"],
    dtype: DtypeOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="PATH", help="Profile JSON (CSV beside it). Default profiles/MODEL-estimate-TARGET.json."
        ),
    ] = None,
    restart: RestartOption = False,
    eval_frozen: EvalFrozenOption = False,
    output_format: FormatOption = OutputFormat.table,
    num_classes: NumClassesOption = None,
    input_shape: InputShapeOption = None,
    seq_len: SeqLenOption = None,
    overrides: SetOption = None,
    unwrap: UnwrapOption = None,
) -> None:
    """Predict memory (by category), FLOPs and step time of every cell on fake tensors: no GPU, no real memory."""
    with user_errors():
        from layerprof.devices import gpu_kind
        from layerprof.estimate import plan_estimate
        from layerprof.parsing import parse_layer_selection
        from layerprof.profile import SweepSettings

        settings = SweepSettings(
            batch_sizes=_batch_sizes(batch_sizes),
            trainable_layer_counts=(),
            optimizer=optimizer.value,
            precision=_precision(precision, dtype),
            mode="estimate",
            target=target.value,
            target_gpu=gpu_kind(gpu).name if gpu is not None else None,
            eval_frozen=eval_frozen,
        )
        selection = parse_layer_selection(layer_counts)
        options = _model_options(num_classes, input_shape, seq_len, overrides, unwrap)
        from layerprof.profile import load_profile

        measured = load_profile(against) if against else None
        status = f"splitting {model} on the meta device" + (", calibrating the time model" if calibrate else "")
        with console.status(status):
            job = plan_estimate(model, options, settings, selection, out, calibrate or (), threads, restart)
        _print_calibration(job.time_model, output_format.value)
        result = _run_job(job, job.environment.device_name)
        _print_cell_tables(result, output_format.value)
        _print_breakdown(result, output_format.value)
        if measured is not None:
            _print_prediction_check(result, measured, output_format.value)
        failure = result.failure_summary()
        if failure is None:
            _print_recommended_ladder(result, output_format.value)
        console.print(f"wrote {job.path} and {job.path.with_suffix('.csv')}", highlight=False)
        if failure is not None:
            raise CellsFailed(failure)


@app.command()
def ladder(
    profile_path: Annotated[
        Path, typer.Argument(metavar="PROFILE", help="A profile JSON written by `layerprof profile`.")
    ],
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", metavar="B", help="Batch size to use (default: the most complete).")
    ] = None,
    eta: Annotated[float, typer.Option("--eta", metavar="ETA", help="Cost growth between rungs (> 1).")] = 3.0,
    cost: Annotated[
        Cost | None,
        typer.Option("--cost", help="What the rungs are spaced by (default: time, or flops for an estimate)."),
    ] = None,
    min_layers: Annotated[int, typer.Option("--min-layers", metavar="Z", help="The lowest z a rung may use.")] = 1,
    gpu_memory: Annotated[
        str | None,
        typer.Option(
            "--gpu-memory", metavar="SIZE", help="GPU memory for slots, e.g. 80GiB (default: the profile's GPU)."
        ),
    ] = None,
    configs: Annotated[
        int | None, typer.Option("--configs", metavar="N", help="Initial configurations: brackets and their cost.")
    ] = None,
    budget_steps: Annotated[
        int | None, typer.Option("--budget-steps", metavar="STEPS", help="Add training steps as a second fidelity.")
    ] = None,
    correlation: Annotated[
        Path | None,
        typer.Option("--correlation", metavar="RESULT", help="A correlate result.json: show each rung's rho."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ladder as JSON.")] = False,
    export: Annotated[
        ExportFormat | None, typer.Option("--export", help="Print a runnable snippet for this HPO library.")
    ] = None,
    split: Annotated[
        SplitMode,
        typer.Option(
            "--split",
            help="auto: also compare the model's splits at other depths (finer layers) by the ladder each gives, "
            "from one per-layer trace, and name the best.",
        ),
    ] = SplitMode.profile,
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """Suggest rungs of trainable layers for successive halving / Hyperband from a measured PROFILE."""
    with user_errors():
        from layerprof.exporters import export as export_snippet
        from layerprof.ladder import ladder_for
        from layerprof.parsing import parse_memory

        result, notes = ladder_for(
            profile_path,
            eta=eta,
            cost_kind=cost.value if cost else None,
            batch_size=batch_size,
            min_layers=min_layers,
            gpu_memory=parse_memory(gpu_memory, "--gpu-memory") if gpu_memory is not None else None,
            configs=configs,
            budget_steps=budget_steps,
            correlation=correlation,
        )
        for note in notes:
            errors.print(f"[yellow]warning:[/] {note}", highlight=False)
        report = _split_report(profile_path, result, eta) if split is SplitMode.auto else None
        if export is not None:
            print(export_snippet(result, export.value), end="")
        elif as_json:
            data = result.to_dict()
            if report is not None:
                data["split"] = asdict(report)
            print(json.dumps(data, indent=2))
        else:
            _print_ladder(result, output_format.value)
            if report is not None:
                _print_split_report(report, output_format.value)


@app.command()
def fit(
    model: ModelArgument,
    memory: Annotated[
        str | None, typer.Option("--memory", metavar="SIZE", help="GPU memory budget, e.g. 24GiB.")
    ] = None,
    gpu: Annotated[
        str | None, typer.Option("--gpu", metavar="NAME", help="A known GPU or MIG slice, e.g. L4, 1g.10gb.")
    ] = None,
    layer_counts: LayersOption = "all",
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", metavar="B", min=1, help="Also name the smallest GPU that runs this batch."),
    ] = None,
    target: TargetOption = Target.cuda,
    optimizer: OptimizerOption = Optimizer.adamw,
    precision: PrecisionOption = Precision["32-true"],
    dtype: DtypeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    num_classes: NumClassesOption = None,
    input_shape: InputShapeOption = None,
    seq_len: SeqLenOption = None,
    overrides: SetOption = None,
    unwrap: UnwrapOption = None,
) -> None:
    """For each z, the largest batch that fits in --memory or on --gpu (estimated; 512 MiB kept for the context)."""
    with user_errors():
        from layerprof.devices import gpu_kind
        from layerprof.estimate import fit_model
        from layerprof.parsing import parse_layer_selection, parse_memory_budget
        from layerprof.profile import SweepSettings
        from layerprof.tables import rich_fit_table

        budget = parse_memory_budget(memory, gpu)
        selection = parse_layer_selection(layer_counts)
        options = _model_options(num_classes, input_shape, seq_len, overrides, unwrap)
        settings = SweepSettings(
            batch_sizes=(1,),
            trainable_layer_counts=(1,),
            optimizer=optimizer.value,
            precision=_precision(precision, dtype),
            mode="estimate",
            target=target.value,
            target_gpu=gpu_kind(gpu).name if gpu is not None else None,
        )
        with console.status(f"estimating {model}"):
            result = fit_model(model, options, settings, budget, selection, batch_size)
        if as_json:
            print(json.dumps(result.to_dict(), indent=2))
        else:
            console.print(rich_fit_table(result))


@app.command()
def report(
    profiles: Annotated[
        list[Path], typer.Argument(metavar="PROFILE...", help="One or more profiles; several are overlaid.")
    ],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Where the figures and index.md go.")] = Path(
        "report"
    ),
    image_format: Annotated[ImageFormat, typer.Option("--format", help="Image format.")] = ImageFormat.png,
) -> None:
    """Draw the paper's figures for your model: cost curves, parameters and FLOPs, memory by category."""
    with user_errors():
        from layerprof.report import report_profiles

        result = report_profiles(profiles, out, image_format.value)
        for path in result.files:
            console.print(f"wrote {path}", highlight=False)
        for note in result.notes:
            errors.print(f"[yellow]not drawn:[/] {note}", highlight=False)


@app.command()
def correlate(
    task: Annotated[
        str, typer.Argument(metavar="TASK", help="digits, pydoc-lm, or file.py:fn / pkg.mod:fn (see README).")
    ],
    grid: Annotated[
        Path | None, typer.Option("--grid", metavar="FILE", help="JSON/YAML: name -> list of values.")
    ] = None,
    grid_preset: Annotated[
        GridPreset, typer.Option("--grid-preset", help="small (12 configs) or paper (Table 1).")
    ] = GridPreset.small,
    layer_counts: Annotated[
        str | None,
        typer.Option(
            "--layers",
            metavar="Z",
            help="Trainable-layer counts, e.g. 1,2,4,all (default: those of 1,2,4,all the task has).",
        ),
    ] = None,
    budget_fractions: Annotated[
        str, typer.Option("--budget-fractions", metavar="F,F,...", help="Training-budget fractions; 1 is added.")
    ] = "0.1,0.25,0.5,1",
    seeds: Annotated[int, typer.Option("--seeds", min=1, metavar="K", help="Repetitions per trial (mean loss).")] = 1,
    continued: Annotated[
        list[str] | None,
        typer.Option(
            "--continue",
            metavar="PATHS|RUNGS",
            help="Also run each configuration through these rungs in one continued run: budget,layers,diagonal "
            "or rungs like 1@0.25,3@0.5,6@1 (repeatable).",
        ),
    ] = None,
    executor: Annotated[
        Executor, typer.Option("--executor", help="Worker processes here, or Ray tasks.")
    ] = Executor.local,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, metavar="N", help="Local worker processes (default: cores).")
    ] = None,
    address: AddressOption = None,
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Trials, results and heatmap (resumable).")] = Path(
        "correlation"
    ),
) -> None:
    """Rank correlation of low fidelities with full training, over trainable layers x training budget."""
    with user_errors():
        from layerprof.correlate import ContinuedResult, chain_label, plan_study, run_study, write_outputs
        from layerprof.parsing import parse_fractions, parse_layer_selection
        from layerprof.tables import rich_continued_table, rich_correlation_table

        plan = plan_study(
            task,
            parse_layer_selection(layer_counts) if layer_counts is not None else None,
            parse_fractions(budget_fractions),
            seeds,
            grid,
            grid_preset.value,
            continued or (),
        )
        chains = f" + {len(plan.chains)} continued chain(s) ({'; '.join(map(chain_label, plan.chains))})"
        console.print(
            f"{task}: {len(plan.configs)} configurations x (z {','.join(map(str, plan.trainable_layer_counts))} x "
            f"budgets {','.join(f'{f:g}' for f in plan.budget_fractions)}{chains if plan.chains else ''}) x "
            f"{seeds} seed(s) = {plan.trial_count} trials · {executor.value}",
            highlight=False,
        )
        failures: list[str] = []
        with _progress("trials") as advance:

            def on_result(result: Any, done: int, planned: int) -> None:
                advance(done, planned)
                if isinstance(result, ContinuedResult):
                    if result.error is not None:
                        rung = result.segments[-1] if result.segments else None
                        where = f"{rung.trainable_layers}@{rung.budget_fraction:g}" if rung else "its start"
                        failures.append(f"config {result.config_index}, continued, at {where}: {result.error}")
                elif result.loss is None:
                    failures.append(f"config {result.config_index} at z={result.trainable_layers}: {result.error}")

            try:
                result = run_study(
                    plan, out, executor=executor.value, workers=workers, address=address, on_result=on_result
                )
            except KeyboardInterrupt:
                errors.print(f"[yellow]interrupted:[/] finished trials are in {out / 'trials.jsonl'}; rerun to resume")
                raise typer.Exit(130) from None
        for failure in failures[:5]:
            errors.print(f"[yellow]failed trial (excluded from rho):[/] {failure}", highlight=False)
        if len(failures) > 5:
            errors.print(f"[yellow]... and {len(failures) - 5} more failed trials[/]")
        paths = write_outputs(result, out)
        console.print(rich_correlation_table(result))
        if result.continued:
            console.print(rich_continued_table(result))
        for cell in result.cells:
            if cell.note:
                errors.print(f"[yellow]z={cell.trainable_layers}, budget {cell.budget_fraction:g}:[/] {cell.note}")
        console.print(
            f"wrote {', '.join(str(p) for p in paths)} · {result.wall_seconds:.0f} s · {result.executor}",
            highlight=False,
        )


@app.command()
def simulate(
    study: Annotated[
        Path, typer.Argument(metavar="STUDY", help="A `layerprof correlate` --out directory (its recorded trials).")
    ],
    profile_path: Annotated[
        Path | None,
        typer.Option(
            "--profile", metavar="PROFILE", help="A profile of the task's model: GPU cost, memory, the ladder paths."
        ),
    ] = None,
    eta: Annotated[float, typer.Option("--eta", metavar="ETA", help="Keep 1/eta of the trials at each rung.")] = 3.0,
    configs: Annotated[
        int | None,
        typer.Option("--configs", metavar="N", help="Starting configurations (default: eta^(rungs-1) of budget)."),
    ] = None,
    repeats: Annotated[
        str,
        typer.Option(
            "--repeats", metavar="R|auto", help="Sampled runs per path, or auto: batches of 1000 until stable."
        ),
    ] = "auto",
    paths: Annotated[
        str | None,
        typer.Option("--paths", metavar="NAMES", help=f"Some of {','.join(PATHS)} (default: all the inputs allow)."),
    ] = None,
    custom: Annotated[
        list[str] | None, typer.Option("--path", metavar="RUNGS", help="Your own rungs, e.g. 1@0.25,3@0.5,6@1.")
    ] = None,
    layer_counts: Annotated[
        str | None, typer.Option("--layers", metavar="Z", help="The study's z values paths may use (default: all).")
    ] = None,
    budgets: Annotated[
        str | None,
        typer.Option("--budgets", metavar="F,F,...", help="The study's budget fractions paths may use (default: all)."),
    ] = None,
    gpu_memory: Annotated[
        str | None,
        typer.Option(
            "--gpu-memory", metavar="SIZE", help="GPU memory for side-by-side trials (default: the profile's)."
        ),
    ] = None,
    full_steps: Annotated[
        int | None,
        typer.Option("--full-steps", min=1, metavar="STEPS", help="Steps at budget 1, for a task that does not say."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", metavar="S", help="Seed of the sampled runs.")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="DIR", help="Where the JSON and figure go (default: STUDY).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the simulation as JSON.")] = False,
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """Replay successive halving and Hyperband on a correlate STUDY's recorded trials: regret and cost per path."""
    with user_errors():
        from layerprof.parsing import (
            parse_fractions,
            parse_layer_selection,
            parse_memory,
            parse_repeats,
            parse_rungs,
            split_items,
        )
        from layerprof.profile import load_profile
        from layerprof.simulate import simulate as replay
        from layerprof.simulate import write_outputs
        from layerprof.tables import markdown_simulation, rich_simulation_tables, simulation_legend

        simulation = replay(
            study,
            eta=eta,
            starting_configs=configs,
            repeats=parse_repeats(repeats),
            paths=split_items(paths, "--paths", ",".join(PATHS)) if paths is not None else None,
            custom_paths=[parse_rungs(text, "--path", rising=True) for text in custom or []],
            layer_counts=parse_layer_selection(layer_counts).resolve(None) if layer_counts is not None else None,
            budget_fractions=parse_fractions(budgets, "--budgets") if budgets is not None else None,
            profile=load_profile(profile_path) if profile_path else None,
            full_steps=full_steps,
            gpu_memory=parse_memory(gpu_memory, "--gpu-memory") if gpu_memory is not None else None,
            seed=seed,
        )
        written = write_outputs(simulation, out or Path(simulation.study))
        for note in simulation.notes:
            errors.print(f"[yellow]note:[/] {note}", highlight=False)
        if as_json:
            print(json.dumps(simulation.to_dict(), indent=2))
            return
        if output_format.value == "md":
            print(markdown_simulation(simulation) + "\n")
        else:
            for table in rich_simulation_tables(simulation):
                console.print(table)
        console.print(simulation_legend(simulation), highlight=False, style="dim")
        console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False)


@app.command()
def plan(
    profile_paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PROFILE...", help="Profiles of one model measured on GPUs, and/or an estimate (--target cuda)."
        ),
    ],
    cluster: Annotated[
        str,
        typer.Option(
            "--cluster",
            metavar="GPUS",
            help="The GPUs you have, e.g. 16xL4,4xA100-80GB,1xH100 or 7xH100-1g.10gb; `ray` or ray:ADDR reads "
            "a running Ray cluster.",
        ),
    ],
    eta: Annotated[float, typer.Option("--eta", metavar="ETA", help="Cost growth between rungs (> 1).")] = 3.0,
    configs: Annotated[
        int | None, typer.Option("--configs", min=1, metavar="N", help="Starting configurations (default eta^(K-1)).")
    ] = None,
    budget_steps: Annotated[
        int, typer.Option("--budget-steps", min=1, metavar="STEPS", help="Training steps of a full-budget trial.")
    ] = 1000,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", metavar="B", help="The batch size (default: the one they share).")
    ] = None,
    min_layers: Annotated[int, typer.Option("--min-layers", metavar="Z", help="The lowest z a rung may use.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    export: Annotated[
        PlanExport | None, typer.Option("--export", help="Print a runnable script that runs the plan's halving.")
    ] = None,
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """Place each rung of the ladder on the GPUs you have: kind, trials per GPU, makespan and GPU-hours."""
    with user_errors():
        from layerprof.cluster import inventory_from_ray, parse_inventory
        from layerprof.estimate import PlanPredictor
        from layerprof.exporters import export_plan_ray
        from layerprof.plan import plan_cluster
        from layerprof.profile import load_profile
        from layerprof.tables import markdown_plan, rich_plan_tables

        if cluster == "ray" or cluster.startswith("ray:"):
            inventory = inventory_from_ray(cluster.partition(":")[2] or None)
        else:
            inventory = parse_inventory(cluster)
        result = plan_cluster(
            [load_profile(path) for path in profile_paths],
            inventory,
            eta=eta,
            configs=configs,
            budget_steps=budget_steps,
            batch_size=batch_size,
            min_layers=min_layers,
            predict=PlanPredictor,
        )
        if export is not None:
            print(export_plan_ray(result), end="")
        elif as_json:
            print(json.dumps(result.to_dict(), indent=2))
        elif output_format.value == "md":
            print(markdown_plan(result) + "\n")
        else:
            for table in rich_plan_tables(result):
                console.print(table)
        if not as_json and not export:
            for note in result.notes:
                console.print(f"  {note}", highlight=False, style="dim")


@app.command()
def check(
    current: Annotated[Path, typer.Argument(metavar="CURRENT", help="The profile to gate.")],
    baseline: Annotated[Path, typer.Argument(metavar="BASELINE", help="The accepted profile to compare against.")],
    time_tolerance: Annotated[
        str, typer.Option("--time-tolerance", metavar="SHARE", help="Allowed slowdown beyond the measured spread.")
    ] = "10%",
    memory_tolerance: Annotated[
        str, typer.Option("--memory-tolerance", metavar="SHARE", help="Allowed growth of measured memory.")
    ] = "2%",
    accept_changes: Annotated[
        bool, typer.Option("--accept-changes", help="Report changed deterministic figures without failing.")
    ] = False,
    allow_device_mismatch: Annotated[
        bool, typer.Option("--allow-device-mismatch", help="Compare profiles from different devices.")
    ] = False,
    summary_md: Annotated[
        Path | None,
        typer.Option("--summary-md", metavar="PATH", help="Write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)."),
    ] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", metavar="PATH", help="Write JUnit XML, a case per cell and figure.")
    ] = None,
    update_baseline: Annotated[
        bool, typer.Option("--update-baseline", help="Write CURRENT as the new BASELINE instead of comparing.")
    ] = False,
) -> None:
    """Gate regressions: exit 0 pass, 1 regression, 2 unusable input (an incomplete profile included), 3
    inconclusive (noise hides a slowdown)."""
    with user_errors(unexpected_exit=2):
        from layerprof.check import check_files, write_baseline
        from layerprof.parsing import parse_share
        from layerprof.tables import rich_check_table

        if update_baseline:
            cells = write_baseline(current, baseline)
            console.print(f"baseline {baseline} now holds {current} ({cells} cells)")
            return
        result = check_files(
            current,
            baseline,
            time_tolerance=parse_share(time_tolerance, "--time-tolerance"),
            memory_tolerance=parse_share(memory_tolerance, "--memory-tolerance"),
            accept_changes=accept_changes,
            allow_device_mismatch=allow_device_mismatch,
            summary_md=summary_md,
            junit=junit,
        )
        console.print(rich_check_table(result))
        if result.regressions:
            errors.print(f"[red]regression:[/] {result.regression_summary()}", highlight=False)
        elif result.inconclusive:
            errors.print(f"[yellow]inconclusive:[/] {result.inconclusive_summary()}", highlight=False)
        else:
            console.print(f"pass: {result.cells_compared} cells compared", highlight=False)
        if result.exit_code:
            raise typer.Exit(result.exit_code)


# ---------------------------------------------------------------- rendering


def _print_cell_tables(result: Any, output_format: str) -> None:
    from layerprof.tables import markdown_cell_table, rich_cell_table

    for batch_size in result.batch_sizes():
        if output_format == "md":
            print(markdown_cell_table(result, batch_size) + "\n")
        else:
            console.print(rich_cell_table(result, batch_size))


def _split_report(profile_path: Path, ladder: Any, eta: float) -> Any:
    from layerprof.granularity import choose_split_for_profile
    from layerprof.profile import load_profile

    with console.status("comparing the splits at other depths (one per-layer trace)"):
        return choose_split_for_profile(load_profile(profile_path), ladder.batch_size, eta)


def _print_split_report(report: Any, output_format: str) -> None:
    from layerprof.tables import markdown_split_report, rich_split_report

    if output_format == "md":
        print(markdown_split_report(report))
    else:
        console.print(rich_split_report(report))
    console.print(f"split: {report.reason}", highlight=False)


def _print_layer_times(result: Any, output_format: str) -> None:
    from layerprof.tables import markdown_layer_times, rich_layer_times

    for times in result.layer_times or []:
        if output_format == "md":
            print(markdown_layer_times(times) + "\n")
        else:
            console.print(rich_layer_times(times, result.model.spec))


def _print_layer_costs(
    model: str, options: Any, batch_size: int, precision: str, target: str, out: Path | None, as_json: bool,
    output_format: str,
) -> None:  # fmt: skip
    from layerprof.layercosts import layer_costs
    from layerprof.profile import ensure_writable
    from layerprof.tables import markdown_layer_costs, rich_layer_costs

    path = ensure_writable(out) if out else None
    with console.status(f"tracing one full-training step of {model} at batch {batch_size}"):
        table = layer_costs(model, options, batch_size, precision, target)
    if path:
        table.save(path)
    if as_json:
        print(json.dumps(table.to_dict(), indent=2))
    elif output_format == "md":
        print(markdown_layer_costs(table))
    else:
        console.print(rich_layer_costs(table))
    if path and not as_json:
        console.print(f"wrote {path} and {path.with_suffix('.csv')}", highlight=False)


def _print_calibration(time_model: Any, output_format: str) -> None:
    from layerprof.tables import calibration_lines

    for line in calibration_lines(time_model, markup=output_format != "md"):
        console.print(line, highlight=False)


def _print_prediction_check(result: Any, measured: Any, output_format: str) -> None:
    from layerprof.tables import markdown_prediction_check, rich_prediction_check
    from layerprof.timemodel import check_predictions

    checks = check_predictions(result, measured)
    if output_format == "md":
        print(markdown_prediction_check(checks) + "\n")
    else:
        console.print(rich_prediction_check(checks, measured.environment.device_name))


def _print_breakdown(result: Any, output_format: str) -> None:
    from layerprof.tables import markdown_breakdown_table, rich_breakdown_table

    for batch_size in result.batch_sizes():
        if output_format == "md":
            print(markdown_breakdown_table(result, batch_size) + "\n")
        else:
            console.print(rich_breakdown_table(result, batch_size))


def _print_recommended_ladder(result: Any, output_format: str) -> None:
    """The ladder for the default eta; a profile whose full-training cell failed has none to show."""
    from layerprof.ladder import build_ladder, default_cost

    try:
        recommended = build_ladder(result, cost_kind=default_cost(result))
    except LayerprofError as error:
        errors.print(f"[yellow]no ladder:[/] {error}", highlight=False)
        return
    _print_ladder(recommended, output_format)
    console.print("`layerprof ladder PROFILE --help` for other eta, GPU memory, brackets and exports.")


def _print_ladder(result: Any, output_format: str) -> None:
    from layerprof.tables import ladder_summary_lines, markdown_ladder, rich_ladder_table

    if output_format == "md":
        print(markdown_ladder(result) + "\n")
        return
    console.print(rich_ladder_table(result))
    for line in ladder_summary_lines(result):
        console.print(f"  {line}", highlight=False)


def _run_job(job: Any, where: str) -> Any:
    """Run a sweep under a progress bar; Ctrl-C keeps the saved rows, marks the rest unfinished and exits 130."""
    from layerprof.layers import ORDER_TITLES

    settings = job.settings
    order = "" if job.order[0] == "forward" else f" in {ORDER_TITLES[job.order[0]]}"
    console.print(
        f"{job.spec}: {len(job.layers)} layers{order} · batch sizes {', '.join(map(str, settings.batch_sizes))} · "
        f"z = {_short_range(settings.trainable_layer_counts)} · {where}",
        highlight=False,
    )
    if job.resume is not None:
        left = job.resume.unfinished_cells()
        kept = len(job.resume.planned_cells()) - len(left)
        console.print(
            f"resuming the interrupted {job.path}: {kept} finished cell(s) kept, {len(left)} to measure "
            "(--restart measures every cell anew)",
            highlight=False,
        )
    try:
        with _SweepProgress(console) as progress:
            return job.run(progress)
    except KeyboardInterrupt:
        errors.print(
            f"[yellow]interrupted:[/] finished cells are saved in {job.path}, the others marked unfinished; rerun "
            "the same command to resume",
            highlight=False,
        )
        raise typer.Exit(130) from None


def _short_range(values: tuple[int, ...]) -> str:
    if len(values) > 2 and values == tuple(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ",".join(map(str, values))


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A transient bar; yields `advance(done, total)`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True
    )
    bar = progress.add_task(label, total=None)
    with progress:
        yield lambda done, total: progress.update(bar, completed=done, total=total)


class _SweepProgress:
    """A Rich progress bar: the current cell, cells done, and time left."""

    def __init__(self, target: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("cells ·"),
            TimeRemainingColumn(),
            TextColumn("left"),
            console=target,
            transient=True,
        )
        self._task = self._progress.add_task("starting", total=None)

    def __enter__(self) -> _SweepProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def cell_started(self, batch_size: int, trainable_layers: int, position: int, total: int) -> None:
        self._progress.update(self._task, total=total, description=f"batch {batch_size}, z={trainable_layers}")

    def round_finished(self, round_index: int, unsettled: int) -> None:
        description = f"round {round_index + 1}: {unsettled} cell(s) still settling"
        self._progress.update(self._task, description=description, completed=0, total=None)

    def cell_finished(self, row: Any) -> None:
        self._progress.advance(self._task)
        if not row.ok and row.status != "skipped":
            self._progress.console.print(
                f"[yellow]batch {row.batch_size}, z={row.trainable_layers}: {row.status}[/] {row.message}",
                highlight=False,
            )


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
