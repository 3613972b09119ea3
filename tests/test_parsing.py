"""Every command-line value read from text (`layerprof.parsing`): what each parser returns for what a user types,
and the one-line message for what it refuses."""

from __future__ import annotations

import re
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
        ("doubling", 12, (1, 2, 4, 8, 12)),  # powers of two, and n
        ("doubling", 16, (1, 2, 4, 8, 16)),
        ("doubling", 1, (1,)),
        ("Doubling,3", 9, (1, 2, 3, 4, 8, 9)),
        ("doubling,all", 5, (1, 2, 4, 5)),
    ],
)
def test_layer_selections_resolve_against_the_layer_count(text: str, layer_count: int | None, resolved) -> None:
    assert parse_layer_selection(text).resolve(layer_count) == resolved


def test_layer_selections_refuse_what_a_model_cannot_have() -> None:
    assert parse_layer_selection("all").mentions_all and not parse_layer_selection("1,2").mentions_all
    cases = [
        (lambda: parse_layer_selection("1,x"), "--layers expects all, doubling, 1,2,4 or 1-5, got '1,x'"),
        (lambda: parse_layer_selection("doubling").resolve(None), "--layers doubling needs the number of layers"),
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


# ---------------------------------------------------------------- prices and durations


@pytest.mark.parametrize(
    ("text", "kind", "usd"),
    [
        ("H100=2.49", "H100", 2.49),
        (" h100 = $2.49/h ", "H100", 2.49),  # any case, a dollar sign, per hour spelled out
        ("a100-80gb=1.79/hr", "A100-80GB", 1.79),
        ("H100-1g.10gb=0.4", "H100-1g.10gb", 0.4),  # a MIG slice priced on its own
        ("H200=0", "H200", 0.0),  # a GPU you own: free per hour
        ("L4=.5", "L4", 0.5),
        ("B200=1e1", "B200", 10.0),
        ("T4=1000", "T4", 1000.0),  # the largest price taken
    ],
)
def test_a_price_names_a_gpu_kind_and_dollars_per_hour(text: str, kind: str, usd: float) -> None:
    from layerprof.parsing import parse_price

    assert parse_price(text) == (kind, usd)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("H100", "--price 'H100': write KIND=USD_PER_HOUR, e.g. --price H100=2.49"),
        ("=2.49", "--price '=2.49': write KIND=USD_PER_HOUR"),
        ("L5=2", "--price 'L5=2': unknown GPU 'L5'; known: 1g.5gb"),
        ("H100=", "--price 'H100=': '' is not a price"),
        ("H100=-1", "'-1' is not a price"),
        ("H100=abc", "'abc' is not a price"),
        ("H100=nan", "'nan' is not a price"),
        ("H100=inf", "'inf' is not a price"),
        ("H100=1000.01", "'1000.01' is not a price; write US dollars per GPU-hour from 0 to 1000"),
        ("H100=2.49.1", "'2.49.1' is not a price"),
        ("H100=2,49", "'2,49' is not a price"),
        ("H100=2.49/day", "'2.49/day' is not a price"),
    ],
)
def test_a_price_that_is_not_one_is_refused(text: str, message: str) -> None:
    from layerprof.parsing import parse_price

    with pytest.raises(LayerprofError) as caught:
        parse_price(text)
    assert message in str(caught.value), str(caught.value)


def test_prices_come_from_options_a_file_or_the_environment_later_ones_first(tmp_path: Path) -> None:
    from layerprof.devices import GPU_KINDS
    from layerprof.parsing import price_book

    json_file = tmp_path / "prices.json"
    json_file.write_text('{"h100": 2.0, "L4": {"usd_per_hour": "0.5", "source": "our contract", "date": "2026-01-02"}}')
    lines_file = tmp_path / "prices.txt"
    lines_file.write_text("# our cloud\nH100 = 3.0  # on demand\n\nH200=4\n")
    book = price_book(["H100=2.49"], json_file, environ={})
    h100, l4, t4 = (book.price(GPU_KINDS[name]) for name in ("H100", "L4", "T4"))
    assert (h100.usd_per_hour, h100.source, h100.origin) == (2.49, "--price", "--price")  # --price before the file
    assert (l4.usd_per_hour, l4.label) == (0.5, "$0.5/h (our contract, 2026-01-02)")
    assert (t4.usd_per_hour, t4.origin) == (0.5904, "built-in")
    from_environment = price_book(environ={"LAYERPROF_PRICES": str(lines_file)})
    h200 = from_environment.price(GPU_KINDS["H200"])
    assert (h200.usd_per_hour, h200.source, h200.origin) == (4.0, str(lines_file), "LAYERPROF_PRICES")
    assert from_environment.price(GPU_KINDS["H100"]).usd_per_hour == 3.0
    # --prices wins over the environment's file, which is then not read at all
    assert (
        price_book([], json_file, environ={"LAYERPROF_PRICES": "/nonexistent"}).price(GPU_KINDS["H100"]).usd_per_hour
        == 2.0
    )
    for environ, prices, message in [
        ({}, ["H100=1", "h100=2"], "--price H100 is given twice; give each GPU kind once"),
        ({"LAYERPROF_PRICES": str(tmp_path / "gone")}, [], f"LAYERPROF_PRICES {tmp_path / 'gone'}: cannot read it"),
    ]:  # fmt: skip
        with pytest.raises(LayerprofError) as caught:
            price_book(prices, environ=environ)
        assert str(caught.value).startswith(message), str(caught.value)
    for text, message in [
        ('{"H100": }', "not JSON"),
        ('{"L5": 1}', "unknown GPU 'L5'"),
        ('{"H100": true}', "H100's price True is not a number"),
        ('{"H100": {"source": "x"}}', "H100's price None is not a number"),
        ('{"H100": -2}', "'-2' is not a price"),
        ("H100 2.49\n", "line 1: 'H100 2.49'; write KIND=USD_PER_HOUR"),
    ]:
        json_file.write_text(text)
        with pytest.raises(LayerprofError, match=re.escape(message)):
            price_book(prices_file=json_file, environ={})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6h", 21600.0), ("2h30m", 9000.0), ("2h 30min", 9000.0), ("90min", 5400.0), ("1.5d", 129600.0),
     (" 45 s ", 45.0), ("366d", 366 * 86400.0), ("1H", 3600.0)],
)  # fmt: skip
def test_a_deadline_is_a_duration_with_units(text: str, seconds: float) -> None:
    from layerprof.parsing import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [("6", "'6' not understood; write a duration with a unit, e.g. 6h"), ("h", "not understood"),
     ("", "not understood"), ("6x", "unknown unit 'x'; use s, min (or m), h or d"), ("0h", "must be more than 0"),
     ("367d", "at most 366 days"), ("6h-1m", "not understood"), ("6 hours", "unknown unit 'hours'")],
)  # fmt: skip
def test_a_deadline_without_a_unit_or_beyond_a_year_is_refused(text: str, message: str) -> None:
    from layerprof.parsing import parse_duration

    with pytest.raises(LayerprofError, match=re.escape(message)):
        parse_duration(text)


def test_caps_at_their_edge() -> None:
    """The last good value passes; the first bad one is one line naming the cap (issue 40)."""
    from layerprof.parsing import MAX_BATCH_SIZE, MAX_BUDGET_STEPS, check_batch_size, check_budget_steps

    assert check_budget_steps(MAX_BUDGET_STEPS) == 1_000_000_000 and check_budget_steps(1) == 1
    with pytest.raises(LayerprofError, match="--budget-steps 1,000,000,001 is beyond the largest this takes"):
        check_budget_steps(MAX_BUDGET_STEPS + 1)
    with pytest.raises(LayerprofError, match="--budget-steps must be at least 1, got 0"):
        check_budget_steps(0)
    assert check_batch_size(MAX_BATCH_SIZE) == 16_777_216 and check_batch_size(1) == 1
    with pytest.raises(LayerprofError, match="--batch-size 16,777,217 is beyond the largest this takes, 16,777,216"):
        check_batch_size(MAX_BATCH_SIZE + 1)
    with pytest.raises(LayerprofError, match="--batch-size must be at least 1, got 0"):
        check_batch_size(0)


def test_a_repeated_rung_is_refused_and_one_step_up_is_not() -> None:
    assert parse_rungs("1@0.5,1@0.6", rising=True) == [(1, 0.5), (1, 0.6)]
    assert parse_rungs("1@0.5,2@0.5", rising=True) == [(1, 0.5), (2, 0.5)]
    with pytest.raises(LayerprofError, match="rung 1@0.5 after 1@0.5 does not raise the fidelity"):
        parse_rungs("1@0.5,1@0.5", rising=True)
    assert parse_rungs("1@0.5,1@0.5") == [(1, 0.5), (1, 0.5)]  # only a path must rise
