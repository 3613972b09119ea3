"""Each optimizer's state bytes per parameter, pinned against the real optimizer after one step, and the
estimate's state (a fake-tensor step, or the library's own rules where its step cannot run there) to the byte."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from layerprof.errors import LayerprofError
from layerprof.measure.instruments import optimizer_state_bytes
from layerprof.measure.optimizers import OPTIMIZER_SPECS, OPTIMIZERS, make_optimizer, optimizer_spec
from layerprof.predict.estimate import prime_optimizer
from layerprof.profile import OPTIMIZER_NAMES

# one Linear(64, 64): a 4096-value weight (the smallest torchao quantizes) and a 64-value bias
WEIGHT, BIAS = 64 * 64, 64
STATE_BYTES = {
    "adamw": 2 * 4 * (WEIGHT + BIAS) + 2 * 4,  # two float32 moments per value, a float32 step per tensor
    "adam": 2 * 4 * (WEIGHT + BIAS) + 2 * 4,
    "adamw-fused": 2 * 4 * (WEIGHT + BIAS) + 2 * 4,
    "adamw-foreach": 2 * 4 * (WEIGHT + BIAS) + 2 * 4,
    "sgd": 4 * (WEIGHT + BIAS),  # the momentum buffer
    "sgd-plain": 0,
    "adafactor": 4 * (64 + 64) + 4 * BIAS + 2 * 4,  # row and column variances; the bias's full variance; steps
    # 8-bit codes + a float32 scale per 256 values + a 256-entry float32 code map, twice; the bias stays float32
    "adamw8bit": 2 * (WEIGHT + WEIGHT // 256 * 4 + 256 * 4) + 2 * 4 * BIAS + 2 * 4,
}


def one_step(name: str) -> torch.optim.Optimizer:
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 64)
    optimizer = make_optimizer(name, list(layer.parameters()), 1e-3)
    layer(torch.randn(2, 64)).sum().backward()
    # torchao compiles its step: the first compile takes minutes on a CPU; eager runs the same state
    with torch.compiler.set_stance("force_eager"):
        optimizer.step()
    return optimizer


def test_every_optimizer_name_has_one_spec_and_a_pinned_figure() -> None:
    assert tuple(OPTIMIZER_SPECS) == OPTIMIZER_NAMES == OPTIMIZERS
    assert set(STATE_BYTES) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_bytes_after_one_real_step_and_on_fake_tensors(name: str) -> None:
    real = one_step(name)
    assert optimizer_state_bytes(real) == STATE_BYTES[name]
    with FakeTensorMode():
        layer = torch.nn.Linear(64, 64)
        params = list(layer.parameters())
        optimizer = make_optimizer(name, params, 1e-3)
        prime_optimizer(optimizer, params, None, optimizer_spec(name))
        assert optimizer_state_bytes(optimizer) == STATE_BYTES[name]


def test_the_8bit_state_follows_torchao_and_quantizes_only_large_tensors() -> None:
    real = one_step("adamw8bit")
    weight_state = real.state[next(p for p in real.param_groups[0]["params"] if p.dim() == 2)]
    assert type(weight_state["exp_avg"]).__name__ == "OptimState8bit"
    assert weight_state["exp_avg"].codes.dtype == torch.uint8
    untraced = {name for name, spec in OPTIMIZER_SPECS.items() if not spec.traced}
    assert untraced == {"adafactor", "adamw8bit"}  # their steps call .item(): fake tensors hold no values


def test_sgd_keeps_its_momentum_and_sgd_plain_has_none() -> None:
    assert one_step("sgd").param_groups[0]["momentum"] == 0.9
    assert one_step("sgd-plain").param_groups[0]["momentum"] == 0.0
    assert one_step("adamw-fused").param_groups[0]["fused"] is True
    assert one_step("adamw-foreach").param_groups[0]["foreach"] is True


def test_an_unknown_optimizer_names_the_choices() -> None:
    with pytest.raises(LayerprofError, match="unknown optimizer 'lion'; choose from adamw, adam, sgd"):
        optimizer_spec("lion")
