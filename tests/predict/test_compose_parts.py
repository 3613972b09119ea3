"""Composition's parts one at a time, each with hand-worked figures, on scripted rows and traces (no model is
estimated here): which z are alike, the lines through a run's anchors and where two of them kink, a composed row,
the cell runner's choice of what to trace, the allocation timeline replayed at another batch size, and a traced step
scaled to another batch. Written for layerprof/predict/compose.py's mutants (issue 40): tests/predict/test_compose.py
checks the same against full traces of real models, at minutes a run."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from layerprof.measure.cells import CellContext, new_row
from layerprof.measure.instruments import ConvShape, OpClass, OpCost, Phase, StepTrace
from layerprof.predict.compose import (
    ALLOCATE,
    FREE,
    LINEAR_FIELDS,
    MIN_COMPOSED_RUN,
    RECATEGORISE,
    BatchLine,
    ComposedCells,
    Piece,
    RecordingTracker,
    Timeline,
    affine_steps,
    composed_row,
    kink,
    layer_signatures,
    line_steps,
    on_line,
    recorded_shapes,
    trace_at_batch,
    z_runs,
)
from layerprof.profile import MemoryCategory, Row, SweepSettings
from layerprof.sources.layers import split_layers

ACT, PARAMS, GRADS = MemoryCategory.ACTIVATIONS, MemoryCategory.PARAMETERS, MemoryCategory.GRADIENTS


# ---------------------------------------------------------------- which z are alike


def test_runs_of_alike_lowest_layers_over_every_z_between_two_selected() -> None:
    """n = 6; z's lowest trainable layer is n - z: z = 1 the head, 2-4 blocks b, 5 a block x, 6 the stem."""
    signatures = ["stem", "x", "b", "b", "b", "head"]
    assert z_runs(signatures, [6, 4, 1, 2, 3, 3, 5]) == [[1], [2, 3, 4], [5], [6]]
    assert z_runs(signatures, (2, 4)) == [[2, 4]]  # z = 3 between them, not selected, is alike too
    assert z_runs(["b", "x", "b", "b"], (2, 4)) == [[2], [4]]  # z = 3 (the x) between them breaks the run
    assert z_runs(signatures, ()) == []


def test_a_layer_s_signature_and_the_shapes_recorded_for_it() -> None:
    """Two alike 6x6 blocks (z = 2, 3), a block the model froze itself, a layer of another width."""
    model = nn.Sequential(nn.Linear(3, 6), nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 2))
    model[3].weight.requires_grad_(False)
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 3)))
    with recorded_shapes(model, layers) as calls:
        model(torch.randn(5, 3))
        model(torch.randn(5, 3))
    assert calls[1] == [((((5, 6), "torch.float32"),), (((5, 6), "torch.float32"),))] * 2
    signatures = layer_signatures(model, layers, calls)
    first = signatures[1]
    assert (
        isinstance(first, tuple)
        and first[0] == "Linear"
        and first[1] == "Linear(in_features=6, out_features=6, bias=True)"
    )
    assert first[5] == (((6, 6), "torch.float32", True), ((6,), "torch.float32", True))
    assert first[6] == tuple(calls[1]) and first[7] == ()
    assert signatures[1] == signatures[2] != signatures[3]  # the frozen block is alike to none
    assert signatures[3][7] == tuple(name.removeprefix("3.") for name in layers[3].frozen_names)  # type: ignore[index]
    assert signatures[3][7] == ("weight",)  # type: ignore[index]
    assert not any(module._forward_hooks for module in model.modules())  # the recording hooks are gone
    tied = [replace(layer, shared_with=("4",)) if layer.index == 1 else layer for layer in layers]
    assert layer_signatures(model, tied, calls)[1:] == [("unique", 1), *signatures[2:]]
    unrecorded = [list(c) for c in calls]
    unrecorded[2] = []
    assert layer_signatures(model, layers, unrecorded)[1:3] == [signatures[1], ("unique", 2)]
    gone = [replace(layer, name="gone") if layer.index == 1 else layer for layer in layers]
    with recorded_shapes(model, gone) as gone_calls:  # a layer not found records nothing; those after it do
        model(torch.randn(5, 3))
    assert gone_calls[1] == [] and gone_calls[2] == calls[2][:1] and gone_calls[4] == calls[4][:1]
    gone_signatures = layer_signatures(model, gone, gone_calls)
    assert gone_signatures[1] == ("unique", 1) and gone_signatures[2][6] == tuple(calls[2][:1])  # type: ignore[index]


# ---------------------------------------------------------------- the lines through the anchors


def row(z: int, **figures: object) -> Row:
    values: dict[str, object] = {"memory_source": "estimate-cuda", **figures}
    return Row(2, z, "ok", **values)  # type: ignore[arg-type]


def anchors(figure: dict[int, int], **more: dict[int, int]) -> dict[int, Row]:
    """Rows of z (the run 3..9's anchors 3, 4, 8, 9) with a tracked peak and any other linear figures."""
    rows = {}
    for z, peak in figure.items():
        rows[z] = row(z, tracked_peak_bytes=peak, **{name: values[z] for name, values in more.items()})
    return rows


def test_one_line_through_four_anchors_steps_alike_at_both_ends_and_along_the_chord() -> None:
    """Peak 1000 + 20 (z - 3), FLOPs 50 z, activations constant: steps 20, 50 and 0 a z."""
    good = anchors({3: 1000, 4: 1020, 8: 1100, 9: 1120}, flops={3: 150, 4: 200, 8: 400, 9: 450},
                   memory_activations_bytes={3: 7, 4: 7, 8: 7, 9: 7})  # fmt: skip
    assert affine_steps(good, 3, 9) == {"flops": 50, "tracked_peak_bytes": 20, "memory_activations_bytes": 0}
    assert affine_steps({**good, 4: replace(good[4], tracked_peak_bytes=1021)}, 3, 9) is None  # first step 21
    assert affine_steps({**good, 9: replace(good[9], tracked_peak_bytes=1121)}, 3, 9) is None  # last step 21
    # both ends step by 20 but the chord from 3 to 9 is 140, not 6 x 20
    jumped = {**good, 8: replace(good[8], tracked_peak_bytes=1120), 9: replace(good[9], tracked_peak_bytes=1140)}
    assert affine_steps(jumped, 3, 9) is None
    for z in (3, 4, 8, 9):  # any anchor failed, of another memory source, or missing a figure: no line
        assert affine_steps({**good, z: replace(good[z], status="oom")}, 3, 9) is None
        assert affine_steps({**good, z: replace(good[z], memory_source="estimate-cpu")}, 3, 9) is None
        assert affine_steps({**good, z: replace(good[z], flops=None)}, 3, 9) is None
    assert set(LINEAR_FIELDS) >= {"flops", "tracked_peak_bytes", "peak_memory_bytes", "memory_gradients_bytes"}


def test_a_line_through_two_rows_in_whole_units_a_z() -> None:
    low, high = row(3, flops=300, tracked_peak_bytes=2000), row(6, flops=150, tracked_peak_bytes=2090)
    assert line_steps(low, high, 3) == {"flops": -50, "tracked_peak_bytes": 30}
    assert line_steps(low, replace(high, flops=151), 3) is None  # -149 / 3
    assert line_steps(row(3, flops=300), row(4, flops=310)) == {"flops": 10}  # one z apart by default
    assert line_steps(row(3, flops=300), row(4, flops=310), 2) == {"flops": 5}
    assert all(type(step) is int for step in line_steps(low, high, 3).values())  # type: ignore[union-attr]
    assert line_steps(replace(low, status="error"), high, 3) is None
    assert line_steps(low, replace(high, status="error"), 3) is None
    assert line_steps(low, replace(high, memory_source="estimate-cpu"), 3) is None
    assert (
        line_steps(replace(low, flops=None), high, 3) is None and line_steps(low, replace(high, flops=None), 3) is None
    )


def test_a_row_on_a_line_to_the_byte() -> None:
    base = row(3, flops=300, tracked_peak_bytes=2000)
    steps = {"flops": -50, "tracked_peak_bytes": 30}
    assert on_line(row(7, flops=100, tracked_peak_bytes=2120), base, steps, 4)
    assert not on_line(row(7, flops=100, tracked_peak_bytes=2121), base, steps, 4)
    assert not on_line(row(7, flops=101, tracked_peak_bytes=2120), base, steps, 4)
    assert not on_line(replace(row(7, flops=100, tracked_peak_bytes=2120), status="oom"), base, steps, 4)
    assert not on_line(row(7, flops=100, tracked_peak_bytes=2120, memory_source="estimate-cpu"), base, steps, 4)


@pytest.mark.parametrize(
    ("first_peak", "last_peak", "expected"),
    [
        (1000, 2060, 5),  # ... at x = 5.6
        (1000, 2100, 5),  # 1000 + 50 (x - 2) = 2100 + 200 (x - 10): x = 16 / 3
        (1000, 2000, 6),  # ... at x = 6 exactly: 6 is on the first line's side
        (1000, 1550, 9),  # at x = 9: the z before the run's last
        (1000, 1500, 9),  # at x = 9.33: held at the z before the last
        (1000, 1400, 9),  # at x = 10, the run's last: held at the z before it
        (1000, 2600, 2),  # at x = 2: the run's first
        (1000, 2675, 2),  # at x = 1.5: before the run, held at its first
        (1000, 2900, 2),  # at x = 0
    ],
)
def test_the_kink_is_the_last_z_on_the_first_line_s_side(first_peak: int, last_peak: int, expected: int) -> None:
    first, last = row(2, tracked_peak_bytes=first_peak), row(10, tracked_peak_bytes=last_peak)
    assert kink(first, {"tracked_peak_bytes": 50}, last, {"tracked_peak_bytes": 200}, 2, 10) == expected


def test_no_kink_without_two_slopes_of_the_peak_or_its_figures() -> None:
    first, last = row(2, tracked_peak_bytes=1000), row(10, tracked_peak_bytes=2000)
    slopes = {"tracked_peak_bytes": 50}, {"tracked_peak_bytes": 200}
    assert kink(first, slopes[0], last, slopes[0], 2, 10) is None  # parallel
    assert kink(first, {"flops": 1}, last, slopes[1], 2, 10) is None
    assert kink(first, slopes[0], last, {"flops": 1}, 2, 10) is None
    assert kink(row(2), slopes[0], last, slopes[1], 2, 10) is None  # a row without a traced peak
    assert kink(first, slopes[0], row(10), slopes[1], 2, 10) is None


def linear_blocks(blocks: int) -> nn.Sequential:
    """A stem, `blocks` alike 8x8 Linears and a head: z = 2 .. blocks + 1 is one run."""
    return nn.Sequential(nn.Linear(4, 8), *(nn.Linear(8, 8) for _ in range(blocks)), nn.Linear(8, 2))


def test_a_composed_row_lies_on_its_piece_s_line_with_times_between_its_ends() -> None:
    """The second line of a kinked run 2..12 (base 12, the last): z = 9 is 3 z below it; its times are 4/7 of the
    way from z = 5 (device 25, host 10 ms) to z = 12 (device 144, host 24 ms): 93 and 18 ms."""
    layers = split_layers(linear_blocks(11), run_forward=lambda m: m(torch.randn(2, 4)))
    piece = Piece(5, 12, 12, {"tracked_peak_bytes": 100, "flops": 7})
    rows = {
        5: row(5, tracked_peak_bytes=1500, flops=35, predicted_device_time_ms=25.0, predicted_host_time_ms=10.0),
        12: row(12, tracked_peak_bytes=2200, flops=84, predicted_device_time_ms=144.0, predicted_host_time_ms=24.0,
                recompute_flops=999, message="as traced"),
    }  # fmt: skip
    new = new_row(layers, 4, 9)
    cpu = composed_row(piece, rows, new, SweepSettings((4,), (9,), target="cpu"))
    assert (cpu.batch_size, cpu.trainable_layers, cpu.estimate_basis, cpu.status) == (4, 9, "composed", "ok")
    assert (cpu.trainable_params, cpu.trainable_fraction) == (new.trainable_params, new.trainable_fraction)
    assert (cpu.tracked_peak_bytes, cpu.flops) == (1900, 63)  # 2200 - 3 x 100, 84 - 3 x 7
    assert cpu.recompute_flops == 999 and cpu.message == "as traced"  # what the line does not hold: the base's
    assert (cpu.predicted_device_time_ms, cpu.predicted_host_time_ms) == pytest.approx((93.0, 18.0))
    assert cpu.predicted_step_time_ms == pytest.approx(111.0) and cpu.predicted_host_bound is None
    assert rows[12].trainable_layers == 12 and rows[12].tracked_peak_bytes == 2200  # the traced rows untouched
    gpu = composed_row(piece, rows, new, SweepSettings((4,), (9,), target="cuda"))
    assert (gpu.predicted_step_time_ms, gpu.predicted_host_bound) == (pytest.approx(93.0), False)
    even = {z: replace(r, predicted_host_time_ms=r.predicted_device_time_ms) for z, r in rows.items()}
    gpu = composed_row(piece, even, new, SweepSettings((4,), (9,), target="cuda"))
    assert (gpu.predicted_step_time_ms, gpu.predicted_host_bound) == (pytest.approx(93.0), False)  # a tie
    slow_host = {z: replace(r, predicted_host_time_ms=r.predicted_device_time_ms + 7) for z, r in rows.items()}
    gpu = composed_row(piece, slow_host, new, SweepSettings((4,), (9,), target="cuda"))
    assert (gpu.predicted_step_time_ms, gpu.predicted_host_bound) == (pytest.approx(100.0), True)
    no_device = {**rows, 5: replace(rows[5], predicted_device_time_ms=None)}
    unpriced = composed_row(piece, no_device, new, SweepSettings((4,), (9,), target="cpu"))
    assert (unpriced.predicted_device_time_ms, unpriced.predicted_host_time_ms) == (None, pytest.approx(18.0))
    assert unpriced.predicted_step_time_ms is None


# ---------------------------------------------------------------- the cell runner


def compose(blocks: int, peak, zs: tuple[int, ...] | None = None, failing: int = 0, batches: tuple[int, ...] = (2,)):  # noqa: ANN001, ANN201
    """Every z of `zs` (all by default) at each batch size through ComposedCells over `linear_blocks(blocks)`,
    traced cells scripted with peak `peak(z)` + 10 x batch, FLOPs 100 z, device time z^2 ms: (rows, traced cells,
    the runner)."""
    from layerprof.sources.models import LoadedModel
    from layerprof.sources.workloads import Workload

    model = linear_blocks(blocks)
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 4)))
    n = len(layers)
    zs = zs or tuple(range(1, n + 1))
    loaded = LoadedModel("blocks", "user", "blocks", model, Workload(family="tensor-input", input_shape=(4,)), (), {})
    settings = SweepSettings(batches, zs, target="cuda")
    context = CellContext(loaded, layers, settings, torch.device("cpu"))
    traced: list[tuple[int, int]] = []

    def trace(_context: CellContext, batch_size: int, z: int) -> tuple[Row, float]:
        traced.append((batch_size, z))
        model(torch.randn(batch_size, 4))
        scripted = row(z, tracked_peak_bytes=peak(z) + 10 * batch_size, flops=100 * z,
                       predicted_device_time_ms=float(z * z), predicted_host_time_ms=1.0)  # fmt: skip
        return (replace(scripted, batch_size=batch_size, status="oom") if z == failing else
                replace(scripted, batch_size=batch_size)), 3.0  # fmt: skip

    cells = ComposedCells(trace, zs)
    rows = {}
    for batch in batches:
        for z in zs:
            found, seconds = cells(context, batch, z)
            assert seconds == 0.0
            rows[(batch, z)] = found
    assert cells.traced == len(traced) == len(set(traced))
    return rows, traced, cells


def test_a_run_of_the_minimum_length_is_composed_in_its_middle_and_a_shorter_one_traced() -> None:
    assert MIN_COMPOSED_RUN == 5
    rows, traced, _ = compose(5, lambda z: 1000 + 64 * z)  # n = 7: the run 2..6, anchors 2, 3, 5, 6
    assert sorted(z for _, z in traced) == [1, 2, 3, 5, 6, 7]
    assert rows[(2, 4)].estimate_basis == "composed" and rows[(2, 4)].tracked_peak_bytes == 1000 + 256 + 20
    assert rows[(2, 4)].predicted_device_time_ms == pytest.approx(4 + 32 * 2 / 4)  # 2: 4 ms, 6: 36 ms
    assert [rows[(2, z)].estimate_basis for z in (1, 2, 3, 5, 6, 7)] == [None] * 6  # the traced ones as traced
    assert rows[(2, 3)].predicted_device_time_ms == 9.0 and rows[(2, 5)].predicted_device_time_ms == 25.0
    _, traced, _ = compose(5, lambda z: 1000 + 64 * z, zs=(1, 2, 3, 5, 6, 7))  # the run 2, 3, 5, 6: four z
    assert sorted(z for _, z in traced) == [1, 2, 3, 5, 6, 7]


def test_each_batch_size_has_its_runs_and_its_anchors() -> None:
    rows, traced, cells = compose(6, lambda z: 500 + 8 * z, batches=(2, 3))  # n = 8: the run 2..7
    assert sorted(traced) == [
        (2, 1),
        (2, 2),
        (2, 3),
        (2, 6),
        (2, 7),
        (2, 8),
        (3, 1),
        (3, 2),
        (3, 3),
        (3, 6),
        (3, 7),
        (3, 8),
    ]
    assert cells.runs == {2: [[1], [2, 3, 4, 5, 6, 7], [8]], 3: [[1], [2, 3, 4, 5, 6, 7], [8]]}
    assert (rows[(3, 5)].batch_size, rows[(3, 5)].tracked_peak_bytes, rows[(3, 5)].estimate_basis) == (
        3,
        570,
        "composed",
    )
    assert sorted(cells.pieces) == [(2, 1), (2, 2), (2, 8), (3, 1), (3, 2), (3, 8)]


def test_a_batch_size_asked_first_at_a_z_that_is_another_batch_size_learns_its_own_runs() -> None:
    """Batch 2 asked before batch 3, each first at z = 2 (a number that is also a batch size already seen)."""
    rows, traced, cells = compose(6, lambda z: 500 + 8 * z, zs=(2, 3, 4, 5, 6, 7, 8), batches=(2, 3))
    assert sorted(cells.runs) == [2, 3] and rows[(3, 2)].batch_size == 3
    assert traced == [(2, 2), (2, 3), (2, 6), (2, 7), (2, 8), (3, 2), (3, 3), (3, 6), (3, 7), (3, 8)]
    assert cells.runs[3] == [[2, 3, 4, 5, 6, 7], [8]]


def test_a_batch_size_that_is_no_z_composes_all_the_same() -> None:
    rows, traced, _ = compose(6, lambda z: 500 + 8 * z, batches=(16,))
    assert traced == [(16, 1), (16, 2), (16, 3), (16, 6), (16, 7), (16, 8)]
    assert rows[(16, 4)].estimate_basis == "composed"


def test_a_z_outside_the_selection_is_traced_even_inside_a_composed_run() -> None:
    """n = 8, z = 4 not selected: the run 2, 3, 5, 6, 7 composes z = 5 from its anchors 2, 3, 6, 7; z = 4, asked all
    the same (as `fit` may), is traced, not read off the run's line."""
    from layerprof.sources.models import LoadedModel
    from layerprof.sources.workloads import Workload

    rows, traced, cells = compose(6, lambda z: 500 + 8 * z, zs=(1, 2, 3, 5, 6, 7, 8))
    assert rows[(2, 5)].estimate_basis == "composed"
    model = linear_blocks(6)
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 4)))
    loaded = LoadedModel("blocks", "user", "blocks", model, Workload(family="tensor-input", input_shape=(4,)), (), {})
    context = CellContext(loaded, layers, SweepSettings((2,), cells.zs, target="cuda"), torch.device("cpu"))
    found, _ = cells(context, 2, 4)
    assert found.estimate_basis is None and traced[-1] == (2, 4)


def test_a_cell_asked_first_in_a_run_s_middle_still_traces_only_the_anchors() -> None:
    _, traced, cells = compose(6, lambda z: 500 + 8 * z, zs=(4, 1, 2, 3, 5, 6, 7, 8))
    assert sorted(z for _, z in traced) == [1, 2, 3, 6, 7, 8]  # the first trace learns the runs at the smallest z
    assert cells.pieces[(2, 2)] == [Piece(2, 7, 2, {"flops": 100, "tracked_peak_bytes": 8})]


def test_a_kinked_run_is_two_pieces_and_a_failed_kink_side_traces_it_all() -> None:
    # n = 12, the run 2..11: 1300 + 20 z to z = 5, 1000 + 80 z from 6 (cross at 5); anchors 2, 3, 10, 11; kink 5, 6
    rows, traced, cells = compose(10, lambda z: max(1300 + 20 * z, 1000 + 80 * z))
    assert sorted(z for _, z in traced) == [1, 2, 3, 5, 6, 10, 11, 12]
    assert cells.pieces[(2, 2)] == [
        Piece(2, 5, 2, {"flops": 100, "tracked_peak_bytes": 20}),
        Piece(6, 11, 11, {"flops": 100, "tracked_peak_bytes": 80}),
    ]
    assert [rows[(2, z)].tracked_peak_bytes for z in (4, 7, 8, 9)] == [1400, 1580, 1660, 1740]
    assert rows[(2, 4)].predicted_device_time_ms == pytest.approx(4 + 21 * 2 / 3)  # 2: 4 ms, 5: 25 ms
    # the kink's low side (z = 5) off the first line: the whole run traced
    _, traced, _ = compose(10, lambda z: max(1300 + 20 * z, 1000 + 80 * z) + (1 if z == 5 else 0))
    assert sorted(z for _, z in traced) == list(range(1, 13))
    _, traced, _ = compose(10, lambda z: max(1300 + 20 * z, 1000 + 80 * z) + (1 if z == 6 else 0))
    assert sorted(z for _, z in traced) == list(range(1, 13))
    # two lines that never cross inside (parallel pieces: a jump): traced
    _, traced, _ = compose(10, lambda z: 1000 + 20 * z + (100 if z > 6 else 0))
    assert sorted(z for _, z in traced) == list(range(1, 13))


@pytest.mark.parametrize("failing", [2, 3, 10, 11])
def test_a_failed_anchor_traces_the_whole_run(failing: int) -> None:
    _, traced, _ = compose(10, lambda z: 1000 + 20 * z, failing=failing)
    assert sorted(z for _, z in traced) == list(range(1, 13))


# ---------------------------------------------------------------- memory at any batch size (fit)


def test_a_timeline_s_peak_on_rounded_blocks_allocations_less_frees() -> None:
    """Requested 100, 50, 100 bytes on blocks of 64: 128, 64, 128; the running sum 128, 192, 64, 192, 192 (a change
    of category frees nothing), 128: peak 192."""
    events = ((ALLOCATE, 0, ACT), (ALLOCATE, 1, ACT), (FREE, 0, None), (ALLOCATE, 2, ACT), (RECATEGORISE, 1, GRADS),
              (FREE, 1, None))  # fmt: skip
    timeline = Timeline(events, (1, 1, 1))

    def blocks(n: int) -> int:
        return -(-n // 64) * 64

    assert timeline.peak_bytes([100, 50, 100], blocks) == 192
    assert timeline.peak_bytes([100, 50, 100], int) == 150
    assert timeline.peak_bytes([10, 300, 10], int) == 310  # the same timeline, other sizes
    assert timeline.peak_bytes([10, 300, 10], int) == 310  # its arrays cached
    later = Timeline(((ALLOCATE, 0, ACT), (FREE, 0, None), (ALLOCATE, 1, ACT)), (1, 1))  # the peak after a free
    assert later.peak_bytes([100, 150], int) == 150
    assert Timeline((), ()).peak_bytes([], int) == 0
    assert Timeline(((FREE, 0, None), (ALLOCATE, 0, ACT)), (1,)).peak_bytes([64], int) == 0  # never above 0


def test_a_batch_line_through_two_timelines_in_either_order() -> None:
    events = ((ALLOCATE, 0, PARAMS), (ALLOCATE, 1, ACT), (FREE, 1, None), (ALLOCATE, 2, ACT))
    at_4, at_6 = Timeline(events, (300, 40, 8)), Timeline(events, (300, 60, 20))
    line = BatchLine.through((6, at_6), (4, at_4))
    assert line == BatchLine(at_4, 4, (0, 10, 6))
    assert line.requested(10) == [300, 100, 44] and line.peak_bytes(10, int) == 400
    assert line.requested(2) is None and line.peak_bytes(2, int) is None  # 8 - 2 x 6 bytes: no such step
    assert line.requested(3) == [300, 30, 2] and line.peak_bytes(3, int) == 330
    assert BatchLine.through((4, at_4), (4, at_4)) is None  # one batch size: no line
    to_zero = BatchLine.through((4, Timeline(events, (300, 40, 12))), (6, Timeline(events, (300, 60, 18))))
    assert to_zero is not None and to_zero.requested(0) == [300, 0, 0] and to_zero.peak_bytes(0, int) == 300
    steep = BatchLine.through((4, Timeline(events, (300, 40, 25))), (6, Timeline(events, (300, 60, 51))))
    assert steep is not None and steep.requested(2) is None  # 25 - 2 x 13: -1 byte
    assert BatchLine.through((4, at_4), (6, Timeline(events, (300, 60, 21)))) is None  # 13 bytes over 2 samples
    assert BatchLine.through((4, at_4), (6, Timeline(events[:3], (300, 60, 20)))) is None  # other events
    assert BatchLine.through((4, at_4), (6, Timeline(events, (300, 60)))) is None  # other storages


def test_the_recording_tracker_keeps_allocations_frees_and_changes_of_category() -> None:
    tracker = RecordingTracker(lambda n: 2 * n)
    weight = torch.ones(4)  # 16 bytes
    tracker.register([weight], PARAMS)
    grads = tracker.allocate_virtual(100, ACT)
    tracker._recategorise(weight, PARAMS)  # the same category: no event
    tracker._recategorise(weight, GRADS)
    tracker._release(grads)
    tracker._release(grads)  # released before: no event
    timeline = tracker.timeline()
    assert timeline == Timeline(((ALLOCATE, 0, PARAMS), (ALLOCATE, 1, ACT), (RECATEGORISE, 0, GRADS), (FREE, 1, None)),
                                (16, 100))  # fmt: skip
    assert tracker.peak == 232 and timeline.peak_bytes(timeline.requested, lambda n: 2 * n) == 232
    again = tracker.allocate_virtual(8, ACT)  # a new storage takes the next place
    assert tracker.timeline().events[-1] == (ALLOCATE, 2, ACT) and tracker.timeline().requested == (16, 100, 8)
    tracker._release(again)
    assert tracker.timeline().events[-1] == (FREE, 2, None)


# ---------------------------------------------------------------- a step at another batch size


def op(name: str, flops: int, nbytes: int, fresh: int = 0, kernels: int = 1, **more: object) -> OpCost:
    return OpCost(name, OpClass.GEMM, Phase.FORWARD, flops, nbytes, "float32", kernels, fresh, **more)  # type: ignore[arg-type]


def test_a_step_at_an_untraced_batch_on_the_line_through_the_two_nearest_alike_traces() -> None:
    """Traced at batch 2, 4 and 10 (z = 3); at 10 the step runs another operation. Batch 5: nearest 4 and 2 (10 runs
    another step): FLOPs 40 at 2, 80 at 4 -> 100; bytes 22, 42 -> 52; fresh 5, 9 -> 11."""
    traces = {
        (2, 3): StepTrace([op("mm", 40, 22, 5), op("add", 7, 7)], 4),
        (4, 3): StepTrace([op("mm", 80, 42, 9), op("add", 7, 7)], 4),
        (10, 3): StepTrace([op("mm", 200, 102, 21), op("relu", 7, 7)], 4),
        (6, 1): StepTrace([op("mm", 1, 1)], 4),
    }
    found = trace_at_batch(traces, 3, 5)
    assert found is not None and found.module_calls == 4
    assert [(o.name, o.flops, o.bytes_moved, o.fresh_bytes) for o in found.ops] == [
        ("mm", 100, 52, 11),
        ("add", 7, 7, 0),
    ]
    assert found.ops[1] is traces[(4, 3)].ops[1]  # the same at both: the nearer one itself
    assert trace_at_batch(traces, 3, 4) is traces[(4, 3)]  # traced: itself
    assert trace_at_batch(traces, 1, 5) is None  # one trace of z = 1 only
    assert trace_at_batch(traces, 2, 5) is None
    # at batch 1, nearest 2 and 4: FLOPs 20, bytes 12, fresh 3; at batch 0: 0, 2, 1 (below 0 rounded to 0: none)
    at_one = trace_at_batch(traces, 3, 1)
    assert at_one is not None and (at_one.ops[0].flops, at_one.ops[0].bytes_moved, at_one.ops[0].fresh_bytes) == (
        20,
        12,
        3,
    )
    less = {(2, 3): StepTrace([op("mm", 4, 2, 1)], 4), (4, 3): StepTrace([op("mm", 14, 12, 9)], 4)}
    at_zero = trace_at_batch(less, 3, 1)
    assert at_zero is not None and (at_zero.ops[0].flops, at_zero.ops[0].bytes_moved, at_zero.ops[0].fresh_bytes) == (
        0,
        0,
        0,
    )


def test_two_traces_of_other_steps_make_no_line() -> None:
    base = StepTrace([op("mm", 40, 22)], 4)
    for other in (
        StepTrace([op("mm", 80, 42)], 5),  # other module calls
        StepTrace([op("mm", 80, 42), op("mm", 1, 1)], 4),  # more operations
        StepTrace([op("bmm", 80, 42)], 4),
        StepTrace([replace(op("mm", 80, 42), op_class=OpClass.CONV)], 4),
        StepTrace([replace(op("mm", 80, 42), phase=Phase.BACKWARD)], 4),
        StepTrace([replace(op("mm", 80, 42), dtype="bfloat16")], 4),
        StepTrace([op("mm", 80, 42, kernels=2)], 4),
    ):
        assert trace_at_batch({(2, 3): base, (4, 3): other}, 3, 3) is None
    # the nearest pair runs another step: the next pair that does (2 and 8, around 5)
    traces = {(2, 3): base, (4, 3): StepTrace([op("mm", 80, 42)], 5), (8, 3): StepTrace([op("mm", 160, 82)], 4)}
    found = trace_at_batch(traces, 3, 5)
    assert found is not None and found.ops[0].flops == 100
    # the nearest (4) with the next nearest (2) runs another step, with the one after (8) the same: FLOPs 80 at 4,
    # 200 at 8: 110 at 5
    for other in (StepTrace([op("mm", 40, 22)], 5), StepTrace([op("bmm", 40, 22)], 4)):
        traces = {(2, 3): other, (4, 3): StepTrace([op("mm", 80, 42)], 4), (8, 3): StepTrace([op("mm", 200, 82)], 4)}
        found = trace_at_batch(traces, 3, 5)
        assert found is not None and found.ops[0].flops == 110


def test_an_operation_rounded_to_the_far_trace_s_figures_takes_them() -> None:
    """Batch 3 halfway between 2 (11, 21, 1) and 4 (12, 22, 2): 11.5, 21.5, 1.5 round to the far trace's figures."""
    x, y = op("mm", 11, 21, 1), op("mm", 12, 22, 2)
    found = trace_at_batch({(2, 1): StepTrace([x]), (4, 1): StepTrace([y])}, 1, 3)
    assert found is not None and (found.ops[0].flops, found.ops[0].bytes_moved, found.ops[0].fresh_bytes) == (12, 22, 2)


def test_an_operation_on_the_line_keeps_its_geometry_and_everything_else() -> None:
    conv = ConvShape(out_pixels=16, per_output=9, groups=1, channels=1, native=False)
    x = op("convolution", 40, 22, 5, conv=conv)
    y = replace(x, flops=80, bytes_moved=42, fresh_bytes=9, conv=replace(conv, native=True))
    found = trace_at_batch({(2, 1): StepTrace([x]), (4, 1): StepTrace([y])}, 1, 3)
    assert found is not None and found.ops == [replace(x, flops=60, bytes_moved=32, fresh_bytes=7)]
    assert type(found.ops[0]) is OpCost and found.ops[0].conv is conv
