"""Every model a user can name splits and profiles: every torchvision classifier, constructors that compute,
timm models by family, and Hugging Face causal LMs built offline from their configurations."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.errors import SplitWarning
from layerprof.profile import SweepSettings, load_profile
from layerprof.sources.models import ModelOptions, build_model, split_without_memory
from layerprof.sources.registry import torchvision_names
from tests.cli.test_cli import FAST, assert_one_line_error


def accounted(spec: str, options: ModelOptions | None = None) -> tuple[list, str]:
    """The split, checked: at least two layers, every parameter in one of them (tied ones once), no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplitWarning)
        loaded, layers = split_without_memory(spec, options or ModelOptions())  # what split_model describes
    info, model = loaded.describe(layers), loaded.model  # the model split, not a second build of it
    assert len(info.layers) >= 2, spec
    assert info.total_params == sum(p.numel() for p in model.parameters()), spec
    owned = [name for layer in info.layers for name in layer.parameter_names]
    assert sorted(set(owned)) == sorted(name for name, _ in model.named_parameters(remove_duplicate=False)), spec
    return info.layers, info.construction


@pytest.mark.parametrize("name", torchvision_names())
def test_every_torchvision_classifier_splits_on_meta(name: str) -> None:
    _, construction = accounted(name)
    # RegNets compute their widths with tensors in the constructor: only their parameters go to meta
    assert construction == ("meta-parameters" if name.startswith("regnet") else "meta")


def test_a_constructor_that_computes_is_estimated_too(tmp_path: Path) -> None:
    out = tmp_path / "regnet.json"
    result = CliRunner().invoke(app, ["estimate", "regnet_y_400mf", "--batch-sizes", "2", "--layers", "1,all",
                                      "--target", "cpu", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    profile = load_profile(out)
    # fake tensors cannot run its constructor: built once on the CPU, then its tensors replaced by fakes
    assert all(row.ok for row in profile.rows) and profile.model.construction == "cpu"


@pytest.mark.parametrize(
    ("name", "blocks"),
    [
        ("vit_small_patch16_224", [f"blocks.{i}" for i in range(12)]),
        ("convnext_atto", [f"stages.{s}.blocks.{b}" for s, n in enumerate((2, 2, 6, 2)) for b in range(n)]),
        ("efficientnet_b0", [f"blocks.{s}.{b}" for s, n in enumerate((1, 2, 2, 3, 3, 4, 1)) for b in range(n)]),
        ("resnet18", [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]),
    ],
)
def test_timm_families_split_into_their_blocks(name: str, blocks: list[str]) -> None:
    layers, _ = accounted(f"timm:{name}")
    names = [layer.name for layer in layers]
    assert [n for n in names if n in blocks] == blocks, names  # every block a layer, in order


def test_timm_vit_adopts_the_class_token_and_positions() -> None:
    layers, _ = accounted("timm:vit_small_patch16_224")
    adopted = {name for layer in layers for name in layer.parameter_names if "." not in name}
    assert adopted == {"cls_token", "pos_embed"}


SMALL_LLAMA = ["--set", "num_hidden_layers=2", "--set", "hidden_size=64", "--set", "intermediate_size=128",
               "--set", "num_attention_heads=4", "--set", "num_key_value_heads=4",
               "--set", "vocab_size=256"]  # fmt: skip


def hf_options(*pairs: str) -> ModelOptions:
    return ModelOptions(overrides=dict(pair.split("=", 1) for pair in pairs))


def test_hf_llama_splits_into_embeddings_blocks_norm_and_head() -> None:
    options = hf_options(*SMALL_LLAMA[1::2])
    layers, construction = accounted("hf:llama", options)
    assert [layer.name for layer in layers] == [
        "model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm", "lm_head",
    ]  # fmt: skip
    assert construction == "fake"  # transformers' rotary embedding runs autocast, which the meta device lacks
    assert layers[-1].shared_with == ()  # llama's head is its own


def test_hf_gpt2_ties_its_head_to_the_embedding() -> None:
    layers, _ = accounted("hf:gpt2", hf_options("n_layer=2", "n_embd=64", "n_head=2", "vocab_size=256"))
    head = layers[-1]
    assert head.name == "lm_head" and head.shared_with == ("transformer.wte",)


def test_hf_models_are_built_without_a_key_value_cache() -> None:
    """Training needs no cache of keys and values; a model that kept one would hold (and count) memory no training
    step has. Off even where --set asks for it."""
    options = hf_options("n_layer=2", "n_embd=64", "n_head=2", "vocab_size=256", "use_cache=true")
    loaded = build_model("hf:gpt2", options)
    assert loaded.model.config.use_cache is False
    inputs, targets = loaded.workload.make_batch(2, torch.device("cpu"))
    output = loaded.model(inputs)
    assert getattr(output, "past_key_values", None) is None


def test_hf_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "qwen2", "num_hidden_layers": 2, "hidden_size": 64,
                                  "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
                                  "vocab_size": 256}))  # fmt: skip
    layers, _ = accounted(f"hf:{config}")
    assert len(layers) == 5 and layers[1].name == "model.layers.0"


def test_hf_estimate_equals_the_real_tensor_tracker() -> None:
    from layerprof.measure.cells import CellContext, run_cell
    from layerprof.predict.estimate import estimate_model

    options = hf_options(*SMALL_LLAMA[1::2])
    options.seq_len = 32
    real = build_model("hf:llama", options)
    layers = real.split()
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 5), warmup_steps=1, min_steps=1,
                             max_steps=1, target="cpu")  # fmt: skip
    estimated = estimate_model("hf:llama", options, settings, layers=layers)
    for z in (1, 5):
        measured, _ = run_cell(CellContext(real, layers, settings, torch.device("cpu")), 2, z)
        predicted = estimated.row(2, z)
        for field in ("memory_parameters_bytes", "memory_optimizer_state_bytes", "flops"):
            assert getattr(predicted, field) == getattr(measured, field), (z, field)
        # on fake tensors transformers cannot see that the attention mask is plain causal, so it builds it: at most
        # two float32 masks of B x 1 x T x T that a real run leaves to the kernel's is_causal
        mask_bytes = 2 * 4 * 2 * 1 * 32 * 32
        assert 0 <= predicted.peak_memory_bytes - measured.peak_memory_bytes <= mask_bytes, z


def test_a_small_hf_model_profiles_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "llama.json"
    result = CliRunner().invoke(app, ["profile", "hf:llama", *SMALL_LLAMA, "--seq-len", "32", "--batch-sizes", "2",
                                      *FAST, "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    profile = load_profile(out)
    assert profile.model.source == "hf" and profile.model.overrides["num_hidden_layers"] == 2
    assert [row.trainable_layers for row in profile.rows] == [1, 2, 3, 4, 5] and all(row.ok for row in profile.rows)


def test_a_small_timm_model_profiles_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "timm.json"
    result = CliRunner().invoke(app, ["profile", "timm:resnet18", "--input-shape", "3,32,32", "--num-classes", "10",
                                      "--batch-sizes", "2", "--layers", "1,11", *FAST, "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert all(row.ok for row in load_profile(out).rows)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["layers", "hf:llama", "--set", "num_hidden_layer=2"],
            ["--set num_hidden_layer: not a field of LlamaConfig", "num_hidden_layers"],
        ),  # fmt: skip
        (["layers", "hf:llama", "--set", "num_hidden_layers=two"], ["--set num_hidden_layers: expects an integer"]),
        (["layers", "hf:lama"], ["unknown Hugging Face causal-LM model type 'lama'", "llama"]),
        (["layers", "hf:missing/config.json"], ["does not exist"]),
        (["layers", "timm:vit_smal_patch16_224"], ["unknown timm model", "vit_small_patch16_224"]),
        (["layers", "timm:resnet18", "--seq-len", "8"], ["--seq-len applies to language models"]),
        (["models", "--source", "hug"], ["--source 'hug'", "timm", "hf"]),
    ],
)
def test_bad_model_input_is_one_line(args: list[str], fragments: list[str]) -> None:
    assert_one_line_error(CliRunner().invoke(app, args), *fragments)


def test_models_lists_timm_and_hf() -> None:
    result = CliRunner().invoke(app, ["models", "--source", "hf", "--json"])
    assert result.exit_code == 0 and {"hf:llama", "hf:gpt2", "hf:qwen2"} <= set(json.loads(result.output)["hf"])
    result = CliRunner().invoke(app, ["models", "--source", "timm", "--json"])
    assert result.exit_code == 0 and "timm:vit_small_patch16_224" in json.loads(result.output)["timm"]


def test_no_name_is_both_a_litgpt_config_and_a_torchvision_model() -> None:
    """`resolve` looks a bare name up in the order of the registry (torchvision, then LitGPT): that is safe while
    none is in both."""
    from layerprof.sources.registry import litgpt_names

    assert not set(litgpt_names()) & set(torchvision_names())
    assert "pythia-14m" in litgpt_names() and "resnet18" in torchvision_names()


def test_a_litgpt_model_builds_without_lightning_and_the_whole_package_still_loads_after() -> None:
    """LitGPT's `__init__` imports its API, Lightning, torchmetrics and transformers; building a GPT needs none of
    them. Anything else of the package afterwards (`litgpt.LLM`, the checkpoint converter) loads it whole."""
    code = (
        "import sys\n"
        "from layerprof.sources.models import build_model\n"
        "from layerprof.sources.registry import resolve\n"
        "source, name = resolve('pythia-14m')\n"
        "assert (source.name, name) == ('litgpt', 'pythia-14m')\n"
        "loaded = build_model('pythia-14m', device='meta')\n"
        "heavy = sorted(m for m in ('lightning', 'torchmetrics', 'transformers', 'torchvision') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "import litgpt, litgpt.model\n"
        "from litgpt.scripts.convert_hf_checkpoint import qkv_reassemble\n"
        "assert litgpt.GPT is litgpt.model.GPT is type(loaded.model) and litgpt.LLM.__name__ == 'LLM'\n"
        "assert litgpt.model.Config().mlp_class is litgpt.model.GptNeoxMLP\n"
        "assert 'lightning' in sys.modules and callable(litgpt.model.qkv_reassemble)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_mixture_of_experts_split_prints_no_torch_traceback(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """qwen2_moe's grouped matmul fails on fake tensors, and torch logs that failure with a 40-line traceback
    although the split goes on (on real CPU tensors, the model being tiny): the log is kept quiet (issue 40)."""
    import logging

    from layerprof.sources.models import QUIET_LOGGERS, split_model

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "qwen2_moe", "num_hidden_layers": 2, "hidden_size": 32,
                                  "intermediate_size": 64, "moe_intermediate_size": 16,
                                  "shared_expert_intermediate_size": 16, "num_experts": 4, "num_experts_per_tok": 2,
                                  "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128}))  # fmt: skip
    levels = [logging.getLogger(name).level for name in QUIET_LOGGERS]
    info = split_model(f"hf:{config}")
    assert [layer.name for layer in info.layers][1:3] == ["model.layers.0", "model.layers.1"]
    assert info.order == "forward"
    err = capfd.readouterr().err
    assert "Traceback" not in err and "fake_tensor.py" not in err, err
    assert [logging.getLogger(name).level for name in QUIET_LOGGERS] == levels  # put back
