"""Mixed precision on fake tensors with CUDA's autocast rules, and FLOPs that do not depend on the device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from layerprof.measure.amp import CudaAutocastRules
from layerprof.measure.instruments import flop_counter
from layerprof.predict.estimate import estimate_model
from layerprof.profile import SweepSettings
from layerprof.sources.models import ModelOptions, build_model


def test_cuda_rules_cast_as_cuda_autocast_does() -> None:
    linear, norm = torch.nn.Linear(8, 8), torch.nn.LayerNorm(8)
    x = torch.randn(4, 8)
    with CudaAutocastRules(torch.bfloat16):
        hidden = linear(x)
        assert hidden.dtype == torch.bfloat16  # matmuls in the lower precision
        assert (hidden @ hidden.t()).dtype == torch.bfloat16
        assert F.gelu(hidden).dtype == torch.bfloat16  # not listed: runs in its input's dtype
        # CUDA runs these in float32 (the CPU's autocast would keep bfloat16)
        assert norm(hidden).dtype == torch.float32
        assert F.softmax(hidden, -1).dtype == torch.float32
        assert F.cross_entropy(hidden, torch.tensor([0, 1, 2, 3])).dtype == torch.float32
        assert F.softmax(hidden, -1, dtype=torch.bfloat16).dtype == torch.bfloat16  # an explicit dtype wins
        assert x.double().exp().dtype == torch.float64  # float64 is never cast


def test_cuda_rules_cache_trainable_weights_for_the_region_only() -> None:
    trainable, frozen = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8).requires_grad_(False)
    x = torch.randn(2, 8)
    rules = CudaAutocastRules(torch.bfloat16)
    with rules:
        trainable(x), trainable(x), frozen(x)
        # one cast per trainable parameter (weight and bias), reused; frozen ones are cast on every use
        assert len(rules._cache) == 2
    assert rules._cache == {}
    with CudaAutocastRules(torch.bfloat16):
        loss = trainable(x).float().sum()
    loss.backward()
    assert trainable.weight.grad.dtype == torch.float32  # gradients reach the float32 weights


def test_pythia_forward_flops_equal_the_analytic_count() -> None:
    """2·T·(Linear weights) + 4·T²·d·L: every matmul, attention included, on this CPU."""
    model = build_model("pythia-14m", ModelOptions(seq_len=512)).model
    tokens = torch.randint(0, 100, (1, 512))
    weights = sum(module.weight.numel() for module in model.modules() if isinstance(module, torch.nn.Linear))
    analytic = 2 * 512 * weights + 4 * 512**2 * 128 * 6
    with flop_counter() as counter:
        model(tokens)
    assert counter.get_total_flops() == pytest.approx(analytic, rel=0.01)
    assert analytic / 1e9 == pytest.approx(8.61, abs=0.01)


def test_math_and_flash_attention_count_the_same() -> None:
    model = build_model("pythia-14m", ModelOptions(seq_len=128)).model
    tokens = torch.randint(0, 100, (2, 128))
    counts = {}
    for backend in (SDPBackend.MATH, SDPBackend.FLASH_ATTENTION):
        with sdpa_kernel(backend):
            with flop_counter() as forward:
                logits = model(tokens)
            with flop_counter() as backward:
                logits.sum().backward()
        ops = {str(op) for op in forward.get_flop_counts()["Global"]}
        counts[backend] = (forward.get_total_flops(), backward.get_total_flops(), ops)
    math, flash = counts[SDPBackend.MATH], counts[SDPBackend.FLASH_ATTENTION]
    assert "aten.bmm" in math[2] and "aten._scaled_dot_product_flash_attention_for_cpu" in flash[2]
    assert math[:2] == flash[:2]


def estimate(precision: str, target: str = "cuda"):
    settings = SweepSettings(batch_sizes=(4,), trainable_layer_counts=(1, 9), precision=precision, target=target)
    return estimate_model("pythia-14m", ModelOptions(seq_len=512, overrides={"padded_vocab_size": 512}), settings)


def test_bf16_mixed_estimate_keeps_float32_state_and_halves_activations() -> None:
    full, mixed, true = estimate("32-true"), estimate("bf16-mixed"), estimate("bf16-true")
    for z in (1, 9):
        f, m, t = full.row(4, z), mixed.row(4, z), true.row(4, z)
        assert m.memory_parameters_bytes == f.memory_parameters_bytes  # float32 weights
        assert m.optimizer_state_bytes == f.optimizer_state_bytes
        assert 2 * t.optimizer_state_bytes == pytest.approx(f.optimizer_state_bytes, rel=0.01)
        assert t.memory_parameters_bytes * 2 == pytest.approx(f.memory_parameters_bytes, rel=0.01)
    f, m = full.row(4, 9), mixed.row(4, 9)
    assert 0.45 * f.memory_activations_bytes < m.memory_activations_bytes < 0.75 * f.memory_activations_bytes
    assert m.flops == f.flops
    assert mixed.settings.precision == "bf16-mixed" and mixed.is_estimate


def test_cuda_and_cpu_autocast_differ_where_their_rules_do() -> None:
    """CUDA keeps layer_norm and softmax outputs in float32, the CPU in bfloat16: the CUDA estimate holds more."""
    cuda, cpu = estimate("bf16-mixed", "cuda").row(4, 9), estimate("bf16-mixed", "cpu").row(4, 9)
    assert cuda.memory_activations_bytes > cpu.memory_activations_bytes


def test_true_precision_keeps_tied_weights_tied() -> None:
    model = build_model("paper-gpt-14m", ModelOptions(seq_len=16), dtype=torch.bfloat16).model
    assert model.lm_head.weight is model.transformer.wte.weight
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize(
    ("name", "autocast_dtype", "scaled", "parameter_dtype"),
    [
        ("32-true", None, False, "float32"),
        ("bf16-mixed", torch.bfloat16, False, "float32"),
        ("bf16-true", None, False, "bfloat16"),
        ("16-mixed", torch.float16, True, "float32"),
        ("16-true", None, False, "float16"),
    ],
)
def test_each_precision_has_lightnings_autocast_and_scaler(
    name: str, autocast_dtype, scaled: bool, parameter_dtype: str
) -> None:
    """bf16-mixed: autocast to bfloat16, no scaler; 16-mixed: float16 with a GradScaler; *-true: neither, the
    parameters in that dtype."""
    from layerprof.measure.amp import autocast_for, gradient_scaler
    from layerprof.precision import get_precision

    precision = get_precision(name)
    region = autocast_for(precision, "cpu")
    if autocast_dtype is None:
        assert not isinstance(region, torch.autocast)
        with region, torch.autocast("cpu", enabled=False):
            assert torch.ones(2, 2) @ torch.ones(2, 2) is not None
    else:
        assert isinstance(region, torch.autocast) and region.fast_dtype == autocast_dtype
        with region:
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == autocast_dtype
        rules = autocast_for(precision, "cpu", cuda_rules_on_cpu=True)
        assert isinstance(rules, CudaAutocastRules) and rules.dtype == autocast_dtype
    scaler = gradient_scaler(precision, "cpu")
    assert (scaler is not None) == scaled
    if scaled:
        assert isinstance(scaler, torch.amp.GradScaler)
    assert precision.parameter_dtype == parameter_dtype


def test_a_true_precision_run_feeds_its_model_a_batch_in_that_dtype() -> None:
    """bf16-true on the CPU: the model's weights and the floating inputs in bfloat16, every cell measured (a float32
    batch into bfloat16 weights would make every cell an error cell)."""
    from layerprof.measure.jobs import profile_model

    example = Path(__file__).parent.parent / "examples" / "custom_model.py"
    options = ModelOptions(input_shape=(64,), num_classes=4, overrides={"width": 32, "classes": 4})
    loaded = build_model(f"{example}:mlp", options, dtype=torch.bfloat16)
    layers = loaded.split()
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, len(layers)), precision="bf16-true",
                             warmup_steps=1, min_steps=1, max_steps=1, steps_per_visit=1)  # fmt: skip
    profile = profile_model(loaded, layers, settings, torch.device("cpu"))
    assert [(row.trainable_layers, row.status, row.message) for row in profile.rows] == [
        (1, "ok", None), (len(layers), "ok", None),
    ]  # fmt: skip
    images, _labels = loaded.workload.make_batch(2, torch.device("cpu"), torch.bfloat16)
    assert images.dtype == torch.bfloat16


def test_autocast_lists_keep_the_callables_this_torch_has() -> None:
    from layerprof.measure.amp import CUDA_FLOAT32, CUDA_LOWER_PRECISION, _existing

    assert _existing("torch.mm", "F.linear", "Tensor.softmax", "torch.no_such_op", "F.no.such") == frozenset(
        {torch.mm, F.linear, torch.Tensor.softmax}
    )
    assert {torch.mm, F.linear, F.conv2d, F.scaled_dot_product_attention} <= CUDA_LOWER_PRECISION
    assert {F.layer_norm, F.softmax, F.cross_entropy, torch.exp} <= CUDA_FLOAT32
    assert not CUDA_LOWER_PRECISION & CUDA_FLOAT32


def test_each_precision_describes_how_it_was_applied() -> None:
    from layerprof.precision import PRECISIONS

    assert {name: precision.description for name, precision in PRECISIONS.items()} == {
        "32-true": "float32 throughout",
        "bf16-mixed": "float32 parameters, gradients and optimizer state; forward and loss under "
        "torch.autocast(bfloat16)",
        "bf16-true": "parameters, gradients, optimizer state and floating inputs in bfloat16 (model.to(bfloat16))",
        "16-mixed": "float32 parameters, gradients and optimizer state; forward and loss under "
        "torch.autocast(float16), gradients scaled (torch.amp.GradScaler)",
        "16-true": "parameters, gradients, optimizer state and floating inputs in float16 (model.to(float16))",
    }
