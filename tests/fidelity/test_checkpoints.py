"""A continued run's checkpoints priced in device seconds: the bytes saved after a rung and restored before the
next (every parameter and the trainable layers' optimizer state) at the device's copy rate, with the recorded
save and restore seconds as the cross-check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerprof.fidelity.simulate import Pricing, copy_rate, simulate
from layerprof.profile import Row
from tests.conftest import bare_profile
from tests.fidelity.test_continue import NINTH, THIRD, random_lowest_rung, write_mixed_study

H100 = "NVIDIA H100 80GB HBM3"  # 3,350 GB/s in layerprof.devices


def adam_profile(device_kind: str = "cpu", device_name: str = "test", precision: str = "32-true") -> object:
    """Three layers; 1,000,000 parameters in all; the optimizer state of z trainable layers 2,000,000 z bytes."""
    rows = [
        Row(
            8, z, "ok", step_time_ms=10.0 * z, flops=10**9 * z, peak_memory_bytes=z, optimizer_state_bytes=2_000_000 * z
        )
        for z in (1, 2, 3)
    ]
    profile = bare_profile(rows, 3, spec="synthetic-model", device_kind=device_kind, device_name=device_name)
    profile.model.total_params = 1_000_000
    profile.settings.precision = precision
    return profile


def test_each_continued_rung_pays_for_the_checkpoint_it_restores_and_the_one_it_saves() -> None:
    pricing = Pricing(adam_profile(), batch_size=8, full_steps=90, gpu_memory_bytes=None, copy_gbps=10.0)
    # bytes of a checkpoint at z: 4,000,000 of float32 parameters + 2,000,000 z of optimizer state
    assert [pricing.checkpoint_bytes(z) for z in (1, 2, 3)] == [6_000_000, 8_000_000, 10_000_000]
    prices = pricing.continued([(1, NINTH), (2, THIRD), (3, 1.0)])
    # a copy moves its bytes twice (read and written) at 10 GB/s: 6 MB -> 1.2 ms
    # rung 1 saves z=1's 6 MB; rung 2 restores those and saves z=2's 8 MB; rung 3 restores z=2's and ends the run
    assert [p.checkpoint_gpu_seconds for p in prices] == pytest.approx([0.0012, 0.0028, 0.0016])
    # training: segments of 10, 20 and 60 steps at 10 z ms
    assert [p.trial_gpu_seconds for p in prices] == pytest.approx([0.1 + 0.0012, 0.4 + 0.0028, 1.8 + 0.0016])
    # a from-scratch trial saves nothing
    assert pricing.price((3, 1.0)).checkpoint_gpu_seconds is None
    assert pricing.continued([(3, 1.0)])[0].checkpoint_gpu_seconds == 0.0


def test_parameters_are_counted_in_the_precisions_parameter_dtype() -> None:
    half = Pricing(adam_profile(precision="bf16-true"), 8, 90, None, copy_gbps=10.0)
    mixed = Pricing(adam_profile(precision="bf16-mixed"), 8, 90, None, copy_gbps=10.0)
    assert half.checkpoint_bytes(1) == 2 * 1_000_000 + 2_000_000  # bfloat16 parameters
    assert mixed.checkpoint_bytes(1) == 4 * 1_000_000 + 2_000_000  # mixed precision keeps float32 parameters


def test_without_a_copy_rate_or_optimizer_bytes_a_checkpoint_is_not_charged() -> None:
    unknown_rate = Pricing(adam_profile(), 8, 90, None, copy_gbps=None)
    assert [p.checkpoint_gpu_seconds for p in unknown_rate.continued([(1, THIRD), (3, 1.0)])] == [None, None]
    assert [p.trial_gpu_seconds for p in unknown_rate.continued([(1, THIRD), (3, 1.0)])] == pytest.approx([0.3, 1.8])
    assert copy_rate(adam_profile("cuda", H100)) == (3350, "H100's memory bandwidth")
    assert copy_rate(adam_profile("cuda", "a GPU nobody knows"))[0] is None
    assert copy_rate(adam_profile("cpu", "another machine's CPU"))[0] is None


RESUMING_TASK = """
def task(config, trainable_layers, budget_fraction):
    return 0.0


def resume(config, segment, state):
    return 0.0, state


task.resume, task.layer_count, task.full_steps, task.batch_size = resume, 3, 90, 8
task.profile_spec = "synthetic-model"
"""


def budget_study_with_checkpoints(directory: Path, seconds: tuple[float, ...]) -> Path:
    """A study whose continued budget runs (1/9, 1/3, 1 at z=3) recorded `seconds` of checkpoint per rung."""
    (directory / "task.py").write_text(RESUMING_TASK)
    chain = ((3, NINTH), (3, THIRD), (3, 1.0))
    study = write_mixed_study(directory / "s", random_lowest_rung, {chain: lambda index, k: index + k})
    records = [json.loads(text) for text in (study / "trials.jsonl").read_text().splitlines()]
    for record in records:
        for part, spent in zip(record.get("segments", []), seconds, strict=False):
            part["checkpoint_seconds"] = spent
    (study / "trials.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    meta = {**json.loads((study / "study.json").read_text()), "task": f"{directory / 'task.py'}:task"}
    (study / "study.json").write_text(json.dumps(meta))
    return study


def test_simulate_charges_checkpoints_by_bytes_and_checks_them_against_the_clock(tmp_path: Path) -> None:
    study = budget_study_with_checkpoints(tmp_path, (0.01, 0.02, 0.01))  # each save or restore took 10 ms
    result = simulate(study, eta=3, repeats=3, paths=["budget"], profile=adam_profile("cuda", H100))
    # z=3: 4 MB of parameters + 6 MB of optimizer state; one copy 2 x 10 MB at 3,350 GB/s
    copy = 2 * 10_000_000 / 3350e9
    budget = result.path("budget")
    assert [r.price.checkpoint_gpu_seconds for r in budget.continued.rungs] == pytest.approx([copy, 2 * copy, copy])
    assert [r.price.checkpoint_gpu_seconds for r in budget.rungs] == [None] * 3  # from scratch: none
    # halving: 9 trials of 10 steps, 3 of 20 more, 1 of 60 more (30 ms a step); 9 + 3 saves, 3 + 1 restores
    assert budget.continued.successive_halving.gpu_seconds == pytest.approx(
        (9 * 10 + 3 * 20 + 60) * 0.030 + (9 + 3 * 2 + 1) * copy
    )
    # the cross-check: 40 ms recorded per run against 4 copies priced
    assert result.clock_per_device_second["checkpoint"] == pytest.approx(0.04 / (4 * copy))
    assert any(note.startswith("checkpoints: the clock recorded 1.68e+03 s per device second") for note in result.notes)
