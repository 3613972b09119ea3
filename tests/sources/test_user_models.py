"""Models the suite's presets never show: a block run twice, a bare layer, outputs that are tuples or dicts, forward
passes no fake tensor can follow, BatchNorm in frozen layers, timm RegNets and Hugging Face encoders. Every model
is built here, with random weights; nothing is downloaded."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.errors import FreezingWarning, ModelWarning, SplitWarning
from layerprof.measure.cells import CellContext, run_cell
from layerprof.profile import SweepSettings, load_profile
from layerprof.sources.layers import freeze_layers, split_layers, trace_split
from layerprof.sources.models import LoadedModel, ModelOptions, split_model
from layerprof.sources.workloads import Workload

FAST = ["--warmup", "1", "--min-steps", "1", "--steps", "1"]
WIDTH = 8


class SharedBlock(nn.Module):
    """`block` runs twice, with `b` between its two calls (a weight-shared block)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(WIDTH, WIDTH)
        self.block = nn.Linear(WIDTH, WIDTH)
        self.b = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.b(self.block(self.a(x)))))


def test_a_block_run_twice_is_counted_and_every_trainable_layer_gets_its_gradient() -> None:
    model = SharedBlock()
    split = trace_split(model, run_forward=lambda m: m(torch.randn(2, WIDTH)))
    assert split.order == "forward"
    assert [(layer.name, layer.calls) for layer in split.layers] == [("a", 1), ("block", 2), ("b", 1), ("head", 1)]
    for z in range(1, 5):
        frozen = freeze_layers(model, split.layers, z)
        model(torch.randn(2, WIDTH)).pow(2).sum().backward()
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        with_gradient = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        # at z=3 (block, b, head) a cut at every call of `block` left `b` without a gradient
        assert with_gradient == trainable, z
        frozen.remove()
        for param in model.parameters():
            param.grad = None


def test_a_block_run_twice_measures_every_trainable_gradient() -> None:
    workload = Workload(family="tensor-input", input_shape=(WIDTH,))
    loaded = LoadedModel("shared", "user", "shared", SharedBlock(), workload, (), {})
    layers = loaded.split()
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(3,), warmup_steps=1, min_steps=1, max_steps=1)
    row, _ = run_cell(CellContext(loaded, layers, settings, torch.device("cpu")), 2, 3)
    assert row.status == "ok"
    trainable_bytes = 4 * (2 * (WIDTH * WIDTH + WIDTH) + WIDTH * 4 + 4)  # block, b and head in float32
    assert row.trainable_params * 4 == trainable_bytes
    assert row.memory_gradients_bytes == trainable_bytes  # every trainable parameter holds its gradient


def test_the_layer_table_shows_a_shared_block_and_a_model_that_is_its_own_layer() -> None:
    from layerprof.outputs.tables import layer_frame

    split = trace_split(SharedBlock(), run_forward=lambda m: m(torch.randn(2, WIDTH)))
    assert list(layer_frame(split.layers)["type"]) == ["Linear", "Linear (runs 2x)", "Linear", "Linear"]
    with pytest.warns(SplitWarning):
        single = split_layers(nn.Linear(WIDTH, 4), run_forward=lambda m: m(torch.randn(2, WIDTH)))
    assert list(layer_frame(single)["name"]) == ["(the model itself)"]


def test_a_model_without_sub_modules_is_one_layer_with_a_warning() -> None:
    with pytest.warns(SplitWarning, match=r"only 1 layer \(Linear\); it has no sub-modules"):
        layers = split_layers(nn.Linear(WIDTH, 4), run_forward=lambda m: m(torch.randn(2, WIDTH)))
    assert [(layer.name, layer.parameter_names, layer.params) for layer in layers] == [
        ("", ("weight", "bias"), WIDTH * 4 + 4)
    ]


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "user_models.py"
    path.write_text(textwrap.dedent(body))
    return path


USER_MODELS = """
import torch
from torch import nn

def single():
    return nn.Linear(8, 4)

class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 4)

    def forward(self, x):
        hidden = self.a(x)
        return self.b(hidden), hidden

class DictOut(TupleOut):
    def forward(self, x):
        hidden = self.a(x)
        return {"hidden": hidden, "logits": self.b(hidden)}

class NoTensor(TupleOut):
    def forward(self, x):
        return {"answer": 42}

def tuple_out():
    return TupleOut()

def dict_out():
    return DictOut()

def no_tensor():
    return NoTensor()

class Routed(nn.Module):
    '''Registers its head first; routes rows by value (torch.nonzero), as mixture-of-experts layers do.'''

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 4)
        self.embed = nn.Linear(8, 8)
        self.experts = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))

    def forward(self, x):
        x = self.embed(x)
        out = torch.zeros_like(x)
        for index, expert in enumerate(self.experts):
            rows = torch.nonzero(x[:, 0] > 0 if index == 0 else x[:, 0] <= 0).flatten()
            out = out.index_add(0, rows, expert(x[rows]))
        return self.head(out)

def routed():
    return Routed()

class Broken(TupleOut):
    def forward(self, x):
        raise RuntimeError("this forward cannot run anywhere")

def broken():
    return Broken()

class WithBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))

def with_batchnorm():
    return WithBatchNorm()

def narrow(k: int = 8):
    return nn.Sequential(nn.Linear(8, k), nn.Linear(k, 4))
"""


@pytest.fixture
def user_models(tmp_path: Path) -> Path:
    return write(tmp_path, USER_MODELS)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_a_bare_linear_layer_profiles_as_one_layer(user_models: Path, tmp_path: Path) -> None:
    result = run("layers", f"{user_models}:single", "--input-shape", "8")
    assert result.exit_code == 0, result.output
    assert "1 layers, forward order" in result.output and "no sub-modules" in result.output
    out = tmp_path / "single.json"
    result = run("estimate", f"{user_models}:single", "--input-shape", "8", "--target", "cpu", "--batch-sizes", "2",
                 "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [(row.trainable_layers, row.status) for row in load_profile(out).rows] == [(1, "ok")]


@pytest.mark.parametrize("factory", ["tuple_out", "dict_out"])
def test_tuple_and_dict_outputs_train_on_their_logits(user_models: Path, tmp_path: Path, factory: str) -> None:
    for extra in ([], ["--num-classes", "4"]):
        out = tmp_path / f"{factory}{len(extra)}.json"
        result = run("estimate", f"{user_models}:{factory}", "--input-shape", "8", *extra, "--target", "cpu",
                     "--batch-sizes", "2", "--out", str(out))  # fmt: skip
        assert result.exit_code == 0, result.output
        rows = load_profile(out).rows
        assert [row.status for row in rows] == ["ok", "ok"]
        # both layers' products: 2*2*8*8 (a) + 2*2*8*4 (b); the hidden output reaches the loss only without classes
        assert {row.forward_flops for row in rows} == {256 + 128}


def test_an_output_with_no_logits_is_one_line_naming_what_came_back(user_models: Path) -> None:
    result = run("estimate", f"{user_models}:tuple_out", "--input-shape", "8", "--num-classes", "5", "--target", "cpu")
    assert result.exit_code == 2, result.output
    assert "a tuple of 2 (a tensor of shape (2, 4), a tensor of shape (2, 8))" in result.output
    assert "logits of shape (batch, 5)" in result.output and "CustomWorkload" in result.output
    result = run("layers", f"{user_models}:no_tensor", "--input-shape", "8")
    assert result.exit_code == 2, result.output
    assert "returned a dict with keys answer, with no floating tensor" in result.output


def test_a_value_dependent_forward_is_traced_on_symbolic_fake_tensors(user_models: Path) -> None:
    info = split_model(f"{user_models}:routed", ModelOptions(input_shape=(8,)))
    assert info.order == "forward" and info.construction == "fake"  # no memory of the model's size used
    assert [layer.name for layer in info.layers] == ["embed", "experts.0", "experts.1", "head"]


def test_litgpt_mixtral_splits_in_forward_order() -> None:
    overrides = {"n_layer": "2", "n_embd": "64", "n_head": "2", "n_query_groups": "2", "intermediate_size": "128",
                 "vocab_size": "128", "padded_vocab_size": "128"}  # fmt: skip
    info = split_model("litgpt:Mixtral-8x7B-v0.1", ModelOptions(overrides=overrides))
    # registration order puts lm_head first and ln_f last: z=1 then trained the final norm alone
    assert [layer.name for layer in info.layers] == [
        "transformer.wte", "transformer.h.0", "transformer.h.1", "transformer.ln_f", "lm_head",
    ]  # fmt: skip
    assert info.order == "forward"


def test_an_untraceable_forward_is_labelled_registration_order(user_models: Path) -> None:
    result = run("layers", f"{user_models}:broken", "--input-shape", "8")
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())  # the title wraps on a narrow terminal
    assert "2 layers, registration order (no forward pass could be traced)" in words
    assert "forward order" not in words
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        info = split_model(f"{user_models}:broken", ModelOptions(input_shape=(8,)))
    assert info.order == "registration" and "cannot run anywhere" in info.order_reason


def test_every_cell_failing_exits_1_with_the_reasons_grouped(user_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "broken.json"
    result = run("profile", f"{user_models}:broken", "--input-shape", "8", "--batch-sizes", "2,3", *FAST,
                 "--out", str(out))  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "every cell failed: 4 x error: RuntimeError: this forward cannot run anywhere" in result.output
    assert "no ladder" not in result.output and "smaller batch" not in result.output
    assert load_profile(out).complete  # saved all the same
    result = run("estimate", f"{user_models}:routed", "--input-shape", "8", "--target", "cpu", "--batch-sizes", "2",
                 "--out", str(tmp_path / "routed.json"))  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "every cell failed: 4 x error: cannot estimate: the forward pass depends on the data" in result.output
    assert "measure it with `layerprof profile`" in result.output


def test_frozen_batchnorm_updates_its_statistics_unless_eval_frozen() -> None:
    model = torch.nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.LazyLinear(10))
    model(torch.randn(2, 3, 8, 8))
    layers = split_layers(model, run_forward=lambda m: m(torch.randn(2, 3, 8, 8)))
    batchnorm = model[1]
    for eval_frozen, moves in ((False, True), (True, False)):
        before = batchnorm.running_mean.clone()
        frozen = freeze_layers(model, layers, 1, eval_frozen=eval_frozen)  # only the last Linear trains
        model(torch.randn(4, 3, 8, 8) + 5).sum().backward()
        assert (not torch.equal(before, batchnorm.running_mean)) == moves
        assert not batchnorm.weight.requires_grad
        frozen.remove()
        assert batchnorm.training  # train mode given back


def test_a_sweep_with_eval_frozen_keeps_frozen_batchnorm_statistics(user_models: Path) -> None:
    from layerprof.sources.models import build_model

    loaded = build_model(f"{user_models}:with_batchnorm", ModelOptions(input_shape=(3, 8, 8), num_classes=10))
    layers = loaded.split()
    batchnorm = loaded.model.bn
    for eval_frozen, moves in ((False, True), (True, False)):
        settings = SweepSettings(batch_sizes=(4,), trainable_layer_counts=(1,), warmup_steps=1, min_steps=1,
                                 max_steps=1, eval_frozen=eval_frozen)  # fmt: skip
        before = batchnorm.running_mean.clone()
        row, _ = run_cell(CellContext(loaded, layers, settings, torch.device("cpu")), 4, 1)
        assert row.ok
        assert (not torch.equal(before, batchnorm.running_mean)) == moves, eval_frozen
        assert batchnorm.training


def test_frozen_batchnorm_is_said_and_eval_frozen_recorded(user_models: Path, tmp_path: Path) -> None:
    common = ["estimate", f"{user_models}:with_batchnorm", "--input-shape", "3,8,8", "--num-classes", "10",
              "--target", "cpu", "--batch-sizes", "2"]  # fmt: skip
    result = run(*common, "--out", str(tmp_path / "train.json"))
    assert result.exit_code == 0, result.output
    assert "frozen layers with BatchNorm (bn) still update their running statistics" in result.output
    assert "--eval-frozen" in result.output
    result = run(*common, "--out", str(tmp_path / "eval.json"), "--eval-frozen")
    assert result.exit_code == 0, result.output
    assert "BatchNorm" not in result.output
    assert load_profile(tmp_path / "eval.json").settings.eval_frozen
    assert not load_profile(tmp_path / "train.json").settings.eval_frozen
    with pytest.warns(FreezingWarning):
        from layerprof.parsing import parse_layer_selection
        from layerprof.predict.jobs import plan_estimate

        settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(), target="cpu")
        options = ModelOptions(input_shape=(3, 8, 8), num_classes=10)
        plan_estimate(f"{user_models}:with_batchnorm", options, settings, parse_layer_selection("all"),
                      tmp_path / "plan.json")  # fmt: skip


def test_timm_regnets_split_inside_their_stages() -> None:
    info = split_model("timm:regnetx_002")
    names = [layer.name for layer in info.layers]
    assert len(names) == 15 and names[:3] == ["stem", "s1.b1", "s2.b1"] and names[-1] == "head"
    assert {layer.type for layer in info.layers[1:-1]} == {"Bottleneck"}


HF_BERT = {"hidden_size": "64", "num_hidden_layers": "2", "num_attention_heads": "2", "intermediate_size": "128",
           "vocab_size": "128"}  # fmt: skip


def test_hf_bert_is_a_decoder_split_into_its_blocks_without_transformers_warnings(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with pytest.warns(ModelWarning, match="hf:bert is an encoder: it is built as BertLMHeadModel with is_decoder=True"):
        info = split_model("hf:bert", ModelOptions(overrides=HF_BERT))
    assert [layer.name for layer in info.layers] == [
        "bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1", "cls",
    ]  # fmt: skip
    assert "an encoder trained as a causal LM (is_decoder=True)" in info.description
    from layerprof.sources.models import build_model

    with pytest.warns(ModelWarning):
        assert build_model("hf:bert", ModelOptions(overrides=HF_BERT), device="meta").model.config.is_decoder
    captured = capfd.readouterr()
    assert "is_decoder" not in captured.err + captured.out  # transformers' own warning kept off the terminal


def test_hf_bert_estimate_says_once_that_it_is_built_as_a_decoder(tmp_path: Path) -> None:
    overrides = [part for key, value in HF_BERT.items() for part in ("--set", f"{key}={value}")]
    result = run("estimate", "hf:bert", *overrides, "--batch-sizes", "1", "--seq-len", "8",
                 "--out", str(tmp_path / "bert.json"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count("warning: hf:bert is an encoder") == 1  # built twice (split, sweep), said once


def test_hf_bart_is_traced_on_real_tensors_where_fake_ones_cannot_follow() -> None:
    overrides = {"d_model": "64", "decoder_layers": "2", "encoder_layers": "2", "vocab_size": "128",
                 "decoder_ffn_dim": "128", "encoder_ffn_dim": "128", "decoder_attention_heads": "2",
                 "encoder_attention_heads": "2", "max_position_embeddings": "64"}  # fmt: skip
    info = split_model("hf:bart", ModelOptions(overrides=overrides))
    assert info.order == "forward" and info.construction == "cpu-trace"
    assert [layer.name for layer in info.layers][-3:] == ["model.decoder.layers.0", "model.decoder.layers.1", "lm_head"]


def test_names_are_printed_as_written_not_as_emoji() -> None:
    result = run("layers", "hf:llama", "--set", "num_hidden_layers=1", "--set", "hidden_size=64", "--set",
                 "intermediate_size=64", "--set", "num_attention_heads=2", "--set", "num_key_value_heads=2",
                 "--set", "vocab_size=64")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "hf:llama: 4 layers" in result.output and "\N{LLAMA}" not in result.output
    result = run("ladder", "missing:smile:.json")  # an error line, on stderr
    assert result.exit_code == 2 and "'missing:smile:.json' does not exist" in result.output


def test_unknown_unwrap_class_and_an_empty_parameter_are_refused(user_models: Path) -> None:
    result = run("layers", f"{user_models}:tuple_out", "--input-shape", "8", "--unwrap", "Linaer")
    assert result.exit_code == 2, result.output
    assert "--unwrap Linaer: " in result.output and "did you mean Linear?" in result.output
    # a size the --set check cannot recognise by its name (k) still shows as a parameter with no elements
    result = run("layers", f"{user_models}:narrow", "--input-shape", "8", "--set", "k=0")
    assert result.exit_code == 2, result.output
    assert "has a parameter with no elements (0.weight, shape (0, 8))" in result.output


FACTORIES = """
from torch import nn
import layerprof

def required(width):
    return nn.Sequential(nn.Linear(8, width), nn.Linear(width, 4))

def custom():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 1))
    return layerprof.CustomWorkload(model, lambda b, device: None, lambda model, batch: None)
"""


# (MODEL with {file} and {dir}, extra arguments, the fragment of the one error line); the reviewer's finds
MODEL_MISTAKES = [
    # a torchvision model of another task: named as such, not "unknown model"
    ("fasterrcnn_resnet50_fpn", (), "fasterrcnn_resnet50_fpn is a torchvision detection model; layerprof builds"),
    ("torchvision:fcn_resnet50", (), "fcn_resnet50 is a torchvision segmentation model"),
    ("r3d_18", (), "r3d_18 is a torchvision video classification model"),
    # a ViT image size its patches do not divide: an AssertionError from torchvision was exit 1, "unexpected"
    ("vit_b_16", ("--input-shape", "3,60,60"), "--input-shape 3,60,60 is not a multiple of 16; e.g. --input-shape"),
    # a file without its factory, a directory, a factory with a required argument
    ("{file}", (), "names a file but no factory in it; write {file}:FACTORY"),
    ("{dir}:required", (), "model file '{dir}' is a directory"),
    ("{file}:required", ("--input-shape", "8"), "has required arguments without defaults: give --set width=VALUE"),
    # options the model cannot use were silently ignored
    ("{file}:required", ("--input-shape", "8", "--set", "width=4", "--seq-len", "32"), "--seq-len applies to LitGPT"),
    ("{file}:custom", ("--input-shape", "8"), "returns its own make_batch and loss, which --input-shape would not"),
]


@pytest.mark.parametrize(("model", "extra", "fragment"), MODEL_MISTAKES, ids=[case[0] for case in MODEL_MISTAKES])
def test_a_model_mistake_is_one_line_that_says_what_is_right(
    tmp_path: Path, model: str, extra: tuple[str, ...], fragment: str
) -> None:
    file = write(tmp_path, FACTORIES)
    names = {"file": str(file), "dir": str(tmp_path)}
    result = run("layers", model.format(**names), *extra)
    assert result.exit_code == 2, result.output
    assert "unexpected" not in result.output and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")], result.output
    assert fragment.format(**names) in " ".join(result.output.split()), result.output
