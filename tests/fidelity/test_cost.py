"""Dollars: the built-in prices and their sources, MIG slices at their share, and what `plan` (per rung, per
schedule, and the cheapest cluster under `--deadline`), `fit` (the cheapest kind that fits) and `ladder --gpu` (per
rung) make of them."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.devices import GPU_KINDS, GPU_PRICES, GpuPrice, InventoryItem, PriceBook
from layerprof.errors import LayerprofError
from layerprof.fidelity.plan import plan_cluster
from layerprof.measure.cluster import parse_inventory
from layerprof.parsing import price_book
from layerprof.profile import save_profile
from tests.cli.test_cli import assert_one_line_error
from tests.measure.test_cluster import h100_profile

L4_USD, H100_USD = 0.7992, 3.9492  # the built-in prices (Modal's list, 2026-05-07)


def test_every_built_in_price_is_a_known_kind_with_a_named_source_and_date() -> None:
    assert GPU_PRICES["H100"].usd_per_hour == H100_USD and GPU_PRICES["L4"].usd_per_hour == L4_USD
    for name, price in GPU_PRICES.items():
        assert name in GPU_KINDS and GPU_KINDS[name].mig_of is None, name  # slices follow from their GPU
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", price.date), name
        assert re.search(r"\w+\.\w+/pricing", price.source), name  # the page it was read from
        assert 0 < price.usd_per_hour < 100 and price.origin == "built-in"
    assert GPU_PRICES["H100"].label == "$3.9492/h (Modal list price, modal.com/pricing, 2026-05-07)"


def test_a_mig_slice_costs_its_share_of_its_gpu_unless_priced_itself() -> None:
    book = PriceBook({"H100": GpuPrice(2.8, "--price", origin="--price")})
    slice_price = book.price(GPU_KINDS["H100-1g.10gb"])
    assert slice_price.usd_per_hour == pytest.approx(2.8 / 7)
    assert slice_price.label == "$0.4/h (0.143 of H100 at $2.8/h (--price))"
    assert PriceBook().price(GPU_KINDS["3g.40gb"]).usd_per_hour == pytest.approx(2.4984 * 3 / 7)
    assert PriceBook().price(GPU_KINDS["1g.5gb"]).usd_per_hour == pytest.approx(1.48 / 7)  # an A100-40GB slice
    own = PriceBook({"H100-1g.10gb": GpuPrice(0.3, "--price")})
    assert own.price(GPU_KINDS["H100-1g.10gb"]).usd_per_hour == 0.3
    assert PriceBook(builtin=False).find(GPU_KINDS["H100"]) is None
    assert PriceBook().usd(GPU_KINDS["L4"], 1800) == pytest.approx(L4_USD / 2)


def test_a_kind_without_a_price_says_so_and_how_to_give_one() -> None:
    for name in ("H200", "B200", "RTX4090"):
        with pytest.raises(LayerprofError) as caught:
            PriceBook().price(GPU_KINDS[name])
        assert str(caught.value).startswith(
            f"no price for {name} (give one: --price {name}=USD_PER_HOUR, a --prices file or LAYERPROF_PRICES=FILE"
        )
    assert PriceBook({"H200": GpuPrice(3.5, "--price")}).price(GPU_KINDS["H200"]).usd_per_hour == 3.5


# ---------------------------------------------------------------- plan


def plan_8l4_1h100(**options: object) -> object:
    return plan_cluster([h100_profile()], parse_inventory("8xL4,1xH100"), eta=3, configs=27, budget_steps=1000,
                        prices=price_book([], environ={}), **options)  # fmt: skip


def test_plan_prices_each_rung_by_its_busy_time_and_each_schedule_held_for_its_makespan() -> None:
    """The rungs of tests/measure/test_cluster.py's first plan: 21 z=1 trials of 22.1 s on L4s (3 on each of 7) and
    6 of 10 s on the H100; then 9 z=3 trials of 30 s on the H100."""
    plan = plan_8l4_1h100()
    assert plan.prices == {
        "L4": "$0.7992/h (Modal list price, modal.com/pricing, 2026-05-07)",
        "H100": "$3.9492/h (Modal list price, modal.com/pricing, 2026-05-07)",
    }
    schedule = plan.schedule("ladder", "successive halving")
    low, top = schedule.brackets[0]
    l4_seconds = 10.0 * 67 / 30.3
    l4, h100 = low.shares
    assert l4.busy_seconds == pytest.approx(21 * l4_seconds) and h100.busy_seconds == pytest.approx(60.0)
    assert l4.usd == pytest.approx(21 * l4_seconds * L4_USD / 3600)
    assert h100.usd == pytest.approx(60 * H100_USD / 3600)
    assert low.usd == pytest.approx(l4.usd + h100.usd)
    assert top.usd == pytest.approx(270 * H100_USD / 3600)
    assert schedule.usd == pytest.approx(low.usd + top.usd)
    makespan = 3 * l4_seconds + 270
    assert schedule.usd_held == pytest.approx((8 * L4_USD + H100_USD) * makespan / 3600)
    single = plan.schedule("best single kind", "successive halving")  # holds its one H100 only
    assert single.usd_held == pytest.approx(H100_USD * 540 / 3600) == pytest.approx(single.usd)


def test_plan_without_a_price_for_a_kind_shows_no_dollars_and_says_which() -> None:
    plan = plan_cluster([h100_profile()], parse_inventory("1xH200,1xH100"), eta=3, configs=9, prices=PriceBook())
    assert plan.prices == {} and all(s.usd is None and s.usd_held is None for s in plan.schedules)
    assert any(note.startswith("no price for H200 (give one: --price H200=") for note in plan.notes)
    with pytest.raises(LayerprofError, match="no price for H200"):
        plan_cluster([h100_profile()], parse_inventory("1xH200"), eta=3, configs=9, prices=PriceBook(),
                     deadline_seconds=3600)  # fmt: skip
    with pytest.raises(LayerprofError, match="--deadline needs prices"):
        plan_cluster([h100_profile()], parse_inventory("1xH100"), eta=3, configs=9, deadline_seconds=3600)


def test_deadline_names_the_cheapest_composition_that_meets_it() -> None:
    """Every composition of up to 8 L4s and 1 H100, held for its makespan: the search's answer is the cheapest
    that ends by 400 s, as trying them all says. The H100 alone takes 540 s; 3 L4s beside it 390 s."""
    plan = plan_8l4_1h100(deadline_seconds=400)
    answer = plan.deadline("successive halving")
    assert answer.met and answer.gpus == [{"gpu": "L4", "count": 3}, {"gpu": "H100", "count": 1}]
    assert answer.makespan_seconds == pytest.approx(120.0 + 270.0)  # 12 z=1 trials on the H100, 5 on each L4
    assert answer.usd_held == pytest.approx((3 * L4_USD + H100_USD) * answer.makespan_seconds / 3600)
    brute = []
    for l4s, h100s in itertools.product(range(9), range(2)):
        items = [InventoryItem(GPU_KINDS["L4"], l4s)] * bool(l4s) + [InventoryItem(GPU_KINDS["H100"], h100s)] * h100s
        if not items or not h100s:
            continue  # the top rung needs the H100
        other = plan_cluster([h100_profile()], items, eta=3, configs=27, budget_steps=1000, prices=PriceBook())
        ladder = other.schedule("ladder", "successive halving")
        if ladder.makespan_seconds <= 400:
            brute.append((ladder.usd_held, l4s))
    assert min(brute)[1] == 3 and min(brute)[0] == pytest.approx(answer.usd_held)
    # a longer deadline: the H100 alone, the cheapest of all
    assert plan_8l4_1h100(deadline_seconds=600).deadline("successive halving").gpus == [{"gpu": "H100", "count": 1}]


@pytest.mark.parametrize("algorithm", ["hyperband", "asha"])
def test_every_algorithm_gets_the_cheapest_composition_that_meets_the_deadline(algorithm: str) -> None:
    """Hyperband and ASHA get their own answer under --deadline, each the cheapest of every composition of up to 8
    L4s and 1 H100 (held for its makespan) that ends by the deadline, as trying them all says."""
    from layerprof.fidelity.plan import ASHA

    deadline = 900.0
    answer = plan_8l4_1h100(deadline_seconds=deadline).deadline(algorithm)
    brute = []
    for l4s in range(9):
        items = [InventoryItem(GPU_KINDS["L4"], l4s)] * bool(l4s) + [InventoryItem(GPU_KINDS["H100"], 1)]
        other = plan_cluster([h100_profile()], items, eta=3, configs=27, budget_steps=1000, prices=PriceBook())
        schedule = next(s for s in other.schedules if s.name == "ladder" and s.algorithm == algorithm)
        assert (algorithm == ASHA) == (schedule.algorithm == "asha")
        if schedule.makespan_seconds <= deadline:
            brute.append((schedule.usd_held, l4s))
    assert brute, "some composition meets the deadline"
    cheapest_usd, cheapest_l4s = min(brute)
    assert answer.met and answer.usd_held == pytest.approx(cheapest_usd)
    assert answer.gpus == [{"gpu": "L4", "count": cheapest_l4s}] * bool(cheapest_l4s) + [{"gpu": "H100", "count": 1}]


def test_deadline_that_no_composition_meets_says_why() -> None:
    answer = plan_8l4_1h100(deadline_seconds=60).deadline("successive halving")
    assert not answer.met and answer.gpus == [] and answer.usd_held is None
    assert answer.reason.startswith("even all of --cluster (8xL4, 1xH100) takes 0.0934 h for successive halving over "
                                    "the ladder, beyond the deadline of 0.0167 h")  # fmt: skip
    asha = plan_8l4_1h100(deadline_seconds=60).deadline("asha")
    assert not asha.met and "for ASHA over the ladder" in asha.reason


def test_plan_cli_prints_dollars_and_a_deadline(tmp_path: Path) -> None:
    path = save_profile(h100_profile(), tmp_path / "h100.json")
    runner = CliRunner()
    prices = tmp_path / "prices.json"
    prices.write_text('{"L4": 0.5}')
    args = ["plan", str(path), "--cluster", "8xL4,1xH100", "--configs", "27", "--prices", str(prices),
            "--price", "H100=2", "--deadline", "400s"]  # fmt: skip
    data = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert data["prices"] == {"L4": f"$0.5/h ({prices})", "H100": "$2/h (--price)"}
    assert data["schema"] == "layerprof.plan/2"
    assert [answer["algorithm"] for answer in data["deadlines"]] == ["successive halving", "hyperband", "asha"]
    halving = data["deadlines"][0]
    assert halving["gpus"] == [{"gpu": "L4", "count": 3}, {"gpu": "H100", "count": 1}]
    assert halving["usd_held"] == pytest.approx((3 * 0.5 + 2) * halving["makespan_seconds"] / 3600)
    table = runner.invoke(app, [*args, "--format", "md"])
    assert table.exit_code == 0, table.output
    assert "| successive halving | 6.67 min | 3×L4, 1×H100 |" in table.output
    assert "| hyperband | 6.67 min |" in table.output and "| ASHA | 6.67 min |" in table.output
    assert "price of H100: $2/h (--price)" in table.output
    for bad, message in [(["--price", "H100"], "--price 'H100': write KIND=USD_PER_HOUR"),
                         (["--deadline", "6"], "--deadline '6' not understood"),
                         (["--prices", str(tmp_path / "none.json")], "cannot read it")]:  # fmt: skip
        assert_one_line_error(runner.invoke(app, ["plan", str(path), "--cluster", "1xH100", *bad]), message)
    no_price = runner.invoke(app, ["plan", str(path), "--cluster", "1xH200", "--deadline", "1h"])
    assert_one_line_error(no_price, "no price for H200 (give one: --price H200=USD_PER_HOUR")


# ---------------------------------------------------------------- fit


@pytest.mark.parametrize(
    ("need_mib", "prices", "cheapest"),
    [
        (4000, [], "1g.5gb"),  # 1/7 of an A100-40GB's $1.48
        (15000, [], "H100-1g.20gb"),  # 1/7 of an H100's $3.9492 = $0.564, below a T4's $0.5904 (the smallest)
        (30000, [], "3g.40gb"),  # 3/7 of an A100-80GB = $1.07, below an A100-40GB's $1.48
        (30000, ["A100-40GB=0.9"], "A100-40GB"),
        (4000, ["T4=0.01"], "T4"),
        (150_000, [], None),  # only a B200 holds it, and it has no price
        (150_000, ["B200=6.25"], "B200"),
    ],
)
def test_the_cheapest_gpu_is_the_lowest_price_per_hour_that_holds_the_need(
    need_mib: int, prices: list[str], cheapest: str | None
) -> None:
    from layerprof.devices import cheapest_gpu_for

    found = cheapest_gpu_for(need_mib * 2**20, price_book(prices, environ={}))
    assert (found[0].name if found else None) == cheapest


def test_fit_names_the_cheapest_gpu_beside_the_smallest() -> None:
    example = str(Path(__file__).parents[2] / "examples" / "custom_model.py")
    runner = CliRunner()
    args = ["fit", f"{example}:mlp", "--input-shape", "64", "--memory", "1GiB", "--layers", "1", "--batch-size", "4"]
    (result,) = json.loads(runner.invoke(app, [*args, "--json"]).stdout)["results"]
    assert (result["smallest_gpu"], result["cheapest_gpu"]) == ("1g.5gb", "1g.5gb")
    assert result["cheapest_price"] == "$0.2114/h (0.143 of A100-40GB at $1.48/h (Lambda on-demand 1-GPU list " \
                                      "price, lambda.ai/pricing, 2026-05-07))"  # fmt: skip
    (result,) = json.loads(runner.invoke(app, [*args, "--price", "T4=0.1", "--json"]).stdout)["results"]
    assert (result["smallest_gpu"], result["cheapest_gpu"], result["cheapest_price"]) == (
        "1g.5gb",
        "T4",
        "$0.1/h (--price)",
    )
    assert_one_line_error(runner.invoke(app, [*args, "--price", "T4=x"]), "--price 'T4=x': 'x' is not a price")


# ---------------------------------------------------------------- ladder


def test_ladder_on_a_gpu_prices_each_rungs_trial_and_the_halving(tmp_path: Path) -> None:
    """The H100 profile's rungs z=1 (10 ms a step) and z=3 (30 ms); --budget-steps 900 at eta 3: 300 and 900 steps.
    On an L4 the float32 peaks scale the steps by 67 / 30.3."""
    path = save_profile(h100_profile(), tmp_path / "h100.json")
    runner = CliRunner()
    args = ["ladder", str(path), "--configs", "9", "--budget-steps", "900", "--json"]
    data = json.loads(runner.invoke(app, [*args, "--gpu", "h100"]).stdout)
    trials = [rung["usd_per_trial"] for rung in data["rungs"]]
    assert trials == pytest.approx([3.0 * H100_USD / 3600, 27.0 * H100_USD / 3600])
    assert data["successive_halving_usd"] == pytest.approx(9 * trials[0] + 3 * trials[1])
    assert (data["gpu"], data["priced_steps"], data["priced_time_source"]) == ("H100", "the rung's steps",
                                                                              "measured on H100")  # fmt: skip
    data = json.loads(runner.invoke(app, [*args, "--gpu", "L4", "--price", "L4=1"]).stdout)
    assert data["rungs"][0]["usd_per_trial"] == pytest.approx(3.0 * 67 / 30.3 / 3600)
    assert data["price"] == "$1/h (--price)" and data["priced_time_source"] == "scaled from H100 by peak"
    assert data["gpu_memory_bytes"] == GPU_KINDS["L4"].memory_mib * 2**20  # its memory gives the slots
    plain = json.loads(runner.invoke(app, ["ladder", str(path), "--gpu", "H100", "--json"]).stdout)
    assert plain["priced_steps"] == "1000 steps" and plain["successive_halving_usd"] is None
    assert plain["rungs"][1]["usd_per_trial"] == pytest.approx(30.0 * H100_USD / 3600)
    table = runner.invoke(app, ["ladder", str(path), "--gpu", "H100", "--format", "md"])
    assert "$/trial (H100)" in table.output and "at $3.9492/h (Modal list price" in table.output
    for bad, message in [(["--gpu", "H200"], "no price for H200"),
                         (["--price", "H100=2"], "give --gpu too")]:  # fmt: skip
        assert_one_line_error(runner.invoke(app, ["ladder", str(path), *bad]), message)


# ---------------------------------------------------------------- plan: ASHA


def test_plan_places_asha_with_promotions_that_do_not_wait_for_the_rung() -> None:
    """2 H100s, 9 configurations at eta 3: z=1 trials of 10 s, z=3 of 30 s, one trial per GPU at a time. The 3rd
    z=1 trial to end (at 20 s) lets one go on at once, the 6th (40 s) another, the 9th (80 s) the last: it ends at
    110 s. Every trial's busy time is priced."""
    plan = plan_cluster([h100_profile()], parse_inventory("2xH100"), eta=3, configs=9, prices=PriceBook())
    asha = plan.schedule("ladder", "asha")
    low, top = asha.brackets[0]
    assert (low.configs, top.configs) == (9, 3)
    assert asha.makespan_seconds == pytest.approx(110.0)
    assert asha.gpu_hours == pytest.approx((9 * 10 + 3 * 30) / 3600)
    assert asha.usd == pytest.approx(180 * H100_USD / 3600)
    assert asha.usd_held == pytest.approx(2 * 110 * H100_USD / 3600)
    assert asha.makespan_vs_ladder == pytest.approx(
        110 / plan.schedule("ladder", "successive halving").makespan_seconds
    )
    # on 8 L4s and an H100 the top rung starts while the low one still runs: sooner than synchronous halving
    wide = plan_8l4_1h100()
    assert (
        wide.schedule("ladder", "asha").makespan_seconds
        < wide.schedule("ladder", "successive halving").makespan_seconds
    )


def test_asha_shares_a_gpu_among_trials_that_leave_it_idle() -> None:
    """Busy 40% of their step, two trials share an H100 (1.13x as long each): 4 places on 2 H100s. Four z=1
    trials end at 11.3 s (the 3rd lets one go on), three more at 22.6 s (the 6th), the last two at 33.9 s (the
    9th): its z=3 trial, 33.9 s, ends last at 67.8 s."""
    plan = plan_cluster([h100_profile(0.4)], parse_inventory("2xH100"), eta=3, configs=9)
    asha = plan.schedule("ladder", "asha")
    assert asha.makespan_seconds == pytest.approx(2 * 3 * 10 * 1.13 * 2 / 2)
    low = asha.brackets[0][0].shares[0]
    assert (low.gpus, low.trials_per_gpu, low.trials) == (2, 2, 9)
    assert asha.gpu_hours == pytest.approx((9 * 11.3 + 3 * 33.9) / 2 / 3600)
