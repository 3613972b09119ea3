"""Command-line values at their edges (issue 40, `make mutate` survivors): the last good value passes and the
first bad one is refused, for every cap `layerprof.parsing` draws."""

from __future__ import annotations

import pytest

from layerprof import parsing
from layerprof.errors import LayerprofError
from layerprof.parsing import (
    MAX_CLUSTER_GPUS,
    MAX_CPUS,
    MAX_ETA,
    MAX_REPEATS,
    check_eta,
    parse_cpu_list,
    parse_duration,
    parse_inventory,
    parse_positive_ints,
    parse_repeats,
    parse_share,
)


def test_positive_integers_at_their_largest() -> None:
    assert parse_positive_ints("1,5", "--batch-sizes", largest=5) == (1, 5)
    with pytest.raises(LayerprofError, match="^--batch-sizes 6 is beyond the largest this takes, 5$"):
        parse_positive_ints("1,6", "--batch-sizes", largest=5)  # one value beyond is enough
    with pytest.raises(LayerprofError, match="^--batch-sizes expects positive integers like 1,8,32, got '0,3'$"):
        parse_positive_ints("0,3", "--batch-sizes")


def test_eta_above_one_up_to_its_cap() -> None:
    assert check_eta(MAX_ETA) == 1000.0 and check_eta(1.001) == 1.001
    for eta in (1.0, 1000.5, float("nan"), float("inf")):
        with pytest.raises(LayerprofError, match="^--eta must be a number greater than 1 and at most 1000, got "):
            check_eta(eta)


def test_repeats_up_to_their_cap() -> None:
    assert parse_repeats(str(MAX_REPEATS)) == 1_000_000
    with pytest.raises(LayerprofError, match="^--repeats 1,000,001 is beyond the largest this takes, 1,000,000 "):
        parse_repeats("1000001")
    with pytest.raises(LayerprofError, match="^--repeats expects a positive number of repeats or auto, got '0'$"):
        parse_repeats("0")


def test_a_layer_range_without_a_layer_count_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a model's layer count a range is capped at MAX_BATCH_SIZE layers apart (lowered here to 4)."""
    monkeypatch.setattr(parsing, "MAX_BATCH_SIZE", 4)
    assert parsing.LayerSelection("1-5").resolve(None) == (1, 2, 3, 4, 5)
    with pytest.raises(LayerprofError, match="^--layers 1-6: a range of more than 4 layers$"):
        parsing.LayerSelection("1-6").resolve(None)


def test_a_bare_share_up_to_one() -> None:
    assert parse_share("1", "--time-tolerance") == 1.0 and parse_share("150%", "--time-tolerance") == 1.5
    with pytest.raises(
        LayerprofError, match=r"^--time-tolerance 1.5: a share is a fraction up to 1 \(0.1\) or a percent"
    ):
        parse_share("1.5", "--time-tolerance")


def test_cpu_numbers_below_the_cap() -> None:
    assert MAX_CPUS == 65_536 and parse_cpu_list("65535") == (65_535,) and parse_cpu_list("0") == (0,)
    with pytest.raises(LayerprofError, match="^--cpus 65536 is beyond any machine's CPU numbers \\(below 65,536\\)$"):
        parse_cpu_list("65536")


def test_a_cluster_counts_each_kind_once_summed_and_up_to_its_cap() -> None:
    def counts(text: str) -> list[tuple[str, int]]:
        return [(item.gpu.name, item.count) for item in parse_inventory(text)]

    assert counts("L4") == [("L4", 1)]  # a bare name is one GPU
    assert counts("2xL4,3xL4") == [("L4", 5)]
    assert counts(f"{MAX_CLUSTER_GPUS}xL4") == [("L4", 100_000)]
    with pytest.raises(LayerprofError, match="^--cluster: '0xL4' has no GPUs"):
        parse_inventory("0xL4")
    with pytest.raises(LayerprofError, match="^--cluster: 100,001 L4 GPUs is beyond the 100,000 per kind"):
        parse_inventory("99999xL4,2xL4")


def test_a_duration_from_one_second() -> None:
    assert parse_duration("1s") == 1.0 and parse_duration("366d") == 366 * 86_400
    for text in ("0s", "366d1s"):
        with pytest.raises(LayerprofError, match="must be more than 0 and at most 366 days"):
            parse_duration(text)
