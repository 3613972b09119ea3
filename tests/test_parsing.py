"""Every command-line value read from text (`layerprof.parsing`): what each parser returns for what a user types,
and the one-line message for what it refuses."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Literal, Optional

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.errors import LayerprofError
from layerprof.parsing import (
    coerce,
    parse_cpu_list,
    parse_fractions,
    parse_input_shape,
    parse_layer_selection,
    parse_memory,
    parse_memory_budget,
    parse_overrides,
    parse_positive_ints,
    parse_repeats,
    parse_rungs,
    parse_share,
    parse_value,
)
from tests.cli.test_cli import assert_one_line_error

GIB = 2**30


def test_positive_integers_are_sorted_without_duplicates() -> None:
    assert parse_positive_ints("32,1,8,8", "--batch-sizes") == (1, 8, 32)
    assert parse_positive_ints(" 1, 2 ", "--batch-sizes") == (1, 2)
    for text in ("0,1", "-1", "a"):
        with pytest.raises(LayerprofError, match=f"--batch-sizes expects positive integers like 1,8,32, got {text!r}"):
            parse_positive_ints(text, "--batch-sizes")
    for text, message in [("", "--batch-sizes is empty; write e.g. 1,8,32"),
                          ("1, 2,", "--batch-sizes '1, 2,' has an empty item (two commas, or one at an end)"),
                          (",", "--batch-sizes ',' has an empty item")]:  # fmt: skip
        with pytest.raises(LayerprofError) as caught:
            parse_positive_ints(text, "--batch-sizes")
        assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(
    ("text", "layer_count", "resolved"),
    [
        ("all", 4, (1, 2, 3, 4)),
        ("1,2,all", 6, (1, 2, 6)),  # in a list, all stands for n
        ("all,2", 6, (2, 6)),
        ("ALL", 2, (1, 2)),
        ("1-3", 9, (1, 2, 3)),
        ("2-2", 9, (2,)),
        ("4,1-2,4", 9, (1, 2, 4)),
        ("1-3", None, (1, 2, 3)),  # numbers need no layer count
    ],
)
def test_layer_selections_resolve_against_the_layer_count(text: str, layer_count: int | None, resolved) -> None:
    assert parse_layer_selection(text).resolve(layer_count) == resolved


def test_layer_selections_refuse_what_a_model_cannot_have() -> None:
    assert parse_layer_selection("all").mentions_all and not parse_layer_selection("1,2").mentions_all
    cases = [
        (lambda: parse_layer_selection("1,x"), "--layers expects all, 1,2,4 or 1-5, got '1,x'"),
        (lambda: parse_layer_selection("3-1"), "--layers range '3-1' is empty; write LOW-HIGH with LOW <= HIGH"),
        (lambda: parse_layer_selection("1,5").resolve(4), "--layers 5 is outside 1..4 (this model has 4 layers)"),
        (lambda: parse_layer_selection("0,2").resolve(4), "--layers 0 is outside 1..4"),
        (lambda: parse_layer_selection("0").resolve(None), "--layers 0 is outside 1.."),
        (lambda: parse_layer_selection("all").resolve(None), "--layers all needs the number of layers"),
        (lambda: parse_layer_selection("5", "--zs").resolve(4), "--zs 5 is outside 1..4"),
    ]
    for call, message in cases:
        with pytest.raises(LayerprofError) as caught:
            call()
        assert str(caught.value).startswith(message), str(caught.value)
    assert parse_layer_selection("4").resolve(4) == (4,)  # the boundary itself is inside


def test_budget_fractions_always_reach_full_fidelity() -> None:
    assert parse_fractions("0.5,0.1") == (0.1, 0.5, 1.0)
    assert parse_fractions("1,0.25") == (0.25, 1.0)
    assert parse_fractions("1") == (1.0,)
    for text in ("0", "1.5", "-0.1", "a", "0.5,1.5"):
        with pytest.raises(LayerprofError, match="--budget-fractions expects fractions in .0, 1. like"):
            parse_fractions(text)
    with pytest.raises(LayerprofError, match="--budget-fractions is empty; write e.g. 0.1,0.25,0.5,1"):
        parse_fractions("")


def test_rungs_are_z_at_a_budget_fraction() -> None:
    assert parse_rungs("1@0.25, 3@0.5,6@1") == [(1, 0.25), (3, 0.5), (6, 1.0)]
    assert parse_rungs("2@1") == [(2, 1.0)]
    for text in ("1@0.5,3", "0@0.5", "1@0", "1@1.5", "a@0.5", "1@b"):
        with pytest.raises(LayerprofError, match="--path expects rungs like 1@0.25,3@0.5,6@1"):
            parse_rungs(text)


def test_repeats_are_a_positive_count_or_auto() -> None:
    assert parse_repeats("auto") is None and parse_repeats(" AUTO ") is None
    assert parse_repeats("1") == 1 and parse_repeats("4000") == 4000
    for text in ("0", "-3", "1.5", "many"):
        with pytest.raises(LayerprofError, match="--repeats expects a positive number of repeats or auto"):
            parse_repeats(text)


def test_shares_take_percent_or_a_fraction() -> None:
    assert parse_share("10%", "--time-tolerance") == pytest.approx(0.1)
    assert parse_share(" 2.5% ", "--memory-tolerance") == pytest.approx(0.025)
    assert parse_share("0.1", "--time-tolerance") == 0.1
    assert parse_share("0", "--time-tolerance") == 0.0
    with pytest.raises(LayerprofError, match="--time-tolerance expects a share like 10% or 0.1, got 'fast'"):
        parse_share("fast", "--time-tolerance")
    with pytest.raises(LayerprofError, match="--time-tolerance must not be negative, got '-5%'"):
        parse_share("-5%", "--time-tolerance")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("80GiB", 80 * GIB),
        ("24GB", 24 * 10**9),
        ("24gb", 24 * 10**9),
        ("40G", 40 * GIB),  # a bare G is binary
        ("512MiB", 512 * 2**20),
        ("1.5KiB", 1536),
        ("2KB", 2000),
        ("1TiB", 2**40),
        ("1000B", 1000),
        (" 7 GiB ", 7 * GIB),
    ],
)
def test_memory_sizes(text: str, size: int) -> None:
    assert parse_memory(text) == size


def test_memory_sizes_refused_name_the_option() -> None:
    for text in ("lots", "5iB", "GiB", "1.2.3G"):
        with pytest.raises(LayerprofError, match=f"--memory {text!r} not understood; write e.g. 80GiB"):
            parse_memory(text, "--memory")
    with pytest.raises(LayerprofError, match="--memory '24' has no unit; write e.g. 24GiB, 24GB or 512MiB"):
        parse_memory("24", "--memory")  # 24 GiB to a reader, 24 bytes to a parser
    assert parse_memory_budget("24GiB", None) == 24 * GIB
    assert parse_memory_budget(None, "l4") == 23034 * 2**20
    for memory, gpu in (("24GiB", "L4"), (None, None)):
        with pytest.raises(LayerprofError, match="give exactly one of --memory SIZE or --gpu NAME .known: 1g.5gb"):
            parse_memory_budget(memory, gpu)


def test_overrides_keep_text_until_their_target_types_them() -> None:
    assert parse_overrides(["n_layer=4", " bias = none ", "name=a=b"]) == {
        "n_layer": "4",
        "bias": "none",
        "name": "a=b",
    }
    assert parse_overrides([]) == {}
    for item in ("n_layer", "=4", "2x=1", "a b=1"):
        with pytest.raises(LayerprofError, match="--set expects KEY=VALUE with KEY a Python identifier"):
            parse_overrides([item])


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True), ("False", False), ("none", None), ("NULL", None), ("3", 3), ("-2", -2), ("0.5", 0.5),
        ("1e3", 1000.0), ("gelu", "gelu"), ("", ""),
    ],
)  # fmt: skip
def test_undeclared_set_values_are_read_as_what_they_look_like(raw: str, value: object) -> None:
    parsed = parse_value(raw)
    assert parsed == value and type(parsed) is type(value)
    assert coerce("key", raw, None) == value and coerce("key", raw, typing.Any) == value


@pytest.mark.parametrize(
    ("raw", "annotation", "value"),
    [
        ("none", Optional[int], None),  # noqa: UP045 - the spelling a factory may use
        ("none", int | None, None),
        ("null", float | None, None),
        ("7", int | None, 7),
        ("7", float, 7.0),
        ("7", str, "7"),
        ("none", str, "none"),  # text stays text
        ("yes", bool, True),
        ("0", bool, False),
        ("3", int | str, 3),
        ("x3", int | str, "x3"),  # the first member that takes it
        ("relu", Literal["relu", "gelu"], "relu"),
        ("true", Literal[True, 2], True),
        ("2", Literal[True, 2], 2),
        ("1.5", list, 1.5),  # other declared types read it as an undeclared value would
        (4, int, 4),  # not text: kept as it is
    ],
)
def test_set_values_take_the_type_their_target_declares(raw: object, annotation: object, value: object) -> None:
    coerced = coerce("key", raw, annotation)
    assert coerced == value and type(coerced) is type(value)


@pytest.mark.parametrize(
    ("raw", "annotation", "message"),
    [
        ("abc", int, "--set n_layer: expects an integer, got 'abc'"),
        ("1.5", int, "--set n_layer: expects an integer, got '1.5'"),
        ("fast", float, "--set n_layer: expects a number, got 'fast'"),
        ("maybe", bool, "--set n_layer: expects true or false, got 'maybe'"),
        ("none", int, "--set n_layer: expects an integer, got 'none'"),
        ("x", int | None, "--set n_layer: expects an integer or none, got 'x'"),
        ("tanh", Literal["relu", "gelu"], "--set n_layer: expects one of relu, gelu, got 'tanh'"),
    ],
)
def test_set_values_that_do_not_fit_say_what_would(raw: str, annotation: object, message: str) -> None:
    with pytest.raises(LayerprofError) as caught:
        coerce("n_layer", raw, annotation)
    assert str(caught.value) == message


def test_set_none_reaches_a_factory(tmp_path: Path) -> None:
    """`--set bias=none` gives an Optional argument None; `--set width=none` for an int is refused."""
    factory = tmp_path / "factory.py"
    factory.write_text(
        "from torch import nn\n\n"
        "def make(width: int = 8, bias: bool | None = True):\n"
        "    return nn.Sequential(nn.Linear(4, width, bias=bias is not None), nn.Linear(width, 2))\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["layers", f"{factory}:make", "--set", "bias=none", "--input-shape", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert '"params": 32' in result.output  # 4 x 8 weights and no bias
    refused = runner.invoke(app, ["layers", f"{factory}:make", "--set", "width=none", "--input-shape", "4"])
    assert_one_line_error(refused, "--set width: expects an integer, got 'none'")


def test_input_shapes() -> None:
    assert parse_input_shape("3,224,224") == (3, 224, 224)
    assert parse_input_shape("3x32x32") == (3, 32, 32)
    assert parse_input_shape("64") == (64,)
    assert parse_input_shape("1,28,28") == (1, 28, 28)
    for text in ("3,0", "a", "", "3,-1"):
        with pytest.raises(LayerprofError, match="--input-shape expects positive integers like 3,224,224"):
            parse_input_shape(text)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0-1", (0, 1)), ("0-3,5", (0, 1, 2, 3, 5)), ("2,0", (0, 2)), ("1-1", (1,)), (" 0 , 1-2 ", (0, 1, 2))],
)
def test_cpu_lists_take_ranges_and_numbers(text: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpu_list(text) == cpus


def test_cpu_lists_refused() -> None:
    for text, message in [
        ("a", "--cpus expects CPU numbers like 0-3 or 0,2, got 'a'"),
        ("", "--cpus is empty; write e.g. 0-3 or 0,2"),
        ("0,,1", "--cpus '0,,1' has an empty item"),
        ("3-1", "--cpus range '3-1' is empty or negative"),
        ("-1", "--cpus expects CPU numbers like 0-3 or 0,2, got '-1'"),
    ]:
        with pytest.raises(LayerprofError) as caught:
            parse_cpu_list(text)
        assert str(caught.value).startswith(message), str(caught.value)
