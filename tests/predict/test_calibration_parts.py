"""The time model's calibration input part by part (issue 40, `make mutate` survivors of predict/calibration.py):
an estimate beside measured profiles refused, a GPU estimate refusing a CPU profile and an unknown GPU each with
their own line, and a CPU calibration tracing its cells as the CPU runs them (per-tensor optimizer kernels)."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from layerprof.errors import LayerprofError
from layerprof.predict import calibration
from layerprof.predict.calibration import measured_steps, resolve_time_model
from layerprof.predict.estimate import estimate_model
from layerprof.predict.timemodel import DevicePeaks, MeasuredStep, Numerics, TimeModel
from layerprof.profile import SweepSettings, load_profile, save_profile
from layerprof.sources.models import ModelOptions

DATA = Path(__file__).resolve().parent.parent / "data"
# tests/data/profile-v1-measured.json: pythia-14m (seq 16, vocab 512), AdamW, 32-true, 6 ok cells, measured on
# this CPU name with 2 threads
MEASURED_ON = "Intel(R) Xeon(R) Processor"
H100 = SweepSettings((2,), (1,), mode="estimate", target="cuda", target_gpu="H100")


def _copy(tmp_path: Path, name: str, **environment: object) -> Path:
    data = json.loads((DATA / name).read_text())
    data["environment"].update(environment)
    path = tmp_path / f"{len(list(tmp_path.iterdir()))}-{name}"
    path.write_text(json.dumps(data))
    return path


def test_an_estimate_beside_a_measured_profile_is_refused(tmp_path: Path) -> None:
    """Two profiles, one an estimate: refused as such (mutant 7: `len(profiles) > 2` reused the estimate)."""
    estimate = shutil.copy(DATA / "profile-v1-estimate.json", tmp_path / "estimate.json")
    measured = shutil.copy(DATA / "profile-v1-measured.json", tmp_path / "measured.json")
    for paths in ([estimate, measured], [measured, estimate]):
        with pytest.raises(LayerprofError, match="^--calibrate takes either one estimate .* or measured profiles$"):
            resolve_time_model(H100, [Path(p) for p in paths])


def test_a_gpu_estimate_refuses_a_cpu_profile_and_an_unknown_gpu_each_in_its_own_words(tmp_path: Path) -> None:
    """A CPU profile for an H100 estimate: measured elsewhere (not an unknown GPU: mutant 26); a CUDA profile of a GPU
    the table lacks: unknown, with the known kinds (not "measured elsewhere": mutant 25)."""
    on_cpu = _copy(tmp_path, "profile-v1-measured.json")
    elsewhere = rf"measured on '{re.escape(MEASURED_ON)}', not on H100; .* \(--gpu NAME\)$"
    with pytest.raises(LayerprofError, match=elsewhere) as cpu:
        resolve_time_model(H100, [on_cpu])
    assert "not a GPU layerprof knows" not in str(cpu.value)
    unknown = _copy(tmp_path, "profile-v1-measured.json", device_kind="cuda", device_name="NVIDIA Imaginary 9000")
    with pytest.raises(LayerprofError, match="'NVIDIA Imaginary 9000' is not a GPU layerprof knows") as gpu:
        resolve_time_model(H100, [unknown])
    assert str(gpu.value).startswith(f"--calibrate {unknown}: ") and "H100" in str(gpu.value).split("known: ")[1]
    known = _copy(tmp_path, "profile-v1-measured.json", device_kind="cuda", device_name="NVIDIA A100-SXM4-80GB")
    with pytest.raises(LayerprofError, match="measured on 'NVIDIA A100-SXM4-80GB', not on H100"):
        resolve_time_model(H100, [known])


TWO_LINEARS = """
from torch import nn


def two_linears():
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
"""


def _measured_on_this_cpu(tmp_path: Path, counts: tuple[int, ...] = (2,)) -> Path:
    """A two-layer model's CPU estimate at batch 2 turned into a measurement (1 ms a step) on MEASURED_ON, 2 threads."""
    (tmp_path / "models.py").write_text(TWO_LINEARS)
    options = ModelOptions(input_shape=(4,), num_classes=2)
    settings = SweepSettings((2,), counts, target="cpu")
    estimate = estimate_model(f"{tmp_path / 'models.py'}:two_linears", options, settings)
    estimate.settings = replace(estimate.settings, mode="measure", target=None)
    estimate.environment = replace(estimate.environment, device_name=MEASURED_ON, estimated=False, torch_threads=2)
    for row in estimate.rows:
        row.step_time_ms, row.predicted_step_time_ms = 1.0, None
    measured = save_profile(estimate, tmp_path / "measured.json")
    assert not load_profile(measured).is_estimate
    return measured


@pytest.fixture
def fitted(monkeypatch: pytest.MonkeyPatch) -> list[list[MeasuredStep]]:
    """A CPU estimate on MEASURED_ON whose peaks are given (not measured); the fit's steps captured, not fitted."""
    peaks = DevicePeaks(MEASURED_ON, "cpu", 1.0, 1.0, 1.0, 1.0, 10.0, "test")
    model = TimeModel.default(peaks, Numerics.current())
    monkeypatch.setattr(calibration, "default_time_model", lambda settings, threads=None: model)
    steps: list[list[MeasuredStep]] = []

    def capture(given: list[MeasuredStep], peaks: DevicePeaks, numerics: Numerics) -> TimeModel:
        steps.append(given)
        return model

    monkeypatch.setattr(calibration, "calibrate_model", capture)
    return steps


CPU = SweepSettings((2,), (1,), mode="estimate", target="cpu")


def test_a_cpu_calibration_traces_its_cells_with_the_cpus_per_tensor_optimizer(
    tmp_path: Path, fitted: list[list[MeasuredStep]]
) -> None:
    """On the CPU target, PyTorch's AdamW runs a per-tensor loop: the calibration's traces hold no foreach kernel
    (mutant 15, `target and "cuda"`, traced them for CUDA, with foreach kernels)."""
    measured = _measured_on_this_cpu(tmp_path)
    resolve_time_model(CPU, [measured], threads=2)
    (steps,) = fitted
    assert [step.label for step in steps] == [f"{tmp_path / 'models.py'}:two_linears b2 z=2"]
    assert not any(op.name.startswith("_foreach_") for op in steps[0].trace.ops)
    # the same cell traced for CUDA does hold them: the assertion above can fail
    (on_cuda,) = measured_steps(load_profile(measured), "cuda")
    assert any(op.name.startswith("_foreach_") for op in on_cuda.trace.ops)
    # a CPU estimate's threads must match the profile's
    with pytest.raises(LayerprofError, match="measured with 2 thread\\(s\\), the estimate uses 1; pass --threads 2$"):
        resolve_time_model(CPU, [measured], threads=1)


def test_a_cpu_estimate_refuses_another_cpus_profile_and_a_gpus(
    tmp_path: Path, fitted: list[list[MeasuredStep]]
) -> None:
    """Mutant 30 (`and`) let a profile of another CPU through."""
    elsewhere = "measured on '{}', not on this CPU \\(Intel\\(R\\) Xeon\\(R\\) Processor\\); CPU estimates calibrate"
    other_cpu = _copy(tmp_path, "profile-v1-measured.json", device_name="Other CPU")
    with pytest.raises(LayerprofError, match=elsewhere.format("Other CPU")):
        resolve_time_model(CPU, [other_cpu], threads=2)
    gpu = _copy(tmp_path, "profile-v1-measured.json", device_kind="cuda", device_name=MEASURED_ON)
    with pytest.raises(LayerprofError, match=elsewhere.format(re.escape(MEASURED_ON))):
        resolve_time_model(CPU, [gpu], threads=2)
    assert fitted == []


def test_only_cells_that_ran_and_were_traced_are_fitted(
    tmp_path: Path, fitted: list[list[MeasuredStep]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unfinished cell keeps the step time of its first visits: not fitted (mutant 37, `row.ok or ...`, fitted it);
    a cell the estimate could not trace is left out (mutant 40, `in traces or ...`: KeyError)."""
    measured = _measured_on_this_cpu(tmp_path, (1, 2))
    data = json.loads(measured.read_text())
    assert [row["trainable_layers"] for row in data["rows"]] == [1, 2]
    data["rows"][0]["status"] = "unfinished"
    measured.write_text(json.dumps(data))
    resolve_time_model(CPU, [measured], threads=2)
    assert [step.label.rsplit(" ", 1)[1] for step in fitted[0]] == ["z=2"]
    data["rows"][0]["status"] = "ok"
    measured.write_text(json.dumps(data))
    traced = calibration.estimate_model

    def only_z2(*args: object, traces: dict[tuple[int, int], object], **kwargs: object) -> object:
        profile = traced(*args, traces=traces, **kwargs)  # type: ignore[arg-type]
        traces.pop((2, 1))
        return profile

    monkeypatch.setattr(calibration, "estimate_model", only_z2)
    resolve_time_model(CPU, [measured], threads=2)
    assert [step.label.rsplit(" ", 1)[1] for step in fitted[1]] == ["z=2"]
