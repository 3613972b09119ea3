"""`layerprof audit`: every finding on its example in examples/audit/, and absent from the fixed twin."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.predict.audit import AuditReport, audit

EXAMPLES = Path(__file__).parents[2] / "examples" / "audit"


@cache
def audited(name: str, fn: str) -> AuditReport:
    """Each example audited once for the whole module (batch 8, CPU)."""
    return audit(f"{EXAMPLES / name}.py:{fn}", batch_size=8)


def kinds(report: AuditReport) -> list[str]:
    return [finding.kind for finding in report.findings]


def finding(report: AuditReport, kind: str):  # noqa: ANN201 - a Finding
    (found,) = [f for f in report.findings if f.kind == kind]
    return found


@pytest.mark.parametrize(
    ("example", "kind"),
    [
        ("optimizer_mismatch", "grad-without-optimizer"),
        ("stale_optimizer", "frozen-in-optimizer"),
        ("input_requires_grad", "backward-through-frozen-prefix"),
        ("reentrant_checkpoint", "no-gradient-reaches-trained"),
        ("train_mode", "frozen-in-train-mode"),
        ("scattered", "scattered-frozen"),
    ],
)
def test_each_finding_fires_on_its_mistake_and_not_on_the_fixed_twin(example: str, kind: str) -> None:
    mistake, fixed = audited(example, "mistake"), audited(example, "fixed")
    assert kind in kinds(mistake)
    assert finding(mistake, kind).fails
    assert mistake.exit_code == 1
    assert kinds(fixed) == []
    assert fixed.exit_code == 0
    # the fixed twin saves all that layerprof's freezing of the same parameters would (bytes and FLOPs exact)
    line = fixed.bottom_line
    assert (line.as_written.peak_bytes, line.as_written.flops) == (line.ideal.peak_bytes, line.ideal.flops)


def test_trainable_parameters_outside_the_optimizer_cost_their_gradients() -> None:
    found = finding(audited("optimizer_mismatch", "mistake"), "grad-without-optimizer")
    assert found.where == ["0.weight", "0.bias", "2.weight", "2.bias"]
    # measured as the step as written less the step with them frozen: their float32 gradients, and at batch 8 the
    # weight gradients of both layers and the input gradients of the two layers above the stem
    assert found.cost_bytes == 4 * (16 * 64 + 64 + 64 * 64 + 64) == 20992
    assert found.cost_flops == 2 * 8 * (16 * 64 + 64 * 64 + 64 * 64 + 64 * 10) == 157696


def test_a_learning_rate_of_0_does_not_freeze() -> None:
    report = audited("optimizer_mismatch", "lr_zero")
    found = finding(report, "grad-without-optimizer")
    assert found.where == ["0.weight", "0.bias", "2.weight", "2.bias"]
    # their gradients (20,992 bytes, as above) and more: AdamW still runs its update on them at lr 0
    assert found.cost_bytes == 48896 and found.fails
    assert "parameters in the prefix require grad" in finding(report, "backward-through-frozen-prefix").message


def test_frozen_parameters_in_the_optimizer_cost_their_state() -> None:
    found = finding(audited("stale_optimizer", "mistake"), "frozen-in-optimizer")
    assert found.where == ["0.weight", "0.bias"]
    # AdamW's two moments of 16x256+256 float32 parameters, and a 4-byte step for each of the 2 tensors
    assert found.cost_bytes == 2 * 4 * (16 * 256 + 256) + 2 * 4 == 34824
    assert "weight decay" in found.message


def test_backward_through_the_frozen_prefix_names_the_layers_and_the_cause() -> None:
    report = audited("input_requires_grad", "mistake")
    found = finding(report, "backward-through-frozen-prefix")
    assert found.where == ["0", "2"]
    assert "an input of the batch requires grad" in found.message
    assert found.cost_flops > 0 and found.cost_bytes > 0
    # the bottom line: as written the step costs more than layerprof's freezing of the same parameters, by the
    # finding's own measured cost
    line = report.bottom_line
    assert line.trainable_layers == 2
    assert line.as_written.flops - line.ideal.flops == found.cost_flops


def test_a_forward_hook_that_makes_the_prefix_require_grad_is_named_as_the_cause() -> None:
    found = finding(audited("input_requires_grad", "hooked"), "backward-through-frozen-prefix")
    assert found.where == ["0", "2"]
    assert "enable_input_require_grads" in found.message and found.fails


def test_reentrant_checkpointing_over_the_frozen_stem_trains_nothing_inside_it() -> None:
    found = finding(audited("reentrant_checkpoint", "mistake"), "no-gradient-reaches-trained")
    assert found.where == ["block.linear.weight", "block.linear.bias"]
    assert "reentrant" in found.message and found.blocking


def test_train_mode_in_the_frozen_stem_names_its_batchnorm_and_dropout() -> None:
    found = finding(audited("train_mode", "mistake"), "frozen-in-train-mode")
    assert found.where == ["0.1", "0.3"]  # BatchNorm1d, and the parameter-free Dropout below the lowest trained layer
    assert found.blocking  # the BatchNorm's running statistics change: the frozen stem is not frozen


def test_a_scattered_frozen_set_says_what_a_prefix_of_the_same_size_costs() -> None:
    report = audited("scattered", "mistake")
    found = finding(report, "scattered-frozen")
    assert found.where == ["2", "4"]
    assert "the last 2 layers trained" in found.message
    assert found.cost_flops > 0
    assert report.bottom_line.trainable_layers == 4  # the stem trains: layerprof's freezing must reach it


def test_cli_json_and_exit_codes(runner: CliRunner) -> None:
    result = runner.invoke(app, ["audit", f"{EXAMPLES / 'stale_optimizer.py'}:mistake", "--batch-size", "4", "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert [f["kind"] for f in data["findings"]] == ["frozen-in-optimizer"]
    assert data["findings"][0]["cost_bytes"] == 34824 and data["exit_code"] == 1
    assert set(data["bottom_line"]) == {"trainable_layers", "layer_count", "full", "as_written", "ideal"}
    # a tolerance above the finding's share of the step's peak lets it pass
    share = 34824 / data["bottom_line"]["as_written"]["peak_bytes"]
    loose = ["--tolerance", f"{min(0.99, share * 1.5):.3f}", "--json"]
    result = runner.invoke(app, ["audit", f"{EXAMPLES / 'stale_optimizer.py'}:mistake", "--batch-size", "4", *loose])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["findings"][0]["fails"] is False
    result = runner.invoke(app, ["audit", f"{EXAMPLES / 'stale_optimizer.py'}:fixed", "--batch-size", "4"])
    assert result.exit_code == 0, result.output


def test_bad_input_is_one_line_and_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    bare = tmp_path / "bare.py"
    bare.write_text("from torch import nn\n\ndef fn():\n    return nn.Linear(2, 2)\n")
    result = runner.invoke(app, ["audit", f"{bare}:fn"])
    assert result.exit_code == 2
    assert "audit needs a layerprof.CustomWorkload" in result.output
    result = runner.invoke(app, ["audit", f"{tmp_path / 'missing.py'}:fn"])
    assert result.exit_code == 2 and "does not exist" in result.output
    broken = tmp_path / "broken.py"
    broken.write_text(
        "import torch\nfrom torch import nn\nfrom layerprof import CustomWorkload\n\n"
        "def fn():\n    model = nn.Linear(2, 2)\n"
        "    return CustomWorkload(model, lambda b, d: torch.randn(b, 3), lambda m, x: m(x).sum(),\n"
        "                          optimizer=torch.optim.SGD(model.parameters(), lr=0.1))\n"
    )
    result = runner.invoke(app, ["audit", f"{broken}:fn"])
    assert result.exit_code == 2
    assert "the training step raised RuntimeError" in result.output


def test_a_fix_in_eval_mode_holds_even_where_the_step_calls_model_train() -> None:
    from torch import nn

    from layerprof.predict.audit import _eval_modules

    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout(0.5))
    with _eval_modules([model[1], model[2]]):
        model.train()
        assert [m.training for m in model] == [True, False, False]
    model.train()
    assert [m.training for m in model] == [True, True, True] and "train" not in vars(model[1])


@pytest.mark.gpu
def test_on_cuda_the_same_findings_and_bytes() -> None:
    """Not run in this change (no GPU was lent): the CUDA step fires the same finding, its state bytes exact."""
    report = audit(f"{EXAMPLES / 'stale_optimizer.py'}:mistake", batch_size=8, device="cuda")
    assert kinds(report) == ["frozen-in-optimizer"]
    assert finding(report, "frozen-in-optimizer").cost_bytes >= 34824
    assert report.device == "cuda"


def test_a_package_module_function_is_audited_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "mytraining"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "setup.py").write_text((EXAMPLES / "stale_optimizer.py").read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    report = audit("mytraining.setup:mistake", batch_size=4)
    assert kinds(report) == ["frozen-in-optimizer"] and report.exit_code == 1


def test_a_set_up_with_only_a_step_function_is_refused_by_layers_saying_why(runner: CliRunner) -> None:
    result = runner.invoke(app, ["layers", f"{EXAMPLES / 'train_mode.py'}:mistake"])
    assert result.exit_code == 2
    assert "gives a step function but no loss" in result.output
