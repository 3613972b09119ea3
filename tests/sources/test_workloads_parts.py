"""workloads.py part by part (issue 40's mutation survivors): what each family counts as throughput, the batches it
makes, the loss it trains on, and which of a model's outputs that loss reads."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from layerprof.errors import LayerprofError
from layerprof.sources.workloads import CustomWorkload, Workload, output_tensors

LM = Workload("causal-lm", seq_len=63, vocab_size=2)
IMAGES = Workload("image-classification", input_shape=(3, 4, 4), num_classes=10)
TENSORS = Workload("tensor-input", input_shape=(5,))


def test_each_family_counts_its_own_items() -> None:
    custom = CustomWorkload(nn.Linear(2, 2), lambda b, d: torch.zeros(b, 2), items_per_sample=7, item_name="frames")
    with_custom = Workload("tensor-input", custom=custom)
    assert [(w.item_name, w.items_per_batch(4)) for w in (LM, IMAGES, TENSORS, with_custom)] == [
        ("tokens", 4 * 63),
        ("samples", 4),
        ("samples", 4),
        ("frames", 28),
    ]
    assert (with_custom.describe().items_per_sample, LM.describe().items_per_sample) == (7, None)


def test_each_family_makes_its_batch() -> None:
    torch.manual_seed(0)
    inputs, targets = LM.make_batch(64, torch.device("cpu"))
    assert (inputs.shape, targets.shape) == ((64, 63), (64, 63))
    assert (int(inputs.min()), int(inputs.max())) == (0, 1)  # every token of the vocabulary, 0 included
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # the next token is the target
    images, labels = IMAGES.make_batch(64, torch.device("cpu"), torch.float64)
    assert (images.shape, images.dtype, labels.shape) == ((64, 3, 4, 4), torch.float64, (64,))
    assert (int(labels.min()), int(labels.max())) == (0, 9)  # every class, 0 included
    (tensor,) = TENSORS.make_batch(3, torch.device("cpu"))
    assert tensor.shape == (3, 5)


def test_an_image_classifier_trains_on_the_cross_entropy_of_its_logits() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 10))
    images, labels = IMAGES.make_batch(8, torch.device("cpu"))
    expected = F.cross_entropy(model(images), labels)
    assert torch.equal(IMAGES.loss(model, (images, labels)), expected)


def test_the_loss_reads_the_logits_of_a_dict_the_first_tensor_of_a_tuple_and_heads_of_the_class_count() -> None:
    logits, hidden = torch.zeros(2, 5, 7), torch.zeros(2, 5, 3)
    assert output_tensors({"logits": logits, "hidden": hidden}, "causal-lm")[0] is logits
    assert output_tensors((logits, hidden), "causal-lm")[0] is logits  # the first tensor alone
    heads = torch.zeros(4, 10), torch.zeros(4, 10), torch.zeros(4, 3)
    assert [t is h for t, h in zip(output_tensors(heads, "image-classification", 10), heads[:2], strict=True)] == [
        True,
        True,
    ]  # the auxiliary head trains too; the (4, 3) tensor is no head
    with pytest.raises(LayerprofError, match=r"logits of shape \(batch, 10\)"):
        output_tensors(torch.zeros(10, 4), "image-classification", 10)  # transposed


def test_a_tensor_models_loss_is_the_mean_square_of_every_output() -> None:
    model = nn.Linear(5, 2)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    inputs = torch.ones(3, 5)  # every output is 5.0
    assert TENSORS.loss(model, (inputs,)).item() == 25.0


def test_outputs_no_loss_can_read_are_refused_saying_what_came_back() -> None:
    tensor = torch.zeros(1)
    for output, said in [
        (5, "the model returned a int; next-token loss needs logits of shape (batch, tokens, vocabulary)"),
        ({"hidden": tensor}, "the model returned a dict with keys hidden; next-token loss"),
        (torch.zeros(2, 7), "the model returned a tensor of shape (2, 7); next-token loss"),  # no token axis
        ((tensor,) * 3, "the model returned a tuple of 3 (a tensor of shape (1,), a tensor of shape (1,), a tensor "
         "of shape (1,)); next-token loss"),
        ((tensor,) * 4, "the model returned a tuple of 4 (a tensor of shape (1,), a tensor of shape (1,), a tensor "
         "of shape (1,), ...); next-token loss"),
    ]:  # fmt: skip
        with pytest.raises(LayerprofError) as refused:
            output_tensors(output, "causal-lm")
        assert str(refused.value).startswith(said), output
