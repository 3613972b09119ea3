"""Regression gates: what passes, what fails and names the cell, and what cannot be compared."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.errors import LayerprofError
from layerprof.outputs.check import UnusableInput, compare, junit_xml, markdown_summary, summary_rows
from layerprof.profile import (
    EnvironmentInfo,
    Layer,
    ModelInfo,
    Profile,
    Row,
    SweepSettings,
    WorkloadInfo,
    load_profile,
    save_profile,
)


def measured_like_profile() -> Profile:
    rows = []
    for z in (1, 2, 3):
        median = 10.0 * z
        row = Row(8, z, "ok", trainable_params=100 * z, trainable_fraction=z / 3, memory_source="cuda-allocator")
        row.forward_flops, row.backward_flops, row.flops = 1000, 500 * z, 1000 + 500 * z
        row.optimizer_state_bytes, row.peak_memory_bytes = 800 * z, 2**20 * (10 + z)
        row.step_time_ms, row.step_time_p10_ms, row.step_time_p90_ms = median, median * 0.97, median * 1.03
        rows.append(row)
    layers = [Layer(i, f"layer{i}", "Linear", 100, (f"layer{i}.weight",), 100) for i in range(3)]
    return Profile(
        model=ModelInfo(spec="m", source="user", name="m", layers=layers, total_params=300),
        workload=WorkloadInfo(family="causal-lm", seq_len=16),
        environment=EnvironmentInfo(device_kind="cuda", device_name="NVIDIA H100 80GB HBM3"),
        settings=SweepSettings(batch_sizes=(8,), trainable_layer_counts=(1, 2, 3)),
        rows=rows,
        complete=True,
    )


def doctored(change) -> Profile:
    profile = copy.deepcopy(measured_like_profile())
    change(profile)
    return profile


def test_profile_against_itself_passes() -> None:
    result = compare(measured_like_profile(), measured_like_profile())
    assert result.exit_code == 0 and result.cells_compared == 3
    assert {f.verdict for f in result.findings} == {"pass"}


def slower(profile: Profile, z: int, factor: float) -> None:
    row = profile.row(8, z)
    row.step_time_ms *= factor
    row.step_time_p10_ms *= factor
    row.step_time_p90_ms *= factor


def test_twenty_percent_slower_cell_fails_and_is_named() -> None:
    result = compare(doctored(lambda p: slower(p, 2, 1.2)), measured_like_profile())
    assert result.exit_code == 1
    assert [(f.batch_size, f.trainable_layers, f.figure) for f in result.regressions] == [(8, 2, "step_time_ms")]
    assert result.regressions[0].detail == (
        "+20.0% exceeds +10% beyond noise (step-time spreads (p10-p90) of profiles without visit medians)"
    )


def test_a_slowdown_inside_the_measured_spread_is_inconclusive_not_a_pass() -> None:
    def noisy(profile: Profile) -> None:
        row = profile.row(8, 2)
        row.step_time_ms *= 1.15  # beyond the 10% tolerance...
        row.step_time_p10_ms = row.step_time_p10_ms * 0.9  # ...but the runs overlap: the data cannot decide
        row.step_time_p90_ms *= 1.3

    result = compare(doctored(noisy), measured_like_profile())
    assert result.exit_code == 3 and result.regressions == []
    assert [(f.trainable_layers, f.figure) for f in result.inconclusive] == [(2, "step_time_ms")]
    assert result.inconclusive[0].detail == (
        "+15.0% exceeds +10% but cannot be told from noise "
        "(step-time spreads (p10-p90) of profiles without visit medians)"
    )
    assert result.cell_verdict(8, 2) == "inconclusive" and result.cell_verdict(8, 1) == "pass"
    # a faster cell whose spreads overlap is no improvement, and no failure either
    faster = compare(doctored(lambda p: setattr(p.row(8, 2), "step_time_ms", 20.0 * 0.85)), measured_like_profile())
    assert faster.exit_code == 0 and faster.cell_verdict(8, 2) == "pass"


def with_visits(profile: Profile, z: int, medians: list[float], slow: tuple[int, ...] = (), spread=None) -> Profile:
    """The row's step time as the sweep records it: the median of its clean visits, every visit's median, the
    slowed ones, and (given) the steps' p10 and p90."""
    row = profile.row(8, z)
    clean = sorted(m for i, m in enumerate(medians) if i not in slow)
    row.visit_medians_ms, row.slow_visits = list(medians), list(slow)
    row.step_time_ms = (
        clean[len(clean) // 2] if len(clean) % 2 else (clean[len(clean) // 2 - 1] + clean[len(clean) // 2]) / 2
    )
    if spread is not None:
        row.step_time_p10_ms, row.step_time_p90_ms = spread
    return profile


def test_a_tripled_cell_on_a_noisy_baseline_is_a_regression() -> None:
    """The baseline came from a busy machine (steps between 20 and 95 ms); the current profile is three times
    slower. The spreads overlap (60 ms < 95 ms), but the visit medians do not: 4 of 4 above, p = 1/70."""
    noisy = [30.0, 36.0, 31.0, 45.0, 33.0]  # the fourth visit was slowed by other work
    baseline = with_visits(measured_like_profile(), 3, noisy, slow=(3,), spread=(20.0, 95.0))
    tripled = with_visits(measured_like_profile(), 3, [3 * m for m in noisy], slow=(3,), spread=(60.0, 285.0))
    result = compare(tripled, baseline)
    assert result.exit_code == 1
    assert [(f.trainable_layers, f.figure) for f in result.regressions] == [(3, "step_time_ms")]
    assert result.regressions[0].detail == "+200.0% exceeds +10% beyond noise (4 visit(s) against 4, p = 0.014)"


def test_a_step_time_the_samples_do_not_support_is_inconclusive() -> None:
    """The issue's case: only the step time tripled, the recorded visits are the baseline's own. The gate cannot
    pass it (the median says +200%) nor fail it (the samples say nothing changed): inconclusive, exit 3."""
    noisy = [30.0, 36.0, 31.0, 45.0, 33.0]
    baseline = with_visits(measured_like_profile(), 3, noisy, slow=(3,), spread=(20.0, 95.0))
    edited = with_visits(measured_like_profile(), 3, noisy, slow=(3,), spread=(20.0, 95.0))
    edited.row(8, 3).step_time_ms *= 3
    result = compare(edited, baseline)
    assert result.exit_code == 3 and result.regressions == []
    # against the baseline grown by 10%: 36 beats 33 and 34.1, 33 ties 33: 2.5 wins of 16, P(U >= 2) = 68/70
    assert result.inconclusive[0].detail == (
        "+200.0% exceeds +10% but cannot be told from noise (4 visit(s) against 4, p = 0.97)"
    )
    assert "cannot be told from noise; measure again with more visits" in result.inconclusive_summary()


@pytest.mark.parametrize(
    ("before", "after", "verdict", "p_value"),
    [
        ([10.0, 10.1, 10.2], [20.0, 20.2, 20.4], "regression", "0.05"),  # 3 against 3, apart: 1/20, just enough
        ([10.0, 10.1], [20.0, 20.2], "inconclusive", "0.17"),  # 2 against 2 can never say more than 1/6
        # +11.9% with the visits 10-12% apart: against the baseline grown by 10% (11, 11.11, 11.22) one pair of
        # nine is not slower; P(U >= 8) = 2/20
        ([10.0, 10.1, 10.2], [11.2, 11.3, 11.4], "inconclusive", "0.1"),
        ([10.0, 10.1, 10.2, 30.0], [12.0, 12.1, 12.2], "regression", "0.05"),  # the slowed 30 ms visit left out
    ],
)
def test_a_slowdown_is_decided_by_the_visit_medians(before, after, verdict: str, p_value: str) -> None:
    slow = (3,) if len(before) == 4 else ()
    result = compare(
        with_visits(measured_like_profile(), 1, after), with_visits(measured_like_profile(), 1, before, slow)
    )
    finding = next(f for f in result.findings if f.figure == "step_time_ms" and f.trainable_layers == 1)
    assert finding.verdict == verdict
    assert finding.detail.endswith(f"({len(after)} visit(s) against {len(before) - len(slow)}, p = {p_value})")


def one_visit(profile: Profile, z: int, median: float, spread: tuple[float, float], steps: int = 5) -> Profile:
    """The row of a `--min-steps 3 --steps 5` sweep that settled at its first visit: one visit median, the p10
    and p90 of its `steps` timed steps."""
    with_visits(profile, z, [median], spread=spread)
    profile.row(8, z).measured_steps, profile.row(8, z).visits = steps, 1
    return profile


def test_a_tripled_cell_with_one_visit_is_decided_by_its_tight_steps() -> None:
    """One visit per cell: no rank test can say anything (1 against 1: p >= 1/2), but the steps inside each visit
    are tight (p10-p90 within 5%), and 3x slower is beyond them: a regression (issue 40: inconclusive, p = 0.5)."""
    baseline = one_visit(measured_like_profile(), 2, 20.0, (19.6, 20.6))
    tripled = one_visit(measured_like_profile(), 2, 60.0, (58.8, 61.8))
    result = compare(tripled, baseline)
    assert result.exit_code == 1 and [(f.trainable_layers, f.figure) for f in result.regressions] == [
        (2, "step_time_ms")
    ]
    assert result.regressions[0].detail == (
        "+200.0% exceeds +10% beyond noise (1 visit(s) against 1, too few to rank; steps (5 against 5): "
        "p10 58.8 ms now, baseline p90 20.6 ms)"
    )
    faster = compare(baseline, tripled)  # and the other way round, an improvement
    assert faster.exit_code == 0 and faster.cell_verdict(8, 2) == "improvement"


@pytest.mark.parametrize(
    ("baseline_spread", "steps", "verdict"),
    [
        ((19.6, 20.6), 5, "regression"),
        ((15.0, 40.0), 5, "inconclusive"),  # a noisy baseline: 3x is inside what its steps span
        ((19.6, 20.6), 4, "inconclusive"),  # the spread of 4 steps is too thin a sample
        # the edge: the current p10 (44.0) against the baseline's p90 grown by 10%: 40 x 1.1 = 44.0 is not above it
        ((19.6, 40.0), 5, "inconclusive"),
        ((19.6, 39.99), 5, "regression"),
    ],
)
def test_the_step_sample_rule_at_its_edges(baseline_spread, steps: int, verdict: str) -> None:
    baseline = one_visit(measured_like_profile(), 2, 20.0, baseline_spread, steps)
    current = one_visit(measured_like_profile(), 2, 60.0, (44.0, 61.8), steps)
    assert compare(current, baseline).cell_verdict(8, 2) == verdict


@pytest.mark.parametrize("thin", ["baseline", "current"])
def test_the_step_rule_needs_enough_steps_on_both_sides(thin: str) -> None:
    """Either side resting on fewer than 5 steps (or not saying how many) leaves the rank test's word: p = 1/2."""
    baseline = one_visit(measured_like_profile(), 2, 20.0, (19.6, 20.6))
    tripled = one_visit(measured_like_profile(), 2, 60.0, (58.8, 61.8))
    (baseline if thin == "baseline" else tripled).row(8, 2).measured_steps = None
    finding = next(
        f for f in compare(tripled, baseline).findings if f.figure == "step_time_ms" and f.trainable_layers == 2
    )
    assert finding.verdict == "inconclusive" and finding.detail.endswith("(1 visit(s) against 1, p = 0.5)")


def test_the_rank_test_decides_wherever_it_can() -> None:
    from layerprof.outputs.check import rank_test_can_decide

    assert [rank_test_can_decide(n, n) for n in (1, 2, 3)] == [False, False, True]  # 1/2, 1/6, 1/20
    assert not rank_test_can_decide(1, 18) and rank_test_can_decide(1, 19)  # 1/19 > 0.05 >= 1/20
    # two visits against two with tight steps: the steps decide (the rank test could only say p = 1/6)
    baseline = with_visits(measured_like_profile(), 1, [10.0, 10.1], spread=(9.8, 10.3))
    current = with_visits(measured_like_profile(), 1, [20.0, 20.2], spread=(19.6, 20.6))
    for row in (baseline.row(8, 1), current.row(8, 1)):
        row.measured_steps = 10
    assert compare(current, baseline).cell_verdict(8, 1) == "regression"


def test_a_faster_cell_is_an_improvement_only_beyond_noise() -> None:
    baseline = with_visits(measured_like_profile(), 2, [20.0, 20.2, 20.4])
    halved = compare(with_visits(measured_like_profile(), 2, [10.0, 10.1, 10.2]), baseline)
    finding = next(f for f in halved.findings if f.figure == "step_time_ms" and f.trainable_layers == 2)
    assert (finding.verdict, finding.detail) == ("improvement", "-50.0% (3 visit(s) against 3, p = 0.05)")
    # 15% faster by the median, but against the baseline shrunk by 10% (18, 18.18, 18.36) the 18.4 ms visit is
    # slower: 6 of 9 pairs, P(U >= 6) = 7/20: noise, a pass
    mixed = compare(with_visits(measured_like_profile(), 2, [16.0, 17.1, 18.4]), baseline)
    finding = next(f for f in mixed.findings if f.figure == "step_time_ms" and f.trainable_layers == 2)
    assert (
        finding.verdict == "pass"
        and finding.detail == "-15.3% but inside the measured noise (3 visit(s) against 3, p = 0.35)"
    )
    assert mixed.exit_code == 0


def test_a_regression_outranks_an_inconclusive_figure() -> None:
    current = doctored(lambda p: slower(p, 2, 1.2))  # a regression by the spreads
    with_visits(current, 3, [60.0, 61.0])  # +101%, two visits: inconclusive
    result = compare(current, with_visits(measured_like_profile(), 3, [30.0, 30.5]))
    assert [f.trainable_layers for f in result.regressions] == [2]
    assert [f.trainable_layers for f in result.inconclusive] == [3]
    assert result.exit_code == 1


def test_improvements_are_reported() -> None:
    result = compare(doctored(lambda p: slower(p, 3, 0.5)), measured_like_profile())
    assert result.exit_code == 0 and result.cell_verdict(8, 3) == "improvement"


def test_peak_memory_increase_fails_within_tolerance_passes() -> None:
    def hungrier(factor: float):
        return lambda p: setattr(p.row(8, 1), "peak_memory_bytes", int(p.row(8, 1).peak_memory_bytes * factor))

    assert compare(doctored(hungrier(1.05)), measured_like_profile()).exit_code == 1
    assert compare(doctored(hungrier(1.01)), measured_like_profile()).exit_code == 0
    assert compare(doctored(hungrier(1.05)), measured_like_profile(), memory_tolerance=0.1).exit_code == 0


def test_flop_change_is_reported_and_can_be_accepted() -> None:
    changed = doctored(lambda p: setattr(p.row(8, 3), "flops", p.row(8, 3).flops + 1))
    result = compare(changed, measured_like_profile())
    assert [(f.trainable_layers, f.figure) for f in result.regressions] == [(3, "flops")]
    accepted = compare(changed, measured_like_profile(), accept_changes=True)
    assert accepted.exit_code == 0 and accepted.cell_verdict(8, 3) == "accepted"


def test_cell_that_now_runs_out_of_memory_or_is_missing_fails() -> None:
    def oom(profile: Profile) -> None:
        profile.rows[2] = Row(8, 3, "oom", message="OutOfMemoryError: CUDA out of memory")

    result = compare(doctored(oom), measured_like_profile())
    assert [(f.trainable_layers, f.figure, f.current) for f in result.regressions] == [(3, "status", "oom")]
    missing = compare(doctored(lambda p: p.rows.pop(0)), measured_like_profile())
    assert [(f.trainable_layers, f.figure) for f in missing.regressions] == [(1, "status")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: setattr(p.model, "spec", "other"), "different models"),
        (lambda p: setattr(p.workload, "seq_len", 32), "different workloads: seq_len"),
        (lambda p: setattr(p.settings, "precision", "bf16-true"), "different training settings: precision"),
        (lambda p: setattr(p.settings, "optimizer", "sgd"), "different training settings: optimizer"),
        (lambda p: setattr(p.settings, "adapter", "lora"), "different training settings: adapter is 'lora' now"),
        (lambda p: setattr(p.settings, "checkpointing", "trainable"), "different training settings: checkpointing"),
        (lambda p: setattr(p.settings, "compile_mode", "default"), "different training settings: compile_mode"),
        (lambda p: setattr(p.settings, "adapter_rank", 16), "different training settings: adapter_rank"),
        (lambda p: setattr(p.environment, "device_name", "NVIDIA L4"), "different devices"),
        (lambda p: setattr(p, "rows", [Row(64, 1, "ok")]), "share no"),
    ],
)
def test_incomparable_profiles_are_unusable_input(change, message: str) -> None:
    with pytest.raises(UnusableInput, match=message):
        compare(doctored(change), measured_like_profile())


def test_numeric_settings_recorded_on_one_side_only_do_not_stop_the_comparison() -> None:
    """A baseline from before numerics were recorded (or an estimate) compares with a profile that has them."""
    recorded = doctored(lambda p: setattr(p.environment, "numerics", {"cudnn_conv_tf32": True}))
    assert compare(recorded, measured_like_profile()).exit_code == 0
    assert compare(measured_like_profile(), recorded).exit_code == 0
    other = doctored(lambda p: setattr(p.environment, "numerics", {"cudnn_conv_tf32": False}))
    with pytest.raises(UnusableInput, match="different numeric settings: cudnn_conv_tf32 is False now, True in"):
        compare(other, recorded)


def test_an_estimate_against_a_measured_baseline_is_held_to_the_tolerance_not_compared_exactly() -> None:
    def estimated(factor: float):
        def change(profile: Profile) -> None:
            for row in profile.rows:
                row.memory_source = "estimate-cuda"
            row = profile.row(8, 2)
            row.peak_memory_bytes = int(row.peak_memory_bytes * factor)

        return change

    close = compare(doctored(estimated(1.01)), measured_like_profile())
    finding = next(f for f in close.findings if f.figure == "peak_memory_bytes" and f.trainable_layers == 2)
    assert (finding.verdict, finding.detail) == ("pass", "+1.0%")
    far = compare(doctored(estimated(1.05)), measured_like_profile())
    assert [(f.trainable_layers, f.figure, f.detail) for f in far.regressions] == [
        (2, "peak_memory_bytes", "+5.0% exceeds +2%")
    ]
    both = compare(doctored(estimated(1.01)), doctored(estimated(1.0)))  # two estimates: exact
    assert [(f.trainable_layers, f.figure) for f in both.regressions] == [(2, "peak_memory_bytes")]


def test_device_mismatch_can_be_allowed() -> None:
    other_gpu = doctored(lambda p: setattr(p.environment, "device_name", "NVIDIA L4"))
    assert compare(other_gpu, measured_like_profile(), allow_device_mismatch=True).exit_code == 0


def test_junit_parses_and_counts_failures() -> None:
    result = compare(doctored(lambda p: (slower(p, 2, 1.2), slower(p, 3, 1.5))), measured_like_profile())
    suite = ET.fromstring(junit_xml(result).split("?>", 1)[1])
    cases = suite.findall("testcase")
    assert len(cases) == len(result.findings) == int(suite.get("tests"))
    failed = [case for case in cases if case.find("failure") is not None]
    assert len(failed) == 2 == int(suite.get("failures"))
    assert {case.get("classname") for case in failed} == {"layerprof.batch8.z2", "layerprof.batch8.z3"}
    markdown = markdown_summary(result)
    assert "❌ regression" in markdown and "| 8 | 2 |" in markdown


def test_inconclusive_exit_code_junit_and_summary(tmp_path: Path) -> None:
    runner = CliRunner()
    baseline = save_profile(with_visits(measured_like_profile(), 2, [20.0, 20.2]), tmp_path / "baseline.json")
    current = save_profile(with_visits(measured_like_profile(), 2, [40.0, 40.4]), tmp_path / "current.json")
    summary, junit = tmp_path / "summary.md", tmp_path / "junit.xml"
    result = runner.invoke(
        app, ["check", str(current), str(baseline), "--summary-md", str(summary), "--junit", str(junit)]
    )
    assert result.exit_code == 3, result.output
    assert "inconclusive: 1 figure(s) in batch 8 z=2 cannot be told from noise; measure again with more visits" in (
        " ".join(result.output.split())
    )
    assert "pass:" not in result.output
    suite = ET.parse(junit).getroot()
    assert (suite.get("failures"), suite.get("skipped")) == ("0", "1")
    (skipped,) = [case for case in suite.findall("testcase") if case.find("skipped") is not None]
    assert (skipped.get("classname"), skipped.get("name")) == ("layerprof.batch8.z2", "step_time_ms")
    assert skipped.find("skipped").get("message").startswith("inconclusive: +100.0% exceeds +10%")
    markdown = summary.read_text()
    assert markdown.startswith("### layerprof check: ⚠️ inconclusive")
    assert "0 regressing figure(s), 1 inconclusive" in markdown and "| inconclusive |" in markdown
    # a wider tolerance decides it: +100% is within 150%
    assert runner.invoke(app, ["check", str(current), str(baseline), "--time-tolerance", "150%"]).exit_code == 0


def test_check_cli_exit_codes_and_outputs(tmp_path: Path) -> None:
    runner = CliRunner()
    baseline = save_profile(measured_like_profile(), tmp_path / "baseline.json")
    same = save_profile(measured_like_profile(), tmp_path / "same.json")
    slow = save_profile(doctored(lambda p: slower(p, 2, 1.2)), tmp_path / "slow.json")
    result = runner.invoke(app, ["check", str(same), str(baseline)])
    assert result.exit_code == 0, result.output
    summary, junit = tmp_path / "summary.md", tmp_path / "junit.xml"
    result = runner.invoke(
        app, ["check", str(slow), str(baseline), "--summary-md", str(summary), "--junit", str(junit)]
    )
    assert result.exit_code == 1 and "batch 8 z=2" in result.output
    assert summary.read_text().startswith("### layerprof check") and ET.parse(junit).getroot().get("failures") == "1"
    assert runner.invoke(app, ["check", str(slow), str(baseline), "--time-tolerance", "50%"]).exit_code == 0
    other = save_profile(doctored(lambda p: setattr(p.model, "spec", "other")), tmp_path / "other.json")
    assert runner.invoke(app, ["check", str(other), str(baseline)]).exit_code == 2
    data = json.loads(baseline.read_text())
    data["schema"] = "layerprof.profile/99"
    (tmp_path / "future.json").write_text(json.dumps(data))
    assert runner.invoke(app, ["check", str(same), str(tmp_path / "future.json")]).exit_code == 2
    assert runner.invoke(app, ["check", str(same), str(tmp_path / "nothing.json")]).exit_code == 2
    assert runner.invoke(app, ["check", str(same), str(baseline), "--time-tolerance", "fast"]).exit_code == 2
    fresh = tmp_path / "baselines" / "cpu" / "m.json"
    result = runner.invoke(app, ["check", str(slow), str(fresh), "--update-baseline"])
    assert result.exit_code == 0 and load_profile(fresh).to_dict() == load_profile(slow).to_dict()


def test_committed_baselines_are_valid_estimates() -> None:
    root = Path(__file__).parents[2] / "profiles" / "baselines" / "cpu"
    for name in ("paper-resnet18-cifar100", "paper-gpt-14m"):
        profile = load_profile(root / f"{name}.json")
        assert profile.complete and profile.settings.mode == "estimate"
        assert all(row.ok and row.memory_source == "estimate-cpu" for row in profile.rows)


def hungrier(z: int, figure: str, factor: float):
    return lambda p: setattr(p.row(8, z), figure, int(getattr(p.row(8, z), figure) * factor))


def test_check_cli_memory_tolerance_and_accept_changes(tmp_path: Path) -> None:
    runner = CliRunner()
    baseline = save_profile(measured_like_profile(), tmp_path / "baseline.json")
    grown = save_profile(doctored(hungrier(2, "peak_memory_bytes", 1.05)), tmp_path / "grown.json")
    result = runner.invoke(app, ["check", str(grown), str(baseline)])
    assert result.exit_code == 1 and "batch 8 z=2" in result.output
    assert runner.invoke(app, ["check", str(grown), str(baseline), "--memory-tolerance", "10%"]).exit_code == 0
    assert runner.invoke(app, ["check", str(grown), str(baseline), "--memory-tolerance", "0.04"]).exit_code == 1
    more_flops = save_profile(doctored(lambda p: setattr(p.row(8, 1), "flops", 1)), tmp_path / "flops.json")
    assert runner.invoke(app, ["check", str(more_flops), str(baseline)]).exit_code == 1
    accepted = runner.invoke(app, ["check", str(more_flops), str(baseline), "--accept-changes"])
    assert accepted.exit_code == 0 and "accepted" in accepted.output


@pytest.fixture(scope="module")
def estimates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The same estimate twice, and one with another --set override."""
    folder = tmp_path_factory.mktemp("estimates")
    runner = CliRunner()
    paths = []
    for name, extra in (("a", []), ("b", []), ("other", ["--set", "n_head=2"])):
        out = folder / f"{name}.json"
        args = ["estimate", "pythia-14m", "--seq-len", "16", "--set", "padded_vocab_size=512", *extra,
                "--batch-sizes", "2", "--layers", "1,9", "--target", "cuda", "--out", str(out)]  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        paths.append(out)
    return paths[0], paths[1], paths[2]


CATEGORIES = (
    "memory_parameters_bytes",
    "memory_gradients_bytes",
    "memory_optimizer_state_bytes",
    "memory_activations_bytes",
    "memory_inputs_bytes",
)


def test_two_estimates_agree_to_the_byte_in_every_memory_category(estimates) -> None:
    first, second, _ = (load_profile(path) for path in estimates)
    result = compare(second, first)
    assert result.exit_code == 0 and result.cells_compared == 2
    compared = {f.figure for f in result.findings}
    assert {"peak_memory_bytes", *CATEGORIES} <= compared
    for category in ("peak_memory_bytes", *CATEGORIES):
        for z in (1, 9):
            changed = copy.deepcopy(second)
            row = changed.row(2, z)
            setattr(row, category, getattr(row, category) + 512)  # one allocator block
            regressions = compare(changed, first).regressions
            assert [(f.trainable_layers, f.figure) for f in regressions] == [(z, category)], category
            assert "estimate changed" in regressions[0].detail
            assert compare(changed, first, accept_changes=True).cell_verdict(2, z) == "accepted"


def test_measured_memory_categories_are_gated_with_the_tolerance() -> None:
    def categorised(profile: Profile) -> None:
        for row in profile.rows:
            for index, category in enumerate(CATEGORIES):
                setattr(row, category, (index + 1) * 2**20)

    baseline = doctored(categorised)
    activations = copy.deepcopy(baseline)
    activations.row(8, 3).memory_activations_bytes *= 2
    assert [(f.trainable_layers, f.figure) for f in compare(activations, baseline).regressions] == [
        (3, "memory_activations_bytes")
    ]
    slight = copy.deepcopy(baseline)
    slight.row(8, 3).memory_activations_bytes = int(slight.row(8, 3).memory_activations_bytes * 1.01)
    assert compare(slight, baseline).exit_code == 0


def test_profiles_with_other_overrides_are_refused(estimates, tmp_path: Path) -> None:
    first, _, other = estimates
    with pytest.raises(UnusableInput, match="different model overrides"):
        compare(load_profile(other), load_profile(first))
    result = CliRunner().invoke(app, ["check", str(other), str(first)])
    assert result.exit_code == 2 and "different model overrides" in result.output


# ---------------------------------------------------------------- the rules at their edges


def test_deterministic_figures_allow_only_floating_noise() -> None:
    """A change of up to 1e-9 of the figure is floating noise; 1.5e-9 of it is a change."""
    baseline = doctored(lambda p: setattr(p.row(8, 1), "flops", 10**12))
    noise = doctored(lambda p: setattr(p.row(8, 1), "flops", 10**12 + 500))
    change = doctored(lambda p: setattr(p.row(8, 1), "flops", 10**12 + 1500))
    assert compare(noise, baseline).exit_code == 0
    assert [(f.figure, f.detail) for f in compare(change, baseline).regressions] == [("flops", "changed by +0.00%")]
    one = doctored(lambda p: setattr(p.row(8, 1), "optimizer_state_bytes", 1))
    zero = doctored(lambda p: setattr(p.row(8, 1), "optimizer_state_bytes", 0))
    assert [(f.figure, f.detail) for f in compare(one, zero).regressions] == [
        ("optimizer_state_bytes", "changed by +inf%")
    ]


def test_a_figure_one_side_lacks_is_left_out_and_the_rest_still_compared() -> None:
    def partial(profile: Profile) -> None:
        row = profile.row(8, 1)
        row.flops = row.peak_memory_bytes = row.step_time_ms = None  # e.g. recorded by an older layerprof
        row.optimizer_state_bytes += 8  # a later deterministic figure that did change
        row.memory_activations_bytes = 2**20  # a category the baseline does not have

    result = compare(doctored(partial), measured_like_profile())
    cell = {f.figure: f for f in result.findings if f.trainable_layers == 1}
    assert "flops" not in cell and "peak_memory_bytes" not in cell and "step_time_ms" not in cell
    assert "memory_activations_bytes" not in cell and cell["trainable_params"].verdict == "pass"
    assert [(f.trainable_layers, f.figure) for f in result.regressions] == [(1, "optimizer_state_bytes")]
    reverse = compare(measured_like_profile(), doctored(partial))
    assert [(f.trainable_layers, f.figure) for f in reverse.regressions] == [(1, "optimizer_state_bytes")]


def test_every_cell_is_compared_whatever_happened_to_the_cells_before_it() -> None:
    def troubles(profile: Profile) -> None:
        profile.rows[0] = Row(8, 1, "oom")  # now failing, no message
        profile.rows[1].flops += 1  # a later cell changed
        slower(profile, 3, 1.2)  # and a third slowed down

    result = compare(doctored(troubles), measured_like_profile())
    assert [(f.trainable_layers, f.figure, f.detail) for f in result.regressions] == [
        (1, "status", ""),
        (2, "flops", "changed by +0.05%"),
        (3, "step_time_ms", "+20.0% exceeds +10% beyond noise (step-time spreads (p10-p90) of profiles without visit "
                            "medians)"),
    ]  # fmt: skip
    missing = compare(doctored(lambda p: (p.rows.pop(0), setattr(p.row(8, 3), "flops", 1))), measured_like_profile())
    assert [(f.trainable_layers, f.figure) for f in missing.regressions] == [(1, "status"), (3, "flops")]

    def recovered(profile: Profile) -> None:
        profile.rows[0] = Row(8, 1, "oom")
        profile.row(8, 2).flops += 1

    healed = compare(measured_like_profile(), doctored(recovered))  # the baseline's failed cell now runs
    assert [(f.trainable_layers, f.figure, f.verdict) for f in healed.findings if f.verdict != "pass"] == [
        (1, "status", "improvement"), (2, "flops", "regression"),
    ]  # fmt: skip
    still = compare(doctored(recovered), doctored(recovered))
    assert [(f.figure, f.verdict) for f in still.findings if f.trainable_layers == 1] == [("status", "pass")]


def test_the_tolerances_are_limits_that_pass() -> None:
    """A change of exactly the tolerance passes: memory 2 -> 3 MiB at 50%, 2 -> 1 MiB is no improvement at 50%,
    and a step time 10 -> 15 ms at 50% is not even tested against noise."""

    def memory(mib: int):
        return lambda p: setattr(p.row(8, 1), "peak_memory_bytes", mib * 2**20)

    for mib in (3, 1):
        finding = next(
            f for f in compare(doctored(memory(mib)), doctored(memory(2)), memory_tolerance=0.5).findings
            if f.figure == "peak_memory_bytes" and f.trainable_layers == 1
        )  # fmt: skip
        assert finding.verdict == "pass", finding
    baseline = with_visits(measured_like_profile(), 1, [10.0, 10.0, 10.0])
    result = compare(with_visits(measured_like_profile(), 1, [15.0, 15.0, 15.0]), baseline, time_tolerance=0.5)
    finding = next(f for f in result.findings if f.figure == "step_time_ms" and f.trainable_layers == 1)
    assert (finding.verdict, finding.detail) == ("pass", "+50.0%")
    same = compare(measured_like_profile(), measured_like_profile())
    assert [f.figure for f in same.findings if f.trainable_layers == 1] == [
        "trainable_params", "trainable_fraction", "forward_flops", "backward_flops", "flops", "optimizer_state_bytes",
        "peak_memory_bytes", "step_time_ms",
    ]  # fmt: skip


def test_negative_tolerances_are_refused() -> None:
    for tolerances in ({"time_tolerance": -0.01}, {"memory_tolerance": -0.01}):
        with pytest.raises(LayerprofError, match="tolerances must not be negative"):
            compare(measured_like_profile(), measured_like_profile(), **tolerances)
    assert (
        compare(measured_like_profile(), measured_like_profile(), time_tolerance=0, memory_tolerance=0).exit_code == 0
    )


def test_memory_a_category_holds_nothing_of_on_both_sides_passes() -> None:
    def empty_inputs(size: int):
        return lambda p: setattr(p.row(8, 2), "memory_inputs_bytes", size)

    same = compare(doctored(empty_inputs(0)), doctored(empty_inputs(0)))
    assert next(f for f in same.findings if f.figure == "memory_inputs_bytes").detail == "+0.0%"
    grown = compare(doctored(empty_inputs(512)), doctored(empty_inputs(0)))
    assert [(f.figure, f.detail) for f in grown.regressions] == [("memory_inputs_bytes", "+inf% exceeds +2%")]


def test_spreads_decide_only_when_they_do_not_touch() -> None:
    """Without visit medians: the current p10 must lie above the baseline's p90 (equal is not enough), and for an
    improvement the current p90 below the baseline's p10; without p10 and p90 the medians stand in for both."""

    def spread(median: float, low: float | None, high: float | None):
        def change(profile: Profile) -> None:
            row = profile.row(8, 1)
            row.step_time_ms, row.step_time_p10_ms, row.step_time_p90_ms = median, low, high

        return change

    baseline = doctored(spread(10.0, 9.0, 11.0))
    touching = compare(doctored(spread(12.0, 11.0, 13.0)), baseline)
    assert touching.cell_verdict(8, 1) == "inconclusive"
    apart = compare(doctored(spread(12.0, 11.01, 13.0)), baseline)
    assert apart.cell_verdict(8, 1) == "regression"
    assert compare(doctored(spread(8.0, 7.0, 9.0)), baseline).cell_verdict(8, 1) == "pass"  # p90 = p10: no proof
    assert compare(doctored(spread(8.0, 7.0, 8.99)), baseline).cell_verdict(8, 1) == "improvement"
    bare = doctored(spread(10.0, None, None))
    assert compare(doctored(spread(12.0, None, None)), bare).cell_verdict(8, 1) == "regression"
    assert compare(doctored(spread(8.0, None, None)), bare).cell_verdict(8, 1) == "improvement"


def test_visit_medians_on_one_side_only_fall_back_to_the_spreads() -> None:
    baseline = measured_like_profile()  # no visit medians
    current = with_visits(measured_like_profile(), 2, [24.0, 24.2, 24.4], spread=(23.0, 25.0))
    finding = next(
        f for f in compare(current, baseline).findings if f.figure == "step_time_ms" and f.trainable_layers == 2
    )
    assert finding.verdict == "regression" and finding.detail.endswith("of profiles without visit medians)")


def test_the_summary_table_shows_each_cell_once_with_its_figures() -> None:
    def changes(profile: Profile) -> None:
        slower(profile, 2, 1.2)
        profile.row(8, 3).flops += 1
        profile.row(8, 1).peak_memory_bytes = 11 * 2**20

    result = compare(doctored(changes), measured_like_profile(), accept_changes=True)
    rows = summary_rows(result)
    assert rows == [
        ["8", "1", "10.0 → 10.0 ms (+0.0%)", "11.0 → 11.0 MiB (+0.0%)", "same", "pass", ""],
        ["8", "2", "20.0 → 24.0 ms (+20.0%)", "12.0 → 12.0 MiB (+0.0%)", "same", "regression",
         "step_time_ms: +20.0% exceeds +10% beyond noise (step-time spreads (p10-p90) of profiles without visit "
         "medians)"],
        ["8", "3", "30.0 → 30.0 ms (+0.0%)", "13.0 → 13.0 MiB (+0.0%)", "changed", "accepted",
         "flops: changed by +0.04%"],
    ]  # fmt: skip
    missing = compare(doctored(lambda p: p.rows.pop(0)), measured_like_profile())
    assert summary_rows(missing)[0] == [
        "8",
        "1",
        "—",
        "—",
        "same",
        "regression",
        "status: cell missing from the current profile",
    ]
    markdown = markdown_summary(result)
    header = "| batch | z | step time | peak memory | FLOPs | verdict | notes |"
    assert f"{header}\n| ---: | ---: | ---: | ---: | --- | --- | --- |" in markdown


def test_junit_cases_say_what_each_verdict_means() -> None:
    def changes(profile: Profile) -> None:
        profile.rows[0] = Row(8, 1, "oom")  # a regression without a message
        slower(profile, 3, 0.5)  # an improvement

    suite = ET.fromstring(junit_xml(compare(doctored(changes), measured_like_profile())).split("?>", 1)[1])
    cases = {(case.get("classname"), case.get("name")): case for case in suite.findall("testcase")}
    failure = cases[("layerprof.batch8.z1", "status")].find("failure")
    assert failure.get("message") == "regression" and failure.text == "baseline 'ok', current 'oom'"
    assert cases[("layerprof.batch8.z3", "step_time_ms")].find("system-out").text.startswith("improvement: -50.0%")
    assert cases[("layerprof.batch8.z3", "flops")].find("system-out") is None  # a pass says nothing
    assert "\n  <testcase " in junit_xml(compare(measured_like_profile(), measured_like_profile()))  # indented


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: setattr(p.workload, "seq_len", None),
            "different workloads: seq_len is None now, 16 in the baseline",
        ),
        (lambda p: setattr(p.workload, "vocab_size", 512), "different workloads: vocab_size is 512 now, None in the"),
        (
            lambda p: setattr(p.environment, "numerics", {"matmul_tf32": False, "cudnn_benchmark": True}),
            "different numeric settings: cudnn_benchmark is True now, None in the baseline",
        ),
    ],
)
def test_a_setting_recorded_on_one_side_only_is_a_difference(change, message: str) -> None:
    baseline = doctored(lambda p: setattr(p.environment, "numerics", {"matmul_tf32": False}))
    with pytest.raises(UnusableInput, match=message):
        compare(doctored(lambda p: (setattr(p.environment, "numerics", {"matmul_tf32": False}), change(p))), baseline)


def test_rank_sum_p_values_equal_scipys_exact_test() -> None:
    import random

    from scipy.stats import mannwhitneyu

    from layerprof.stats import rank_sum_p_value

    draw = random.Random(3)
    for n, m in ((3, 3), (4, 6), (7, 5), (10, 10)):
        for _ in range(5):
            larger = [draw.gauss(1.0, 1.0) for _ in range(n)]
            smaller = [draw.gauss(0.0, 1.0) for _ in range(m)]
            expected = mannwhitneyu(larger, smaller, alternative="greater", method="exact").pvalue
            assert rank_sum_p_value(larger, smaller) == pytest.approx(expected, rel=1e-9)
    assert rank_sum_p_value([], [1.0]) == 1.0 and rank_sum_p_value([1.0], []) == 1.0
    assert rank_sum_p_value([2.0, 2.0], [2.0, 2.0]) == pytest.approx(4 / 6)  # 4 ties count 2 wins: P(U >= 2)


def disturb(profile: Profile, *zs: int) -> Profile:
    for row in profile.rows:
        if row.trainable_layers in zs:
            row.disturbed, row.disturbed_reason = True, "other work kept the CPUs 100% busy"
    return profile


def test_cells_other_work_disturbed_are_named_even_when_the_gate_passes() -> None:
    baseline = disturb(measured_like_profile(), 2, 3)
    current = disturb(measured_like_profile(), 1, 3)
    result = compare(current, baseline)
    assert result.exit_code == 0
    assert [(c.batch_size, c.trainable_layers, c.side) for c in result.disturbed] == [
        (8, 1, "current"),
        (8, 2, "baseline"),
        (8, 3, "both"),
    ]
    assert result.disturbed_note == (
        "3 cell(s) were timed while other work disturbed the machine: batch 8 z=1 (current), batch 8 z=2 "
        "(baseline), batch 8 z=3 (both); their step-time verdicts are weak evidence: re-measure them on a quiet runner"
    )
    notes = {row[1]: row[-1] for row in summary_rows(result)}
    assert notes == {
        "1": "disturbed while timed (current)",
        "2": "disturbed while timed (baseline)",
        "3": "disturbed while timed (both)",
    }
    assert "Disturbed: 3 cell(s)" in markdown_summary(result)


def test_quiet_profiles_carry_no_disturbed_note() -> None:
    result = compare(measured_like_profile(), measured_like_profile())
    assert result.disturbed == [] and result.disturbed_note is None
    assert "Disturbed" not in markdown_summary(result)


def test_the_check_command_warns_of_disturbed_cells_and_still_passes(tmp_path: Path) -> None:
    save_profile(disturb(measured_like_profile(), 2), tmp_path / "base.json")
    save_profile(disturb(measured_like_profile(), 2), tmp_path / "cur.json")
    result = CliRunner().invoke(app, ["check", str(tmp_path / "cur.json"), str(tmp_path / "base.json")])
    assert result.exit_code == 0, result.output
    assert "warning: 1 cell(s) were timed while other work disturbed the machine: batch 8 z=2 (both)" in (
        " ".join(result.output.split())
    )
