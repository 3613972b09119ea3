"""Parts of the table views pinned with hand-worked values: the columns a view draws, the ladder's rows and
sentences, the units of byte and memory cells, and the simulation and plan rows (stand-ins for the simulation
and the plan: the row builders read only their attributes)."""

from __future__ import annotations

import math
from types import SimpleNamespace

from layerprof.fidelity.granularity import SplitChoice, SplitReport
from layerprof.fidelity.judging import NoiseFloor
from layerprof.fidelity.ladder import Bracket, Ladder, Rung
from layerprof.outputs.tables import (
    TableView,
    _bytes,
    _flops,
    _format,
    _memory_by_rung,
    _seconds,
    _short,
    audit_rows,
    audit_summary,
    breakdown_rows,
    breakdown_unit,
    cell_view,
    continued_rows,
    correlation_cell_text,
    correlation_view,
    dollars,
    duration,
    fit_headers,
    fit_rows,
    fit_view,
    interval_text,
    judge_text,
    ladder_rows,
    ladder_summary_lines,
    ladder_view,
    layer_cost_headers,
    layer_cost_rows,
    layer_frame,
    layer_rows,
    layer_time_rows,
    layer_times_view,
    markdown_table,
    plan_rung_rows,
    plan_summary_rows,
    prediction_rows,
    prediction_view,
    price_rows,
    simulation_legend,
    simulation_rows,
    simulation_title,
    span,
    split_rows,
    split_view,
    time_model_label,
    wall_rows,
    with_uncertainty,
)
from layerprof.predict.audit import AuditReport, BottomLine, StepCost
from layerprof.predict.fit import FitReport, FitResult
from layerprof.predict.timemodel import PredictionCheck
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


# ---------------------------------------------------------------- small figures and texts (literals by hand)


def test_interval_text_symmetric_lopsided_or_nothing() -> None:
    def show(v: float) -> str:
        return f"{v:.2f}"

    assert interval_text(1.0, None, show) == ""
    assert interval_text(1.0, (0.999, 1.001), show) == ""  # the digits do not change
    assert interval_text(1.0, (0.9, 1.2), show) == "±0.20"  # 0.1 below is half of 0.2 above: about symmetric
    assert interval_text(1.0, (0.91, 1.2), show) == "[0.91, 1.20]"  # 0.09 < half of 0.2
    assert interval_text(1.0, (1.0, 1.2), show) == "[1.00, 1.20]"
    assert interval_text(1.0, (1.1, 1.3), show) == "[1.10, 1.30]"  # below the interval: nothing below, clamped to 0
    assert with_uncertainty(1.0, (0.9, 1.2), show) == "1.00±0.20"
    assert with_uncertainty(1.0, (0.91, 1.2), show) == "1.00 [0.91, 1.20]"
    assert with_uncertainty(1.0, (0.91, 1.2), show, compact=True) == "1.00~"
    assert with_uncertainty(1.0, None, show, compact=True) == "1.00"


def test_span_and_judge_text() -> None:
    def show(v: float) -> str:
        return f"{v:.2f}"

    assert span(None, 0.1, 0.2, show) == "n/a"
    assert span(0.8, None, 0.9, show) == "0.80" and span(0.8, 0.7, None, show) == "0.80"
    assert span(0.8, 0.801, 0.799, show) == "0.80"
    assert span(0.8, 0.8, 0.85, show) == "0.80 [0.80, 0.85]"
    assert span(0.8, 0.75, 0.8, show) == "0.80 [0.75, 0.80]"
    assert judge_text("same-seed", 3, None) == "same-seed judge"
    assert judge_text("held-out", 1, None) == "held-out judge (1 rotation)"
    floor = NoiseFloor(0.8, 0.75, 0.85, 0.03, 0.0, 0.05)
    assert judge_text("held-out", 3, floor) == (
        "held-out judge (3 rotations) · noise floor ρ 0.80 [0.75, 0.85], regret 0.03 [0, 0.05]"
    )


def test_short_seconds_flops_duration_dollars() -> None:
    assert [_short(v) for v in (0, 0.001, 0.000999, -0.0005, 123.456)] == ["0", "0.001", "1.0e-03", "-5.0e-04", "123"]
    assert [_seconds(v) for v in (None, 99.94, 100.0, 12345.6)] == ["-", "99.9", "100", "12,346"]
    assert [_flops(v) for v in (None, 0, 999.0, 1000.0, 1.5e12, 1e30)] == [
        "-", "0 FLOP", "999 FLOP", "1 kFLOP", "1.5 TFLOP", "1e+12 EFLOP"
    ]  # fmt: skip
    assert [duration(s) for s in (119.0, 120.0, 7199.0, 7200.0, 172799.0, 172800.0)] == [
        "119 s", "2 min", "120 min", "2 h", "48 h", "2 d"
    ]  # fmt: skip
    assert [dollars(v) for v in (None, 0.00421, 0.999, 1.0, 1234.567)] == [
        "—",
        "$0.00421",
        "$0.999",
        "$1.00",
        "$1,234.57",
    ]


def test_fit_rows_headers_and_caption() -> None:
    results = [
        FitResult(1, 64, 2**30, smallest_gpu="L4", predicted_step_time_ms=12.34, composed=True),
        FitResult(2, 4096, 3 * 2**29, cheapest_gpu="T4", cheapest_price="$0.59/h", at_search_limit=True),
        FitResult(3, 0, None),
    ]
    fit = FitReport("m", "cuda", 16 * 2**30, 8, results, smallest_batch_size=2, time_model="default constants")
    view = fit_view(fit)
    assert view.title == "m: largest batch in 16.0 GiB (cuda)"
    assert view.headers == ["z", "largest batch", "need GiB", "pred. step ms", "smallest GPU for batch 8",
                            "cheapest GPU for batch 8"]  # fmt: skip
    assert view.rows == [
        ["1*", "64", "1.00", "12.3", "L4", "none priced"],
        ["2", "≥4,096", "1.50", "—", "none listed", "T4 at $0.59/h"],
        ["3", "0", "0.00", "—", "none listed", "none priced"],
    ]
    assert view.caption == (
        "pred. step ms: default constants, at the largest batch; a batch of 1 cannot train this model (BatchNorm): "
        "from 2; ≥: the search stops at 4,096, a larger batch may fit too; z*: composed from its run's anchors "
        "(exact; no step of its own traced, so no predicted time)"
    )
    plain = FitReport("m", "cpu", 2**30, None, [FitResult(1, 5, 2**30, cheapest_price="$1/h")])
    assert fit_headers(plain) == ["z", "largest batch", "need GiB", "pred. step ms"]
    assert fit_rows(plain) == [["1", "5", "1.00", "—"]] and fit_view(plain).caption is None
    one = FitReport("m", "cpu", 2**30, 4, [FitResult(1, 5, 2**30)])
    assert fit_headers(one)[4:] == ["smallest GPU for batch 4"] and fit_rows(one) == [
        ["1", "5", "1.00", "—", "none listed"]
    ]


def test_audit_summary_lines() -> None:
    full = StepCost(4 * 2**30, 3 * 10**12, 30.0, 0, 0, 100)
    written = StepCost(3 * 2**30, 2 * 10**12, 20.0, 0, 0, 10)
    ideal = StepCost(2 * 2**30, 10**12, 10.0, 0, 0, 10)
    report = AuditReport("m", 8, "cpu", 0.05, ["a"], 1234, 5678, [], BottomLine(2, 4, full, written, ideal))
    assert audit_summary(report) == [
        "trains 1,234 of 5,678 parameters; layerprof's freezing of the same parameters: z=2 of 4 layers",
        "peak memory: you save 1 GiB of the 2 GiB you could (full training 4 GiB, as written 3 GiB, layerprof 2 GiB)",
        "FLOPs: you save 1 TFLOP of the 2 TFLOP you could (full training 3 TFLOP, as written 2 TFLOP, layerprof "
        "1 TFLOP)",
        "step time: you save 10.00 ms of the 20.00 ms you could (full training 30.00 ms, as written 20.00 ms, "
        "layerprof 10.00 ms)",
        "step times were measured on this machine: other work running skews them",
    ]


def test_correlation_cell_text_colours_by_strength() -> None:
    def cell(rho: float | None, low: float | None = None, high: float | None = None) -> SimpleNamespace:
        return SimpleNamespace(spearman=rho, spearman_low=low, spearman_high=high)

    assert correlation_cell_text(None) == "n/a" and correlation_cell_text(cell(None)) == "n/a"  # type: ignore[arg-type]
    assert correlation_cell_text(cell(0.85, 0.7, 0.9)) == "[green]0.85[/] [0.70,0.90]"  # type: ignore[arg-type]
    assert correlation_cell_text(cell(0.849)) == "[yellow]0.85[/]"  # type: ignore[arg-type]
    assert correlation_cell_text(cell(0.6)) == "[yellow]0.60[/]"  # type: ignore[arg-type]
    assert correlation_cell_text(cell(0.599, 0.5)) == "[red]0.60[/]"  # type: ignore[arg-type]
    assert correlation_cell_text(cell(0.5, 0.4, 0.6), markup=False) == "0.50 [0.40,0.60]"  # type: ignore[arg-type]


def test_prediction_rows_and_the_median_error_in_the_title() -> None:
    checks = [
        PredictionCheck(8, 1, 10.0, 11.0, 0.5, 0.55),
        PredictionCheck(8, 2, 2000.0, 1000.0, None, 0.5),
        PredictionCheck(8, 3, 10.0, 10.5, 1.0, 1.0),
    ]
    assert prediction_rows(checks)[:2] == [
        ["8", "1", "10.00", "11.00", "+10.0%", "0.50×", "0.55×", "+10.0%"],
        ["8", "2", "2,000.00", "1,000.00", "-50.0%", "—", "0.50×", "—"],
    ]
    # |errors| 0.05, 0.10, 0.50: the median is the middle one
    assert prediction_view(checks, "gpu").title == "predicted against measured on gpu · median |error| 10.0%"
    assert prediction_view(checks[:2], "gpu").title.endswith("median |error| 50.0%")  # of two, the upper


def test_split_rows_mark_the_chosen_depth() -> None:
    chosen = SplitChoice(1, ("blocks",), 4, {1: 10, 2: 30, 4: 90}, [1, 2, 4], True, 0.123, chosen=True)
    other = SplitChoice(0, (), 2, {1: 50, 2: 100}, [2], False, math.inf)
    report = SplitReport("m", 8, 3.0, [chosen, other], "closest")
    assert split_rows(report) == [
        ["1 *", "4", "blocks", "1, 2, 4", "0.11 → 0.33 → 1.00", "yes", "0.12"],
        ["0", "2", "—", "2", "1.00", "no", "—"],
    ]
    assert split_view(report).title == "splits at other depths · m · batch 8 · η=3 (* chosen)"


def test_layer_time_rows_share_of_the_marked_step() -> None:
    times = {
        "batch_size": 8, "device": "cpu", "source": "cuda events", "marked_step_ms": 10.0,
        "layers": [{"index": 0, "name": "a", "forward_ms": 1.0, "backward_ms": 2.5},
                   {"index": 1, "name": "b", "forward_ms": 1234.5, "backward_ms": 0.0}],
    }  # fmt: skip
    assert layer_time_rows(times) == [
        ["0", "a", "1.000", "2.500", "35.0%"],
        ["1", "b", "1,234.500", "0.000", "12345.0%"],
    ]
    view = layer_times_view(times, "m")
    assert view.title == "m: time per layer in full training · batch 8 · cpu"
    assert view.caption is not None and view.caption.startswith("median of marked steps (cuda events), 10.00 ms each")
    assert layer_time_rows({**times, "marked_step_ms": 0.0})[0][4] == "350.0%"  # no marked step: a share of 1 ms


def test_time_model_label() -> None:
    profile = bare_profile([Row(8, 1, "ok")], 1)
    assert time_model_label(profile) == "times predicted for ? (default constants)"
    profile.time_model = {"peaks": {"name": "H100"}, "constants": {"source": "calibrated on 3 cells"}}
    assert time_model_label(profile) == "times predicted for H100 (calibrated)"
    profile.time_model = {"peaks": {"name": "H100"}, "constants": {"source": "default"}}
    assert time_model_label(profile) == "times predicted for H100 (default constants)"


# ---------------------------------------------------------------- seed 2's survivors (rows of views)


def test_the_ladder_says_where_neps_hyperband_starts_fewer() -> None:
    from layerprof.fidelity.ladder import build_ladder

    rows = [Row(8, z, "ok", trainable_fraction=z / 3, step_time_ms=3.0 ** (z - 1)) for z in (1, 2, 3)]
    ladder = build_ladder(bare_profile(rows, 3), eta=3)
    assert [b.configs_per_rung for b in ladder.hyperband] == [[9, 3, 1], [5, 1], [3]]
    assert [b.configs_per_rung for b in ladder.hyperband_neps] == [[9, 3, 1], [3, 1], [3]]
    lines = ladder_summary_lines(ladder)
    assert "NePS's hyperband starts fewer: s=2: 9→3→1 (3.00); s=1: 3→1 (2.00); s=0: 3 (3.00)" in lines


def test_correlation_view_counts_the_judges_rotations_and_puts_full_training_on_top() -> None:
    result = SimpleNamespace(
        trainable_layer_counts=[1, 2], budget_fractions=[0.5, 1.0], seeds=3, judge_seeds=0, judge="held-out",
        noise_floor=None, cell=lambda z, f: None,
    )  # fmt: skip
    view = correlation_view(result)  # type: ignore[arg-type]
    assert view.title.endswith("(z=2, budget 1) · 95% bootstrap interval · held-out judge (3 rotations)")
    assert view.headers == ["z \\ budget", "0.5", "1"] and view.rows == [["2", "n/a", "n/a"], ["1", "n/a", "n/a"]]
    result.judge_seeds = 2
    assert correlation_view(result).title.endswith("held-out judge (2 rotations)")  # type: ignore[arg-type]


def test_continued_rows_label_only_a_chains_first_rung() -> None:
    first = SimpleNamespace(trainable_layers=1, budget_fraction=0.5, spearman_scratch=0.5, spearman=0.6, regret=None,
                            configs=9)  # fmt: skip
    second = SimpleNamespace(trainable_layers=2, budget_fraction=1.0, spearman_scratch=None, spearman=0.9,
                             regret=0.0123, configs=3)  # fmt: skip
    chain = SimpleNamespace(chain=[[1, 0.5], [2, 1.0]], rungs=[first, second])
    result = SimpleNamespace(noise_floor=SimpleNamespace(spearman=0.8), continued=[chain])
    assert continued_rows(result) == [  # type: ignore[arg-type]
        ["1@0.5 2@1", "1@0.5", "0.50", "0.60", "0.80", "-", "9"],
        ["", "2@1", "n/a", "0.90", "0.80", "0.0123", "3"],
    ]


def test_simulation_rows_add_the_noise_floors_rho() -> None:
    outcome = SimpleNamespace(
        regret_mean=0.1, regret_fold_low=None, regret_fold_high=None, brackets=[{"configs_per_rung": [9, 3, 1]}],
        uncertainty={}, regret_median=0.1, regret_low=0.0, regret_high=0.2, best_found_share=0.5,
        recorded_seconds=12.0, recorded_seconds_vs_budget=0.5, repeats=1000,
    )  # fmt: skip
    rungs = [SimpleNamespace(trainable_layers=1, budget_fraction=0.5, spearman=0.5),
             SimpleNamespace(trainable_layers=2, budget_fraction=1.0, spearman=None)]  # fmt: skip
    path = SimpleNamespace(name="p", rungs=rungs, successive_halving=outcome, continued=None)
    simulation = SimpleNamespace(paths=[path], noise_floor=SimpleNamespace(spearman=0.8))
    (row,) = simulation_rows(simulation, "successive_halving")  # type: ignore[arg-type]
    assert row[:5] == ["p", "scratch", "1@0.5 2@1", "0.50 n/a | floor 0.80", "9·3·1"]
    simulation.noise_floor = SimpleNamespace(spearman=None)
    assert simulation_rows(simulation, "successive_halving")[0][3] == "0.50 n/a"  # type: ignore[arg-type]
    simulation.noise_floor = None
    assert simulation_rows(simulation, "successive_halving")[0][3] == "0.50 n/a"  # type: ignore[arg-type]


def test_plan_rows_number_rungs_by_bracket_only_with_several() -> None:
    share = SimpleNamespace(
        gpu="H100",
        gpus=2,
        trials=9,
        trials_per_gpu=3,
        slots_per_gpu=4,
        waves=2,
        trial_seconds=60.0,
        memory_need_bytes=3 * 2**29,
        time_source="measured",
        usd=1.5,
    )
    other = SimpleNamespace(**{**vars(share), "gpu": "L4", "usd": 0.5})
    placement = SimpleNamespace(rung=0, trainable_layers=2, steps=100, configs=9, makespan_seconds=130.0,
                                gpu_hours=0.0333, shares=[share, other])  # fmt: skip
    schedule = SimpleNamespace(brackets=[[placement]], usd=2.0)
    assert plan_rung_rows(schedule) == [  # type: ignore[arg-type]
        ["1", "2", "100", "9", "H100", "2", "9", "3 (4)", "2", "60 s", "2.17 min", "0.0333", "1.50", "measured",
         "$1.50"],
        ["", "", "", "", "L4", "2", "9", "3 (4)", "2", "60 s", "", "", "1.50", "measured", "$0.5"],
    ]  # fmt: skip
    second = SimpleNamespace(**{**vars(placement), "rung": 1, "shares": [share]})
    schedule = SimpleNamespace(brackets=[[placement], [second]], usd=None)
    assert [row[0] for row in plan_rung_rows(schedule)] == ["1.1", "", "2.2"]  # type: ignore[arg-type]
    assert len(plan_rung_rows(schedule)[0]) == 14  # type: ignore[arg-type]


def test_layer_cost_rows_per_layer_and_total() -> None:
    from layerprof.predict.layercosts import LayerCost, LayerCostTable

    costs = [
        LayerCost(-1, "(outside layers)", "", 0, forward_flops=10**9, output_bytes=2**20),
        LayerCost(0, "fc", "Linear", 1000, trainable_bytes=2**21, trainable_params=1000, optimizer_state_bytes=8000,
                  forward_flops=2 * 10**9, backward_input_flops=3 * 10**9, backward_weight_flops=4 * 10**9,
                  backward_internal_flops=5 * 10**8, saved_activation_bytes=3 * 2**20, output_bytes=2**21,
                  recompute_flops=6 * 10**9),
    ]  # fmt: skip
    table = LayerCostTable("m", 8, "32-true", "cpu", costs, checkpointing=True)
    assert layer_cost_rows(table) == [
        ["—", "(outside layers)", "0", "0.0", "—", "1.00", "0.00", "0.00", "0.00", "0.00", "0.0", "1.0"],
        ["0", "fc", "1,000", "2.0", "8.00", "2.00", "4.00", "0.50", "3.00", "6.00", "3.0", "2.0"],
        ["", "total", "1,000", "2.0", "8.00", "3.00", "4.00", "0.50", "3.00", "6.00", "3.0", ""],
    ]
