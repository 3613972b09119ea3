"""Built-in tasks for `layerprof correlate`: real data that ships with installed packages, small enough for a CPU.

* `digits`: scikit-learn's 1,797 handwritten digits (8x8, ten classes; `sklearn.datasets.load_digits`
  reads them from the package, no download), a small residual CNN split into 6 layers.
* `pydoc-lm`: a byte-level LitGPT model on CPython's own documentation text (`pydoc_data.topics`, about
  465 KB of English that every Python installation carries), split into 7 layers (embedding, 4 blocks,
  final norm, head).

Each task is `fn(config, trainable_layers, budget_fraction) -> validation loss`, the same protocol as a
user task, and continues a run with `fn.resume(config, segment, state) -> (loss, state)` (`correlate
--continue`); a from-scratch trial is a run of one segment, so the two train alike. Configurations use the
hyperparameters of the paper's Table 1. A task's attributes say what `simulate` needs to price its trials from
a profile: `layer_count`, `full_steps` (steps at budget 1), `batch_size`, and `profile_spec` (the MODEL to
profile: `layerprof.fidelity.tasks:digits_workload` here).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from layerprof.errors import LayerprofError
from layerprof.fidelity.grids import DEFAULTS, Config
from layerprof.fidelity.trials import Segment, TaskState, segments, trial_phase
from layerprof.measure.optimizers import OPTIMIZERS, make_optimizer
from layerprof.sources.layers import FrozenModel, freeze_layers, split_layers
from layerprof.sources.workloads import CustomWorkload


def optimizer_for(config: Config, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer a grid configuration names, with its learning rate, weight decay and betas."""
    settings = {**DEFAULTS, **config}
    name = str(settings["optimizer"]).lower()
    if name not in OPTIMIZERS:
        raise LayerprofError(f"optimizer {name!r} in the grid: choose one of {', '.join(OPTIMIZERS)}")
    return make_optimizer(
        name,
        params,
        float(settings["learning_rate"]),
        weight_decay=float(settings["weight_decay"]),
        beta1=float(settings["beta1"]),
        beta2=float(settings["beta2"]),
    )


def schedule(config: Config, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up, constant, linear cool-down to zero (fractions of the run)."""
    warmup = int(float(config.get("warmup_fraction", 0.0)) * total_steps)
    cooldown = int(float(config.get("cooldown_fraction", 0.0)) * total_steps)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cooldown and step >= total_steps - cooldown:
            return max(0.0, (total_steps - step) / cooldown)
        return 1.0

    return factor


Batch = Any  # a task's own training batch (tensors, tuples of them): anything its loss_of reads


class FrozenRun:
    """A training run that can continue: the model, the optimizer over its trainable layers and the step
    reached. Thawing more layers keeps every weight and the optimizer state of the layers already training; the
    newly thawed layers start with fresh optimizer state (Adam's moments and step count, SGD's momentum).

    The learning rate of step k is the configuration's times `schedule(config, total)(k)`, where `total` is the
    whole run's steps (the segment says it): a continued run follows the schedule of its final budget, resumed at
    the step reached. `next_batch(step)` gives the training batch of a step, so a run continued in segments sees
    the batches one uninterrupted run would."""

    def __init__(
        self,
        model: nn.Module,
        config: Config,
        full_steps: int,
        next_batch: Callable[[int], Batch],
        loss_of: Callable[[nn.Module, Batch], torch.Tensor],
        example: Callable[[nn.Module], object],
    ) -> None:
        self.model = model
        self.config = config
        self.full_steps = full_steps
        self.next_batch = next_batch
        self.loss_of = loss_of
        self.layers = split_layers(model, run_forward=example)
        self.learning_rate = float({**DEFAULTS, **config}["learning_rate"])
        self.trainable_layers = 0
        self.step = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self._frozen: FrozenModel | None = None
        self._checkpoint: bytes | None = None

    def save(self) -> None:
        """Save the weights and the optimizer state, as a scheduler that pauses a trial at the end of a rung does
        (to memory: the serialisation, not the disk), timed as checkpoint."""
        import io

        assert self.optimizer is not None
        buffer = io.BytesIO()
        with trial_phase("checkpoint"):
            torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}, buffer)
        self._checkpoint = buffer.getvalue()

    def restore(self) -> None:
        """Load the last checkpoint back into the run, as a promoted trial resumes from it, timed as checkpoint."""
        import io

        if self._checkpoint is None or self.optimizer is None:
            return
        with trial_phase("checkpoint"):
            saved = torch.load(io.BytesIO(self._checkpoint), weights_only=True)
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])

    def thaw(self, trainable_layers: int) -> None:
        """Train the last `trainable_layers` layers from now on (at least as many as so far)."""
        if not 1 <= trainable_layers <= len(self.layers):
            raise LayerprofError(f"trainable layers must be in 1..{len(self.layers)}, got {trainable_layers}")
        if trainable_layers < self.trainable_layers:
            raise LayerprofError(
                f"a run training {self.trainable_layers} layers cannot freeze back to {trainable_layers}"
            )
        if trainable_layers == self.trainable_layers:
            return
        if self._frozen is not None:
            self._frozen.remove()
        self._frozen = freeze_layers(self.model, self.layers, trainable_layers)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = optimizer_for(self.config, params)
        if self.optimizer is not None:  # the layers already training keep their state; the thawed ones have none
            for param in params:
                if param in self.optimizer.state:
                    optimizer.state[param] = self.optimizer.state[param]
        self.optimizer = optimizer
        self.trainable_layers = trainable_layers

    def train(self, segment: Segment) -> None:
        """Thaw to the segment's z and train its steps, timed as training."""
        start, end, total = segment.steps(self.full_steps)
        if start != self.step:
            raise LayerprofError(f"segment {segment.index} starts at step {start}, but the run is at step {self.step}")
        self.thaw(segment.trainable_layers)
        assert self.optimizer is not None
        factor = schedule(self.config, total)
        self.model.train()
        with trial_phase("training"):
            for step in range(start, end):
                for group in self.optimizer.param_groups:
                    group["lr"] = self.learning_rate * factor(step)
                loss = self.loss_of(self.model, self.next_batch(step))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        self.step = end


def scratch_segment(trainable_layers: int, budget_fraction: float) -> Segment:
    """A from-scratch trial as the one segment of a run."""
    return segments([(trainable_layers, budget_fraction)])[0]


def describe_task(
    task: Callable,
    layer_count: int,
    full_steps: int,
    batch_size: int,
    profile_spec: str,
    resume: Callable[[Config, Segment, TaskState], tuple[float, TaskState]] | None = None,
    eval_samples: int = 0,
) -> None:
    """Attach what `correlate` and `simulate` read from a task (a user task may set the same attributes)."""
    task.layer_count = layer_count  # type: ignore[attr-defined]
    task.eval_samples = eval_samples  # type: ignore[attr-defined]  # evaluated after every rung, priced by simulate
    task.full_steps = full_steps  # type: ignore[attr-defined]
    task.batch_size = batch_size  # type: ignore[attr-defined]
    task.profile_spec = profile_spec  # type: ignore[attr-defined]
    if resume is not None:
        task.resume = resume  # type: ignore[attr-defined]


# ---------------------------------------------------------------- digits


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a skip connection: the layer the digits task stacks."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(x + the block's output): the same shape as `x`."""
        return F.relu(x + self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x))))))


def digits_cnn(channels: int = 16) -> nn.Sequential:
    """stem conv, stem norm, three residual blocks, head: 6 layers."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1, bias=False),
        nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU()),
        ResidualBlock(channels),
        ResidualBlock(channels),
        ResidualBlock(channels),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)),
    )


@lru_cache(maxsize=1)
def digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits, split into training and validation tensors (shipped, no download)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise LayerprofError("the digits task needs scikit-learn: pip install 'layerprof[tasks]'") from None
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    return images[:1400], labels[:1400], images[1400:], labels[1400:]


DIGITS_FULL_STEPS = 200
DIGITS_BATCH = 32


def digits_run(config: Config) -> FrozenRun:
    """A fresh digits run: the model, its batches (seeded by the configuration's seed) and nothing trained."""
    train_x, train_y, _, _ = digits_data()
    generator = torch.Generator().manual_seed(int(config.get("seed", 0)))

    def next_batch(_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, len(train_y), (DIGITS_BATCH,), generator=generator)
        return train_x[index], train_y[index]

    def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(model(batch[0]), batch[1])

    return FrozenRun(digits_cnn(), config, DIGITS_FULL_STEPS, next_batch, loss_of, lambda m: m(train_x[:2]))


def digits_resume(config: Config, segment: Segment, state: FrozenRun | None) -> tuple[float, FrozenRun]:
    """Train one segment of a digits run (a fresh one when `state` is None, else restored from its checkpoint);
    the validation loss and the run, saved to a checkpoint where more rungs follow."""
    run = _resumed(state, config, digits_run)
    run.train(segment)
    _, _, val_x, val_y = digits_data()
    run.model.eval()
    with trial_phase("evaluation"), torch.no_grad():
        loss = float(F.cross_entropy(run.model(val_x), val_y))
    return loss, _paused(run, segment)


def _resumed(state: FrozenRun | None, config: Config, fresh: Callable[[Config], FrozenRun]) -> FrozenRun:
    """A continued run restored from its checkpoint, or a fresh one."""
    if state is None:
        return fresh(config)
    state.restore()
    return state


def _paused(run: FrozenRun, segment: Segment) -> FrozenRun:
    """The run, saved to a checkpoint where the run goes on after this segment (a from-scratch trial does not)."""
    if segment.end_fraction < segment.total_fraction:
        run.save()
    return run


def digits_task(config: Config, trainable_layers: int, budget_fraction: float) -> float:
    """Validation cross-entropy of the residual CNN after `budget_fraction` of DIGITS_FULL_STEPS at batch 32."""
    return digits_resume(config, scratch_segment(trainable_layers, budget_fraction), None)[0]


def digits_workload() -> CustomWorkload:
    """The digits task's model and batch for `layerprof profile layerprof.fidelity.tasks:digits_workload`, so that a
    profile prices exactly what the task trains (random images: the step costs the same)."""

    def make_batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(batch_size, 1, 8, 8, device=device), torch.randint(0, 10, (batch_size,), device=device)

    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(model(batch[0]), batch[1])

    return CustomWorkload(model=digits_cnn(), make_batch=make_batch, loss=loss)


describe_task(
    digits_task, 6, DIGITS_FULL_STEPS, DIGITS_BATCH, "layerprof.fidelity.tasks:digits_workload", digits_resume, 397
)  # 1,797 digits, 1,400 to train on


# ---------------------------------------------------------------- byte-level language model


@lru_cache(maxsize=1)
def pydoc_bytes() -> tuple[torch.Tensor, torch.Tensor]:
    """Python's own pydoc text as bytes: a corpus that ships with every Python (no download)."""
    import pydoc_data.topics

    text = "\n\n".join(pydoc_data.topics.topics[key] for key in sorted(pydoc_data.topics.topics))
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.long)
    split = int(len(data) * 0.9)
    return data[:split], data[split:]


LM_FULL_STEPS = 150
LM_BATCH = 8
LM_CONTEXT = 64


def _window(data: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.stack([data[s : s + LM_CONTEXT + 1] for s in starts.tolist()])
    return rows[:, :-1], rows[:, 1:]


def pydoc_lm_run(config: Config) -> FrozenRun:
    """A fresh pydoc-lm run: the model, its batches (seeded by the configuration's seed) and nothing trained."""
    train, _ = pydoc_bytes()
    generator = torch.Generator().manual_seed(int(config.get("seed", 0)))

    def next_batch(_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _window(train, torch.randint(0, len(train) - LM_CONTEXT - 1, (LM_BATCH,), generator=generator))

    example = torch.zeros(1, 8, dtype=torch.long)
    return FrozenRun(pydoc_lm_model(), config, LM_FULL_STEPS, next_batch, next_byte_loss, lambda m: m(example))


def pydoc_lm_resume(config: Config, segment: Segment, state: FrozenRun | None) -> tuple[float, FrozenRun]:
    """Train one segment of a pydoc-lm run (a fresh one when `state` is None); the validation loss and the run."""
    run = _resumed(state, config, pydoc_lm_run)
    run.train(segment)
    _, val = pydoc_bytes()
    run.model.eval()
    starts = torch.arange(0, len(val) - LM_CONTEXT - 1, max(1, (len(val) - LM_CONTEXT - 1) // 64))[:64]
    with trial_phase("evaluation"), torch.no_grad():
        loss = float(next_byte_loss(run.model, _window(val, starts)))
    return loss, _paused(run, segment)


def pydoc_lm_task(config: Config, trainable_layers: int, budget_fraction: float) -> float:
    """Validation loss (nats/byte) of a 4-block byte-level LitGPT after `budget_fraction` of LM_FULL_STEPS."""
    return pydoc_lm_resume(config, scratch_segment(trainable_layers, budget_fraction), None)[0]


def pydoc_lm_model() -> nn.Module:
    """The byte-level language model of the pydoc-lm task."""
    from layerprof.sources.builders import litgpt_classes

    Config, GPT = litgpt_classes()  # noqa: N806
    lm_config = Config(
        name="pydoc-lm", block_size=LM_CONTEXT, vocab_size=256, padded_vocab_size=256, n_layer=4, n_head=4, n_embd=64
    )
    return GPT(lm_config)


def next_byte_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of predicting each next byte."""
    logits = model(batch[0])
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[1].reshape(-1))


def pydoc_lm_workload() -> CustomWorkload:
    """The pydoc-lm task's model and batch for `layerprof profile layerprof.fidelity.tasks:pydoc_lm_workload`."""

    def make_batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.randint(0, 256, (batch_size, LM_CONTEXT + 1), device=device)
        return tokens[:, :-1], tokens[:, 1:]

    return CustomWorkload(
        model=pydoc_lm_model(),
        make_batch=make_batch,
        loss=next_byte_loss,
        items_per_sample=LM_CONTEXT,
        item_name="tokens",
    )


describe_task(
    pydoc_lm_task, 7, LM_FULL_STEPS, LM_BATCH, "layerprof.fidelity.tasks:pydoc_lm_workload", pydoc_lm_resume, 64
)  # 64 windows of validation text

TASKS: dict[str, Callable[[Config, int, float], float]] = {
    "digits": digits_task,
    "pydoc-lm": pydoc_lm_task,
}
