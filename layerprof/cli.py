"""The `layerprof` command line: a map from command name to a library function.

Every command parses its options (typed in `layerprof.options`, read with `layerprof.parsing`), calls one library
function and hands the result to `layerprof.render`. Nothing heavy is imported at module level, so that `--help`
answers without torch.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from layerprof import __version__, render
from layerprof.errors import CellsFailed
from layerprof.options import (
    AddressOption,
    BatchSizesOption,
    Cost,
    DtypeOption,
    EvalFrozenOption,
    Executor,
    ExportFormat,
    FormatOption,
    GridPreset,
    ImageFormat,
    InputShapeOption,
    LayersOption,
    ModelArgument,
    NumClassesOption,
    Optimizer,
    OptimizerOption,
    OutputFormat,
    PlanExport,
    Precision,
    PrecisionOption,
    RestartOption,
    SeqLenOption,
    SetOption,
    SourceOption,
    SplitMode,
    Target,
    TargetOption,
    UnwrapOption,
    check_profile_executor,
    gpu_option,
    model_options,
    parse_batch_sizes,
    precision_name,
)
from layerprof.render import user_errors
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


def _version(value: bool) -> None:
    if value:
        render.console.print(f"layerprof {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Print the version when asked; every command is a subcommand."""


# ---------------------------------------------------------------- commands


@app.command()
def models(
    source: SourceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the names as JSON.")] = False,
) -> None:
    """List the model names layerprof accepts, grouped by source."""
    with user_errors():
        from layerprof.models import PRESETS, known_names
        from layerprof.tables import print_model_names

        names = known_names(source)
        if as_json:
            render.as_json(names)
        else:
            print_model_names(render.console, names, {name: p["description"] for name, p in PRESETS.items()})


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
        from layerprof.granularity import splits_by_depth
        from layerprof.layercosts import layer_costs
        from layerprof.models import CONSTRUCTION_NOTES, split_model
        from layerprof.profile import ensure_writable

        options = model_options(num_classes, input_shape, seq_len, overrides, unwrap)
        if depth:
            deepest = splits_by_depth(model, options, depth)[-1]
            if deepest.depth < depth:
                render.note(f"nothing below depth {deepest.depth} to descend into")
            options = replace(options, unwrap=deepest.unwrap)
            if not as_json:
                render.line(f"depth {deepest.depth}: --unwrap {','.join(deepest.unwrap)}")
        if costs:
            path = ensure_writable(out) if out else None
            with render.status(f"tracing one full-training step of {model} at batch {batch_size}"):
                table = layer_costs(model, options, batch_size, precision.value, target.value)
            if path:
                table.save(path)
            render.layer_costs(table, path, as_json, output_format.value)
            return
        info = split_model(model, options)
        render.layer_split(model, info, as_json, output_format.value)
        if info.construction in CONSTRUCTION_NOTES and not as_json:
            render.note(CONSTRUCTION_NOTES[info.construction])


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
            batch_sizes=parse_batch_sizes(batch_sizes),
            trainable_layer_counts=(),
            warmup_steps=warmup,
            min_steps=min_steps,
            max_steps=steps,
            optimizer=optimizer.value,
            precision=precision_name(precision, dtype),
            steps_per_visit=steps_per_visit,
            max_time_s=max_time,
            eval_frozen=eval_frozen,
        )
        selection = parse_layer_selection(layer_counts)
        options = model_options(num_classes, input_shape, seq_len, overrides, unwrap)
        check_profile_executor(executor.value == "ray", cpus, gpu_kinds, address, out)
        if executor.value == "ray":
            _profile_on_ray(model, options, settings, selection, device, tf32, threads, gpu_kinds, address, out)
            return
        cpu_list = parse_cpu_list(cpus) if cpus is not None else None
        with render.status(f"building {model} on {device}"):
            job = plan_profile(model, options, settings, selection, device, out, tf32, threads, cpu_list, restart)
        job.per_layer = per_layer
        result = render.run_job(job, f"{job.device}")
        render.cell_tables(result, output_format.value)
        render.layer_times(result, output_format.value)
        timing = (
            f" · sweep {result.timing.sweep_wall_s:.0f} s, {result.timing.share_in_steps:.0%} inside training steps"
        )
        render.sweep_end(result, job.path, output_format.value, timing)
        if result.failure_summary() is not None:
            raise CellsFailed(result.failure_summary())
        render.sweep_warnings(result)


def _profile_on_ray(
    model: str, options: Any, settings: Any, selection: Any, device: str, tf32: bool | None, threads: int | None,
    gpu_kinds: str, address: str | None, out: Path | None,
) -> None:  # fmt: skip
    """One sweep per (GPU kind, batch size) on the cluster; a line per sweep as it ends; exit 1 if any is lost."""
    from layerprof.cluster import parse_gpu_kinds, plan_cluster_profile, profile_on_ray

    kinds = parse_gpu_kinds(gpu_kinds)
    directory = out or Path("profiles")
    with render.status(f"splitting {model}"):
        request = plan_cluster_profile(model, options, settings, selection, device, tf32, threads)
    sweeps = len(kinds) * len(request.settings.batch_sizes)
    render.line(
        f"{model}: {len(kinds)} GPU kind(s) x batch sizes {', '.join(map(str, request.settings.batch_sizes))} = "
        f"{sweeps} sweeps · Ray {address or '(local instance)'}"
    )
    try:
        with render.RayProgress(sweeps) as progress:
            run = profile_on_ray(request, kinds, directory, address, progress.on_event)
    except KeyboardInterrupt:
        render.note(f"finished kinds are in {directory}; rerun to run the rest", "interrupted", "yellow")
        raise typer.Exit(130) from None
    render.ray_outcomes(run)
    if run.failed:
        raise typer.Exit(1)


@app.command()
def estimate(
    model: ModelArgument,
    batch_sizes: BatchSizesOption = None,
    layer_counts: LayersOption = "all",
    target: TargetOption = Target.cuda,
    gpu: gpu_option(
        "Its cuBLAS workspace, its peaks for predicted step times and, for ladders, its memory (default: H100's "
        "workspace and peaks, no memory)."
    ) = None,
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
        from layerprof.profile import SweepSettings, load_profile
        from layerprof.timemodel import check_predictions

        settings = SweepSettings(
            batch_sizes=parse_batch_sizes(batch_sizes),
            trainable_layer_counts=(),
            optimizer=optimizer.value,
            precision=precision_name(precision, dtype),
            mode="estimate",
            target=target.value,
            target_gpu=gpu_kind(gpu).name if gpu is not None else None,
            eval_frozen=eval_frozen,
        )
        selection = parse_layer_selection(layer_counts)
        options = model_options(num_classes, input_shape, seq_len, overrides, unwrap)
        measured = load_profile(against) if against else None
        doing = f"splitting {model} on the meta device" + (", calibrating the time model" if calibrate else "")
        with render.status(doing):
            job = plan_estimate(model, options, settings, selection, out, calibrate or (), threads, restart)
        render.calibration(job.time_model, output_format.value)
        result = render.run_job(job, job.environment.device_name)
        render.cell_tables(result, output_format.value)
        render.breakdown(result, output_format.value)
        if measured is not None:
            render.prediction_check(check_predictions(result, measured), measured, output_format.value)
        render.sweep_end(result, job.path, output_format.value)
        if result.failure_summary() is not None:
            raise CellsFailed(result.failure_summary())


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
        from layerprof.granularity import choose_split_for_profile
        from layerprof.ladder import ladder_for
        from layerprof.parsing import parse_memory
        from layerprof.profile import load_profile

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
        for text in notes:
            render.note(text, "warning", "yellow")
        report = None
        if split is SplitMode.auto:
            with render.status("comparing the splits at other depths (one per-layer trace)"):
                report = choose_split_for_profile(load_profile(profile_path), result.batch_size, eta)
        if export is not None:
            print(export_snippet(result, export.value), end="")
        elif as_json:
            render.as_json(result.to_dict() | ({"split": asdict(report)} if report is not None else {}))
        else:
            render.ladder(result, output_format.value)
            if report is not None:
                render.split_report(report, output_format.value)


@app.command()
def fit(
    model: ModelArgument,
    memory: Annotated[
        str | None, typer.Option("--memory", metavar="SIZE", help="GPU memory budget, e.g. 24GiB.")
    ] = None,
    gpu: gpu_option("The GPU whose memory is the budget.") = None,
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
        options = model_options(num_classes, input_shape, seq_len, overrides, unwrap)
        settings = SweepSettings(
            batch_sizes=(1,),
            trainable_layer_counts=(1,),
            optimizer=optimizer.value,
            precision=precision_name(precision, dtype),
            mode="estimate",
            target=target.value,
            target_gpu=gpu_kind(gpu).name if gpu is not None else None,
        )
        with render.status(f"estimating {model}"):
            result = fit_model(model, options, settings, budget, selection, batch_size)
        if as_json:
            render.as_json(result.to_dict())
        else:
            render.console.print(rich_fit_table(result))


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
            render.line(f"wrote {path}")
        for text in result.notes:
            render.note(text, "not drawn", "yellow")


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
        from layerprof.correlate import chain_label, plan_study, run_study, write_outputs
        from layerprof.parsing import parse_fractions, parse_layer_selection

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
        render.line(
            f"{task}: {len(plan.configs)} configurations x (z {','.join(map(str, plan.trainable_layer_counts))} x "
            f"budgets {','.join(f'{f:g}' for f in plan.budget_fractions)}{chains if plan.chains else ''}) x "
            f"{seeds} seed(s) = {plan.trial_count} trials · {executor.value}"
        )
        with render.progress_bar("trials") as advance:
            failures = render.TrialFailures(advance)
            try:
                result = run_study(
                    plan, out, executor=executor.value, workers=workers, address=address, on_result=failures.on_result
                )
            except KeyboardInterrupt:
                render.note(f"finished trials are in {out / 'trials.jsonl'}; rerun to resume", "interrupted", "yellow")
                raise typer.Exit(130) from None
        failures.show()
        render.correlation(result, write_outputs(result, out))


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
            parse_names,
            parse_repeats,
            parse_rungs,
        )
        from layerprof.profile import load_profile
        from layerprof.simulate import simulate as replay
        from layerprof.simulate import write_outputs

        simulation = replay(
            study,
            eta=eta,
            starting_configs=configs,
            repeats=parse_repeats(repeats),
            paths=parse_names(paths, "--paths", PATHS, "path") if paths is not None else None,
            custom_paths=[parse_rungs(text, "--path", rising=True) for text in custom or []],
            layer_counts=parse_layer_selection(layer_counts).resolve(None) if layer_counts is not None else None,
            budget_fractions=parse_fractions(budgets, "--budgets") if budgets is not None else None,
            profile=load_profile(profile_path) if profile_path else None,
            full_steps=full_steps,
            gpu_memory=parse_memory(gpu_memory, "--gpu-memory") if gpu_memory is not None else None,
            seed=seed,
        )
        written = write_outputs(simulation, out or Path(simulation.study))
        for text in simulation.notes:
            render.note(text, "note", "yellow")
        if as_json:
            render.as_json(simulation.to_dict())
        else:
            render.simulation(simulation, output_format.value, written)


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
        from layerprof.cluster import inventory_from_option
        from layerprof.estimate import PlanPredictor
        from layerprof.exporters import export_plan_ray
        from layerprof.plan import plan_cluster
        from layerprof.profile import load_profile

        result = plan_cluster(
            [load_profile(path) for path in profile_paths],
            inventory_from_option(cluster),
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
            render.as_json(result.to_dict())
        else:
            render.cluster_plan(result, output_format.value)


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

        if update_baseline:
            cells = write_baseline(current, baseline)
            render.console.print(f"baseline {baseline} now holds {current} ({cells} cells)")
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
        render.check_result(result)
        if result.exit_code:
            raise typer.Exit(result.exit_code)


def main() -> None:
    """The `layerprof` console script."""
    app()


if __name__ == "__main__":
    sys.exit(main())
