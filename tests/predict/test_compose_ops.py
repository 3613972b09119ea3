"""A composed fit's operations at a batch nobody traced: each on the line between two traced batch sizes, the same
operations `dataclasses.replace` gave, without its cost."""

from __future__ import annotations

from dataclasses import replace

from layerprof.measure.instruments import ConvShape, OpClass, OpCost, Phase, StepTrace
from layerprof.predict.compose import trace_at_batch

MIB = 2**20


def traced(batch: int) -> StepTrace:
    """A step whose operations grow with the batch (a product, a convolution with its geometry), stay put (the
    optimizer's update) or shrink to nothing on the line's far side (a rounding to check)."""
    conv = ConvShape(out_pixels=64, per_output=27, groups=1, channels=3, native=batch < 16)
    return StepTrace(
        [
            OpCost("mm", OpClass.GEMM, Phase.FORWARD, 7 * batch, 10 * batch + 3, "float32", 1, batch * MIB),
            OpCost("convolution", OpClass.CONV, Phase.FORWARD, 3 * batch, 5 * batch, "float32", 1, 0, conv),
            OpCost("_foreach_add_", OpClass.ELEMENTWISE, Phase.OPTIMIZER, 400, 4800, "float32", 1, 0),
            OpCost("sum", OpClass.REDUCTION, Phase.BACKWARD, 20 - batch, 3, "float32", 1, 2),
        ],
        module_calls=5,
    )


def by_replace(a: StepTrace, b: StepTrace, share: float) -> list[OpCost]:
    """The operations as `trace_at_batch` made them with `dataclasses.replace`."""
    return [
        replace(
            x,
            flops=max(0, round(x.flops + (y.flops - x.flops) * share)),
            bytes_moved=max(0, round(x.bytes_moved + (y.bytes_moved - x.bytes_moved) * share)),
            fresh_bytes=max(0, round(x.fresh_bytes + (y.fresh_bytes - x.fresh_bytes) * share)),
        )
        for x, y in zip(a.ops, b.ops, strict=True)
    ]


def test_operations_on_the_line_are_those_replace_made() -> None:
    traces = {(4, 1): traced(4), (6, 1): traced(6)}
    for batch in (3, 5, 9, 30):
        found = trace_at_batch(traces, 1, batch)
        assert found is not None and found.module_calls == 5
        assert found.ops == by_replace(traces[(4, 1)], traces[(6, 1)], (batch - 4) / 2)
        for op in found.ops:
            assert type(op) is OpCost and vars(op).keys() == vars(traces[(4, 1)].ops[0]).keys()
    mm, conv, update, total = trace_at_batch(traces, 1, 9).ops  # type: ignore[union-attr]
    assert (mm.flops, mm.bytes_moved, mm.fresh_bytes) == (63, 93, 9 * MIB)
    assert conv.conv == traces[(6, 1)].ops[1].conv  # the geometry as traced at the nearer batch (6)
    assert update is traces[(6, 1)].ops[2]  # the same at both: the nearer traced operation itself
    assert total.flops == 11
    assert trace_at_batch(traces, 1, 30).ops[3].flops == 0  # type: ignore[union-attr]  # below 0: none
