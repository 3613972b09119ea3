"""Step times for `plan` on GPU kinds nobody measured: each z's step traced once on fake tensors, priced per kind by
the time model, with constants fitted to the model's own measured profiles where there are any."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from layerprof.devices import GpuKind, gpu_kind
from layerprof.errors import LayerprofError
from layerprof.fidelity.plan import ProfileSet
from layerprof.measure.instruments import StepTrace
from layerprof.predict.calibration import measured_steps
from layerprof.predict.estimate import estimate_model
from layerprof.predict.timemodel import DevicePeaks, Numerics, TimeConstants, TimeModel
from layerprof.predict.timemodel import calibrate as calibrate_model
from layerprof.profile import Profile
from layerprof.sources.models import ModelOptions


class PlanPredictor:
    """Step times of one model's cells on GPU kinds nobody measured, for `plan`: each z's step traced once on fake
    tensors (the trace does not depend on the GPU), priced per kind by the time model with the constants fitted to
    the model's own measured profiles where there are any (the largest measured GPU's), else the defaults."""

    def __init__(self, group: ProfileSet, zs: Sequence[int] = ()) -> None:
        """`zs`: the z values the plan will ask for, traced together at the first question (one fake model built
        for all of them, not one per z: building it was most of `plan`'s time)."""
        self.group = group
        self.zs = tuple(sorted(set(zs)))
        self.reference: Profile = group.reference()
        self.traces: dict[int, StepTrace | None] = {}
        self.constants: TimeConstants | None = None
        self.basis = "default constants"
        self.traceable = True
        if group.measured:
            name, measured = max(group.measured.items(), key=lambda item: gpu_kind(item[0]).memory_mib)
            try:
                steps = measured_steps(measured, "cuda")
            except LayerprofError:  # a model this machine cannot build (a user factory elsewhere): scale instead
                steps, self.traceable = [], False
            if steps:
                self.constants = calibrate_model(steps, DevicePeaks.of_gpu(gpu_kind(name))).constants
                self.basis = f"calibrated on its {name} profile"

    def trace(self, z: int) -> StepTrace | None:
        """The z's step at the plan's batch size, traced once on fake tensors (None: it cannot be traced)."""
        if z not in self.traces:
            asked = tuple(sorted({z, *self.zs} - set(self.traces)))
            traces: dict[tuple[int, int], StepTrace] = {}
            if self.traceable:
                settings = replace(
                    self.reference.settings,
                    batch_sizes=(self.group.batch_size,),
                    trainable_layer_counts=asked,
                    mode="estimate",
                    target="cuda",
                    target_gpu=None,
                )
                options = ModelOptions.of_profile(self.reference)
                try:
                    estimate_model(self.reference.model.spec, options, settings, traces=traces)
                except LayerprofError:
                    self.traceable = False
            for each in asked:
                self.traces[each] = traces.get((self.group.batch_size, each))
        return self.traces[z]

    def __call__(self, z: int, gpu: GpuKind) -> tuple[float, str, float] | None:
        """The z's predicted step time on `gpu`, what it stands on, and the share of it the GPU is busy (None:
        no trace to price)."""
        trace = self.trace(z)
        if trace is None:
            return None
        model = TimeModel.default(DevicePeaks.of_gpu(gpu), Numerics.of(self.reference.environment.numerics))
        if self.constants is not None:
            model = TimeModel(model.peaks, self.constants, model.numerics)
        predicted = model.predict(trace)
        busy = min(1.0, predicted.device_ms / predicted.step_ms) if predicted.step_ms else 1.0
        return predicted.step_ms, f"predicted for {gpu.name} ({self.basis})", busy
