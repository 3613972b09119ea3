"""Frozen layers replayed from the record of an alike one give every figure of the exhaustive trace, to the byte;
layers that differ, or that cannot be checked, are traced."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from layerprof.parsing import LayerSelection
from layerprof.predict.calibration import default_time_model
from layerprof.predict.estimate import estimate_model
from layerprof.predict.fit import fit_model
from layerprof.predict.reuse import BlockRecords
from layerprof.profile import Profile, SweepSettings
from layerprof.sources.models import ModelOptions, split_without_memory
from tests.predict.test_compose import SMALL_LLAMA

BLOCKS = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.norm = nn.BatchNorm2d(width)

    def forward(self, x):
        return x + torch.relu(self.norm(self.conv(x)))


class Keeping(Block):
    def forward(self, x):
        self.kept = self.conv(x)  # outlives the call: a record of it cannot be replayed
        return x + torch.relu(self.norm(self.kept))


def head():
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)]


def pooled():  # alike blocks on 16x16 inputs, then on 8x8 ones
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Block(), Block(), Block(), nn.MaxPool2d(2), Block(), Block(),
                         *head())


def hooked():  # a hook on a module inside a block: that block is traced
    model = pooled()
    model[2].conv.register_forward_hook(lambda module, args, output: None)
    return model


def keeping():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Keeping(), Keeping(), Keeping(), *head())


class Inner(Block):  # a Block without its own residual
    def forward(self, x):
        return torch.relu(self.norm(self.conv(x)))


class Outside(nn.Module):  # the residual outside the blocks: each block's input is also taken by the sum after it
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList([Inner() for _ in range(4)])
        self.head = nn.Sequential(*head())

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def outside():
    return Outside()
"""


def exhaustive_and_reused(
    spec: str,
    options: ModelOptions,
    batch_sizes: tuple[int, ...],
    target: str = "cuda",
    precision: str = "32-true",
    every_z: bool = True,
) -> tuple[Profile, Profile, BlockRecords]:
    """The estimate with every layer traced and with frozen layers replayed (every z, or 1, n // 2 and n)."""
    n = len(split_without_memory(spec, options)[1])
    zs = tuple(range(1, n + 1)) if every_z else (1, n // 2, n)
    settings = SweepSettings(batch_sizes, zs, target=target, precision=precision)
    time_model = default_time_model(settings)
    exhaustive = estimate_model(spec, options, settings, time_model=time_model, compose=False, reuse=False)
    blocks = BlockRecords()
    reused = estimate_model(spec, options, settings, time_model=time_model, compose=False, blocks=blocks)
    return exhaustive, reused, blocks


def assert_identical(exhaustive: Profile, reused: Profile) -> None:
    assert len(exhaustive.rows) == len(reused.rows)
    for traced, row in zip(exhaustive.rows, reused.rows, strict=True):
        assert row.ok, row.message
        assert asdict(row) == asdict(traced), row.key  # FLOPs, memory by category, predicted times: every field


@pytest.mark.parametrize(
    ("spec", "options", "batch_sizes", "target", "precision", "every_z", "replayed", "trained", "steps"),
    [
        # layers: embedding, 6 blocks, final norm, head (z = 1..9). Per batch size 27 frozen block calls over the 9
        # cells (6 + 6 + 5 + ... + 1): the first traced, 26 replayed; the frozen embedding (z = 1..8) is traced in
        # the first cell and replayed in 7; the final norm is frozen at z = 1 only: 33 per batch size.
        # Trainable calls whose input needs a gradient, per batch size: the head at z = 2..9 (8), the final norm
        # at z = 3..9 (7), blocks 1 + 2 + ... + 6 (21); each traced once: 33 replayed. Batch 3's optimizer steps
        # replay batch 1's (the same parameters and layouts): 9
        ("pythia-14m", ModelOptions(seq_len=32), (1, 3), "cuda", "32-true", True, 66, 66, 9),
        # z = 1, 4, 9: 8 frozen calls at z = 1 (embedding, 6 blocks, norm), 5 at z = 4: 10 replayed. Under
        # autocast a block's float32 weights' casts outlive its call in autocast's cache (not in the graph): blocks
        # are traced; the head and the norm, recorded at z = 4, replay at z = 9
        ("pythia-14m", ModelOptions(seq_len=16), (2,), "cpu", "bf16-mixed", False, 10, 2, 0),
        # at z = n the lowest decoder layer is the last to hold the rotary tables its record's layer shared: the
        # replay finds it and the cell is traced again without that record
        ("hf:llama", ModelOptions(seq_len=16, overrides=SMALL_LLAMA), (2,), "cuda", "32-true", False, 13, 12, 0),
        # a CNN's stages differ in width and resolution: a frozen layer replays its own record of an earlier cell
        ("resnet18", ModelOptions(input_shape=(3, 16, 16)), (2,), "cuda", "32-true", False, 7, 4, 0),
    ],
)
def test_replayed_layers_give_the_exhaustive_figures(
    spec: str,
    options: ModelOptions,
    batch_sizes: tuple[int, ...],
    target: str,
    precision: str,
    every_z: bool,
    replayed: int,
    trained: int,
    steps: int,
) -> None:
    """Frozen layers, trainable blocks (forward and backward) and optimizer steps replayed: every field of every
    row as the exhaustive trace has it."""
    exhaustive, reused, blocks = exhaustive_and_reused(spec, options, batch_sizes, target, precision, every_z)
    assert_identical(exhaustive, reused)
    assert (blocks.replayed, blocks.trained.replayed, blocks.steps.replayed) == (replayed, trained, steps)


def test_alike_blocks_on_inputs_of_another_shape_are_not_replayed(tmp_path: Path) -> None:
    """Blocks 1-3 see 16x16 inputs and blocks 5-6 8x8 ones: the same module, another call. A replay keyed on the
    module alone gives the 8x8 blocks the 16x16 blocks' allocations."""
    (tmp_path / "blocks.py").write_text(BLOCKS)
    options = ModelOptions(input_shape=(3, 16, 16), num_classes=5)
    exhaustive, reused, blocks = exhaustive_and_reused(f"{tmp_path / 'blocks.py'}:pooled", options, (4,))
    assert_identical(exhaustive, reused)
    # layers 0 (conv), 1-3 and 5-6 (blocks), 9 (head): 21 frozen calls over z = 1..7, three recorded (the conv,
    # a block on 16x16, a block on 8x8) and 18 replayed
    assert (blocks.traced, blocks.replayed) == (3, 18)


@pytest.mark.parametrize(("factory", "replayed"), [("hooked", 14), ("keeping", 3)])
def test_blocks_that_cannot_be_checked_are_traced(tmp_path: Path, factory: str, replayed: int) -> None:
    """A hook inside a block could do anything: that block is traced at every call (of 21 frozen calls, 4 are the
    hooked block's and 3 recorded: 14 replayed). A block that keeps a tensor past its call leaves more than its
    output alive: never replayed (only the conv in front of the blocks replays, in 3 of the 4 cells it is frozen)."""
    (tmp_path / "blocks.py").write_text(BLOCKS)
    options = ModelOptions(input_shape=(3, 16, 16), num_classes=5)
    exhaustive, reused, blocks = exhaustive_and_reused(f"{tmp_path / 'blocks.py'}:{factory}", options, (4,))
    assert_identical(exhaustive, reused)
    assert blocks.replayed == replayed


def test_fit_with_replayed_blocks_answers_as_the_exhaustive_search() -> None:
    options = ModelOptions(seq_len=32)
    settings = SweepSettings((), (), target="cuda")
    selection = LayerSelection("1,5,9")  # of 9 z: the frozen blocks of each search's traces replay
    exhaustive = fit_model("pythia-14m", options, settings, 1200 * 2**20, selection, reuse=False)
    reused = fit_model("pythia-14m", options, settings, 1200 * 2**20, selection)
    assert [asdict(r) for r in reused.results] == [asdict(r) for r in exhaustive.results]
    assert reused.traces == exhaustive.traces


def test_trainable_blocks_whose_input_is_taken_outside_are_not_replayed(tmp_path: Path) -> None:
    """`x = x + block(x)`: the sum after each block takes its input too, so more than the block's backward runs
    between the gradients of its output and of its input. The step's graph shows it: no trainable block is recorded
    or replayed, and the figures are the exhaustive trace's."""
    (tmp_path / "blocks.py").write_text(BLOCKS)
    options = ModelOptions(input_shape=(3, 16, 16), num_classes=5)
    exhaustive, reused, blocks = exhaustive_and_reused(f"{tmp_path / 'blocks.py'}:outside", options, (4,))
    assert_identical(exhaustive, reused)
    recorded = {type_name(key): record is not None for key, record in blocks.trained.records.items()}
    assert recorded == {"Inner": False, "Linear": True}  # the head, whose input only it takes, replays


def type_name(key: object) -> str:
    """The class of the layer a trainable call's key is for."""
    assert isinstance(key, tuple)
    return str(key[0][1].__name__)
