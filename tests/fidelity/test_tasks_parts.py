"""Parts of fidelity/tasks.py that the end-to-end tests leave unpinned (issue 40: mutants that survived)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from layerprof.fidelity import tasks
from layerprof.fidelity.tasks import (
    digits_cnn,
    digits_data,
    digits_resume,
    digits_run,
    next_byte_loss,
    pydoc_bytes,
    pydoc_lm_resume,
    pydoc_lm_run,
    schedule,
    scratch_segment,
)


def test_the_schedule_warms_up_holds_and_cools_down_by_the_configurations_fractions() -> None:
    factor = schedule({"warmup_fraction": 0.5, "cooldown_fraction": 0.25}, 8)  # 4 steps up, 2 down
    assert [factor(step) for step in range(8)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 0.5]
    assert [schedule({}, 4)(step) for step in range(4)] == [1.0] * 4


def test_a_digits_run_draws_batches_of_32_and_evaluates_with_the_models_running_statistics() -> None:
    images, labels = digits_run({"seed": 0}).next_batch(0)
    assert (tuple(images.shape), tuple(labels.shape)) == ((32, 1, 8, 8), (32,))
    loss, run = digits_resume({"seed": 0}, scratch_segment(6, 0.01), None)  # 2 steps
    assert run.step == 2 and not run.model.training  # evaluated as a trained model is: batch norm's running stats
    _, _, val_x, val_y = digits_data()
    with torch.no_grad():
        assert loss == float(F.cross_entropy(run.model(val_x), val_y))


def test_next_byte_loss_predicts_the_targets_from_the_inputs() -> None:
    def next_byte(inputs: torch.Tensor) -> torch.Tensor:  # certain that each byte is followed by the next value
        return 100.0 * F.one_hot((inputs + 1) % 256, 256).float()

    inputs = torch.tensor([[1, 2, 3], [7, 8, 9]])
    assert float(next_byte_loss(next_byte, (inputs, inputs + 1))) == pytest.approx(0.0, abs=1e-6)
    assert float(next_byte_loss(next_byte, (inputs, inputs))) == pytest.approx(100.0)


def test_a_pydoc_lm_run_trains_150_steps_and_is_judged_on_64_windows_spread_over_the_validation_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert pydoc_lm_run({"seed": 0}).full_steps == 150
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def recording(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        batches.append(batch)
        return next_byte_loss(model, batch)

    monkeypatch.setattr(tasks, "next_byte_loss", recording)
    result = pydoc_lm_resume({"seed": 0}, scratch_segment(1, 0.01), None)  # 2 steps, then the evaluation
    assert len(result) == 2 and result[1].step == 2 and not result[1].model.training
    inputs, targets = batches[-1]
    assert tuple(inputs.shape) == (64, 64) and torch.equal(inputs[:, 1:], targets[:, :-1])
    _, val = pydoc_bytes()
    span = len(val) - 65  # every window needs 65 bytes: 64 inputs and the byte after the last
    step = next(s for s in range(1, span) if torch.equal(inputs[1], val[s : s + 64]))
    assert torch.equal(inputs[0], val[:64]) and torch.equal(inputs[63], val[63 * step : 63 * step + 64])
    assert 64 * step <= span < 65 * step  # evenly spread, the 64 windows reach the end of the text


def test_the_digits_model_scores_ten_classes() -> None:
    assert tuple(digits_cnn()(torch.zeros(2, 1, 8, 8)).shape) == (2, 10)


def test_a_run_never_saved_restores_to_nothing_and_keeps_its_weights() -> None:
    run = pydoc_lm_run({"seed": 0})
    run.train(scratch_segment(1, 0.01))  # the optimizer exists, no checkpoint was taken
    before = {name: value.clone() for name, value in run.model.state_dict().items()}
    run.restore()
    after = run.model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_a_run_sets_each_steps_learning_rate_and_takes_each_steps_gradient_alone() -> None:
    from torch import nn

    from layerprof.fidelity.tasks import FrozenRun

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False))
    config = {"optimizer": "sgd", "learning_rate": 0.1, "warmup_fraction": 0.5, "weight_decay": 0.0}
    run = FrozenRun(
        model, config, 4, lambda step: torch.ones(1, 1), lambda m, batch: m(batch).sum(), lambda m: m(torch.ones(1, 1))
    )
    run.train(scratch_segment(1, 1.0))  # 4 steps, the last layer only: its gradient is the frozen first weight
    assert run.step == 4 and run.optimizer is not None
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * schedule(config, 4)(3))
    first, last = model[0].weight, model[1].weight
    assert last.grad is not None and torch.equal(last.grad, first.detach())  # the last step's, not four summed


def test_digits_pixels_lie_in_0_to_1_and_the_stem_takes_one_channel() -> None:
    train_x, _, val_x, _ = digits_data.__wrapped__()  # not the cached tensors: this call's own
    assert float(torch.cat([train_x, val_x]).min()) == 0.0 and float(torch.cat([train_x, val_x]).max()) == 1.0
    model = digits_cnn()
    assert tuple(model[0](train_x[:2]).shape) == (2, 16, 8, 8)  # the stem keeps the 8x8 image
    assert tuple(model(train_x[:2]).shape) == (2, 10)


def test_the_pydoc_lm_has_four_blocks_of_four_heads() -> None:
    model = tasks.pydoc_lm_model()
    assert (len(model.transformer.h), model.config.n_head, model.config.n_embd) == (4, 4, 64)
