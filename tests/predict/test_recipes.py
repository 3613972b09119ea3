"""Estimates under every recipe equal the real-tensor tracker on the CPU, to the byte: optimizers, activation
checkpointing and LoRA adapters, on the gate's two models and on small ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from layerprof.measure.cells import CellContext, run_cell
from layerprof.measure.optimizers import OPTIMIZER_SPECS, OPTIMIZERS
from layerprof.predict.estimate import UNTRACED_STEP, estimate_model
from layerprof.profile import SweepSettings
from layerprof.sources.models import ModelOptions, build_model

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "custom_model.py")
GPT_14M = ModelOptions(seq_len=8, overrides={"padded_vocab_size": 512})  # the gate's LM with a small vocabulary
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
    [("paper-gpt-14m", GPT_14M, (6,)), ("paper-resnet18-cifar100", ModelOptions(), (1, 6))],
)
def test_checkpointing_estimate_equals_the_tracker_on_the_gates_models(spec: str, options: ModelOptions, zs) -> None:
    estimated = assert_estimate_equals_tracker(spec, options, zs, checkpointing="trainable")
    plain = estimate_model(spec, options, settings(zs), compose=False)
    for z in zs:
        row, before = estimated.row(2, z), plain.row(2, z)
        assert row.flops == before.flops and before.recompute_flops is None  # model FLOPs: recompute apart
        assert row.recompute_flops > 0 or z == 1  # z=1 checkpoints a lone head: its inputs are all it saves
        assert row.peak_activations_bytes <= before.peak_activations_bytes


SMALL_GPT2 = {"n_layer": "3", "n_embd": "64", "n_head": "2", "vocab_size": "256"}


@pytest.mark.parametrize(
    ("spec", "options", "zs"),
    [
        ("paper-gpt-14m", GPT_14M, (6,)),  # LitGPT
        ("paper-resnet18-cifar100", ModelOptions(), (1, 6)),  # torchvision
        ("hf:gpt2", ModelOptions(seq_len=8, overrides=SMALL_GPT2), (3,)),  # Hugging Face (GPT-2's Conv1D)
        ("timm:regnetx_002", ModelOptions(input_shape=(3, 32, 32), num_classes=10), (2,)),  # timm
    ],
)
def test_lora_estimate_equals_the_tracker(spec: str, options: ModelOptions, zs: tuple[int, ...]) -> None:
    estimated = assert_estimate_equals_tracker(spec, options, zs, adapter="lora", adapter_rank=4)
    for z in zs:
        row = estimated.row(2, z)
        assert 0 < row.trainable_fraction < 0.1  # the adapters' own count, a small share of the model
        # AdamW over the adapters alone: two moments per value, a 4-byte step per tensor (A and B per module)
        steps = row.optimizer_state_bytes - 2 * 4 * row.trainable_params
        assert steps > 0 and steps % 8 == 0


def test_lora_with_checkpointing_and_8bit_adamw_estimate_equals_the_tracker() -> None:
    options = ModelOptions(input_shape=(64,), num_classes=10, overrides={"width": 128, "depth": 2})
    fields = ("memory_parameters_bytes", "optimizer_state_bytes", "trainable_params", "flops", "recompute_flops",
              "peak_activations_bytes")  # fmt: skip
    assert_estimate_equals_tracker(f"{EXAMPLE}:mlp", options, (2, 4), fields, adapter="lora",
                                   checkpointing="trainable", optimizer="adamw8bit")  # fmt: skip
    assert_estimate_equals_tracker(f"{EXAMPLE}:mlp", options, (2, 4), adapter="lora", checkpointing="trainable")


def test_checkpointing_under_cuda_autocast_rules_recomputes_in_the_forwards_precision() -> None:
    """An estimate for CUDA in bf16-mixed applies CUDA's autocast rules as a torch function mode, in forward only;
    the recompute must run under it too, or it recomputes in float32 and torch refuses (CheckpointError: recomputed
    values have different metadata), as every such cell of pythia-1.4b did. The recompute is the block's forward."""
    options = ModelOptions(seq_len=16, overrides={"padded_vocab_size": 512})
    recipe = {"precision": "bf16-mixed", "mode": "estimate", "target": "cuda"}
    checkpointed = estimate_model("pythia-14m", options, SweepSettings((1,), (7,), checkpointing="trainable", **recipe))
    plain = estimate_model("pythia-14m", options, SweepSettings((1,), (7,), **recipe))
    row, kept = checkpointed.row(1, 7), plain.row(1, 7)
    assert row.ok and kept.ok, row.message
    assert 0 < row.recompute_flops < row.forward_flops and row.flops == kept.flops
    assert row.peak_activations_bytes < kept.peak_activations_bytes
