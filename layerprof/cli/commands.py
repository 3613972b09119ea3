"""The `layerprof` command line: a map from command name to a library function.

Every command parses its options (typed in `layerprof.cli.options`, read with `layerprof.parsing`), calls one library
function and hands the result to `layerprof.cli.render`. Nothing heavy is imported at module level, so that `--help`
answers without torch.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from layerprof import __version__
from layerprof.cli import options as opt
from layerprof.cli import render
from layerprof.cli.render import user_errors
from layerprof.errors import CellsFailed
from layerprof.fidelity.trials import PATHS

if TYPE_CHECKING:
    from layerprof.measure.cluster import ClusterKind, SweepRequest
    from layerprof.profile import RecipeSettings

app = typer.Typer(
    name="layerprof",
    cls=render.OneLineUsageErrors,
    help="Hardware profiler and fidelity explorer for layer-freezing hyperparameter optimisation.\n\n"
    "Train only the last z of a network's n layers as a cheap fidelity: layerprof measures what each z "
    "costs in memory, time and FLOPs for your model, batch size and GPU.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
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
    source: opt.SourceOption = None,
    as_json: opt.ModelsJsonOption = False,
) -> None:
    """List the model names layerprof accepts, grouped by source."""
    with user_errors():
        from layerprof.sources.registry import known_names

        render.model_names(known_names(source), as_json)


@app.command()
@opt.with_recipe_options
def layers(
    model: opt.ModelArgument,
    unwrap: opt.UnwrapOption = None,
    as_json: opt.LayersJsonOption = False,
    output_format: opt.FormatOption = "table",
    costs: opt.CostsOption = False,
    batch_size: opt.LayersBatchSizeOption = 1,
    depth: opt.DepthOption = 0,
    target: opt.TargetOption = "cuda",
    precision: opt.PrecisionOption = "32-true",
    optimizer: opt.OptimizerOption = "adamw",
    recipe: opt.RecipeChoices | None = None,
    out: opt.LayersOutOption = None,
    num_classes: opt.NumClassesOption = None,
    input_shape: opt.InputShapeOption = None,
    seq_len: opt.SeqLenOption = None,
    overrides: opt.SetOption = None,
) -> None:
    """Show how MODEL splits into layers, in forward order, and how much trains at each z (--costs: what each
    layer costs)."""
    with user_errors():
        options = opt.model_options(num_classes, input_shape, seq_len, overrides, unwrap, model)
        from layerprof.fidelity.granularity import splits_by_depth
        from layerprof.predict.layercosts import layer_costs
        from layerprof.profile import ensure_writable
        from layerprof.sources.builders import CONSTRUCTION_NOTES
        from layerprof.sources.models import split_model

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
                recipe_fields: RecipeSettings = {"optimizer": optimizer, **opt.recipe_settings(recipe)}
                table = layer_costs(model, options, batch_size, precision, target, recipe_fields)
            if path:
                table.save(path)
            render.layer_costs(table, path, as_json, output_format)
            return
        info = split_model(model, options)
        render.layer_split(model, info, as_json, output_format)
        if info.construction in CONSTRUCTION_NOTES and not as_json:
            render.note(CONSTRUCTION_NOTES[info.construction])


@app.command()
def audit(
    setup: opt.AuditSetupArgument,
    batch_size: opt.AuditBatchSizeOption = 8,
    tolerance: opt.AuditToleranceOption = 0.01,
    device: opt.DeviceOption = "auto",
    as_json: opt.AuditJsonOption = False,
    overrides: opt.SetOption = None,
) -> None:
    """Does your own freezing save what it should? Run your training step and report each mistake, where it is,
    what it costs and the fix, and what layerprof's freezing of the same parameters would save. Exit 0 clean, 1
    when a finding costs more than --tolerance, 2 for bad input."""
    with user_errors(unexpected_exit=2):
        from layerprof.measure.environment import resolve_device
        from layerprof.parsing import parse_overrides
        from layerprof.predict.audit import audit as run_audit

        report = run_audit(setup, batch_size, parse_overrides(overrides or []), resolve_device(device), tolerance)
        render.audit(report, as_json)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@app.command()
@opt.with_recipe_options
def profile(
    ctx: typer.Context,
    model: opt.ModelArgument,
    batch_sizes: opt.BatchSizesOption = None,
    layer_counts: opt.LayersOption = "all",
    warmup: opt.WarmupOption = 10,
    min_steps: opt.MinStepsOption = 15,
    steps: opt.StepsOption = 30,
    steps_per_visit: opt.StepsPerVisitOption = 5,
    max_time: opt.MaxTimeOption = None,
    quick: opt.QuickOption = False,
    threads: opt.ProfileThreadsOption = None,
    cpus: opt.CpusOption = None,
    optimizer: opt.OptimizerOption = "adamw",
    precision: opt.PrecisionOption = "32-true",
    dtype: opt.DtypeOption = None,
    device: opt.DeviceOption = "auto",
    tf32: opt.Tf32Option = None,
    per_layer: opt.PerLayerOption = False,
    out: opt.ProfileOutOption = None,
    executor: opt.ProfileExecutorOption = "local",
    address: opt.AddressOption = None,
    gpu_kinds: opt.GpuKindsOption = None,
    restart: opt.RestartOption = False,
    eval_frozen: opt.EvalFrozenOption = False,
    recipe: opt.RecipeChoices | None = None,
    output_format: opt.FormatOption = "table",
    num_classes: opt.NumClassesOption = None,
    input_shape: opt.InputShapeOption = None,
    seq_len: opt.SeqLenOption = None,
    overrides: opt.SetOption = None,
    unwrap: opt.UnwrapOption = None,
) -> None:
    """Measure memory, step time and FLOPs of MODEL for every trainable-layer count z and batch size.

    The paper's protocol exactly: --warmup 100 --min-steps 100 --steps 100. A first look in minutes: --quick.
    """
    with user_errors():
        from layerprof.parsing import parse_cpu_list, parse_layer_selection
        from layerprof.profile import SweepSettings

        chosen = opt.quick_profile(ctx, quick, opt.ProfileProtocol(layer_counts, warmup, min_steps, steps, max_time))
        settings = SweepSettings(
            batch_sizes=opt.parse_batch_sizes(batch_sizes),
            trainable_layer_counts=(),
            warmup_steps=chosen.warmup,
            min_steps=chosen.min_steps,
            max_steps=chosen.steps,
            optimizer=optimizer,
            precision=opt.precision_name(precision, dtype),
            steps_per_visit=steps_per_visit,
            max_time_s=chosen.max_time,
            eval_frozen=eval_frozen,
            **opt.recipe_settings(recipe),
        )
        selection = parse_layer_selection(chosen.layer_counts)
        options = opt.model_options(num_classes, input_shape, seq_len, overrides, unwrap, model)
        opt.check_profile_executor(executor == "ray", cpus, gpu_kinds, address, out)
        if executor == "ray":
            from layerprof.measure.cluster import parse_gpu_kinds, plan_cluster_profile

            assert gpu_kinds is not None  # check_profile_executor requires it with Ray
            kinds = parse_gpu_kinds(gpu_kinds)
            with render.status(f"splitting {model}"):
                request = plan_cluster_profile(model, options, settings, selection, device, tf32, threads)
            _profile_on_ray(model, request, kinds, address, out)
            return
        cpu_list = parse_cpu_list(cpus) if cpus is not None else None
        from layerprof.measure.jobs import plan_profile  # every option and the name checked: torch now

        with render.status(f"building {model}" + (f" on {device}" if device != "auto" else "")):
            job = plan_profile(
                model, options, settings, selection, device, out, tf32, threads, cpu_list, restart, per_layer=per_layer
            )
        result = render.run_job(job, f"{job.device}")
        render.cell_tables(result, output_format)
        render.layer_times(result, output_format)
        render.sweep_end(result, job.path, output_format)
        if result.failure_summary() is not None:
            raise CellsFailed(result.failure_summary())
        render.sweep_warnings(result)


def _profile_on_ray(
    model: str, request: SweepRequest, kinds: list[ClusterKind], address: str | None, out: Path | None
) -> None:
    """One sweep per (GPU kind, batch size) on the cluster; a line per sweep as it ends; exit 1 if any is lost."""
    from layerprof.measure.cluster import profile_on_ray

    directory = out or Path("profiles")
    sweeps = render.ray_sweeps_line(model, len(kinds), request.settings.batch_sizes, address)
    kept = f"finished kinds are in {directory}; rerun to run the rest"
    with render.interrupt_keeps(kept), render.RayProgress(sweeps) as progress:
        run = profile_on_ray(request, kinds, directory, address, progress.on_event)
    render.ray_outcomes(run)
    if run.failed:
        raise typer.Exit(1)


@app.command()
@opt.with_recipe_options
def estimate(
    model: opt.ModelArgument,
    batch_sizes: opt.BatchSizesOption = None,
    layer_counts: opt.LayersOption = "all",
    target: opt.TargetOption = "cuda",
    gpu: opt.EstimateGpuOption = None,
    calibrate: opt.CalibrateOption = None,
    against: opt.AgainstOption = None,
    threads: opt.EstimateThreadsOption = None,
    optimizer: opt.OptimizerOption = "adamw",
    precision: opt.PrecisionOption = "32-true",
    dtype: opt.DtypeOption = None,
    out: opt.EstimateOutOption = None,
    restart: opt.RestartOption = False,
    eval_frozen: opt.EvalFrozenOption = False,
    recipe: opt.RecipeChoices | None = None,
    output_format: opt.FormatOption = "table",
    num_classes: opt.NumClassesOption = None,
    input_shape: opt.InputShapeOption = None,
    seq_len: opt.SeqLenOption = None,
    overrides: opt.SetOption = None,
    unwrap: opt.UnwrapOption = None,
) -> None:
    """Predict memory (by category), FLOPs and step time of every cell on fake tensors: no GPU, no real memory."""
    with user_errors():
        from layerprof.devices import gpu_kind
        from layerprof.parsing import parse_layer_selection
        from layerprof.profile import SweepSettings, load_profile

        settings = SweepSettings(
            batch_sizes=opt.parse_batch_sizes(batch_sizes),
            trainable_layer_counts=(),
            optimizer=optimizer,
            precision=opt.precision_name(precision, dtype),
            mode="estimate",
            target=target,
            target_gpu=gpu_kind(gpu).name if gpu is not None else None,
            eval_frozen=eval_frozen,
            **opt.recipe_settings(recipe),
        )
        selection = parse_layer_selection(layer_counts)
        options = opt.model_options(num_classes, input_shape, seq_len, overrides, unwrap, model)
        measured = load_profile(against) if against else None
        from layerprof.predict.jobs import plan_estimate  # every option and the name checked: torch now
        from layerprof.predict.timemodel import check_predictions

        doing = f"splitting {model} on the meta device" + (", calibrating the time model" if calibrate else "")
        with render.status(doing):
            job = plan_estimate(model, options, settings, selection, out, calibrate or (), threads, restart)
        render.calibration(job.time_model)
        result = render.run_job(job, job.environment.device_name)
        render.cell_tables(result, output_format)
        render.breakdown(result, output_format)
        if measured is not None:
            render.prediction_check(check_predictions(result, measured), measured, output_format)
        render.sweep_end(result, job.path, output_format)
        if result.failure_summary() is not None:
            raise CellsFailed(result.failure_summary())


@app.command()
def ladder(
    profile_paths: opt.LadderProfileArgument,
    batch_size: opt.LadderBatchSizeOption = None,
    eta: opt.EtaOption = 3.0,
    cost: opt.CostOption = None,
    min_layers: opt.MinLayersOption = 1,
    gpu_memory: opt.LadderGpuMemoryOption = None,
    configs: opt.LadderConfigsOption = None,
    budget_steps: opt.LadderBudgetStepsOption = None,
    correlation: opt.CorrelationOption = None,
    as_json: opt.LadderJsonOption = False,
    export: opt.LadderExportOption = None,
    objective: opt.ObjectiveOption = None,
    split: opt.SplitOption = "profile",
    output_format: opt.FormatOption = "table",
    gpu: opt.LadderGpuOption = None,
    prices: opt.PriceOption = None,
    prices_file: opt.PricesOption = None,
    batch_limits: opt.BatchLimitsOption = None,
) -> None:
    """Suggest rungs of trainable layers for successive halving / Hyperband from a PROFILE (measured or estimated)."""
    with user_errors():
        opt.check_one_output(as_json, export, objective)
        from layerprof.fidelity.correlate import load_result
        from layerprof.fidelity.granularity import choose_split_for_profile
        from layerprof.fidelity.recipes import ladder_for_paths
        from layerprof.outputs.exporters import export as export_snippet
        from layerprof.parsing import parse_memory
        from layerprof.profile import load_profile

        result, notes = ladder_for_paths(
            profile_paths,
            eta=eta,
            cost_kind=cost,
            batch_size=batch_size,
            min_layers=min_layers,
            gpu_memory=parse_memory(gpu_memory, "--gpu-memory") if gpu_memory is not None else None,
            configs=configs,
            budget_steps=budget_steps,
            correlation=load_result(correlation) if correlation is not None else None,
            batch_limits=batch_limits,
            **opt.priced(prices, prices_file, gpu, gpu_needed=True),
        )
        for text in notes:
            render.note(text, "warning", "yellow")
        report = None
        if split == "auto":
            with render.status("comparing the splits at other depths (one per-layer trace)"):
                report = choose_split_for_profile(load_profile(profile_paths[0]), result.batch_size, eta)
        if export is not None:
            print(export_snippet(result, export, objective), end="")
        elif as_json:
            render.as_json(result.to_dict() | ({"split": asdict(report)} if report is not None else {}))
        else:
            render.ladder(result, output_format)
            if report is not None:
                render.split_report(report, output_format)


@app.command(help=opt.FIT_HELP)
@opt.with_recipe_options
def fit(
    model: opt.ModelArgument,
    memory: opt.MemoryOption = None,
    gpu: opt.FitGpuOption = None,
    layer_counts: opt.LayersOption = "all",
    batch_size: opt.FitBatchSizeOption = None,
    target: opt.TargetOption = "cuda",
    optimizer: opt.OptimizerOption = "adamw",
    precision: opt.PrecisionOption = "32-true",
    dtype: opt.DtypeOption = None,
    recipe: opt.RecipeChoices | None = None,
    recipes: opt.RecipesOption = None,
    as_json: opt.FitJsonOption = False,
    num_classes: opt.NumClassesOption = None,
    input_shape: opt.InputShapeOption = None,
    seq_len: opt.SeqLenOption = None,
    overrides: opt.SetOption = None,
    unwrap: opt.UnwrapOption = None,
    prices: opt.PriceOption = None,
    prices_file: opt.PricesOption = None,
) -> None:
    """For each z, the largest batch that fits in --memory or on --gpu (its help names the context reserve)."""
    with user_errors():
        from layerprof.devices import gpu_kind
        from layerprof.fidelity.recipes import fit_recipes
        from layerprof.parsing import parse_layer_selection, parse_memory_budget
        from layerprof.profile import SweepSettings

        budget = parse_memory_budget(memory, gpu)
        selection = parse_layer_selection(layer_counts)
        options = opt.model_options(num_classes, input_shape, seq_len, overrides, unwrap)
        settings = SweepSettings(
            batch_sizes=(1,),
            trainable_layer_counts=(1,),
            optimizer=optimizer,
            precision=opt.precision_name(precision, dtype),
            mode="estimate",
            target=target,
            target_gpu=gpu_kind(gpu).name if gpu is not None else None,
            **opt.recipe_settings(recipe),
        )
        with render.progress_bar(f"fitting {model}: z") as advance:
            variants, priced = opt.parse_recipes(recipes), opt.priced(prices, prices_file)
            result = fit_recipes(
                model, options, settings, variants, budget, selection, batch_size, progress=advance, **priced
            )
        render.fit(result, as_json)


@app.command()
def report(
    profiles: opt.ReportProfilesArgument,
    out: opt.ReportOutOption = Path("report"),
    image_format: opt.ImageFormatOption = "png",
) -> None:
    """Draw the paper's figures for your model: cost curves, parameters and FLOPs, memory by category."""
    with user_errors():
        from layerprof.outputs.report import report_profiles

        result = report_profiles(profiles, out, image_format)
        for path in result.files:
            render.line(f"wrote {path}")
        for text in result.notes:
            render.note(text, "not drawn", "yellow")


@app.command()
def correlate(
    task: opt.TaskArgument,
    grid: opt.GridOption = None,
    grid_preset: opt.GridPresetOption = "small",
    layer_counts: opt.CorrelateLayerCountsOption = None,
    budget_fractions: opt.BudgetFractionsOption = "0.1,0.25,0.5,1",
    seeds: opt.SeedsOption = 1,
    judge_seeds: opt.JudgeSeedsOption = 0,
    continued: opt.ContinuedOption = None,
    executor: opt.CorrelateExecutorOption = "local",
    workers: opt.WorkersOption = None,
    address: opt.AddressOption = None,
    out: opt.CorrelateOutOption = Path("correlation"),
) -> None:
    """Rank correlation of low fidelities with full training, over trainable layers x training budget."""
    with user_errors():
        from layerprof.fidelity.correlate import chain_label, plan_study, run_study
        from layerprof.outputs.studies import write_correlation
        from layerprof.parsing import parse_fractions, parse_layer_selection

        selection = parse_layer_selection(layer_counts) if layer_counts is not None else None
        plan = plan_study(
            task, selection, parse_fractions(budget_fractions), seeds, grid, grid_preset, continued or (), judge_seeds
        )
        chains = f" + {len(plan.chains)} continued chain(s) ({'; '.join(map(chain_label, plan.chains))})"
        render.line(
            f"{task}: {len(plan.configs)} configurations x (z {','.join(map(str, plan.trainable_layer_counts))} x "
            f"budgets {','.join(f'{f:g}' for f in plan.budget_fractions)}{chains if plan.chains else ''}) x "
            f"{seeds} seed(s){f' +{judge_seeds} judge' if judge_seeds else ''} = {plan.trial_count} trials · {executor}"
        )
        with render.progress_bar("trials") as advance:
            failures = render.TrialFailures(advance)
            with render.interrupt_keeps(f"finished trials are in {out / 'trials.jsonl'}; rerun to resume"):
                result = run_study(
                    plan,
                    out,
                    executor=executor,
                    workers=workers,
                    address=address,
                    on_result=failures.on_result,
                    on_start=advance,
                )
        failures.show()
        render.correlation(result, write_correlation(result, out))


@app.command()
def simulate(
    study: opt.StudyArgument,
    profile_path: opt.SimulateProfilePathOption = None,
    eta: opt.SimulateEtaOption = 3.0,
    configs: opt.SimulateConfigsOption = None,
    repeats: opt.RepeatsOption = "auto",
    paths: opt.PathsOption = None,
    custom: opt.CustomOption = None,
    layer_counts: opt.SimulateLayerCountsOption = None,
    budgets: opt.BudgetsOption = None,
    gpu_memory: opt.SimulateGpuMemoryOption = None,
    full_steps: opt.FullStepsOption = None,
    seed: opt.SeedOption = 0,
    workers: opt.SimulateWorkersOption = 4,
    gpu: opt.SimulateGpuOption = None,
    prices: opt.PriceOption = None,
    prices_file: opt.PricesOption = None,
    out: opt.SimulateOutOption = None,
    as_json: opt.SimulateJsonOption = False,
    wide: opt.WideOption = False,
    output_format: opt.FormatOption = "table",
) -> None:
    """Replay halving, Hyperband and ASHA on a correlate STUDY's recorded trials: regret, cost, wall time per path."""
    with user_errors():
        from layerprof.fidelity.simulate import simulate as replay
        from layerprof.outputs.studies import write_simulation
        from layerprof.parsing import (
            parse_fractions,
            parse_layer_selection,
            parse_memory,
            parse_names,
            parse_repeats,
            parse_rungs,
        )
        from layerprof.profile import load_profile

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
            workers=workers,
            **opt.priced(prices, prices_file, gpu),
        )
        written = write_simulation(simulation, out or Path(simulation.study))
        for text in simulation.notes:
            render.note(text, "note", "yellow")
        if as_json:
            render.as_json(simulation.to_dict())
        else:
            render.simulation(simulation, output_format, written, wide)


@app.command()
def plan(
    profile_paths: opt.PlanProfilesArgument,
    cluster: opt.ClusterOption,
    eta: opt.EtaOption = 3.0,
    configs: opt.PlanConfigsOption = None,
    budget_steps: opt.PlanBudgetStepsOption = 1000,
    batch_size: opt.PlanBatchSizeOption = None,
    min_layers: opt.MinLayersOption = 1,
    prices: opt.PriceOption = None,
    prices_file: opt.PricesOption = None,
    deadline: opt.DeadlineOption = None,
    as_json: opt.PlanJsonOption = False,
    export: opt.PlanExportOption = None,
    objective: opt.ObjectiveOption = None,
    wide: opt.WideOption = False,
    output_format: opt.FormatOption = "table",
) -> None:
    """Place each rung of the ladder on the GPUs you have: kind, trials per GPU, makespan, GPU-hours and dollars."""
    with user_errors():
        opt.check_one_output(as_json, export, objective)
        from layerprof.fidelity.predictor import PlanPredictor
        from layerprof.fidelity.recipes import chosen_plan, plan_recipes
        from layerprof.measure.cluster import inventory_from_option
        from layerprof.outputs.exporters import export_plan_ray
        from layerprof.profile import load_profile

        result = plan_recipes(
            [load_profile(path) for path in profile_paths],
            inventory_from_option(cluster),
            eta=eta,
            configs=configs,
            budget_steps=budget_steps,
            batch_size=batch_size,
            min_layers=min_layers,
            predict=PlanPredictor,
            **opt.priced(prices, prices_file),
            deadline_seconds=opt.deadline_seconds(deadline),
        )
        if export is not None:
            print(export_plan_ray(chosen_plan(result), objective), end="")
        elif as_json:
            render.as_json(result.to_dict())
        else:
            render.cluster_plan(result, output_format, wide)


@app.command()
def check(
    current: opt.CurrentArgument,
    baseline: opt.BaselineArgument,
    time_tolerance: opt.TimeToleranceOption = "10%",
    memory_tolerance: opt.MemoryToleranceOption = "2%",
    accept_changes: opt.AcceptChangesOption = False,
    allow_device_mismatch: opt.AllowDeviceMismatchOption = False,
    summary_md: opt.SummaryMdOption = None,
    junit: opt.JunitOption = None,
    update_baseline: opt.UpdateBaselineOption = False,
) -> None:
    """Gate regressions: exit 0 pass, 1 regression, 2 unusable input (an incomplete profile included), 3
    inconclusive (noise hides a slowdown)."""
    with user_errors(unexpected_exit=2):
        from layerprof.outputs.check import check_files, write_baseline
        from layerprof.parsing import parse_share

        if update_baseline:
            cells = write_baseline(current, baseline)
            render.line(f"baseline {baseline} now holds {current} ({cells} cells)")  # paths whole
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
    main()
