"""An estimate per target part by part (issue 40, `make mutate` survivors of predict/estimate.py): each target
traces its own optimizer implementation and autocast rules, and holds its own allocator blocks and workspaces."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from layerprof.devices import gpu_memory_bytes
from layerprof.errors import LayerprofError
from layerprof.measure.cells import CellContext
from layerprof.measure.instruments import StepTrace
from layerprof.predict import estimate
from layerprof.predict.calibration import default_time_model
from layerprof.predict.estimate import (
    ESTIMATE_DEVICE,
    UNTRACED_STEP,
    SpacedSave,
    _why_not,
    allocation_size_for,
    build_fake_model,
    estimate_cell,
    estimate_environment,
    estimate_model,
    prime_optimizer,
    refuse_compile,
)
from layerprof.predict.reuse import BlockRecords, ReplayMismatch
from layerprof.profile import Profile, SweepSettings
from layerprof.sources.models import ModelOptions

NORMED = """
from torch import nn


def normed():
    return nn.Sequential(nn.Linear(4, 4, bias=False), nn.LayerNorm(4), nn.Linear(4, 2, bias=False))
"""


@pytest.fixture(scope="module")
def normed(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("estimate") / "models.py"
    path.write_text(NORMED)
    return f"{path}:normed"


@pytest.mark.parametrize(
    ("target", "foreach", "norm_dtype", "source"),
    [("cuda", True, "float32", "estimate-cuda"), ("cpu", False, "bfloat16", "estimate-cpu")],
)
def test_each_target_traces_its_own_optimizer_and_autocast(
    normed: str, target: str, foreach: bool, norm_dtype: str, source: str
) -> None:
    """AdamW runs foreach kernels on CUDA and a per-tensor loop on the CPU; CUDA's autocast runs layer_norm in
    float32, the CPU's in bfloat16 (mutant 5, `target == "cuda_"`, traced CUDA as the CPU)."""
    traces: dict[tuple[int, int], StepTrace] = {}
    settings = SweepSettings((2,), (3,), precision="bf16-mixed", target=target)
    row = estimate_model(normed, ModelOptions(input_shape=(4,), num_classes=2), settings, traces=traces).rows[0]
    ops = traces[(2, 3)].ops
    assert any(op.name.startswith("_foreach_") for op in ops) is foreach
    assert {op.dtype for op in ops if op.name == "native_layer_norm"} == {norm_dtype}
    assert row.memory_source == source
    assert row.peak_memory_bytes == (row.tracked_peak_bytes or 0) + row.memory_workspace_bytes
    assert (row.memory_workspace_bytes > 0) is (target == "cuda")


def test_a_cpu_estimate_holds_exact_bytes(normed: str, tmp_path: Path) -> None:
    """On the CPU every allocation holds its own bytes: the largest live set of this tiny step is 704 bytes."""
    settings = SweepSettings((2,), (3,), precision="bf16-mixed", target="cpu")
    row = estimate_model(normed, ModelOptions(input_shape=(4,), num_classes=2), settings).rows[0]
    assert (row.tracked_peak_bytes, row.memory_workspace_bytes, row.peak_memory_bytes) == (704, 0, 704)


def test_a_float16_mixed_estimate_runs_without_the_gradient_scaler(normed: str) -> None:
    """The scaler reads its scale back to the host, which fake tensors cannot: an estimate leaves it out (mutant 9,
    `with_scaler=True`, failed every 16-mixed cell)."""
    settings = SweepSettings((2,), (1, 3), precision="16-mixed", target="cuda")
    rows = estimate_model(normed, ModelOptions(input_shape=(4,), num_classes=2), settings).rows
    assert [(row.trainable_layers, row.status, row.message) for row in rows] == [(1, "ok", None), (3, "ok", None)]


DATA_DEPENDENT = """
from torch import nn


class Routed(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(4, 4)

    def forward(self, x):
        return self.gate(x) * float(x.sum().item() > 0)


def routed():
    return nn.Sequential(Routed(), nn.Linear(4, 2))
"""


@pytest.mark.filterwarnings("ignore:could not trace a forward pass")
def test_a_cell_whose_forward_depends_on_the_data_fails_as_its_own_cell(tmp_path: Path) -> None:
    """Fake tensors hold no values: the cell (batch 3, z = 1) fails saying why and what can measure it (mutants 42,
    43 swapped the failed row's batch size and z)."""
    (tmp_path / "models.py").write_text(DATA_DEPENDENT)
    settings = SweepSettings((3,), (1,), target="cpu")
    (row,) = estimate_model(f"{tmp_path / 'models.py'}:routed", ModelOptions(input_shape=(4,), num_classes=2),
                            settings).rows  # fmt: skip
    assert (row.batch_size, row.trainable_layers, row.status) == (3, 1, "error")
    assert row.message is not None and row.message.startswith("cannot estimate: the forward pass depends on the data")
    assert row.message.endswith("measure it with `layerprof profile`")


# ---------------------------------------------------------------- the parts around a cell (issue 40, seed 2 draw)


def test_each_target_holds_its_own_allocation_size() -> None:
    assert allocation_size_for("cuda")(1) == 512 and allocation_size_for("cuda")(513) == 1024  # the allocator's block
    assert allocation_size_for("cpu")(1) == 1 and allocation_size_for("cpu")(513) == 513  # its own bytes


def test_a_cell_keeps_its_timeline_and_trace_under_its_batch_and_z_and_predicts_its_time(normed: str) -> None:
    options = ModelOptions(input_shape=(4,), num_classes=2)
    mode, loaded = build_fake_model(normed, options, "32-true")
    traces: dict[tuple[int, int], StepTrace] = {}
    timelines: dict[tuple[int, int], object] = {}
    for target in ("cpu", "cuda"):
        settings = SweepSettings((3,), (2,), target=target)
        with mode:
            context = CellContext(loaded, loaded.split(), settings, ESTIMATE_DEVICE)
            row, seconds = estimate_cell(
                context, 3, 2, time_model=default_time_model(settings), traces=traces, timelines=timelines
            )
        assert seconds == 0.0 and row.ok and (row.batch_size, row.trainable_layers) == (3, 2)
        assert set(traces) == set(timelines) == {(3, 2)} and row.estimate_basis == "traced"
        assert row.predicted_step_time_ms == default_time_model(settings).predict(traces[(3, 2)]).step_ms > 0
        assert row.predicted_device_time_ms is not None and row.predicted_host_time_ms is not None
        assert (row.predicted_host_bound is None) is (target == "cpu")  # a CPU has no host to wait on
        assert (row.memory_source, row.message) == (f"estimate-{target}", None)


UNTRACED = "adafactor"  # torch.optim.Adafactor: its step reads values back to the host


def test_an_optimizer_that_cannot_step_on_fake_tensors_is_primed_by_its_rules_and_says_so(normed: str) -> None:
    settings = SweepSettings((2,), (1,), target="cpu", optimizer=UNTRACED)
    row = estimate_model(normed, ModelOptions(input_shape=(4,), num_classes=2), settings).rows[0]
    assert row.ok and row.message == UNTRACED_STEP.format(optimizer=UNTRACED)


def test_saves_are_spaced_by_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(estimate.time, "monotonic", lambda: now[0])
    saved: list[object] = []
    saver = SpacedSave(saved.append, {"label": "constants"})
    first, second, third = (Profile.__new__(Profile) for _ in range(3))
    saver(first)  # never saved before: saved now
    assert saved == [first] and first.time_model == {"label": "constants"} and saver.unsaved is None
    now[0] = 101.99
    saver(second)  # 1.99 s later: kept for later
    assert saved == [first] and saver.unsaved is second and second.time_model == {"label": "constants"}
    now[0] = 102.0
    saver(third)  # SAVE_EVERY_S = 2 s later, to the dot: saved
    assert saved == [first, third] and saver.last_saved_s == 102.0 and saver.unsaved is None
    saver.flush()  # nothing left unsaved: nothing written again
    assert saved == [first, third]
    saver(second)
    saver.flush()
    assert saved == [first, third, second] and saver.unsaved is None
    SpacedSave(None, None)(first)  # nowhere to save: nothing to do


def test_priming_takes_one_step_on_zero_gradients_and_leaves_no_gradient() -> None:
    first, second = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([first, second], lr=0.5)
    primed: dict[int, tuple[torch.nn.Parameter, dict[str, object]]] = {}
    prime_optimizer(optimizer, [first], primed)
    assert first.grad is None and second.grad is None  # set to None: no zero gradient counted
    assert float(optimizer.state[first]["step"]) == 1.0 and torch.equal(first, torch.ones(2))  # zero grads: no move
    assert list(primed) == [id(first)] and primed[id(first)][0] is first
    prime_optimizer(optimizer, [second, first], primed)  # the first primed already: only the second steps
    assert float(optimizer.state[first]["step"]) == 1.0 and float(optimizer.state[second]["step"]) == 1.0
    assert list(optimizer.state) == [second, first]  # in the parameters' order, as the first step makes it
    assert optimizer.state[first] is primed[id(first)][1]
    unprimed = torch.optim.Adam([first], lr=0.5)
    prime_optimizer(unprimed, [first], None)  # nothing kept: the step alone
    assert float(unprimed.state[first]["step"]) == 1.0


def test_an_untraced_optimizer_gets_its_librarys_state_for_fresh_parameters_only() -> None:
    param, kept = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([param, kept], lr=0.1)
    spec = SimpleNamespace(traced=False, prime_state=lambda _optimizer, p: {"made for": p})
    primed = {id(kept): (kept, {"kept": True})}
    prime_optimizer(optimizer, [param, kept], primed, spec)  # type: ignore[arg-type]
    assert optimizer.state[param] == {"made for": param} and optimizer.state[kept] == {"kept": True}
    assert primed[id(param)] == (param, {"made for": param}) and param.grad is None
    alone = torch.optim.SGD([param], lr=0.1)
    prime_optimizer(alone, [param], None, spec)  # type: ignore[arg-type]
    assert alone.state[param] == {"made for": param}


def test_compile_is_refused_and_eager_taken() -> None:
    refuse_compile(SweepSettings((2,), (1,)))
    with pytest.raises(LayerprofError, match=r"^--compile is measured only: an estimate traces the eager step"):
        refuse_compile(SweepSettings((2,), (1,), compile_mode="default"))


def test_why_a_cell_cannot_be_estimated() -> None:
    class GuardOnDataDependentSymNode(RuntimeError):
        pass

    assert _why_not(ValueError("first line\nsecond")) == "ValueError: first line"
    assert _why_not(GuardOnDataDependentSymNode("u0 > 0\nmore")) == (
        "the forward pass depends on the data (GuardOnDataDependentSymNode: u0 > 0; e.g. mixture-of-experts routing), "
        "which fake tensors do not "
        "hold; measure it with `layerprof profile`"
    )


def test_an_estimates_environment_names_its_target() -> None:
    environment = estimate_environment("cuda", "H100")
    assert (environment.device_kind, environment.device_name) == ("cuda", "estimate for H100")
    assert environment.total_memory_bytes == gpu_memory_bytes("H100") and environment.estimated
    assert environment.numerics == {}
    environment = estimate_environment("cpu")
    assert (environment.device_name, environment.total_memory_bytes, environment.estimated) == (
        "estimate for cpu",
        None,
        True,
    )


def test_an_estimate_refuses_an_unknown_target_and_defaults_to_cuda(normed: str) -> None:
    options = ModelOptions(input_shape=(4,), num_classes=2)
    with pytest.raises(LayerprofError, match=r"^--target must be cuda or cpu, got 'tpu'$"):
        estimate_model(normed, options, SweepSettings((2,), (1,), target="tpu"))  # type: ignore[arg-type]
    with pytest.raises(LayerprofError, match=r"^--compile is measured only"):
        estimate_model(normed, options, SweepSettings((2,), (1,), compile_mode="default"))
    mode, loaded = build_fake_model(normed, options, "32-true")
    with mode:
        layers = loaded.split()  # a split made before, in the order given with it
    told = ("registration", "told so")
    profile = estimate_model(normed, options, SweepSettings((2,), (1,)), layers=layers, order=told)
    assert (profile.settings.target, profile.settings.mode) == ("cuda", "estimate")
    assert (profile.model.order, profile.model.order_reason) == ("registration", "told so")
    assert profile.rows[0].memory_source == "estimate-cuda" and profile.time_model is None


def test_a_run_of_alike_layers_is_composed_and_their_forwards_replayed(tmp_path: Path) -> None:
    (tmp_path / "stack.py").write_text(STACK)
    spec, options = f"{tmp_path / 'stack.py'}:stack", ModelOptions(input_shape=(8,))
    settings = SweepSettings((2,), (1, 2, 3, 4, 5, 6, 7), target="cpu")
    blocks = BlockRecords()
    model = default_time_model(settings)
    profile = estimate_model(spec, options, settings, blocks=blocks, time_model=model)
    bases = [row.estimate_basis for row in profile.rows]
    assert bases == ["traced"] * 3 + ["composed"] * 2 + ["traced"] * 2  # z = 4, 5 from the traced anchors
    assert blocks.records and profile.time_model == model.to_dict()
    traced = estimate_model(spec, options, settings, compose=False, reuse=False)
    assert [row.estimate_basis for row in traced.rows] == ["traced"] * 7
    assert "composed" not in {row.estimate_basis for row in estimate_model(spec, options, settings, compose=False).rows}
    assert estimate_model(spec, options, settings, reuse=False).rows[3].estimate_basis == "composed"
    assert [row.peak_memory_bytes for row in traced.rows] == [row.peak_memory_bytes for row in profile.rows]
    traces: dict[tuple[int, int], StepTrace] = {}
    kept = estimate_model(spec, options, settings, traces=traces)  # traces asked for: every cell traced
    assert sorted(traces) == [(2, z) for z in range(1, 8)] and "composed" not in {r.estimate_basis for r in kept.rows}
    checkpointed = estimate_model(spec, options, replace(settings, checkpointing="full"))  # traced cell by cell
    assert "composed" not in {row.estimate_basis for row in checkpointed.rows}


class MismatchOnce(BlockRecords):
    """Block records whose first replay finds a call not alike after all (`ReplayMismatch`): the cell is traced
    again without it."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[tuple[object, bool]] = []

    def replaying(self, *args: object, **kwargs: object):  # noqa: ANN202
        if not self.refused:
            raise ReplayMismatch("the key", scaled=True)
        return super().replaying(*args, **kwargs)  # type: ignore[arg-type]

    def refuse(self, key: object, scaled: bool = False) -> None:
        self.refused.append((key, scaled))
        super().refuse(key, scaled)  # type: ignore[arg-type]


def test_a_cell_whose_replay_mismatches_is_traced_again_as_the_same_cell(normed: str) -> None:
    options = ModelOptions(input_shape=(4,), num_classes=2)
    mode, loaded = build_fake_model(normed, options, "32-true")
    settings = SweepSettings((3,), (2,), target="cpu")
    blocks, timelines, traces = MismatchOnce(), {}, {}  # type: ignore[var-annotated]
    with mode:
        context = CellContext(loaded, loaded.split(), settings, ESTIMATE_DEVICE)
        row, _ = estimate_cell(context, 3, 2, blocks=blocks, timelines=timelines, traces=traces)
    assert blocks.refused == [("the key", True)]
    assert row.ok and (row.batch_size, row.trainable_layers) == (3, 2) and set(timelines) == set(traces) == {(3, 2)}


def test_frozen_layers_are_replayed_by_z_and_primed_states_kept(tmp_path: Path) -> None:
    (tmp_path / "stack.py").write_text(STACK)
    mode, loaded = build_fake_model(f"{tmp_path / 'stack.py'}:stack", ModelOptions(input_shape=(8,)), "32-true")
    blocks, primed = BlockRecords(), {}  # type: ignore[var-annotated]
    seen = []
    with mode:
        context = CellContext(loaded, loaded.split(), SweepSettings((8,), (1,), target="cpu"), ESTIMATE_DEVICE)
        for batch_size, z in ((8, 1), (8, 2), (4, 2), (6, 2)):
            replayed, _ = estimate_cell(context, batch_size, z, blocks=blocks, primed=primed)
            seen.append((len(blocks.records), len(blocks.trained.records), len(primed)))
        traced, _ = estimate_cell(context, 6, 2)  # the last cell, traced whole: the same need to the byte
    assert replayed.peak_memory_bytes == traced.peak_memory_bytes == 5016
    # the 7 frozen Linear(8, 8) of z=1 are one record at batch 8 (none were they taken for trainable), one more per
    # new batch size; the trained blocks of z=2 one record per batch size; each trained tensor primed once
    assert seen == [(1, 0, 2), (1, 1, 4), (2, 2, 4), (3, 3, 4)]


@pytest.mark.filterwarnings("ignore:could not trace a forward pass")
def test_a_cell_that_fails_takes_no_time(tmp_path: Path) -> None:
    (tmp_path / "models.py").write_text(DATA_DEPENDENT)
    mode, loaded = build_fake_model(f"{tmp_path / 'models.py'}:routed", ModelOptions(input_shape=(4,)), "32-true")
    with mode:
        context = CellContext(loaded, loaded.split(), SweepSettings((3,), (1,), target="cpu"), ESTIMATE_DEVICE)
        row, seconds = estimate_cell(context, 3, 1)
    assert (row.status, seconds) == ("error", 0.0)


class CountedRecords(BlockRecords):
    made: list[CountedRecords] = []

    def __init__(self) -> None:
        super().__init__()
        self.replays = 0
        CountedRecords.made.append(self)

    def replaying(self, *args: object, **kwargs: object):  # noqa: ANN202
        self.replays += 1
        return super().replaying(*args, **kwargs)  # type: ignore[arg-type]


def test_reuse_replays_frozen_layers_whether_or_not_runs_are_composed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stack.py").write_text(STACK)
    monkeypatch.setattr(estimate, "BlockRecords", CountedRecords)
    CountedRecords.made = []
    settings = SweepSettings((2,), (1, 2, 3), target="cpu")
    estimate_model(f"{tmp_path / 'stack.py'}:stack", ModelOptions(input_shape=(8,)), settings, compose=False)
    assert [records.replays for records in CountedRecords.made] == [3]  # one set of records, every cell replayed
    CountedRecords.made = []
    estimate_model(f"{tmp_path / 'stack.py'}:stack", ModelOptions(input_shape=(8,)), settings, reuse=False)
    assert CountedRecords.made == []


STACK = """
from torch import nn


def stack():
    return nn.Sequential(*(nn.Linear(8, 8) for _ in range(8)))
"""
