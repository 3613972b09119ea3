"""options.py part by part (issue 40's mutation survivors): the checks that span options, called with hand-made
arguments (no command run, no Ray cluster); each refusal at its edge with its one-line message, and each parsed value
pinned."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.core import ParameterSource

from layerprof.cli import options
from layerprof.cli.options import (
    RECIPE_OPTIONS,
    ProfileProtocol,
    RecipeChoices,
    check_one_output,
    check_profile_executor,
    deadline_seconds,
    gpu_option,
    model_options,
    parse_batch_sizes,
    parse_recipes,
    precision_name,
    priced,
    quick_profile,
    recipe_settings,
    with_recipe_options,
)
from layerprof.devices import GPU_KINDS, PriceBook
from layerprof.errors import LayerprofError
from layerprof.sources.names import ModelOptions


def refused(message: str) -> typing.Any:
    """pytest.raises for a LayerprofError whose whole message is `message`."""
    return pytest.raises(LayerprofError, match="^" + re.escape(message) + "$")


# ---------------------------------------------------------------- the recipe's options


def test_a_command_with_recipe_options_takes_them_as_keywords_and_receives_them_as_one_dict() -> None:
    calls: list[tuple[str, object, bool]] = []

    def command(model: str, *, recipe: RecipeChoices | None = None, quiet: bool = False) -> None:
        calls.append((model, recipe, quiet))

    wrapped = with_recipe_options(command)
    parameters = inspect.signature(wrapped).parameters
    names = [name for name, _, _ in RECIPE_OPTIONS]
    assert list(parameters) == ["model", "quiet", *names]
    assert {parameter.kind for parameter in parameters.values()} == {inspect.Parameter.KEYWORD_ONLY}
    assert (parameters["model"].annotation, parameters["quiet"].annotation) == (str, bool)  # evaluated, not text
    assert [(parameters[name].annotation, parameters[name].default) for name in names] == [
        (annotation, default) for _, annotation, default in RECIPE_OPTIONS
    ]
    assert wrapped.__annotations__ == {
        "model": str,
        "quiet": bool,
        **{name: annotation for name, annotation, _ in RECIPE_OPTIONS},
    }
    values = {name: f"value of {name}" for name in names}
    assert wrapped(model="m", quiet=True, **values) is None
    assert calls == [("m", values, True)]
    assert wrapped.__name__ == "command"


def recipe(**changed: object) -> RecipeChoices:
    """The recipe options' defaults with `changed` (as `with_recipe_options` hands them over)."""
    defaults = {name: default for name, _, default in RECIPE_OPTIONS}
    return typing.cast(RecipeChoices, {**defaults, **changed})


def test_the_recipe_options_become_settings_fields() -> None:
    assert recipe_settings(recipe()) == {
        "checkpointing": "none",
        "adapter": "none",
        "adapter_layers": "trainable",
        "adapter_rank": 8,
        "adapter_alpha": 16.0,
        "adapter_dropout": 0.0,
        "adapter_targets": (),
        "compile_mode": "eager",
    }
    lora = recipe(
        checkpointing="trainable",
        adapter="lora",
        adapter_layers="all",
        rank=4,
        alpha=2.5,
        dropout=0.25,
        targets=" qkv, proj ,,",
        compile_model=True,
        compile_mode="max-autotune",
    )
    assert recipe_settings(lora) == {
        "checkpointing": "trainable",
        "adapter": "lora",
        "adapter_layers": "all",
        "adapter_rank": 4,
        "adapter_alpha": 2.5,
        "adapter_dropout": 0.25,
        "adapter_targets": ("qkv", "proj"),
        "compile_mode": "max-autotune",
    }
    assert recipe_settings(recipe(compile_mode="reduce-overhead"))["compile_mode"] == "eager"  # without --compile
    assert recipe_settings(recipe(adapter="lora", targets="qkv"))["adapter_targets"] == ("qkv",)
    assert recipe_settings(recipe(adapter="lora"))["adapter_targets"] == ()


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        ({"adapter_layers": "all"}, "--adapter-layers and --adapter-targets need --adapter lora"),
        ({"targets": "qkv"}, "--adapter-layers and --adapter-targets need --adapter lora"),
        (
            {"adapter": "lora", "targets": " , "},
            "--adapter-targets ' , ' names no module (give NAME,NAME, e.g. qkv,proj)",
        ),
        ({"adapter": "lora", "targets": ""}, "--adapter-targets '' names no module (give NAME,NAME, e.g. qkv,proj)"),
    ],
)
def test_recipe_options_that_do_not_fit_together_are_refused(changed: dict[str, object], message: str) -> None:
    with refused(message):
        recipe_settings(recipe(**changed))


def test_recipe_settings_without_the_recipe_options_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="with_recipe_options"):
        recipe_settings(None)


# ---------------------------------------------------------------- --recipe


def test_each_recipe_is_the_fields_it_changes_typed() -> None:
    assert parse_recipes(None) == [] and parse_recipes([]) == []
    specs = [
        "checkpointing=trainable, adapter=lora ,lora-rank=4,lora-alpha=8,lora-dropout=0.5,",
        "optimizer=sgd-plain",
        "precision=bf16-true,adapter-layers=all",
    ]
    parsed = parse_recipes(specs)
    assert parsed == [
        {
            "checkpointing": "trainable",
            "adapter": "lora",
            "adapter_rank": 4,
            "adapter_alpha": 8.0,
            "adapter_dropout": 0.5,
        },
        {"optimizer": "sgd-plain"},
        {"precision": "bf16-true", "adapter_layers": "all"},
    ]
    assert type(parsed[0]["adapter_rank"]) is int and type(parsed[0]["adapter_alpha"]) is float


@pytest.mark.parametrize(
    ("spec", "fields"),
    [
        ("lora-rank=1", {"adapter_rank": 1}),
        ("lora-alpha=0", {"adapter_alpha": 0.0}),
        ("lora-alpha=0.5", {"adapter_alpha": 0.5}),
        ("lora-alpha=16", {"adapter_alpha": 16.0}),
        ("lora-dropout=0", {"adapter_dropout": 0.0}),
        ("lora-dropout=0.5", {"adapter_dropout": 0.5}),
        ("lora-dropout=1", {"adapter_dropout": 1.0}),
    ],
)
def test_a_recipes_numbers_at_the_edges_of_their_range_are_taken(spec: str, fields: dict[str, object]) -> None:
    assert parse_recipes([spec]) == [fields]


KEYS = "optimizer, precision, checkpointing, adapter, adapter-layers, lora-rank, lora-alpha, lora-dropout"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lora-rank=0", "--recipe 'lora-rank=0': lora-rank 0 is out of range"),
        ("lora-alpha=-0.5", "--recipe 'lora-alpha=-0.5': lora-alpha -0.5 is out of range"),
        ("lora-dropout=-0.1", "--recipe 'lora-dropout=-0.1': lora-dropout -0.1 is out of range"),
        ("lora-dropout=1.01", "--recipe 'lora-dropout=1.01': lora-dropout 1.01 is out of range"),
        ("lora-dropout=1.5", "--recipe 'lora-dropout=1.5': lora-dropout 1.5 is out of range"),
        ("lora-rank=2.5", "--recipe 'lora-rank=2.5': lora-rank must be a number, got '2.5'"),
        ("lora-alpha=much", "--recipe 'lora-alpha=much': lora-alpha must be a number, got 'much'"),
        ("rank=4", f"--recipe 'rank=4': 'rank=4' is not KEY=VALUE with KEY one of {KEYS}"),
        ("checkpointing", f"--recipe 'checkpointing': 'checkpointing' is not KEY=VALUE with KEY one of {KEYS}"),
        (
            "adapter=lora,checkpointing=some",
            "--recipe 'adapter=lora,checkpointing=some': checkpointing must be one of none, trainable, got 'some'",
        ),
        (" , ", "--recipe ' , ' changes nothing (give KEY=VALUE, e.g. checkpointing=trainable)"),
        ("", "--recipe '' changes nothing (give KEY=VALUE, e.g. checkpointing=trainable)"),
    ],
)
def test_a_bad_recipe_is_one_line(spec: str, message: str) -> None:
    with refused(message):
        parse_recipes(["adapter=lora", spec])


# ---------------------------------------------------------------- the shared options


def test_a_gpu_option_says_its_purpose_then_lists_every_gpu() -> None:
    annotation = gpu_option("Its memory.")
    kind, info = typing.get_args(annotation)
    assert kind == str | None
    assert "--gpu" in (info.default, *info.param_decls) and info.metavar == "NAME"
    assert info.help.startswith("Its memory. One entry per SKU; ")
    assert info.help.endswith(f"Known GPUs and MIG slices (any case): {', '.join(GPU_KINDS)}.")


@pytest.mark.parametrize(
    ("precision", "dtype", "named"),
    [
        ("bf16-mixed", None, "bf16-mixed"),
        ("32-true", "bfloat16", "bf16-true"),
        ("bf16-true", "bfloat16", "bf16-true"),
        ("32-true", "float16", "16-true"),
        ("32-true", "float32", "32-true"),
    ],
)
def test_an_old_dtype_names_its_true_precision(precision: str, dtype: str | None, named: str) -> None:
    assert precision_name(precision, dtype) == named  # type: ignore[arg-type]


def test_an_old_dtype_that_contradicts_the_precision_is_refused() -> None:
    with refused("--dtype bfloat16 contradicts --precision 16-mixed; give --precision only"):
        precision_name("16-mixed", "bfloat16")
    with refused("--dtype float16 contradicts --precision bf16-true; give --precision only"):
        precision_name("bf16-true", "float16")


def test_the_model_flags_become_model_options() -> None:
    given = model_options(3, "3,32,32", 8, ["width = 4", "act=relu"], ["Block", "Stage"])
    assert given == ModelOptions(
        num_classes=3,
        input_shape=(3, 32, 32),
        seq_len=8,
        overrides={"width": "4", "act": "relu"},
        unwrap=("Block", "Stage"),
    )
    assert model_options(None, None, None, None, None) == ModelOptions()
    assert model_options(None, "", None, [], [], model="resnet18") == ModelOptions()  # the name resolves


def test_a_model_flag_or_name_that_is_wrong_is_refused_before_a_build() -> None:
    with pytest.raises(LayerprofError, match="no-such-model-xyz"):
        model_options(None, "3,32,32", None, None, None, model="no-such-model-xyz")
    with pytest.raises(LayerprofError, match="--input-shape expects positive integers"):
        model_options(None, "3,0,32", None, None, None, model="resnet18")


def test_batch_sizes_not_given_are_the_familys_and_given_ones_are_parsed() -> None:
    assert parse_batch_sizes(None) == ()
    assert parse_batch_sizes("1,8, 32") == (1, 8, 32)
    with pytest.raises(LayerprofError, match="--batch-sizes"):
        parse_batch_sizes("")


# ---------------------------------------------------------------- profile's executors


@pytest.mark.parametrize(
    ("on_ray", "cpus", "gpu_kinds", "address", "out"),
    [
        (False, None, None, None, None),
        (False, "0-3", None, None, Path("p.json")),
        (True, None, "L4,H100", None, None),
        (True, None, "small=gpu_small", "auto", Path("profiles")),
        (True, None, "L4", None, Path("profiles.d")),
    ],
)
def test_each_executor_takes_its_own_options(
    on_ray: bool, cpus: str | None, gpu_kinds: str | None, address: str | None, out: Path | None
) -> None:
    assert check_profile_executor(on_ray, cpus, gpu_kinds, address, out) is None


@pytest.mark.parametrize(
    ("on_ray", "cpus", "gpu_kinds", "address", "out", "message"),
    [
        (True, "0-3", "L4", None, None, "--cpus names this machine's CPUs; it does not apply with --executor ray"),
        (
            True,
            None,
            None,
            "auto",
            None,
            "--executor ray needs --gpu-kinds, e.g. L4,H100 or small=RESOURCE,big=RESOURCE",
        ),
        (True, None, "", None, None, "--executor ray needs --gpu-kinds, e.g. L4,H100 or small=RESOURCE,big=RESOURCE"),
        (
            True,
            None,
            "L4",
            None,
            Path("out/p.json"),
            "with --executor ray, --out is a directory (one profile per kind), got 'out/p.json'",
        ),
        (False, None, "L4", None, None, "--gpu-kinds and --address need --executor ray"),
        (False, None, None, "auto", None, "--gpu-kinds and --address need --executor ray"),
        (False, "0", "L4", "auto", None, "--gpu-kinds and --address need --executor ray"),
    ],
)
def test_an_option_of_the_other_executor_is_refused(
    on_ray: bool, cpus: str | None, gpu_kinds: str | None, address: str | None, out: Path | None, message: str
) -> None:
    with refused(message):
        check_profile_executor(on_ray, cpus, gpu_kinds, address, out)


def test_one_output_on_stdout_and_an_objective_only_with_an_export_that_can_find_it() -> None:
    for as_json, export in ((False, None), (True, None), (False, "ray")):
        check_one_output(as_json, export)
    check_one_output(False, "ray", "json:dumps")  # a module that is there
    with refused("--json and --export both print to stdout; give one of them"):
        check_one_output(True, "ray")
    with refused("--objective names the training of an exported script; give --export too"):
        check_one_output(False, None, "json:dumps")
    with pytest.raises(LayerprofError, match="^--objective 'lp_no_such_module_xyz:train': no module"):
        check_one_output(False, "ray", "lp_no_such_module_xyz:train")


# ---------------------------------------------------------------- prices, deadlines, --quick


@pytest.fixture
def no_prices_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAYERPROF_PRICES", raising=False)


def given_prices(arguments: options.PricedArguments) -> dict[str, float] | None:
    book = arguments["prices"]
    return None if book is None else {name: price.usd_per_hour for name, price in book.given.items()}


@pytest.mark.usefixtures("no_prices_variable")
def test_prices_and_the_gpu_become_the_library_calls_keyword_arguments() -> None:
    arguments = priced(["H100=2.5"], None)
    assert set(arguments) == {"prices"} and given_prices(arguments) == {"H100": 2.5}
    assert isinstance(priced(None, None)["prices"], PriceBook)
    with_gpu = priced(["L4=0.5"], None, "l4")
    assert set(with_gpu) == {"prices", "gpu"} and with_gpu["gpu"] is GPU_KINDS["L4"]
    assert given_prices(with_gpu) == {"L4": 0.5}
    ladder = priced(["L4=0.5"], None, "L4", gpu_needed=True)
    assert given_prices(ladder) == {"L4": 0.5} and ladder["gpu"] is GPU_KINDS["L4"]
    assert priced(None, None, gpu_needed=True) == {"prices": None}  # nothing to price, nothing priced


@pytest.mark.usefixtures("no_prices_variable")
def test_prices_without_a_gpu_are_refused_where_they_would_price_nothing(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text('{"H100": 2.49}')
    message = "--price and --prices price each rung's trial on --gpu KIND; give --gpu too"
    with refused(message):
        priced(["H100=2.5"], None, gpu_needed=True)
    with refused(message):
        priced(None, prices, gpu_needed=True)
    assert given_prices(priced(None, prices)) == {"H100": 2.49}


def test_a_deadline_is_seconds_where_given() -> None:
    assert deadline_seconds(None) is None
    assert deadline_seconds("2h30m") == 9000.0


def context(written: set[str]) -> typing.Any:
    """A stand-in for typer's context: where each parameter's value came from."""
    sources = {name: ParameterSource.DEFAULT for name in ProfileProtocol._fields} | dict.fromkeys(
        written, ParameterSource.COMMANDLINE
    )
    sources["max_time"] = ParameterSource.ENVIRONMENT if "max_time" not in written else sources["max_time"]
    return SimpleNamespace(get_parameter_source=sources.get)


GIVEN = ProfileProtocol(layer_counts="1,2", warmup=7, min_steps=11, steps=40, max_time=None)


def test_quick_takes_its_protocol_for_the_options_not_written_on_the_command_line() -> None:
    assert quick_profile(context(set()), False, GIVEN) is GIVEN
    assert quick_profile(context(set()), True, GIVEN) == options.QUICK_PROTOCOL
    assert quick_profile(context({"warmup", "steps"}), True, GIVEN) == ProfileProtocol(
        layer_counts="doubling", warmup=7, min_steps=5, steps=40, max_time=120.0
    )
    unknown = SimpleNamespace(get_parameter_source=lambda name: None)  # a parameter the context does not know
    assert quick_profile(unknown, True, GIVEN) == options.QUICK_PROTOCOL
