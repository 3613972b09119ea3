"""The `layerprof` command line: parse, call the library, render. No logic of its own.

Nothing heavy is imported at module level, so that `--help` answers without loading torch.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from layerprof import __version__
from layerprof.errors import LayerprofError

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
console = Console()
errors = Console(stderr=True, soft_wrap=True)


class OutputFormat(str, Enum):
    table = "table"
    md = "md"


class Optimizer(str, Enum):
    adamw = "adamw"
    adam = "adam"
    sgd = "sgd"


class Cost(str, Enum):
    time = "time"
    flops = "flops"


class ExportFormat(str, Enum):
    neps = "neps"
    optuna = "optuna"
    ray = "ray"
    smac = "smac"


class Target(str, Enum):
    cuda = "cuda"
    cpu = "cpu"


class Dtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@contextmanager
def user_errors() -> Iterator[None]:
    """Input errors become one red line and exit 2; anything unexpected, one line and exit 1."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for warning in caught:
                    if warning.category.__name__ == "SplitWarning":
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
        raise typer.Exit(1) from None


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


BatchSizesOption = Annotated[
    str | None,
    typer.Option("--batch-sizes", metavar="B,B,...", help="Comma-separated, e.g. 1,8,32 (default per family)."),
]
LayersOption = Annotated[
    str, typer.Option("--layers", metavar="Z", help="Trainable-layer counts z to run: all, 1,2,4 or 1-5.")
]
OptimizerOption = Annotated[Optimizer, typer.Option("--optimizer", help="Over trainable parameters.")]
DtypeOption = Annotated[Dtype, typer.Option("--dtype", help="Parameters, optimizer state and inputs.")]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="Table style.")]
TargetOption = Annotated[Target, typer.Option("--target", help="Device to predict for.")]


def _model_options(
    num_classes: int | None,
    input_shape: str | None,
    seq_len: int | None,
    overrides: list[str] | None,
    unwrap: list[str] | None,
) -> Any:
    from layerprof.models import ModelOptions, parse_input_shape, parse_overrides

    return ModelOptions(
        num_classes=num_classes,
        input_shape=parse_input_shape(input_shape) if input_shape else None,
        seq_len=seq_len,
        overrides=parse_overrides(overrides or []),
        unwrap=tuple(unwrap or ()),
    )


def parse_positive_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise LayerprofError(f"{option} expects positive integers like 1,8,32, got {text!r}")
    return tuple(sorted(set(values)))


def parse_layer_counts(text: str, layer_count: int) -> tuple[int, ...]:
    """`all`, `1,2,4`, `1-5`, or a mix (`1-3,8`); every value must lie in 1..n."""
    if text.strip().lower() == "all":
        return tuple(range(1, layer_count + 1))
    values: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        try:
            span = range(int(low), int(high) + 1) if dash else range(int(part), int(part) + 1)
        except ValueError:
            raise LayerprofError(f"--layers expects all, 1,2,4 or 1-5, got {text!r}") from None
        if not span:
            raise LayerprofError(f"--layers range {part!r} is empty; write LOW-HIGH with LOW <= HIGH")
        values.update(span)
    outside = sorted(v for v in values if not 1 <= v <= layer_count)
    if outside:
        raise LayerprofError(f"--layers {outside[0]} is outside 1..{layer_count} (this model has {layer_count} layers)")
    return tuple(sorted(values))


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
        from rich.columns import Columns

        from layerprof.models import PRESETS, known_names

        names = known_names()
        if source is not None:
            if source not in names:
                raise LayerprofError(f"--source {source!r}: choose preset, torchvision or litgpt")
            names = {source: names[source]}
        if as_json:
            console.print_json(json.dumps(names))
            return
        for group, members in names.items():
            console.print(f"[bold]{group}[/] ({len(members)})")
            if group == "preset":
                for name in members:
                    console.print(f"  {name:26s} {PRESETS[name]['description']}", highlight=False)
            else:
                console.print(Columns(members, padding=(0, 2)), highlight=False)
            console.print()
        console.print("Also accepted: path/to/file.py:factory and package.module:factory (see README).")


@app.command()
def layers(
    model: ModelArgument,
    unwrap: UnwrapOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the split as a JSON list.")] = False,
    output_format: FormatOption = OutputFormat.table,
    num_classes: NumClassesOption = None,
    input_shape: InputShapeOption = None,
    seq_len: SeqLenOption = None,
    overrides: SetOption = None,
) -> None:
    """Show how MODEL splits into layers, in forward order, and how much trains at each z."""
    with user_errors():
        from layerprof.models import build_model
        from layerprof.tables import markdown_layer_table, rich_layer_table

        options = _model_options(num_classes, input_shape, seq_len, overrides, unwrap)
        loaded = build_model(model, options, device="meta")
        split = loaded.split()
        if as_json:
            print(json.dumps([layer.to_dict() for layer in split], indent=2))
        elif output_format is OutputFormat.md:
            print(markdown_layer_table(split))
        else:
            console.print(rich_layer_table(f"{model}: {len(split)} layers, forward order", split))


@app.command()
def profile(
    model: ModelArgument,
    batch_sizes: BatchSizesOption = None,
    layer_counts: LayersOption = "all",
    warmup: Annotated[int, typer.Option("--warmup", min=0, metavar="STEPS", help="Unmeasured steps per cell.")] = 10,
    min_steps: Annotated[
        int, typer.Option("--min-steps", min=1, metavar="STEPS", help="Measured steps before stopping.")
    ] = 10,
    steps: Annotated[
        int, typer.Option("--steps", min=1, metavar="STEPS", help="At most this many measured steps per cell.")
    ] = 50,
    optimizer: OptimizerOption = Optimizer.adamw,
    dtype: DtypeOption = Dtype.float32,
    device: Annotated[
        str, typer.Option("--device", metavar="DEVICE", help="auto (CUDA if available), cpu, cuda, cuda:N.")
    ] = "auto",
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="PATH", help="Profile JSON (CSV beside it). Default profiles/MODEL-DEVICE.json."),
    ] = None,
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
        if min_steps > steps:
            raise LayerprofError(f"--min-steps {min_steps} exceeds --steps {steps}; use --min-steps <= --steps")
        from layerprof.environment import describe_environment, device_slug, resolve_device
        from layerprof.models import build_model, model_slug
        from layerprof.profile import csv_path_for, ensure_writable, save_profile
        from layerprof.sweep import DTYPES, SweepSettings, profile_model

        chosen_device = resolve_device(device)
        sizes = parse_positive_ints(batch_sizes, "--batch-sizes") if batch_sizes else None
        environment = describe_environment(chosen_device)
        path = out or Path("profiles") / f"{model_slug(model)}-{device_slug(environment)}.json"
        ensure_writable(path)
        options = _model_options(num_classes, input_shape, seq_len, overrides, unwrap)
        with console.status(f"building {model} on {chosen_device}"):
            loaded = build_model(model, options, device=chosen_device, dtype=DTYPES[dtype.value])
            split = loaded.split()
        settings = SweepSettings(
            batch_sizes=sizes or loaded.workload.default_batch_sizes,
            trainable_layers=parse_layer_counts(layer_counts, len(split)),
            warmup_steps=warmup,
            min_steps=min_steps,
            max_steps=steps,
            optimizer=optimizer.value,
            dtype=dtype.value,
        )
        console.print(
            f"{model}: {len(split)} layers · batch sizes {', '.join(map(str, settings.batch_sizes))} · "
            f"z = {_short_range(settings.trainable_layers)} · {chosen_device}",
            highlight=False,
        )
        result = _run_with_progress(
            lambda progress: profile_model(
                loaded, split, settings, chosen_device, progress, lambda p: save_profile(p, path), None, environment
            ),
            path,
        )
        _print_cell_tables(result, output_format)
        _print_recommended_ladder(result, output_format)
        timing = result.timing
        share = timing["in_steps_s"] / timing["sweep_wall_s"] if timing.get("sweep_wall_s") else 0.0
        console.print(
            f"wrote {path} and {csv_path_for(path)} · sweep {timing['sweep_wall_s']:.0f} s, "
            f"{share:.0%} inside training steps",
            highlight=False,
        )
        failed = [row for row in result.rows if row.status in ("error",)]
        if failed:
            errors.print(f"[yellow]warning:[/] {len(failed)} cell(s) failed; see the status column")


def _print_recommended_ladder(result: Any, output_format: OutputFormat, cost: str = "time") -> None:
    """The ladder for the default eta; a profile whose full-training cell failed has none to show."""
    from layerprof.ladder import build_ladder

    try:
        ladder = build_ladder(result, cost_kind=cost)
    except LayerprofError as error:
        errors.print(f"[yellow]no ladder:[/] {error}", highlight=False)
        return
    _print_ladder(ladder, output_format)
    console.print("`layerprof ladder PROFILE --help` for other eta, GPU memory, brackets and exports.")


def _print_ladder(ladder: Any, output_format: OutputFormat) -> None:
    from layerprof.tables import ladder_summary_lines, markdown_ladder, rich_ladder_table

    if output_format is OutputFormat.md:
        print(markdown_ladder(ladder) + "\n")
        return
    console.print(rich_ladder_table(ladder))
    for line in ladder_summary_lines(ladder):
        console.print(f"  {line}", highlight=False)


@app.command()
def ladder(
    profile_path: Annotated[
        Path, typer.Argument(metavar="PROFILE", help="A profile JSON written by `layerprof profile`.")
    ],
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", metavar="B", help="Batch size to use (default: the most complete).")
    ] = None,
    eta: Annotated[float, typer.Option("--eta", metavar="ETA", help="Cost growth between rungs (> 1).")] = 3.0,
    cost: Annotated[Cost, typer.Option("--cost", help="What the rungs are spaced by.")] = Cost.time,
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
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """Suggest rungs of trainable layers for successive halving / Hyperband from a measured PROFILE."""
    with user_errors():
        from layerprof.exporters import export as export_snippet
        from layerprof.ladder import build_ladder, parse_memory
        from layerprof.profile import load_profile

        result = build_ladder(
            load_profile(profile_path),
            eta=eta,
            cost_kind=cost.value,
            batch_size=batch_size,
            min_layers=min_layers,
            gpu_memory=parse_memory(gpu_memory) if gpu_memory else None,
            configs=configs,
            budget_steps=budget_steps,
        )
        if correlation is not None:
            from layerprof.correlate import load_result
            from layerprof.ladder import attach_correlation

            for note in attach_correlation(result, load_result(correlation)):
                errors.print(f"[yellow]warning:[/] {note}", highlight=False)
        if export is not None:
            print(export_snippet(result, export.value), end="")
        elif as_json:
            print(json.dumps(result.to_dict(), indent=2))
        else:
            _print_ladder(result, output_format)


@app.command()
def estimate(
    model: ModelArgument,
    batch_sizes: BatchSizesOption = None,
    layer_counts: LayersOption = "all",
    target: TargetOption = Target.cuda,
    optimizer: OptimizerOption = Optimizer.adamw,
    dtype: DtypeOption = Dtype.float32,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="PATH", help="Profile JSON (CSV beside it). Default profiles/MODEL-estimate-TARGET.json."
        ),
    ] = None,
    output_format: FormatOption = OutputFormat.table,
    num_classes: NumClassesOption = None,
    input_shape: InputShapeOption = None,
    seq_len: SeqLenOption = None,
    overrides: SetOption = None,
    unwrap: UnwrapOption = None,
) -> None:
    """Predict memory (by category) and FLOPs of every cell on fake tensors: no GPU, no real memory."""
    with user_errors():
        from layerprof.estimate import estimate_model
        from layerprof.models import model_slug
        from layerprof.profile import csv_path_for, ensure_writable, save_profile
        from layerprof.sweep import SweepSettings

        path = out or Path("profiles") / f"{model_slug(model)}-estimate-{target.value}.json"
        ensure_writable(path)
        options = _model_options(num_classes, input_shape, seq_len, overrides, unwrap)
        with console.status(f"splitting {model} on the meta device"):
            from layerprof.models import build_model

            meta = build_model(model, options, device="meta")
            split = meta.split()
        settings = SweepSettings(
            batch_sizes=parse_positive_ints(batch_sizes, "--batch-sizes")
            if batch_sizes
            else meta.workload.default_batch_sizes,
            trainable_layers=parse_layer_counts(layer_counts, len(split)),
            warmup_steps=0,
            min_steps=0,
            max_steps=0,
            optimizer=optimizer.value,
            dtype=dtype.value,
        )
        del meta
        console.print(
            f"{model}: {len(split)} layers · batch sizes {', '.join(map(str, settings.batch_sizes))} · "
            f"z = {_short_range(settings.trainable_layers)} · estimate for {target.value}",
            highlight=False,
        )
        result = _run_with_progress(
            lambda progress: estimate_model(
                model, options, settings, target.value, progress, lambda p: save_profile(p, path), split
            ),
            path,
        )
        _print_cell_tables(result, output_format)
        _print_breakdown(result, output_format)
        _print_recommended_ladder(result, output_format, cost="flops")
        console.print(f"wrote {path} and {csv_path_for(path)}", highlight=False)


def _print_breakdown(result: Any, output_format: OutputFormat) -> None:
    from layerprof.tables import markdown_breakdown_table, rich_breakdown_table

    for batch_size in result.batch_sizes():
        if output_format is OutputFormat.md:
            print(markdown_breakdown_table(result, batch_size) + "\n")
        else:
            console.print(rich_breakdown_table(result, batch_size))


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
    dtype: DtypeOption = Dtype.float32,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    num_classes: NumClassesOption = None,
    input_shape: InputShapeOption = None,
    seq_len: SeqLenOption = None,
    overrides: SetOption = None,
    unwrap: UnwrapOption = None,
) -> None:
    """For each z, the largest batch that fits in --memory or on --gpu (estimated; 512 MiB kept for the context)."""
    with user_errors():
        from rich.table import Table

        from layerprof.estimate import GPUS, FitSearch, gpu_memory_bytes
        from layerprof.ladder import parse_memory
        from layerprof.sweep import SweepSettings

        if (memory is None) == (gpu is None):
            raise LayerprofError(f"give exactly one of --memory SIZE or --gpu NAME (known: {', '.join(GPUS)})")
        budget = parse_memory(memory) if memory else gpu_memory_bytes(gpu or "")
        options = _model_options(num_classes, input_shape, seq_len, overrides, unwrap)
        settings = SweepSettings(batch_sizes=(1,), trainable_layers=(1,), optimizer=optimizer.value, dtype=dtype.value)
        with console.status(f"estimating {model}"):
            search = FitSearch(model, options, settings, target.value)
            zs = parse_layer_counts(layer_counts, len(search.layers))
            results = [search.largest_batch(z, budget) for z in zs]
            if batch_size is not None:
                for result in results:
                    result.smallest_gpu = search.smallest_gpu(result.trainable_layers, batch_size)
        if all(result.largest_batch_size == 0 for result in results):
            lowest = min(result.need_at_largest_bytes or 0 for result in results)
            raise LayerprofError(
                f"no z fits in {budget / 2**30:.2f} GiB even at batch 1; the smallest need is "
                f"{lowest / 2**30:.2f} GiB (z={min(zs)}, context reserve included)"
            )
        if as_json:
            print(json.dumps({"memory_bytes": budget, "results": [r.__dict__ for r in results]}, indent=2))
            return
        table = Table(
            title=f"{model}: largest batch in {budget / 2**30:.1f} GiB ({target.value})", title_justify="left"
        )
        for header in ["z", "largest batch", "need GiB"] + (
            [f"smallest GPU for batch {batch_size}"] if batch_size else []
        ):
            table.add_column(header, justify="right")
        for result in results:
            cells = [
                str(result.trainable_layers),
                str(result.largest_batch_size),
                f"{(result.need_at_largest_bytes or 0) / 2**30:.2f}",
            ]
            if batch_size:
                cells.append(result.smallest_gpu or "none listed")
            table.add_row(*cells)
        console.print(table)


class ImageFormat(str, Enum):
    png = "png"
    svg = "svg"


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
        from layerprof.profile import load_profile
        from layerprof.report import write_report

        loaded = [load_profile(path) for path in profiles]
        stems = [path.stem for path in profiles]
        names = [
            stem if stems.count(stem) == 1 else f"{path.parent.name}/{stem}"
            for stem, path in zip(stems, profiles, strict=True)
        ]
        result = write_report(list(zip(names, loaded, strict=True)), out, image_format.value)
        for path in result.files:
            console.print(f"wrote {path}", highlight=False)
        for note in result.notes:
            errors.print(f"[yellow]not drawn:[/] {note}", highlight=False)


class Executor(str, Enum):
    local = "local"
    ray = "ray"


class GridPreset(str, Enum):
    small = "small"
    paper = "paper"


def parse_fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(sorted({float(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        values = ()
    if not values or any(not 0 < v <= 1 for v in values):
        raise LayerprofError(f"--budget-fractions expects fractions in (0, 1] like 0.1,0.25,0.5,1, got {text!r}")
    if values[-1] != 1.0:
        values = (*values, 1.0)  # full fidelity is always measured
    return values


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
        str, typer.Option("--layers", metavar="Z", help="Trainable-layer counts: e.g. 1,2,4,all.")
    ] = "1,2,4,all",
    budget_fractions: Annotated[
        str, typer.Option("--budget-fractions", metavar="F,F,...", help="Training-budget fractions; 1 is added.")
    ] = "0.1,0.25,0.5,1",
    seeds: Annotated[int, typer.Option("--seeds", min=1, metavar="K", help="Repetitions per trial (mean loss).")] = 1,
    executor: Annotated[
        Executor, typer.Option("--executor", help="Worker processes here, or Ray tasks.")
    ] = Executor.local,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, metavar="N", help="Local worker processes (default: cores).")
    ] = None,
    address: Annotated[str | None, typer.Option("--address", metavar="ADDR", help="Ray cluster address.")] = None,
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Trials, results and heatmap (resumable).")] = Path(
        "correlation"
    ),
) -> None:
    """Rank correlation of low fidelities with full training, over trainable layers x training budget."""
    with user_errors():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.table import Table

        from layerprof.correlate import expand_grid, load_grid, resolve_task, run_study, task_layer_count, write_outputs
        from layerprof.tasks import HYPERPARAMETERS, TASKS, paper_grid, small_grid

        function = resolve_task(task)
        builtin = task in TASKS
        if grid is not None:
            space = load_grid(grid, HYPERPARAMETERS if builtin else None)
        elif builtin:
            space = paper_grid(task) if grid_preset is GridPreset.paper else small_grid(task)
        else:
            raise LayerprofError("a user task needs --grid FILE (the presets name built-in hyperparameters)")
        configs = expand_grid(space)
        count = task_layer_count(function)
        parts = [part.strip() for part in layer_counts.split(",") if part.strip()]
        if "all" in parts and count is None:
            raise LayerprofError(
                f"{task} does not say how many layers it has (set fn.layer_count); give --layers as numbers"
            )
        zs = parse_layer_counts(",".join(str(count) if p == "all" else p for p in parts), count or 10**6)
        fractions = parse_fractions(budget_fractions)
        total = len(configs) * len(zs) * len(fractions) * seeds
        console.print(
            f"{task}: {len(configs)} configurations x z {','.join(map(str, zs))} x budgets "
            f"{','.join(f'{f:g}' for f in fractions)} x {seeds} seed(s) = {total} trials · {executor.value}",
            highlight=False,
        )
        progress = Progress(
            TextColumn("trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        bar = progress.add_task("trials", total=total)
        failures: list[str] = []

        def on_result(result: Any, done: int, planned: int) -> None:
            progress.update(bar, completed=done, total=planned)
            if result.loss is None:
                failures.append(f"config {result.config_index} at z={result.trainable_layers}: {result.error}")

        try:
            with progress:
                result = run_study(
                    task, configs, zs, fractions, seeds, out, executor.value, workers, address, on_result
                )
        except KeyboardInterrupt:
            errors.print(f"[yellow]interrupted:[/] finished trials are in {out / 'trials.jsonl'}; rerun to resume")
            raise typer.Exit(130) from None
        for failure in failures[:5]:
            errors.print(f"[yellow]failed trial (excluded from rho):[/] {failure}", highlight=False)
        if len(failures) > 5:
            errors.print(f"[yellow]... and {len(failures) - 5} more failed trials[/]")
        paths = write_outputs(result, out)
        table = Table(title=f"Spearman's rho vs full fidelity (z={max(zs)}, budget 1) · 95% bootstrap interval")
        table.add_column("z \\ budget", justify="right")
        for fraction in result.budget_fractions:
            table.add_column(f"{fraction:g}", justify="right")
        for z in reversed(result.layers):
            cells = []
            for fraction in result.budget_fractions:
                cell = result.cell(z, fraction)
                if cell is None or cell.spearman is None:
                    cells.append("n/a")
                    continue
                colour = "green" if cell.spearman >= 0.85 else "yellow" if cell.spearman >= 0.6 else "red"
                low, high = cell.spearman_low, cell.spearman_high
                interval = f" [{low:.2f},{high:.2f}]" if low is not None and high is not None else ""
                cells.append(f"[{colour}]{cell.spearman:.2f}[/]{interval}")
            table.add_row(str(z), *cells)
        console.print(table)
        for cell in result.cells:
            if cell.note:
                errors.print(f"[yellow]z={cell.trainable_layers}, budget {cell.budget_fraction:g}:[/] {cell.note}")
        console.print(
            f"wrote {', '.join(str(p) for p in paths)} · {result.wall_seconds:.0f} s · {result.executor}",
            highlight=False,
        )


def parse_percent(text: str, option: str) -> float:
    try:
        value = float(text.strip().rstrip("%")) / (100 if text.strip().endswith("%") else 1)
    except ValueError:
        raise LayerprofError(f"{option} expects a share like 10% or 0.1, got {text!r}") from None
    if value < 0:
        raise LayerprofError(f"{option} must not be negative, got {text!r}")
    return value


@app.command()
def check(
    current: Annotated[Path, typer.Argument(metavar="CURRENT", help="The profile to gate.")],
    baseline: Annotated[Path, typer.Argument(metavar="BASELINE", help="The accepted profile to compare against.")],
    time_tolerance: Annotated[
        str, typer.Option("--time-tolerance", metavar="SHARE", help="Allowed slowdown beyond the measured spread.")
    ] = "10%",
    memory_tolerance: Annotated[
        str, typer.Option("--memory-tolerance", metavar="SHARE", help="Allowed growth of measured peak memory.")
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
    """Gate regressions: exit 0 pass, 1 regression, 2 unusable input."""
    with user_errors():
        import shutil

        from rich.table import Table

        from layerprof.check import SUMMARY_HEADERS, compare, junit_xml, markdown_summary, summary_rows
        from layerprof.profile import load_profile

        current_profile = load_profile(current)
        if update_baseline:
            try:
                baseline.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(current, baseline)
            except OSError as error:
                raise LayerprofError(f"cannot write baseline {str(baseline)!r}: {error.strerror or error}") from None
            console.print(f"baseline {baseline} now holds {current} ({len(current_profile.rows)} cells)")
            return
        if not baseline.exists():
            raise LayerprofError(f"baseline {str(baseline)!r} does not exist; create it with --update-baseline")
        result = compare(
            current_profile,
            load_profile(baseline),
            time_tolerance=parse_percent(time_tolerance, "--time-tolerance"),
            memory_tolerance=parse_percent(memory_tolerance, "--memory-tolerance"),
            accept_changes=accept_changes,
            allow_device_mismatch=allow_device_mismatch,
            current_name=str(current),
            baseline_name=str(baseline),
        )
        for path, text in ((summary_md, markdown_summary(result)), (junit, junit_xml(result))):
            if path is not None:
                try:
                    path.write_text(text, encoding="utf-8")
                except OSError as error:
                    raise LayerprofError(f"cannot write {str(path)!r}: {error.strerror or error}") from None
        table = Table(title=f"{current} vs {baseline}", title_justify="left", header_style="bold")
        for header in SUMMARY_HEADERS:
            table.add_column(header, justify="right" if header in ("batch", "z") else "left")
        styles = {"regression": "red", "improvement": "green", "accepted": "yellow"}
        for values in summary_rows(result):
            table.add_row(*values, style=styles.get(values[5]))
        console.print(table)
        regressions = result.regressions
        if regressions:
            cells = sorted({(f.batch_size, f.trainable_layers) for f in regressions})
            named = ", ".join(f"batch {b} z={z}" for b, z in cells)
            errors.print(f"[red]regression:[/] {len(regressions)} figure(s) in {named}", highlight=False)
            raise typer.Exit(1)
        console.print(f"pass: {result.cells_compared} cells compared", highlight=False)


def _short_range(values: tuple[int, ...]) -> str:
    if len(values) > 2 and values == tuple(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ",".join(map(str, values))


def _print_cell_tables(result: Any, output_format: OutputFormat) -> None:
    from layerprof.tables import markdown_cell_table, rich_cell_table

    for batch_size in result.batch_sizes():
        if output_format is OutputFormat.md:
            print(markdown_cell_table(result, batch_size) + "\n")
        else:
            console.print(rich_cell_table(result, batch_size))


def _run_with_progress(sweep: Any, path: Path) -> Any:
    """Run `sweep(progress)` under a progress bar; Ctrl-C keeps the saved rows and exits 130."""
    try:
        with _SweepProgress(console) as progress:
            return sweep(progress)
    except KeyboardInterrupt:
        errors.print(f"[yellow]interrupted:[/] rows done so far are saved in {path} (marked incomplete)")
        raise typer.Exit(130) from None


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
