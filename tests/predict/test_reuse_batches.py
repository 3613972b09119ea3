"""Trainable blocks' records scaled across batch sizes: at a batch size no step ran yet, the alike blocks after the
first are replayed from a record scaled from two other batch sizes, which the first block's own trace must equal;
every figure is the exhaustive trace's, and a block whose bytes do not scale is caught and traced."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from layerprof.predict.calibration import default_time_model
from layerprof.predict.estimate import estimate_model
from layerprof.predict.fit import FitSearch
from layerprof.predict.reuse import BlockRecords, TrainedRecords
from layerprof.profile import Profile, SweepSettings
from layerprof.sources.models import ModelOptions, split_without_memory
from tests.predict.test_compose import SMALL_LLAMA
from tests.predict.test_reuse import assert_identical, type_name

FOUR_LAYER_LLAMA = {**SMALL_LLAMA, "num_hidden_layers": "4"}

BLOCKS = """
import torch
from torch import nn


class Gram(torch.autograd.Function):
    # forward: twice the input; backward: also a (batch x batch) product of the saved input, whose bytes grow as
    # the batch squared, on no line through two batch sizes

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        flat = x.flatten(1)
        gram = flat @ flat.t()
        return grad * 2 + gram.sum() * 0


class Block(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x):
        return torch.relu(self.linear(x))


class SquareBackward(Block):
    def forward(self, x):
        return Gram.apply(torch.relu(self.linear(x)))


class SquareForward(Block):  # a (batch x batch) temporary in the forward
    def forward(self, x):
        gram = x @ x.t()
        return torch.relu(self.linear(x)) + gram.mean() * 0


def stack(kind):
    return nn.Sequential(nn.Linear(4, 8), *[kind() for _ in range(4)], nn.Linear(8, 3))


def square_backward():
    return stack(SquareBackward)


def square_forward():
    return stack(SquareForward)
"""


def full_training(
    spec: str, options: ModelOptions, batch_sizes: tuple[int, ...], target: str = "cuda"
) -> tuple[Profile, Profile, BlockRecords]:
    """The estimate at z = n (every block trainable, as a fit's largest z) with every layer traced and with
    blocks replayed: at each batch size the first step holds all the alike blocks a record is made for."""
    n = len(split_without_memory(spec, options)[1])
    settings = SweepSettings(batch_sizes, (n,), target=target)
    time_model = default_time_model(settings)
    exhaustive = estimate_model(spec, options, settings, time_model=time_model, compose=False, reuse=False)
    blocks = BlockRecords()
    reused = estimate_model(spec, options, settings, time_model=time_model, compose=False, blocks=blocks)
    return exhaustive, reused, blocks


def counts(blocks: BlockRecords) -> tuple[int, int, int]:
    """Trainable calls traced and recorded, replayed in all, replayed from a scaled record."""
    trained: TrainedRecords = blocks.trained
    return trained.traced, trained.replayed, trained.scaled


@pytest.mark.parametrize(
    ("spec", "options", "batch_sizes", "target", "traced", "replayed", "scaled"),
    [
        # z = n of pythia-14m (embedding, 6 blocks, norm, head): at each batch size block 1 (its input from the
        # trainable embedding), the norm and the head are recorded; blocks 2-6, alike to block 1, are traced at
        # batches 2 and 3 and at 5 replay block 1's record scaled from 2 and 3
        ("pythia-14m", ModelOptions(seq_len=32), (2, 3, 5), "cuda", 9, 5, 5),
        # a small Llama (4 decoder layers): decoder layers 2-4 replay at batch 6
        ("hf:llama", ModelOptions(seq_len=16, overrides=FOUR_LAYER_LLAMA), (2, 3, 6), "cuda", 9, 3, 3),
        # a CNN's stages differ in width and resolution: only layer 4's second block is alike to one before it in
        # the step (layer 4's first); 9 records per batch size
        ("resnet18", ModelOptions(input_shape=(3, 16, 16)), (2, 3, 5), "cpu", 27, 1, 1),
    ],
)
def test_scaled_records_give_the_exhaustive_figures(
    spec: str,
    options: ModelOptions,
    batch_sizes: tuple[int, ...],
    target: str,
    traced: int,
    replayed: int,
    scaled: int,
) -> None:
    """Every field of every row with trainable blocks replayed from records scaled across batch sizes equals the
    exhaustive trace's; the scaled replays happened and no scaled record was refused."""
    exhaustive, reused, blocks = full_training(spec, options, batch_sizes, target)
    assert_identical(exhaustive, reused)
    assert counts(blocks) == (traced, replayed, scaled)
    assert not blocks.trained.unscaled


@pytest.mark.parametrize(
    ("factory", "unscaled"),
    [
        # the forward's temporary is off the line: the first block's forward differs from the scaled record's, so
        # nothing replays from it and the alike blocks are traced as without scaling
        ("square_forward", 0),
        # the forward scales, the backward does not: the alike blocks replayed from the scaled record, the first
        # block's own backward then differed from it, and the cell was traced again without scaling
        ("square_backward", 1),
    ],
)
def test_blocks_whose_bytes_do_not_scale_are_traced(tmp_path: Path, factory: str, unscaled: int) -> None:
    (tmp_path / "blocks.py").write_text(BLOCKS)
    options = ModelOptions(input_shape=(4,), num_classes=3)
    exhaustive, reused, blocks = full_training(f"{tmp_path / 'blocks.py'}:{factory}", options, (2, 3, 5))
    assert_identical(exhaustive, reused)
    assert len(blocks.trained.unscaled) == unscaled
    assert {type_name(key) for key in blocks.trained.unscaled} == ({"SquareBackward"} if unscaled else set())


def test_fit_scales_its_blocks_records_and_answers_as_the_exhaustive_search() -> None:
    """fit's search probes many batch sizes: from the third on, the blocks above the first replay a scaled record;
    every need it traced and every answer are the exhaustive search's."""
    options = ModelOptions(seq_len=32)
    settings = SweepSettings((), (), target="cuda")
    searches = [
        FitSearch("pythia-14m", options, settings, default_time_model(settings), reuse=reuse) for reuse in (False, True)
    ]
    exhaustive, reused = (
        [asdict(result) for result in search.largest_batches((9,), 1200 * 2**20)] for search in searches
    )
    assert reused == exhaustive
    assert searches[1].needs == searches[0].needs
    blocks = searches[1].blocks
    assert blocks is not None and not blocks.trained.unscaled
    # batches 1 and 64 record block 1 (blocks 2-6 traced); every later batch size replays 5 blocks scaled
    assert blocks.trained.scaled == 5 * (len(searches[1].needs) - 2)
