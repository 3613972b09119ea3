"""Estimates under every recipe equal the real-tensor tracker on the CPU, to the byte: optimizers, activation
checkpointing and LoRA adapters, on the gate's two models and on small ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from layerprof.measure.optimizers import OPTIMIZER_SPECS, OPTIMIZERS
from layerprof.measure.sweep import CellContext, run_cell
from layerprof.predict.estimate import UNTRACED_STEP, estimate_model
from layerprof.profile import SweepSettings
from layerprof.sources.models import ModelOptions, build_model

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "custom_model.py")
EXACT = (
    "peak_memory_bytes", "memory_parameters_bytes", "memory_gradients_bytes", "memory_optimizer_state_bytes",
    "memory_activations_bytes", "optimizer_state_bytes", "trainable_params", "flops", "recompute_flops",
)  # fmt: skip


def settings(zs: tuple[int, ...], **recipe) -> SweepSettings:
    return SweepSettings(batch_sizes=(2,), trainable_layer_counts=zs, warmup_steps=1, min_steps=1, max_steps=1,
                         target="cpu", **recipe)  # fmt: skip


def assert_estimate_equals_tracker(spec: str, options: ModelOptions, zs: tuple[int, ...], fields=EXACT, **recipe):
    estimated = estimate_model(spec, options, settings(zs, **recipe), compose=False)
    real = build_model(spec, options)
    layers = real.split()
    for z in zs:
        with torch.compiler.set_stance("force_eager"):  # torchao compiles its step: minutes on a CPU, same bytes
            measured, _ = run_cell(CellContext(real, layers, settings((z,), **recipe), torch.device("cpu")), 2, z)
        predicted = estimated.row(2, z)
        assert measured.ok and predicted.ok, (measured.message, predicted.message)
        for field in fields:
            assert getattr(predicted, field) == getattr(measured, field), (spec, recipe, z, field)
    return estimated


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_estimate_equals_the_tracker(optimizer: str) -> None:
    options = ModelOptions(input_shape=(64,), num_classes=10, overrides={"width": 128, "depth": 2})
    traced = OPTIMIZER_SPECS[optimizer].traced
    # an optimizer whose step cannot run on fake tensors: its state to the byte, the step's temporaries left out
    # (the split at the peak then falls elsewhere: the state, the FLOPs and the activations' own peak are compared)
    untraced = ("memory_parameters_bytes", "optimizer_state_bytes", "trainable_params", "flops",
                "peak_activations_bytes")  # fmt: skip
    fields = EXACT if traced else untraced
    estimated = assert_estimate_equals_tracker(f"{EXAMPLE}:mlp", options, (1, 4), fields, optimizer=optimizer)
    assert (estimated.row(2, 4).message is None) == traced
    if not traced:
        assert estimated.row(2, 4).message == UNTRACED_STEP.format(optimizer=optimizer)


@pytest.mark.parametrize(
    ("spec", "options", "zs"),
    [("paper-gpt-14m", ModelOptions(seq_len=8), (6,)), ("paper-resnet18-cifar100", ModelOptions(), (1, 6))],
)
def test_checkpointing_estimate_equals_the_tracker_on_the_gates_models(spec: str, options: ModelOptions, zs) -> None:
    estimated = assert_estimate_equals_tracker(spec, options, zs, checkpointing="trainable")
    plain = estimate_model(spec, options, settings(zs), compose=False)
    for z in zs:
        row, before = estimated.row(2, z), plain.row(2, z)
        assert row.flops == before.flops and before.recompute_flops is None  # model FLOPs: recompute apart
        assert row.recompute_flops > 0 or z == 1  # z=1 checkpoints a lone head: its inputs are all it saves
        assert row.peak_activations_bytes <= before.peak_activations_bytes
