"""An estimate as a job (`layerprof estimate`): the model split on the meta device, the cells and the time model
resolved, an interrupted estimate resumed; its runner traces every cell on fake tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from layerprof.devices import TARGETS
from layerprof.errors import LayerprofError
from layerprof.measure.environment import ProcessSettings
from layerprof.measure.jobs import (
    SweepJob,
    SweepObserver,
    new_profile,
    resolve_settings,
    resumable_profile,
    warn_freezing,
)
from layerprof.parsing import LayerSelection
from layerprof.predict.calibration import resolve_time_model
from layerprof.predict.estimate import ESTIMATE_DEVICE, estimate_environment, estimate_model, refuse_compile
from layerprof.profile import Profile, SweepSettings, ensure_writable
from layerprof.sources.models import ModelOptions, model_slug, split_without_memory


def plan_estimate(
    spec: str,
    options: ModelOptions,
    settings: SweepSettings,
    layer_selection: LayerSelection,
    out: Path | None = None,
    calibrate: Sequence[Path] = (),
    threads: int | None = None,
    restart: bool = False,
) -> SweepJob:
    """Split MODEL on the meta device, resolve the cells and the time model (fitted to `calibrate`'s measured
    profiles where given); the default output is profiles/MODEL-estimate-TARGET.json. An interrupted estimate of
    the same sweep there is resumed unless `restart`."""
    target = settings.target or "cuda"
    if target not in TARGETS:
        raise LayerprofError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    refuse_compile(settings)
    process = ProcessSettings(threads)
    path = ensure_writable(out or Path("profiles") / f"{model_slug(spec)}-estimate-{target}.json")
    meta, layers = split_without_memory(spec, options)
    settings = resolve_settings(settings, meta.workload, len(layers), layer_selection, mode="estimate", target=target)
    warn_freezing(meta.model, layers, settings)
    with process.applied():  # a CPU target's environment and peaks are those of --threads
        environment = estimate_environment(target, settings.target_gpu)
        time_model = resolve_time_model(settings, calibrate, threads)
    resume = resumable_profile(path, new_profile(meta, layers, settings, environment), restart)
    order = (meta.order, meta.order_reason)
    return SweepJob(
        spec,
        options,
        layers,
        settings,
        ESTIMATE_DEVICE,
        environment,
        path,
        order=order,
        resume=resume,
        time_model=time_model,
        runner=run_estimate_job,
        process=process,
    )


def run_estimate_job(job: SweepJob, observer: SweepObserver | None, save: Callable[[Profile], None]) -> Profile:
    """An estimate's runner, handed to its job by `plan_estimate`: every cell on fake tensors."""
    return estimate_model(
        job.spec,
        job.options,
        job.settings,
        observer=observer,
        save=save,
        layers=job.layers,
        order=job.order,
        resume=job.resume,
        time_model=job.time_model,
    )
