"""Synthetic batches and the training loss for each model family.

Profiling measures the cost of a training step, which depends on shapes, not on values: random images with
random labels and random token ids exercise exactly the kernels that real data would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from layerprof.profile import WorkloadInfo


@dataclass
class CustomWorkload:
    """What a user factory may return instead of a bare module: the model, a batch maker and a loss.

    `make_batch(batch_size, device)` returns anything `loss` accepts; `loss(model, batch)` returns a scalar
    tensor. `unwrap` names container classes to split inside; `items_per_sample` (e.g. tokens per sequence)
    turns samples/s into items/s in the tables.
    """

    model: nn.Module
    make_batch: Callable[[int, torch.device], Any]
    loss: Callable[[nn.Module, Any], torch.Tensor]
    unwrap: tuple[str, ...] = ()
    items_per_sample: int = 1
    item_name: str = "samples"


@dataclass
class Workload:
    """How to feed a model and what loss it trains on. `family` picks the batch and the loss."""

    family: str  # "image-classification" | "causal-lm" | "tensor-input" | "custom"
    input_shape: tuple[int, ...] | None = None  # per sample, for images and tensor inputs
    num_classes: int | None = None
    seq_len: int | None = None
    vocab_size: int | None = None
    default_batch_sizes: tuple[int, ...] = (32,)
    custom: CustomWorkload | None = field(default=None, repr=False)

    @property
    def item_name(self) -> str:
        if self.custom is not None:
            return self.custom.item_name
        return "tokens" if self.family == "causal-lm" else "samples"

    def items_per_batch(self, batch_size: int) -> int:
        if self.custom is not None:
            return batch_size * self.custom.items_per_sample
        if self.family == "causal-lm":
            assert self.seq_len is not None
            return batch_size * self.seq_len
        return batch_size

    def make_batch(self, batch_size: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Any:
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

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        if self.custom is not None:
            return self.custom.loss(model, batch)
        if self.family == "causal-lm":
            inputs, targets = batch
            output = model(inputs)
            logits = getattr(output, "logits", output)  # transformers returns a ModelOutput
            return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        if self.family == "image-classification":
            images, labels = batch
            outputs = model(images)
            # Inception/GoogLeNet return (logits, aux logits...) in training mode: the aux heads train too
            heads = [outputs] if isinstance(outputs, torch.Tensor) else [o for o in outputs if o is not None]
            return sum(F.cross_entropy(head.float(), labels) for head in heads)  # type: ignore[return-value]
        (inputs,) = batch
        output = model(inputs)
        tensors = [output] if isinstance(output, torch.Tensor) else [o for o in output if torch.is_tensor(o)]
        # a generic loss that reaches every output element, so that backward runs through the whole model
        return sum(t.float().pow(2).mean() for t in tensors)  # type: ignore[return-value]

    def describe(self) -> WorkloadInfo:
        return WorkloadInfo(
            family=self.family,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            seq_len=self.seq_len,
            vocab_size=self.vocab_size,
            items_per_sample=self.custom.items_per_sample if self.custom is not None else None,
            item_name=self.item_name,
        )
