"""Parts of the table views pinned with hand-worked values: the columns a view draws, the ladder's rows and
sentences, the units of byte and memory cells, and the simulation and plan rows (stand-ins for the simulation
and the plan: the row builders read only their attributes)."""

from __future__ import annotations

from types import SimpleNamespace

from layerprof.fidelity.ladder import Bracket, Ladder, Rung
from layerprof.outputs.tables import (
    TableView,
    _bytes,
    _format,
    _memory_by_rung,
    audit_rows,
    breakdown_rows,
    breakdown_unit,
    cell_view,
    correlation_cell_text,
    ladder_rows,
    ladder_summary_lines,
    ladder_view,
    layer_cost_headers,
    layer_frame,
    layer_rows,
    markdown_table,
    plan_summary_rows,
    price_rows,
    simulation_legend,
    simulation_title,
    wall_rows,
)
from layerprof.profile import Layer, Row
from tests.conftest import bare_profile

GIB = 2**30
MIB = 2**20


def test_only_the_named_columns_never_wrap() -> None:
    view = TableView("t", ["layer", "type"], [["a", "b"]], no_wrap=("layer",))
    assert [column.no_wrap for column in view.rich().columns] == [True, False]


def test_a_cell_view_folds_long_values_and_styles_only_the_rows_that_failed() -> None:
    rows = [
        Row(8, 1, "ok", trainable_params=1, trainable_fraction=0.5, step_time_ms=1.0, peak_memory_bytes=MIB),
        Row(8, 2, "oom", message="out of memory"),
    ]
    view = cell_view(bare_profile(rows, 2), 8)
    assert view.styles == [None, "yellow"]
    assert view.fold is True


def test_a_markdown_table_without_alignments_aligns_every_column_right() -> None:
    assert markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n| ---: | ---: |\n| 1 | 2 |"


def test_the_split_has_a_row_per_layer_with_its_tied_layers() -> None:
    layers = [
        Layer(0, "embed", "Embedding", 10, ("embed.weight",), 10, shared_with=("head",)),
        Layer(1, "head", "Linear", 10, ("embed.weight",), 0, shared_with=("embed",)),
    ]
    assert layer_rows(layer_frame(layers)) == [
        ["0", "embed", "Embedding", "10", "2", "100.0", "head"],
        ["1", "head", "Linear", "10", "1", "0.0", "embed"],
    ]


def test_the_breakdown_stays_in_mib_below_ten_gib() -> None:
    rows = [Row(8, 1, "ok", trainable_params=1, trainable_fraction=1.0, peak_memory_bytes=9 * GIB)]
    assert breakdown_unit(bare_profile(rows, 1), 8) == ("MiB", MIB)


def test_bytes_take_the_unit_that_leaves_one_to_1023() -> None:
    assert [_bytes(v) for v in (3 * GIB, 1536 * 1024, 2048, 5)] == ["3 GiB", "1.5 MiB", "2 KiB", "5 B"]


def test_memory_by_rung_shows_unknown_rungs_as_a_dash() -> None:
    assert _memory_by_rung([None, 512 * MIB, GIB]) == "- 0.5 1 GiB"


def test_an_audit_row_counts_the_places_beyond_three_only() -> None:
    finding = SimpleNamespace(kind="k", where=["a", "b", "c"], cost_bytes=0, cost_flops=None, cost_ms=1.0, fails=False)
    report = SimpleNamespace(findings=[finding, SimpleNamespace(**{**vars(finding), "where": list("abcde")})])
    assert [row[1] for row in audit_rows(report)] == ["a, b, c", "a, b, c (+2)"]  # type: ignore[arg-type]


def test_a_rho_without_both_ends_of_its_interval_shows_none() -> None:
    cell = SimpleNamespace(spearman=0.9, spearman_low=None, spearman_high=0.95)
    assert correlation_cell_text(cell, markup=False) == "0.90"  # type: ignore[arg-type]
    both = SimpleNamespace(spearman=0.9, spearman_low=0.8, spearman_high=0.95)
    assert correlation_cell_text(both, markup=False) == "0.90 [0.80,0.95]"  # type: ignore[arg-type]


def _ladder(**fields: object) -> Ladder:
    rungs = [
        Rung(1, 0.25, 2.0, 0.25, None, 2.0, 0.25, 512 * MIB, 0.5, 1536 * MIB, 4, budget_index=1),
        Rung(4, 1.0, 8.0, 1.0, 4.0, 8.0, 1.0, GIB, 1.0, 2 * GIB, 2, budget_index=3),
    ]
    base: dict[str, object] = dict(
        model="m", device="d", batch_size=8, eta=3.0, cost_kind="time", layer_count=4, rungs=rungs,
        close_to_eta=True, fit_note="fit.", gpu_memory_bytes=8 * GIB, context_reserve_bytes=512 * MIB,
    )  # fmt: skip
    return Ladder(**{**base, **fields})  # type: ignore[arg-type]


def test_the_ladder_rows_show_the_slots_where_a_gpu_memory_is_known() -> None:
    assert ladder_rows(_ladder()) == [
        ["1", "25.0", "2.0", "512.0", "0.50×", "0.25×", "—", "1", "4"],
        ["4", "100.0", "8.0", "1,024", "1.00×", "1.00×", "4.00×", "3", "2"],
    ]
    assert ladder_rows(_ladder(gpu_memory_bytes=None))[0] == ["1", "25.0", "2.0", "512.0", "0.50×", "0.25×", "—", "1"]


def test_the_ladder_view_says_what_slots_are_only_with_a_gpu_memory() -> None:
    assert ladder_view(_ladder()).caption == (
        "cost: median step time · budget: the index an HPO library sees · slots: trials per GPU at once"
    )
    assert ladder_view(_ladder(gpu_memory_bytes=None)).caption == (
        "cost: median step time · budget: the index an HPO library sees"
    )


def test_a_priced_ladder_without_halving_says_its_price_and_the_budget_halving_is_said() -> None:
    priced = _ladder(
        gpu_memory_bytes=None, gpu="H100", price="$2/h (test)", priced_steps="1000 steps", priced_time_source="measured"
    )
    assert ladder_summary_lines(priced) == [
        "fit.",
        "$/trial: one trial alone on a H100 for 1000 steps, step times measured, at $2/h (test)",
    ]
    halving = _ladder(
        gpu_memory_bytes=None,
        configs=9,
        successive_halving=SimpleNamespace(configs_per_rung=[9, 3], cost_full_equivalents=5.25),
        budget_successive_halving={"from_scratch_full_equivalents": 6.0, "with_continuation_full_equivalents": 5.0},
    )
    assert ladder_summary_lines(halving)[1:] == [
        "successive halving, 9 configs: 9 → 3 at z = 1, 4: 5.25 full-training equivalents",
        "the same halving on training budget alone (z = n, budget ÷ η per rung down): 6.00 from scratch, "
        "5.00 resuming checkpoints",
    ]


def _outcome(**fields: object) -> SimpleNamespace:
    base = dict(
        gpu_seconds=50.0, gpu_seconds_vs_budget=1.5, usd=None, flops=2e12, slot_wall_seconds=None,
        slot_wall_vs_budget=None, wall_seconds=40.0, trials_per_rung=[9, 3],
    )  # fmt: skip
    return SimpleNamespace(**{**base, **fields})


def test_price_rows_leave_out_the_dollar_and_slot_columns_without_a_gpu() -> None:
    path = SimpleNamespace(name="p", rungs=[], continued=None, successive_halving=_outcome())
    simulation = SimpleNamespace(paths=[path], gpu=None, gpu_memory_bytes=None)
    assert price_rows(simulation, "successive_halving") == [  # type: ignore[arg-type]
        ["p", "scratch", "50", "1.50×", "2 TFLOP", "-"]
    ]


def test_a_simulation_of_one_seed_says_one_seed() -> None:
    simulation = SimpleNamespace(
        seeds=1, task="t", configs=9, eta=3.0, repeats=100, judge="same-seed", judge_folds=1, noise_floor=None
    )
    assert simulation_title(simulation, "asha") == (  # type: ignore[arg-type]
        "ASHA on t (9 configurations, 1 seed), eta=3, 100 repeats · same-seed judge"
    )


def test_a_wall_row_without_a_halving_time_has_no_ratio() -> None:
    way = dict(rungs=[], continued=None, hyperband=None, asha=_outcome())
    paths = [
        SimpleNamespace(name="a", successive_halving=_outcome(wall_seconds=None), **way),
        SimpleNamespace(name="b", successive_halving=_outcome(wall_seconds=20.0), **way),
    ]
    assert wall_rows(SimpleNamespace(paths=paths)) == [  # type: ignore[arg-type]
        ["a", "scratch", "-", "-", "40", "-", "9·3"],
        ["b", "scratch", "20", "-", "40", "2.00×", "9·3"],
    ]


def test_a_plan_of_one_bracket_counts_no_further_brackets() -> None:
    placement = SimpleNamespace(shares=[SimpleNamespace(gpus=2, gpu="H100")])
    schedule = SimpleNamespace(
        name="s", gpus=None, algorithm="asha", brackets=[[placement]], makespan_seconds=60.0,
        makespan_vs_ladder=1.0, gpu_hours=0.5, gpu_hours_vs_ladder=2.0,
    )  # fmt: skip
    three = SimpleNamespace(**{**vars(schedule), "brackets": [[placement]] * 3})
    plan = SimpleNamespace(schedules=[schedule, three], prices=None)
    assert [row[2] for row in plan_summary_rows(plan)] == [  # type: ignore[arg-type]
        "2×H100",
        "2×H100 (+2 brackets)",
    ]
    assert plan_summary_rows(plan)[0] == ["s", "asha", "2×H100", "60 s", "1.00×", "0.5", "2.00×"]  # type: ignore[arg-type]


def test_the_ladder_says_its_hyperband_brackets() -> None:
    brackets = [Bracket(0, [9, 3], 2.5), Bracket(1, [3], 1.0)]
    assert ladder_summary_lines(_ladder(gpu_memory_bytes=None, hyperband=brackets)) == [
        "fit.",
        "hyperband brackets (as SMAC3 and NePS run them; configs per rung, full-training equivalents): "
        "s=1: 9→3 (2.50); s=0: 3 (1.00)",
    ]


def test_figures_lose_their_decimal_from_1000_up() -> None:
    assert [_format("step_time_ms", v) for v in (999.94, 1000.0)] == ["999.9", "1,000"]


def test_a_narrow_view_is_drawn_wide_unless_told() -> None:
    headers = ["path", "regret median [90%]", "not shown narrow"]
    view = TableView("t", headers, [["p", "0.1", "x"]], left=("path",), look="narrow")
    assert [column.header for column in view.rich().columns] == headers


def test_the_breakdown_turns_to_gib_from_ten_gib() -> None:
    rows = [Row(8, 1, "ok", trainable_params=1, trainable_fraction=1.0, peak_memory_bytes=12 * GIB)]
    assert breakdown_unit(bare_profile(rows, 1), 8) == ("GiB", GIB)


def test_price_rows_show_a_dash_for_a_rung_without_a_price() -> None:
    price = SimpleNamespace(parallel_slots=3, memory_need_bytes=GIB)
    path = SimpleNamespace(
        name="p",
        rungs=[SimpleNamespace(price=None), SimpleNamespace(price=price)],
        continued=None,
        successive_halving=_outcome(),
    )
    simulation = SimpleNamespace(paths=[path], gpu=None, gpu_memory_bytes=8 * GIB)
    rows = price_rows(simulation, "successive_halving")  # type: ignore[arg-type]
    assert rows == [["p", "scratch", "50", "1.50×", "2 TFLOP", "- 1 GiB", "- 3", "-", "-"]]


def test_the_legend_says_which_seconds_the_study_recorded() -> None:
    simulation = SimpleNamespace(
        full_fidelity={"trainable_layers": 4, "budget_fraction": 1.0}, best_full_loss=0.5, judge="same-seed",
        profile=None, seconds_used="training",
    )  # fmt: skip
    assert "train+eval s: the study's recorded seconds of training" in simulation_legend(simulation)  # type: ignore[arg-type]
    simulation.seconds_used = "trial"
    assert "trial s: the study's recorded seconds of whole trials" in simulation_legend(simulation)  # type: ignore[arg-type]


def test_a_priced_ladder_row_ends_with_its_dollars() -> None:
    rows = ladder_rows(_ladder(gpu_memory_bytes=None, price="$2/h (test)"))
    assert [row[-1] for row in rows] == ["—", "—"]  # no trial price known
    assert len(rows[0]) == 9


def test_the_breakdown_has_a_row_per_cell_that_ran() -> None:
    rows = [
        Row(8, 1, "ok", trainable_params=1, tracked_peak_bytes=MIB, peak_memory_bytes=2 * MIB),
        Row(8, 2, "oom", message="out of memory"),
    ]
    table = breakdown_rows(bare_profile(rows, 2), 8)
    assert [row[0] for row in table] == ["1"]
    assert table[0][-2:] == ["2.0", "0.0"]  # peak, activations' peak (MiB)


def test_layer_costs_leave_out_adapters_and_recompute_when_there_are_none() -> None:
    table = SimpleNamespace(layers=[SimpleNamespace(adapter_params=0)], checkpointing=False)
    assert layer_cost_headers(table) == [  # type: ignore[arg-type]
        "#", "layer", "params", "trains +MiB", "optim B/param", "fwd GF", "bwd weight GF", "bwd inside GF",
        "bwd down GF", "saves MiB", "output MiB",
    ]  # fmt: skip
