"""Synthetic batches and the training loss for each model family.

Profiling measures the cost of a training step, which depends on shapes, not on values: random images with
random labels and random token ids exercise exactly the kernels that real data would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from layerprof.errors import LayerprofError
from layerprof.profile import Family, WorkloadInfo

# What a workload's make_batch returns and its loss (and a step function) takes: a tensor, a tuple or dict of
# them, whatever the model eats. Only the workload that made the batch reads it, so it is typed as anything.
Batch: TypeAlias = Any


class Scheduler(Protocol):
    """A learning-rate schedule a custom workload hands over (a torch LR scheduler): stepped after each optimizer
    step."""

    def step(self) -> object:
        """Advance the schedule by one optimizer step."""
        ...


@runtime_checkable
class WorkloadLike(Protocol):
    """What a factory may return in place of a `CustomWorkload`: any object with its model, batch maker and loss
    (the other fields of `CustomWorkload` are read where present)."""

    model: nn.Module
    make_batch: Callable[[int, torch.device], Batch]
    loss: Callable[[nn.Module, Batch], torch.Tensor] | None


@dataclass
class CustomWorkload:
    """What a user factory may return instead of a bare module: the model, a batch maker and a loss.

    `make_batch(batch_size, device)` returns anything `loss` accepts; `loss(model, batch)` returns a scalar
    tensor. `unwrap` names container classes to split inside; `items_per_sample` (e.g. tokens per sequence)
    turns samples/s into items/s in the tables.

    For `layerprof audit` (docs/audit.md) the factory also hands over its training set-up as it runs it: the
    model with its own `requires_grad` flags, its `optimizer` (and `scheduler`, optional), and either `loss` or a
    whole `step(model, batch, optimizer)` that runs one training step with the optimizer it is given. `profile`,
    `estimate`, `fit` and `layers` need `loss`; they ignore the rest.
    """

    model: nn.Module
    make_batch: Callable[[int, torch.device], Batch]
    loss: Callable[[nn.Module, Batch], torch.Tensor] | None = None
    unwrap: tuple[str, ...] = ()
    items_per_sample: int = 1
    item_name: str = "samples"
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Scheduler | None = None
    step: Callable[[nn.Module, Batch, torch.optim.Optimizer], object] | None = None


@dataclass
class Workload:
    """How to feed a model and what loss it trains on. `family` picks the batch and the loss."""

    family: Family
    input_shape: tuple[int, ...] | None = None  # per sample, for images and tensor inputs
    num_classes: int | None = None
    seq_len: int | None = None
    vocab_size: int | None = None
    default_batch_sizes: tuple[int, ...] = (32,)
    custom: CustomWorkload | None = field(default=None, repr=False)

    @property
    def item_name(self) -> str:
        """What throughput counts: tokens for a language model, else samples (a custom workload names its own)."""
        if self.custom is not None:
            return self.custom.item_name
        return "tokens" if self.family == "causal-lm" else "samples"

    def items_per_batch(self, batch_size: int) -> int:
        """The items (`item_name`) in a batch of `batch_size`: what throughput counts per step."""
        if self.custom is not None:
            return batch_size * self.custom.items_per_sample
        if self.family == "causal-lm":
            assert self.seq_len is not None
            return batch_size * self.seq_len
        return batch_size

    def make_batch(self, batch_size: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Batch:
        """A random batch on `device`; floating inputs in `dtype`."""
        if self.custom is not None:
            return self.custom.make_batch(batch_size, device)
        if self.family == "causal-lm":
            assert self.seq_len is not None and self.vocab_size is not None
            tokens = torch.randint(0, self.vocab_size, (batch_size, self.seq_len + 1), device=device)
            return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
        assert self.input_shape is not None
        images = torch.randn((batch_size, *self.input_shape), device=device, dtype=dtype)
        if self.family == "image-classification":
            assert self.num_classes is not None
            return images, torch.randint(0, self.num_classes, (batch_size,), device=device)
        return (images,)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The family's loss on what the model returns (`output_tensors` says which of its outputs count)."""
        if self.custom is not None:
            if self.custom.loss is None:
                raise LayerprofError(
                    "the factory gives a step function but no loss; profile, estimate, fit and layers need "
                    "loss(model, batch) (layerprof audit takes either)"
                )
            return self.custom.loss(model, batch)
        if self.family == "causal-lm":
            inputs, targets = batch
            (logits,) = output_tensors(model(inputs), self.family)
            return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        if self.family == "image-classification":
            images, labels = batch
            heads = output_tensors(model(images), self.family, self.num_classes)
            return sum(F.cross_entropy(head.float(), labels) for head in heads)  # type: ignore[return-value]
        (inputs,) = batch
        tensors = output_tensors(model(inputs), self.family)
        # a generic loss that reaches every output element, so that backward runs through the whole model
        return sum(t.float().pow(2).mean() for t in tensors)  # type: ignore[return-value]

    def describe(self) -> WorkloadInfo:
        """The plain data a profile holds."""
        return WorkloadInfo(
            family=self.family,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            seq_len=self.seq_len,
            vocab_size=self.vocab_size,
            items_per_sample=self.custom.items_per_sample if self.custom is not None else None,
            item_name=self.item_name,
        )


OUTPUT_ADVICE = (
    "return a tensor, a tuple whose first element is the logits, or a dict (or ModelOutput) with 'logits'; "
    "or return a layerprof.CustomWorkload with your own loss (docs/models.md: Profiling your own model)"
)


def output_tensors(output: object, family: Family, num_classes: int | None = None) -> list[torch.Tensor]:
    """The tensors of a model's output a family's loss trains on:

    * causal-lm: the logits, (batch, tokens, vocabulary): the tensor returned, `logits` of a dict or ModelOutput,
      else the first tensor of a tuple;
    * image-classification: the logits, (batch, num_classes): the tensor returned, `logits` of a dict, else
      every element of a tuple with that shape (Inception's and GoogLeNet's auxiliary heads train too);
    * tensor-input: every floating tensor in the output, however nested.

    Anything else is a LayerprofError that says what came back and what to return."""
    from torch.utils._pytree import tree_flatten

    if family == "tensor-input":
        tensors = [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
        if not tensors:
            raise LayerprofError(f"the model returned {_describe(output)}, with no floating tensor; {OUTPUT_ADVICE}")
        return tensors
    if isinstance(output, torch.Tensor):
        candidates = [output]
    elif isinstance(output, Mapping):
        logits = output.get("logits")
        candidates = [logits] if isinstance(logits, torch.Tensor) else []
    elif isinstance(output, (tuple, list)):
        tensors = [t for t in output if isinstance(t, torch.Tensor)]
        candidates = tensors[:1] if family == "causal-lm" else tensors
    else:
        candidates = []
    if family == "image-classification":
        heads = [t for t in candidates if t.dim() == 2 and t.size(-1) == num_classes]
        if not heads:
            raise LayerprofError(
                f"the model returned {_describe(output)}; cross-entropy over --num-classes {num_classes} needs "
                f"logits of shape (batch, {num_classes}): {OUTPUT_ADVICE}"
            )
        return heads
    if len(candidates) != 1 or candidates[0].dim() != 3:
        raise LayerprofError(
            f"the model returned {_describe(output)}; next-token loss needs logits of shape "
            f"(batch, tokens, vocabulary): {OUTPUT_ADVICE}"
        )
    return candidates


def _describe(output: object) -> str:
    """`a tensor of shape (2, 4)`, `a dict with keys hidden, pooled`, `a tuple of 2`."""
    if isinstance(output, torch.Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    if isinstance(output, Mapping):
        return f"a {type(output).__name__} with keys {', '.join(map(str, output)) or '(none)'}"
    if isinstance(output, (tuple, list)):
        shapes = ", ".join(_describe(item) for item in output[:3]) + (", ..." if len(output) > 3 else "")
        return f"a {type(output).__name__} of {len(output)} ({shapes})"
    return f"a {type(output).__name__}"
