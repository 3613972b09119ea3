"""Freezing to z: only the last z layers learn, and the graph never crosses the boundary."""

from __future__ import annotations

import pytest
import torch

from layerprof.sources.layers import freeze_layers, split_layers
from layerprof.sources.models import build_model
from tests.conftest import linear_stack


@pytest.mark.parametrize("trainable_layers", [1, 2, 4])
def test_frozen_layers_get_no_gradient_and_do_not_change(trainable_layers: int) -> None:
    model = linear_stack(depth=4)
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 32)))
    frozen = freeze_layers(model, layers, trainable_layers)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(8, 32)).pow(2).mean().backward()
    first_trainable = 4 - trainable_layers
    for index, param in enumerate(model.parameters()):
        assert (param.grad is not None) == (index >= first_trainable)
    optimizer.step()
    for index, (param, old) in enumerate(zip(model.parameters(), before, strict=True)):
        assert torch.equal(param, old) == (index < first_trainable)
    frozen.remove()


def test_out_of_range_z_is_rejected() -> None:
    model = linear_stack(depth=3)
    layers = split_layers(model)
    with pytest.raises(ValueError, match="1..3"):
        freeze_layers(model, layers, 0)
    with pytest.raises(ValueError, match="1..3"):
        freeze_layers(model, layers, 4)


def test_tied_embedding_prefix_builds_no_graph() -> None:
    loaded = build_model("paper-gpt-14m", device="cpu")
    loaded.model.max_seq_length = 8
    loaded.workload.seq_len = 8
    layers = loaded.split()
    model = loaded.model
    seen: dict[str, bool] = {}
    model.transformer.h[0].register_forward_hook(lambda m, a, out: seen.__setitem__("block0", out.requires_grad))
    model.transformer.ln_f.register_forward_hook(lambda m, a, out: seen.__setitem__("ln_f", out.requires_grad))
    frozen = freeze_layers(model, layers, 1)  # only lm_head, whose weight is the embedding's
    assert model.transformer.wte.weight.requires_grad  # the tied tensor trains
    batch = loaded.workload.make_batch(2, torch.device("cpu"))
    loaded.workload.loss(model, batch).backward()
    assert seen == {"block0": False, "ln_f": False}  # nothing before the head records a graph
    frozen.remove()
    # with every layer trainable the embedding output is part of the graph again
    frozen = freeze_layers(model, layers, len(layers))
    loaded.workload.loss(model, batch).backward()
    assert seen == {"block0": True, "ln_f": True}
    frozen.remove()


def test_remove_restores_an_uncut_graph() -> None:
    model = linear_stack(depth=3)
    layers = split_layers(model)
    frozen = freeze_layers(model, layers, 1)
    frozen.remove()
    for param in model.parameters():
        param.requires_grad_(True)
    model(torch.randn(2, 32)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
