"""Parts of cli/render.py that the end-to-end tests leave unpinned (issue 40: mutants that survived)."""

from __future__ import annotations

import io
import sys
import time
import warnings
from pathlib import Path

import pytest
import typer
from rich.console import Console

from layerprof.cli import render
from layerprof.cli.render import SweepProgress, short_range
from layerprof.errors import LayerprofWarning
from layerprof.outputs.tables import TableView
from layerprof.profile import Row
from tests.conftest import bare_profile

click = sys.modules[typer.BadParameter.__module__]  # the click Typer runs on (its own copy since 0.24)


def test_a_run_of_three_or_more_consecutive_values_is_shown_as_a_range() -> None:
    assert short_range((1, 2, 3, 4)) == "1..4"
    assert short_range((5, 6, 7)) == "5..7"
    assert short_range((1, 2, 4)) == "1,2,4"
    assert short_range((3, 4)) == "3,4"  # two values: a range would say no less
    assert short_range((2,)) == "2"


def test_the_sweeps_bar_names_the_cell_of_round_1_and_counts_later_rounds_from_1() -> None:
    progress = SweepProgress(Console(file=io.StringIO()))
    progress.cell_started(8, 3, 1, 5)  # batch 8, z=3: the second of 5 cells
    (task,) = progress._progress.tasks
    assert (task.description, task.total) == ("round 1 · batch 8, z=3", 5)
    before = time.monotonic()
    progress.round_started(1, 4, 100.0)  # the second round, 4 cells unsettled, their visits 100 s
    after = time.monotonic()
    (task,) = progress._progress.tasks
    assert (task.description, task.total, task.completed) == ("round 2 · 4 cell(s) settling", 4, 0)
    assert before + 100.0 <= task.fields["deadline"] <= after + 100.0  # counted down from the call, at any load
    assert progress.events == [("cell_started", 8, 3, 1, 5), ("round_started", 1, 4, 100.0)]


# ---------------------------------------------------------------- lines, errors, exit codes (pinned literals)


def test_time_left_text_splits_hours_minutes_seconds() -> None:
    assert render.time_left_text(None, 5.0) == "-:--:-- left"
    assert render.time_left_text(100.0 + 3 * 3600 + 4 * 60 + 5.4, 100.0) == "~3:04:05 left"
    assert render.time_left_text(100.0 + 59.6, 100.0) == "~0:01:00 left"  # rounded, then split
    assert render.time_left_text(90.0, 100.0) == "~0:00:00 left"  # past the deadline: none, not negative


def test_interrupt_exit_codes_are_128_plus_the_signal() -> None:
    assert render.interrupt_exit_code(KeyboardInterrupt()) == 130
    assert render.interrupt_exit_code(render.Interrupted(15)) == 143
    assert render.interrupt_exit_code(render.Interrupted(1)) == 129


def test_interrupt_keeps_says_what_is_kept_and_exits_with_the_signals_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as stopped, render.interrupt_keeps("the rows are kept"):
        raise render.Interrupted(15)
    assert stopped.value.exit_code == 143
    assert capsys.readouterr().err == "interrupted: the rows are kept\n"


def test_user_errors_say_an_unexpected_error_in_its_first_line_and_a_warning_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as stopped, render.user_errors(unexpected_exit=2):
        warnings.warn("busy machine", LayerprofWarning, stacklevel=1)
        warnings.warn("busy machine", LayerprofWarning, stacklevel=1)
        warnings.warn("a library's own", UserWarning, stacklevel=1)
        raise ValueError("  first line\nsecond line")
    assert stopped.value.exit_code == 2
    assert capsys.readouterr().err == (
        "warning: busy machine\nerror: unexpected ValueError: first line (set LAYERPROF_DEBUG=1 for a traceback)\n"
    )
    with pytest.raises(typer.Exit) as stopped, render.user_errors():
        raise RuntimeError("")
    assert stopped.value.exit_code == 1
    assert capsys.readouterr().err == "error: unexpected RuntimeError:  (set LAYERPROF_DEBUG=1 for a traceback)\n"


def test_user_errors_let_an_exit_through_and_raise_under_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(typer.Exit) as stopped, render.user_errors():
        raise typer.Exit(7)
    assert stopped.value.exit_code == 7
    monkeypatch.setenv("LAYERPROF_DEBUG", "1")
    with pytest.raises(ValueError, match="x"), render.user_errors():
        raise ValueError("x")


def test_an_unknown_option_is_one_line_naming_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    app = typer.Typer(cls=render.OneLineUsageErrors)

    @app.command()
    def go(fast: bool = False) -> None:
        render.line(f"fast={fast}")

    @app.command()
    def other() -> None:
        pass

    command = typer.main.get_command(app)
    with pytest.raises(SystemExit) as stopped:
        command.main(["go", "--slow"], prog_name="layerprof")
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: layerprof go: No such option: --slow") and err.endswith(
        "(`layerprof go --help` lists what it takes)\n"
    )
    with pytest.raises(SystemExit) as stopped:
        command.main(["go", "--fast"], prog_name="layerprof")
    assert stopped.value.code == 0 and capsys.readouterr().out == "fast=True\n"
    assert command.main(["go"], prog_name="layerprof", standalone_mode=False) is None
    go_command = command.commands["go"]  # type: ignore[attr-defined]
    assert [p.metavar for p in go_command.params if getattr(p, "is_flag", False)] == [""]


def test_sweep_warnings_name_six_disturbed_cells_and_count_the_rest(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [Row(8, z, "ok", disturbed=True) for z in range(1, 9)] + [Row(16, 1, "error"), Row(16, 2, "error")]
    render.sweep_warnings(bare_profile(rows, 8))
    err = capsys.readouterr().err
    assert err.startswith(
        "warning: 2 cell(s) failed; see the status column\nwarning: other work on the machine disturbed batch 8 z=1, "
        "batch 8 z=2, batch 8 z=3, batch 8 z=4, batch 8 z=5, batch 8 z=6 and 2 more: their step times may be off"
    )
    render.sweep_warnings(bare_profile(rows[:6], 8))
    assert "batch 8 z=6: their step times" in capsys.readouterr().err
    render.sweep_warnings(bare_profile([Row(8, 1, "ok")], 1))
    assert capsys.readouterr().err == ""


def test_ray_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from layerprof.measure.cluster import ClusterKind, ClusterRun, KindOutcome

    assert render.ray_sweeps_line("m", 2, (8, 16, 32), None) == 6
    assert render.ray_sweeps_line("m", 1, (8,), "ray://h:1") == 1
    assert capsys.readouterr().out == (
        "m: 2 GPU kind(s) x batch sizes 8, 16, 32 = 6 sweeps · Ray (local instance)\n"
        "m: 1 GPU kind(s) x batch sizes 8 = 1 sweeps · Ray ray://h:1\n"
    )
    small, big = ClusterKind("small", "kind_a", None), ClusterKind("big", "kind_b", None)
    whole = KindOutcome(small, Path("a.json"), [8, 16], done=[16, 8], skipped=[8])
    part = KindOutcome(big, Path("b.json"), [8, 16], done=[8], failures=["batch 16: lost"])
    render.ray_outcomes(ClusterRun([whole, part]))
    captured = capsys.readouterr()
    assert captured.out == (
        "small (kind_a): batch sizes 8, 16 (8 already there) · complete · a.json\n"
        "big (kind_b): batch sizes 8 · incomplete · b.json\n"
        "next: layerprof plan a.json b.json --cluster COUNTxGPU,...\n"
    )
    assert captured.err == (
        "big: batch 16: lost\nrerun the same command to run what is missing: finished sweeps are skipped\n"
    )
    render.ray_outcomes(ClusterRun([whole, KindOutcome(big, Path("b.json"), [8])]))
    assert capsys.readouterr() == (
        "small (kind_a): batch sizes 8, 16 (8 already there) · complete · a.json\n"
        "big (kind_b): batch sizes - · incomplete · b.json\n",
        "",
    )


def test_ray_progress_keeps_the_running_sweeps(capsys: pytest.CaptureFixture[str]) -> None:
    from layerprof.measure.cluster import ClusterKind, KindOutcome, SweepEventKind

    outcome = KindOutcome(ClusterKind("small", "kind_a", None), Path("a.json"), [8, 16])
    progress = render.RayProgress(3)
    task = progress._progress.tasks[0]
    progress.on_event(SweepEventKind.submitted, outcome, 8, "")
    progress.on_event(SweepEventKind.submitted, outcome, 16, "")
    assert (task.description, task.completed) == ("running: small batch 16, small batch 8", 0)
    progress.on_event(SweepEventKind.skipped, outcome, 32, "")
    progress.on_event(SweepEventKind.done, outcome, 8, "a.json")
    assert (task.description, task.completed) == ("running: small batch 16", 2)
    progress.on_event(SweepEventKind.retry, outcome, 16, "node lost")
    progress.on_event(SweepEventKind.failed, outcome, 16, "out of memory")
    assert (task.description, task.completed) == ("running: -", 3)
    out = capsys.readouterr().out
    assert "small batch 8: wrote a.json\n" in out and "small batch 16: node lost; retrying\n" in out
    assert "small batch 16: out of memory\n" in out


def test_trial_failures_show_five_and_count_the_rest(capsys: pytest.CaptureFixture[str]) -> None:
    from layerprof.fidelity.correlate import ContinuedResult, SegmentResult, TrialResult

    advanced: list[tuple[int, int]] = []
    failures = render.TrialFailures(lambda done, total: advanced.append((done, total)))
    failures.on_result(TrialResult(0, 2, 1.0, 0, 0.5), 1, 9)  # a loss: no failure
    failures.on_result(TrialResult(1, 2, 1.0, 0, None, "nan"), 2, 9)
    segment = SegmentResult(3, 0.25, None)
    failures.on_result(ContinuedResult(2, 0, [], [segment], error="diverged"), 3, 9)
    failures.on_result(ContinuedResult(3, 0, [], [], error="setup"), 4, 9)
    failures.on_result(ContinuedResult(4, 0, [], [segment]), 5, 9)  # no error
    assert advanced == [(1, 9), (2, 9), (3, 9), (4, 9), (5, 9)]
    assert failures.lines == [
        "config 1 at z=2: nan",
        "config 2, continued, at 3@0.25: diverged",
        "config 3, continued, at its start: setup",
    ]
    failures.show()
    assert capsys.readouterr().err.count("failed trial (excluded from rho): ") == 3
    failures.lines = [f"f{i}" for i in range(7)]
    failures.show()
    err = capsys.readouterr().err
    assert err.count("failed trial (") == 5 and "f4\n" in err and "f5" not in err
    assert err.endswith("... and 2 more failed trials\n")


def test_sweep_progress_prints_a_failed_cell_but_not_a_skipped_one(capsys: pytest.CaptureFixture[str]) -> None:
    progress = render.SweepProgress(Console(file=io.StringIO(), width=200))
    output = progress._progress.console.file
    progress.cell_started(8, 1, 0, 3)
    progress.cell_finished(Row(8, 1, "ok"))
    progress.cell_finished(Row(8, 2, "skipped", message="below min"))
    progress.cell_finished(Row(8, 3, "oom", message="CUDA out of memory"))
    (task,) = progress._progress.tasks
    assert task.completed == 3
    progress.visit_finished(1, 2, 4)
    assert task.completed == 2
    progress.machine_busy("another process uses the GPU")
    text = output.getvalue()  # type: ignore[attr-defined]
    assert "batch 8, z=3: oom CUDA out of memory\n" in text and "z=2" not in text
    assert "warning: another process uses the GPU\n" in text
    assert progress.events[-3:] == [
        ("cell_finished", 8, 3, "oom"),
        ("visit_finished", 1, 2, 4),
        ("machine_busy", "another process uses the GPU"),
    ]


def test_the_time_left_of_round_1_is_its_pace_so_far() -> None:
    progress = render.SweepProgress(Console(file=io.StringIO()))
    progress.cell_started(8, 1, 0, 4)
    (task,) = progress._progress.tasks
    column = progress._progress.columns[-1]
    assert str(column.render(task)) == "-:--:-- left"  # nothing done yet
    task.start_time = task.get_time() - 10.0  # started 10 s ago, 1 of 4 done: 30 s to go
    progress._progress.update(progress._task, completed=1)
    assert str(column.render(task)) == "~0:00:30 left"


def test_views_add_the_wide_note_only_when_narrow(capsys: pytest.CaptureFixture[str]) -> None:
    made: list[bool] = []

    def make(wide: bool) -> list:
        made.append(wide)
        return []

    render.views(make, "table", False)
    render.views(make, "table", True)
    assert made == [False, True] and capsys.readouterr().out == f"{render.WIDE_NOTE}\n"
    render.views(make, "md", False)
    assert made[-1] is True


def test_exactly_five_failed_trials_have_no_more_line(capsys: pytest.CaptureFixture[str]) -> None:
    failures = render.TrialFailures(lambda done, total: None)
    failures.lines = [f"f{i}" for i in range(5)]
    failures.show()
    err = capsys.readouterr().err
    assert err.count("failed trial (") == 5 and "more failed trials" not in err


def two_commands(**options: object) -> typer.core.TyperGroup:
    app = typer.Typer(cls=render.OneLineUsageErrors, **options)  # type: ignore[arg-type]

    @app.command()
    def go() -> None:
        raise click.ClickException("the disk is full")

    @app.command()
    def other() -> None:
        pass

    command = typer.main.get_command(app)
    assert isinstance(command, render.OneLineUsageErrors)
    return command


def test_a_click_error_outside_usage_names_layerprof(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        two_commands().main(["go"], prog_name="layerprof")
    assert stopped.value.code == 1
    assert capsys.readouterr().err == ("error: layerprof: the disk is full (`layerprof --help` lists what it takes)\n")
    with pytest.raises(click.ClickException):
        two_commands().main(["go"], prog_name="layerprof", standalone_mode=False)


def test_no_arguments_show_help_and_exit_2_or_raise_outside_standalone(capsys: pytest.CaptureFixture[str]) -> None:
    command = two_commands(no_args_is_help=True)
    with pytest.raises(SystemExit) as stopped:
        command.main([], prog_name="layerprof")
    assert stopped.value.code == 2 and "Usage: layerprof" in capsys.readouterr().out
    with pytest.raises(click.NoArgsIsHelpError):
        command.main([], prog_name="layerprof", standalone_mode=False)


def test_shell_completion_is_read_from_the_programs_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_LAYERPROF_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "layerprof ot")
    monkeypatch.setenv("COMP_CWORD", "1")
    with pytest.raises(SystemExit) as stopped:
        two_commands().main(["other"], prog_name="layerprof")
    assert (stopped.value.code, capsys.readouterr().out) == (0, "other\n")  # the completion, not the command


def test_bars_show_while_their_block_runs_and_leave_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    progress = render.SweepProgress(Console(file=io.StringIO()))
    with progress as entered:
        assert entered is progress and progress._progress.live.is_started
    assert not progress._progress.live.is_started
    output = io.StringIO()
    monkeypatch.setattr(render, "console", Console(file=output, width=80))
    with render.progress_bar("loading") as advance:
        advance(3, 3)
    assert output.getvalue().strip() == ""  # transient: a non-terminal gets no final bar either


def test_a_markdown_table_ends_with_a_blank_line_unless_told(capsys: pytest.CaptureFixture[str]) -> None:
    view = TableView("t", ["a"], [["1"]], heading=None)
    render.table(view, "md")
    first = capsys.readouterr().out
    render.table(view, "md", blank=False)
    assert first == capsys.readouterr().out + "\n" and first.endswith("|\n\n")


def test_cell_tables_one_per_batch_size(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [Row(8, 1, "ok", step_time_ms=1.0), Row(16, 1, "ok", step_time_ms=2.0)]
    render.cell_tables(bare_profile(rows, 1), "md")
    out = capsys.readouterr().out
    assert out.count("batch 8") >= 1 and out.count("batch 16") >= 1


def test_prediction_check_is_a_table_of_the_measured_device(capsys: pytest.CaptureFixture[str]) -> None:
    from layerprof.predict.timemodel import PredictionCheck

    checks = [PredictionCheck(8, 1, 10.0, 11.0, None, None)]
    render.prediction_check(checks, bare_profile([Row(8, 1, "ok")], 1, device_name="gpu-x"), "md")
    assert "| 8 | 1 | 10.00 | 11.00 | +10.0% |" in capsys.readouterr().out


def test_fit_prints_its_table_or_each_recipes(monkeypatch: pytest.MonkeyPatch) -> None:
    from layerprof.fidelity.recipes import RecipeFit
    from layerprof.predict.fit import FitReport, FitResult

    monkeypatch.setattr(render, "console", Console(file=io.StringIO(), width=200))
    report = FitReport("m", "cuda", 2 * 2**30, None, [FitResult(1, 64, 2**30)])
    render.fit(report, json_only=False)
    assert "m: largest batch in 2.0 GiB (cuda)" in render.console.file.getvalue()  # type: ignore[attr-defined]
    shown: list[tuple[object, str]] = []
    monkeypatch.setattr(render, "across_recipes", lambda result, output_format: shown.append((result, output_format)))
    across = RecipeFit("m", 2**30, [], [], [], "", [])
    render.fit(across, json_only=False)
    assert shown == [(across, "table")]


def test_an_audit_finding_is_one_line_however_narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    from layerprof.predict.audit import AuditReport, BottomLine, Finding, StepCost

    output = io.StringIO()
    monkeypatch.setattr(render, "console", Console(file=output, width=40))
    cost = StepCost(100, 100, 1.0, 0, 0, 1)
    message = "the optimizer holds frozen parameters: " + "p" * 60
    finding = Finding("frozen-in-optimizer", ["layer0"], message, "build it from trainable parameters")
    report = AuditReport("m", 8, "cpu", 0.05, ["layer0"], 1, 2, [finding], BottomLine(1, 2, cost, cost, cost))
    render.audit(report, json_only=False)
    assert f"frozen-in-optimizer: {message}\n" in output.getvalue()
