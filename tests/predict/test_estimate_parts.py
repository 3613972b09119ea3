"""An estimate per target part by part (issue 40, `make mutate` survivors of predict/estimate.py): each target
traces its own optimizer implementation and autocast rules, and holds its own allocator blocks and workspaces."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerprof.measure.instruments import StepTrace
from layerprof.predict.estimate import estimate_model
from layerprof.profile import SweepSettings
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
