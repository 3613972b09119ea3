"""The time model behind an estimate's predicted step times: the target's defaults, fitted to measured profiles
(their cells traced again on fake tensors, any models, measured on the target's device kind), or reused from an
estimate that holds a fitted one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from layerprof.devices import gpu_kind, kind_of_device, unknown_device_error
from layerprof.errors import LayerprofError
from layerprof.measure.instruments import StepTrace
from layerprof.predict.estimate import estimate_model
from layerprof.predict.timemodel import DevicePeaks, MeasuredStep, Numerics, TimeModel, cpu_peaks
from layerprof.predict.timemodel import calibrate as calibrate_model
from layerprof.profile import Profile, SweepSettings, load_profile
from layerprof.sources.models import ModelOptions


def default_time_model(settings: SweepSettings, threads: int | None = None) -> TimeModel:
    """The target's peaks with the documented default constants: the named GPU's datasheet (H100's when none is
    named, as for the workspaces), or this CPU's own measured peaks at `threads`."""
    if (settings.target or "cuda") == "cpu":
        return TimeModel.default(cpu_peaks(threads), Numerics.current())
    gpu = gpu_kind(settings.target_gpu or "H100")
    return TimeModel.default(DevicePeaks.of_gpu(gpu), Numerics.current())


def resolve_time_model(
    settings: SweepSettings, calibrate: Sequence[Path] = (), threads: int | None = None
) -> TimeModel:
    """The time model an estimate predicts with: the defaults, or fitted to the measured profiles in `calibrate`
    (any models, measured on the target's device kind), or reused from an estimate that holds a fitted one."""
    model = default_time_model(settings, threads)
    if not calibrate:
        return model
    profiles = [load_profile(path) for path in calibrate]
    reused = [p for p in profiles if p.is_estimate]
    if reused:
        if len(profiles) > 1:
            raise LayerprofError("--calibrate takes either one estimate to reuse its time model, or measured profiles")
        return _reused_time_model(reused[0], model, calibrate[0])
    steps = []
    for path, profile in zip(calibrate, profiles, strict=True):
        _same_device(profile, model, path, threads)
        steps.extend(measured_steps(profile, settings.target or "cuda"))
    if not steps:
        raise LayerprofError(
            f"--calibrate: no cell of {', '.join(map(str, calibrate))} ran (status ok, with a step time); "
            "give measured profiles with ok cells"
        )
    return calibrate_model(steps, model.peaks, model.numerics)


def _reused_time_model(profile: Profile, target: TimeModel, path: Path) -> TimeModel:
    if not profile.time_model:
        raise LayerprofError(f"--calibrate {path}: this estimate holds no time model; give measured profiles")
    reused = TimeModel.from_dict(profile.time_model, source=str(path))
    if reused.peaks.name != target.peaks.name:
        raise LayerprofError(
            f"--calibrate {path}: its time model is for {reused.peaks.name}, this estimate for {target.peaks.name}; "
            "calibrate with profiles of the same device kind"
        )
    return TimeModel(target.peaks, reused.constants, target.numerics, reused.residuals)


def _same_device(profile: Profile, model: TimeModel, path: Path, threads: int | None) -> None:
    """Calibration data must come from the device the estimate predicts for."""
    env = profile.environment
    if model.peaks.kind == "cuda":
        gpu = kind_of_device(env.device_name) if env.device_kind == "cuda" else None
        if gpu is None and env.device_kind == "cuda":
            raise unknown_device_error(env.device_name, f"--calibrate {path}")
        if gpu is None or gpu.name != model.peaks.name:
            raise LayerprofError(
                f"--calibrate {path}: measured on {env.device_name!r}, not on {model.peaks.name}; calibrate with "
                f"profiles measured on that GPU kind, or estimate for it (--gpu NAME)"
            )
        return
    if env.device_kind != "cpu" or env.device_name != model.peaks.name:
        raise LayerprofError(
            f"--calibrate {path}: measured on {env.device_name!r}, not on this CPU ({model.peaks.name}); CPU "
            "estimates calibrate with profiles measured here"
        )
    wanted = threads or torch.get_num_threads()
    if env.torch_threads and env.torch_threads != wanted:
        raise LayerprofError(
            f"--calibrate {path}: measured with {env.torch_threads} thread(s), the estimate uses {wanted}; "
            f"pass --threads {env.torch_threads}"
        )


def measured_steps(profile: Profile, target: str) -> list[MeasuredStep]:
    """Every measured cell of a profile that ran, with its step traced again on fake tensors."""
    ok = [row for row in profile.rows if row.ok and row.step_time_ms]
    if not ok:
        return []
    traces: dict[tuple[int, int], StepTrace] = {}
    settings = replace(
        profile.settings,
        batch_sizes=tuple(sorted({row.batch_size for row in ok})),
        trainable_layer_counts=tuple(sorted({row.trainable_layers for row in ok})),
        mode="estimate",
        target=target,
        target_gpu=None,
    )
    estimate_model(profile.model.spec, ModelOptions.of_profile(profile), settings, traces=traces)
    numerics = Numerics.of(profile.environment.numerics)
    name = profile.model.spec
    return [
        MeasuredStep(
            f"{name} b{row.batch_size} z={row.trainable_layers}",
            traces[row.key],
            row.step_time_ms,
            row.host_time_ms,
            numerics,
        )
        for row in ok
        if row.key in traces and row.step_time_ms is not None
    ]
