"""measure/optimizers.py part by part (issue 40's mutation survivors): each optimizer's options as built (class,
learning rate, betas, weight decay, foreach or fused), and the state the untraced optimizers are primed with."""

from __future__ import annotations

import pytest
import torch

from layerprof.measure.optimizers import make_optimizer, optimizer_spec

# what make_optimizer(name, ..., 0.01, weight_decay=0.05, beta1=0.8, beta2=0.95, foreach=False) builds
BUILT = {
    "adamw": (torch.optim.AdamW, {"betas": (0.8, 0.95), "foreach": False, "fused": None}),
    "adam": (torch.optim.Adam, {"betas": (0.8, 0.95), "foreach": False, "fused": None}),
    "adamw-fused": (torch.optim.AdamW, {"betas": (0.8, 0.95), "foreach": None, "fused": True}),
    "adamw-foreach": (torch.optim.AdamW, {"betas": (0.8, 0.95), "foreach": True, "fused": None}),
    "sgd": (torch.optim.SGD, {"momentum": 0.8, "foreach": False}),
    "sgd-plain": (torch.optim.SGD, {"momentum": 0.0, "foreach": False}),
    "adafactor": (torch.optim.Adafactor, {"foreach": False}),
    "adamw8bit": (None, {"betas": (0.8, 0.95)}),
}


@pytest.mark.parametrize("name", list(BUILT))
def test_each_optimizer_gets_its_learning_rate_betas_decay_and_implementation(name: str) -> None:
    params = list(torch.nn.Linear(4, 4).parameters())
    optimizer = make_optimizer(name, params, 0.01, weight_decay=0.05, beta1=0.8, beta2=0.95, foreach=False)
    kind, options = BUILT[name]
    assert type(optimizer) is kind if kind is not None else type(optimizer).__name__ == "AdamW8bit"
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.01, 0.05)
    assert {key: group[key] for key in options} == options


def test_no_weight_decay_given_keeps_the_librarys_default() -> None:
    params = list(torch.nn.Linear(4, 4).parameters())
    assert make_optimizer("adamw", params, 0.01).param_groups[0]["weight_decay"] == 0.01  # AdamW's own
    assert make_optimizer("adam", params, 0.01).param_groups[0]["weight_decay"] == 0.0
    assert make_optimizer("adamw8bit", params, 0.01).param_groups[0]["weight_decay"] == 0.01  # torchao's


def test_the_8bit_state_is_primed_as_torchaos_first_step_makes_it() -> None:
    weight = torch.nn.Parameter(torch.randn(64, 64))  # 4096 values: quantized
    optimizer = make_optimizer("adamw8bit", [weight], 1e-3)
    state = optimizer_spec("adamw8bit").prime_state(optimizer, weight)
    assert list(state) == ["step", "exp_avg", "exp_avg_sq"]
    assert (state["step"].item(), state["step"].dtype) == (0.0, torch.float32)
    assert (state["exp_avg"].signed, state["exp_avg_sq"].signed) == (True, False)  # the first moment has a sign


def test_adafactor_is_primed_for_the_one_parameter_asked_alone() -> None:
    only = torch.nn.Parameter(torch.randn(3, 5))
    alone = torch.optim.Adafactor([only])
    assert set(optimizer_spec("adafactor").prime_state(alone, only)) == {"step", "row_var", "col_var"}
    first, second = torch.nn.Parameter(torch.randn(3, 5)), torch.nn.Parameter(torch.randn(7))
    optimizer = torch.optim.Adafactor([first, second])
    first.grad = torch.ones_like(first)  # another parameter of its group, with a gradient: not primed with it
    state = optimizer_spec("adafactor").prime_state(optimizer, second)
    assert set(state) == {"step", "variance"} and state["variance"].shape == (7,)
    assert list(optimizer.state) == [second] and second.grad is None
