"""Estimates on fake tensors: equal to the real-tensor tracker on CPU, never allocating the model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.measure.cells import CellContext, run_cell
from layerprof.predict.estimate import ESTIMATE_DEVICE, estimate_model
from layerprof.predict.fit import FitSearch
from layerprof.profile import SweepSettings
from layerprof.sources.models import ModelOptions, build_model
from tests.cli.test_cli import TINY_LM, assert_one_line_error

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "custom_model.py")


def settings(*zs: int, batch_sizes: tuple[int, ...] = (2,), target: str = "cuda") -> SweepSettings:
    return SweepSettings(
        batch_sizes=batch_sizes, trainable_layer_counts=zs, warmup_steps=1, min_steps=1, max_steps=1, target=target
    )


@pytest.mark.parametrize(
    ("spec", "options", "zs"),
    [
        ("paper-gpt-14m", ModelOptions(seq_len=32), (1, 5, 11)),
        ("paper-resnet18-cifar100", ModelOptions(), (1, 6, 11)),
        (f"{EXAMPLE}:mlp", ModelOptions(input_shape=(64,), num_classes=10), (1, 4, 8)),
    ],
)
def test_cpu_estimate_equals_the_real_tensor_tracker(spec: str, options: ModelOptions, zs: tuple[int, ...]) -> None:
    real = build_model(spec, options)
    real_layers = real.split()
    estimated = estimate_model(spec, options, settings(*zs, target="cpu"))
    for z in zs:
        measured, _ = run_cell(CellContext(real, real_layers, settings(z), torch.device("cpu")), 2, z)
        predicted = estimated.row(2, z)
        assert predicted.memory_source == "estimate-cpu"
        for field in ("peak_memory_bytes", "memory_parameters_bytes", "memory_optimizer_state_bytes", "flops"):
            assert getattr(predicted, field) == getattr(measured, field), (spec, z, field)
        assert predicted.step_time_ms is None


def test_linear_stack_categories_on_fake_tensors_and_cuda_rounding() -> None:
    options = ModelOptions(input_shape=(64,), overrides={"width": 256, "depth": 2})
    cpu = estimate_model(f"{EXAMPLE}:mlp", options, settings(1, 2, 3, 4, target="cpu"))
    cuda = estimate_model(f"{EXAMPLE}:mlp", options, settings(1, 2, 3, 4, target="cuda"))
    total_param_bytes = cpu.row(2, 4).memory_parameters_bytes
    model = build_model(f"{EXAMPLE}:mlp", options).model
    tensors_of_model = list(model.parameters()) + list(model.buffers())
    assert total_param_bytes == sum(t.numel() * 4 for t in tensors_of_model)
    rounded = sum(-(-t.numel() * 4 // 512) * 512 for t in tensors_of_model)  # the caching allocator's blocks
    # the layers of the real model, counted here: input projection, two residual blocks (LayerNorm + Linear),
    # head; each trains a weight and a bias tensor per Linear / LayerNorm
    modules = [model[0], model[1], model[2], model[3]]
    for z in (1, 2, 3, 4):
        row = cpu.row(2, z)
        trainable = [p for module in modules[4 - z :] for p in module.parameters()]
        trainable_bytes = sum(p.numel() * 4 for p in trainable)
        assert row.trainable_params * 4 == trainable_bytes
        assert row.memory_parameters_bytes == total_param_bytes  # frozen weights stay resident
        # AdamW: two moments per trainable element, plus a 4-byte step counter per trainable tensor
        assert row.memory_optimizer_state_bytes == 2 * trainable_bytes + 4 * len(trainable)
        assert cuda.row(2, z).memory_parameters_bytes == rounded
        assert cuda.row(2, z).peak_memory_bytes % 512 == 0  # every block is a multiple of 512 bytes


def test_estimate_never_allocates_the_model() -> None:
    # pythia-12b holds 48 GB of float32 parameters, twice this machine's memory
    code = (
        "import resource\n"
        "from layerprof.predict.estimate import estimate_model\n"
        "from layerprof.sources.models import ModelOptions\n"
        "from layerprof.profile import SweepSettings\n"
        "s = SweepSettings(batch_sizes=(1,), trainable_layer_counts=(1,), target='cuda')\n"
        "p = estimate_model('pythia-12b', ModelOptions(seq_len=16), s)\n"
        "row = p.rows[0]\n"
        "print(row.status, row.memory_parameters_bytes, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    status, parameter_bytes, max_rss_kib = done.stdout.split()
    assert status == "ok"
    assert int(parameter_bytes) > 45 * 10**9  # the estimate sees all 12B parameters...
    assert int(max_rss_kib) * 1024 < 3 * 2**30  # ...while the process stays far below their size


def test_estimate_and_fit_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "estimate.json"
    result = runner.invoke(app, ["estimate", *TINY_LM, "--batch-sizes", "1", "--layers", "1,9", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "optimizer" in result.output and out.exists()
    result = runner.invoke(app, ["fit", f"{EXAMPLE}:mlp", "--input-shape", "64", "--memory", "1GiB", "--layers",
                                 "1,8", "--batch-size", "4", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert '"largest_batch_size"' in result.output
    assert_one_line_error(runner.invoke(app, ["fit", "pythia-14m", "--gpu", "Z80"]), "unknown --gpu 'Z80'", "T4")
    assert_one_line_error(
        runner.invoke(app, ["fit", *TINY_LM, "--layers", "1", "--memory", "1MiB"]),
        "no z fits",
        "smallest need",
    )
    assert_one_line_error(runner.invoke(app, ["fit", "pythia-14m"]), "exactly one of --memory")
    # an estimate predicts step times: its ladder is spaced by them, and says they are predicted
    by_time = runner.invoke(app, ["ladder", str(out), "--json"])
    assert by_time.exit_code == 0 and '"cost_kind": "time"' in by_time.output
    assert '"times_predicted": true' in by_time.output
    table = " ".join(runner.invoke(app, ["ladder", str(out)]).output.split())  # the terminal wraps
    assert "pred. step" in table and "predicted by the time model" in table
    by_flops = runner.invoke(app, ["ladder", str(out), "--cost", "flops", "--json"])
    assert by_flops.exit_code == 0 and '"cost_kind": "flops"' in by_flops.output
    # an estimate without predicted times (written before the time model) still ladders by FLOPs only
    data = json.loads(out.read_text())
    for row in data["rows"]:
        row["predicted_step_time_ms"] = None
    out.write_text(json.dumps(data))
    assert_one_line_error(runner.invoke(app, ["ladder", str(out), "--cost", "time"]), "use --cost flops")
    assert '"cost_kind": "flops"' in runner.invoke(app, ["ladder", str(out), "--json"]).output


STACK_FACTORY = """
from torch import nn

def stack(depth: int = 4):
    return nn.Sequential(*(nn.Linear(8, 8) for _ in range(depth)))
"""


def test_the_runner_plan_estimate_hands_its_job_traces_cells_with_one_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import layerprof.predict.estimate as estimate
    from layerprof.parsing import parse_layer_selection
    from layerprof.predict import jobs

    (tmp_path / "factory.py").write_text(STACK_FACTORY)
    traced: list[tuple[CellContext, int, int]] = []
    real = estimate.estimate_cell

    def recorded(context: CellContext, batch_size: int, trainable_layers: int, **kwargs: object):  # noqa: ANN202
        traced.append((context, batch_size, trainable_layers))
        return real(context, batch_size, trainable_layers, **kwargs)

    monkeypatch.setattr(estimate, "estimate_cell", recorded)
    job = jobs.plan_estimate(f"{tmp_path / 'factory.py'}:stack", ModelOptions(input_shape=(8,)),
                             settings(batch_sizes=(2, 4), target="cpu"), parse_layer_selection("1,3"),
                             tmp_path / "estimate.json")  # fmt: skip
    assert job.runner is jobs.run_estimate_job
    profile = job.run()
    # two z: too few to compose (a run needs 5), so every cell is traced, batch by batch, z rising
    assert [(batch, z) for _, batch, z in traced] == [(2, 1), (2, 3), (4, 1), (4, 3)]
    assert len({id(context) for context, _, _ in traced}) == 1  # one context for the whole sweep
    context = traced[0][0]
    assert isinstance(context, CellContext)
    assert context.device == ESTIMATE_DEVICE
    assert (context.settings.mode, context.settings.target) == ("estimate", "cpu")
    assert len(context.layers) == 4
    assert [(row.key, row.status, row.estimate_basis, row.trainable_params) for row in profile.rows] == [
        ((2, 1), "ok", "traced", 72), ((2, 3), "ok", "traced", 216),
        ((4, 1), "ok", "traced", 72), ((4, 3), "ok", "traced", 216),
    ]  # fmt: skip
    # the inputs' bytes follow the batch size: 2 x 8 and 4 x 8 float32 values
    assert [row.memory_inputs_bytes for row in profile.rows] == [64, 64, 128, 128]


USER_FROZEN = str(Path(__file__).parents[2] / "examples" / "audit" / "user_frozen.py") + ":model"


def test_estimate_profile_fit_and_layer_costs_keep_the_users_frozen_parameters_frozen() -> None:
    """Issue 35: the stem, block2 and head.bias are frozen by the factory; 1,376 of 2,986 parameters train at full
    training, and AdamW holds 11,020 bytes of state (1,376 x 8 bytes and a 4-byte step per tensor), not 23,920."""
    from layerprof.predict.layercosts import layer_costs

    options = ModelOptions(input_shape=(16,), num_classes=10)
    estimated = estimate_model(USER_FROZEN, options, settings(1, 3, 4, batch_sizes=(4,), target="cpu"))
    full = estimated.row(4, 4)
    assert (full.trainable_params, full.optimizer_state_bytes, full.memory_gradients_bytes) == (1376, 11020, 5504)
    assert full.trainable_fraction == pytest.approx(1376 / 2986)
    assert estimated.row(4, 1).trainable_params == 320
    # the frozen stem trains at no z: full training costs exactly what z=3 does
    assert (full.peak_memory_bytes, full.flops) == (estimated.row(4, 3).peak_memory_bytes, estimated.row(4, 3).flops)
    real = build_model(USER_FROZEN, options)
    measured, _ = run_cell(CellContext(real, real.split(), settings(4), torch.device("cpu")), 4, 4)
    assert (measured.trainable_params, measured.optimizer_state_bytes) == (1376, 11020)
    search = FitSearch(USER_FROZEN, options, settings(4, target="cpu"))
    assert search.need_bytes(4, 4) == search.need_bytes(3, 4) == full.peak_memory_bytes
    costs = {cost.name: cost.trainable_bytes for cost in layer_costs(USER_FROZEN, options, 4, target="cpu").layers}
    assert (costs["stem"], costs["block2"], costs["head"]) == (0, 0, 320 * 4 * 3 + 4)


def test_a_primed_state_is_reused_only_for_the_very_same_parameter() -> None:
    """An id is reused once its parameter is gone (LoRA builds its adapters anew per cell): a state primed for
    another parameter under the same id must not be handed to this one (it failed as a broadcast error in AdamW's
    lerp_ when the shapes differed)."""
    from layerprof.predict.estimate import prime_optimizer

    param = torch.nn.Parameter(torch.zeros(8, 128))
    gone = torch.nn.Parameter(torch.zeros(128))
    primed = {id(param): (gone, {"step": torch.tensor(1.0), "exp_avg": torch.zeros(128)})}
    optimizer = torch.optim.AdamW([param])
    prime_optimizer(optimizer, [param], primed)
    assert optimizer.state[param]["exp_avg"].shape == (8, 128)
    assert primed[id(param)][0] is param
    optimizer.state.clear()
    prime_optimizer(optimizer, [param], primed)  # the same parameter: its state back, no new step
    assert optimizer.state[param] is primed[id(param)][1]
