"""Interrupted sweeps: the cells left unfinished are marked so, `ladder`, `check` and `report` say so, and the same
command resumes the profile (finished cells kept, the rest measured) unless told to start over."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.cli.render import Interrupted
from layerprof.measure.jobs import profile_model
from layerprof.parsing import parse_layer_selection
from layerprof.predict.jobs import plan_estimate
from layerprof.profile import Row, SweepSettings, load_profile
from layerprof.sources.models import LoadedModel, ModelOptions
from layerprof.sources.workloads import Workload
from tests.conftest import linear_stack

FACTORY = """
from torch import nn

def stack(depth: int = 4):
    return nn.Sequential(*(nn.Linear(8, 8) for _ in range(depth)))
"""


class StopAfter:
    """An observer that interrupts the sweep like Ctrl-C once `cells` cells have finished (or at a timed round)."""

    def __init__(self, cells: int | None = None, at_round: int | None = None) -> None:
        self.cells, self.at_round, self.finished = cells, at_round, 0

    def cell_started(self, *_args: object) -> None:
        pass

    def cell_finished(self, _row: Row) -> None:
        self.finished += 1
        if self.finished == self.cells:
            raise KeyboardInterrupt

    def round_finished(self, round_index: int, _unsettled: int) -> None:
        if round_index == self.at_round:
            raise KeyboardInterrupt


@pytest.fixture
def factory(tmp_path: Path) -> str:
    (tmp_path / "factory.py").write_text(textwrap.dedent(FACTORY))
    return f"{tmp_path / 'factory.py'}:stack"


def estimate_job(factory: str, out: Path, batch_sizes: tuple[int, ...] = (2, 4), restart: bool = False):
    settings = SweepSettings(batch_sizes=batch_sizes, trainable_layer_counts=(), target="cpu")
    options = ModelOptions(input_shape=(8,))
    return plan_estimate(factory, options, settings, parse_layer_selection("all"), out, restart=restart)


def test_an_interrupted_estimate_marks_the_cells_left_and_resumes_them(factory: str, tmp_path: Path) -> None:
    out = tmp_path / "estimate.json"
    job = estimate_job(factory, out)
    assert job.resume is None
    with pytest.raises(KeyboardInterrupt):
        job.run(StopAfter(cells=3))
    interrupted = load_profile(out)
    assert not interrupted.complete
    assert [(row.key, row.status) for row in interrupted.rows] == [
        ((2, 1), "ok"), ((2, 2), "ok"), ((2, 3), "ok"),
        ((2, 4), "unfinished"), ((4, 1), "unfinished"), ((4, 2), "unfinished"), ((4, 3), "unfinished"),
        ((4, 4), "unfinished"),
    ]  # fmt: skip
    assert interrupted.row(4, 4).message == "not measured: the sweep was interrupted before this cell"
    assert interrupted.row(4, 4).trainable_params == 4 * 72  # the deterministic counts are there already
    job = estimate_job(factory, out)
    assert job.resume is not None and job.resume.unfinished_cells() == [(2, 4), (4, 1), (4, 2), (4, 3), (4, 4)]
    ran: list[tuple[int, int]] = []

    class Record(StopAfter):
        def cell_started(self, batch_size: int, trainable_layers: int, position: int, total: int) -> None:
            ran.append((batch_size, trainable_layers))
            assert total == 5

    resumed = job.run(Record())
    assert ran == [(2, 4), (4, 1), (4, 2), (4, 3), (4, 4)]  # the finished cells are not run again
    assert resumed.complete and all(row.ok for row in resumed.rows) and len(resumed.rows) == 8
    assert load_profile(out).to_dict()["rows"][:3] == interrupted.to_dict()["rows"][:3]
    # a complete profile at --out is measured anew; --restart measures an interrupted one anew
    assert estimate_job(factory, out).resume is None
    with pytest.raises(KeyboardInterrupt):
        estimate_job(factory, out).run(StopAfter(cells=1))
    assert estimate_job(factory, out, restart=True).resume is None


def test_a_measured_cell_still_settling_is_unfinished_with_its_provisional_figures() -> None:
    loaded = LoadedModel("stack", "user", "stack", linear_stack(16, 3), Workload("tensor-input", (16,)), (), {})
    layers = loaded.split()
    # three visits of one step each before a cell may settle: interrupted in the first timed round, each has two
    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(1, 3), warmup_steps=1, min_steps=3,
                             max_steps=3, steps_per_visit=1)  # fmt: skip
    saved = []
    with pytest.raises(KeyboardInterrupt):
        profile_model(loaded, layers, settings, torch.device("cpu"), observer=StopAfter(at_round=1),
                      save=lambda p: saved.append(p.to_dict()))  # fmt: skip
    last = saved[-1]
    assert last["complete"] is False
    for row in last["rows"]:
        assert row["status"] == "unfinished"
        assert row["message"].startswith("interrupted after 2 visit(s), before its step time settled")
        assert len(row["visit_medians_ms"]) == 2 and row["step_time_ms"] > 0 and row["flops"] > 0


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def interrupted_file(factory: str, out: Path, cells: int = 2) -> Path:
    with pytest.raises(KeyboardInterrupt):
        estimate_job(factory, out).run(StopAfter(cells=cells))
    return out


def test_another_sweeps_interrupted_profile_is_refused_not_replaced(factory: str, tmp_path: Path) -> None:
    out = interrupted_file(factory, tmp_path / "estimate.json")
    before = out.read_text()
    common = ["estimate", factory, "--input-shape", "8", "--target", "cpu", "--out", str(out)]
    result = run(*common, "--batch-sizes", "2")
    assert result.exit_code == 2, result.output
    assert "holds an interrupted profile of another sweep (batch_sizes: [2, 4] there, [2] now)" in " ".join(
        result.output.split()
    )
    assert out.read_text() == before
    result = run(*common, "--batch-sizes", "2,4", "--set", "depth=3")
    assert result.exit_code == 2 and "another sweep (--set: {} there, {'depth': 3} now)" in " ".join(
        result.output.split()
    )
    result = run(*common, "--batch-sizes", "2", "--restart")
    assert result.exit_code == 0, result.output
    assert load_profile(out).settings.batch_sizes == (2,)


def test_a_file_that_is_no_profile_at_out_is_refused_unless_restart(factory: str, tmp_path: Path) -> None:
    out = tmp_path / "notes.json"
    out.write_text(json.dumps({"my": "notes"}))
    common = ["estimate", factory, "--input-shape", "8", "--target", "cpu", "--batch-sizes", "2", "--out", str(out)]
    result = run(*common)
    assert result.exit_code == 2 and "holds a file this cannot resume" in result.output
    assert json.loads(out.read_text()) == {"my": "notes"}
    assert run(*common, "--restart").exit_code == 0


def test_ladder_and_report_say_a_profile_is_incomplete(factory: str, tmp_path: Path) -> None:
    out = interrupted_file(factory, tmp_path / "estimate.json", cells=4)  # batch 2 finished, batch 4 not
    result = run("ladder", str(out))
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())
    assert "warning:" in words and "is incomplete (the sweep was interrupted: 4 of 8 cells unfinished" in words
    assert "the ladder rests on its finished cells only" in words
    result = run("ladder", str(out), "--batch-size", "4")
    assert result.exit_code == 2
    assert "no successful cells at batch size 4; try one of 2" in result.output
    out = interrupted_file(factory, tmp_path / "early.json", cells=2)
    result = run("ladder", str(out))
    assert result.exit_code == 2
    assert "full-training cell (z=4) at batch size 2 (it is unfinished: not measured" in " ".join(result.output.split())
    result = run("report", str(out), "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    assert "early is incomplete (the sweep was interrupted: 6 of 8 cells unfinished" in " ".join(result.output.split())


def test_plan_notes_an_incomplete_profile(factory: str, tmp_path: Path) -> None:
    from layerprof.fidelity.plan import plan_cluster
    from layerprof.measure.cluster import parse_inventory

    settings = SweepSettings(batch_sizes=(2,), trainable_layer_counts=(), target="cuda")
    job = plan_estimate(factory, ModelOptions(input_shape=(8,)), settings, parse_layer_selection("all"),
                        tmp_path / "cuda.json")  # fmt: skip
    profile = job.run()
    assert not any("incomplete" in note for note in plan_cluster([profile], parse_inventory("2xH100")).notes)
    profile.complete = False
    profile.row(2, 2).status = "unfinished"
    notes = plan_cluster([profile], parse_inventory("2xH100")).notes
    assert "the profile of estimate for cuda is incomplete (the sweep was interrupted: 1 of 4 cells unfinished" in (
        " ".join(notes)
    )


# ---------------------------------------------------------------- one writer per --out (issue 40)

HOLD = (
    "import sys, time; from pathlib import Path; from layerprof.profile import OutputLock; "
    "OutputLock(Path(sys.argv[1])).__enter__(); print('held', flush=True); time.sleep(120)"
)


def test_a_second_run_with_the_same_out_refuses_in_one_line_naming_the_first(factory: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "estimate.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    first = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "held"
        common = ["estimate", factory, "--input-shape", "8", "--target", "cpu", "--batch-sizes", "2", "--out", str(out)]
        result = run(*common)
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1
        assert f"is being written by another layerprof run (PID {first.pid}); wait for it" in " ".join(
            result.output.split()
        )
        assert not out.exists()
    finally:
        first.kill()
        first.wait()
    assert run(*common).exit_code == 0  # the system let go of the dead run's lock: no stale lock to clean up
    assert not (tmp_path / ".estimate.json.lock").exists()


def test_a_run_started_after_the_job_was_planned_holds_the_lock_until_it_ends(factory: str, tmp_path: Path) -> None:
    from layerprof.errors import LayerprofError
    from layerprof.profile import OutputLock

    out = tmp_path / "estimate.json"
    job = estimate_job(factory, out)
    with OutputLock(out) as lock:
        assert lock.holder is None and lock.descriptor is not None
        with pytest.raises(LayerprofError, match=r"being written by another layerprof run \(PID \d+\)"):
            job.run()
        assert not out.exists()
    held = []

    class Peek(StopAfter):
        def cell_finished(self, _row: Row) -> None:
            with OutputLock(out) as other:
                held.append(other.holder)

    job.run(Peek())
    assert held and set(held) == {__import__("os").getpid()}  # the running job held it at every cell
    with OutputLock(out) as lock:  # and let go at the end
        assert lock.holder is None


def test_another_models_finished_profile_is_refused_unless_force(factory: str, tmp_path: Path) -> None:
    out = tmp_path / "estimate.json"
    common = ["--input-shape", "8", "--target", "cpu", "--batch-sizes", "2", "--out", str(out)]
    assert run("estimate", factory, *common).exit_code == 0
    before = out.read_text()
    assert run("estimate", factory, *common).exit_code == 0  # the same model's finished profile: measured anew
    other = factory.replace(":stack", ":other")
    Path(factory.rpartition(":")[0]).write_text(textwrap.dedent(FACTORY) + "\nother = stack\n")
    result = run("estimate", other, *common)
    assert result.exit_code == 2, result.output
    assert f"holds a finished profile of another model ({factory}); give another --out, or --force" in " ".join(
        result.output.split()
    )
    assert json.loads(out.read_text())["model"] == json.loads(before)["model"]
    result = run("estimate", other, *common, "--force")
    assert result.exit_code == 0, result.output
    assert load_profile(out).model.spec == other


def test_a_read_only_profile_is_refused_before_anything_is_measured(factory: str, tmp_path: Path) -> None:
    out = interrupted_file(factory, tmp_path / "estimate.json")
    before = out.read_text()
    out.chmod(0o444)
    result = run("estimate", factory, "--input-shape", "8", "--target", "cpu", "--batch-sizes", "2,4", "--out",
                 str(out))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"--out {str(out)!r} is read-only; make it writable" in " ".join(result.output.split()), result.output
    assert "resuming" not in result.output and out.read_text() == before
    out.chmod(0o644)
    out.with_suffix(".csv").chmod(0o444)  # the CSV beside it too
    result = run("estimate", factory, "--input-shape", "8", "--target", "cpu", "--batch-sizes", "2,4", "--out",
                 str(out))  # fmt: skip
    assert result.exit_code == 2 and "estimate.csv' is read-only" in " ".join(result.output.split())


# ---------------------------------------------------------------- SIGTERM and SIGHUP end a sweep as Ctrl-C does

SLOW_FACTORY = """
from torch import nn

def stack(depth: int = 4):
    return nn.Sequential(*(nn.Linear(64, 64) for _ in range(depth)))
"""


@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143)])
def test_a_terminated_sweep_marks_its_unsettled_cells_unfinished(tmp_path: Path, name: str, code: int) -> None:
    """A real process sent SIGTERM (`timeout`, a scheduler's limit) or SIGHUP while it measures: it saves what is
    finished, marks the cells still settling unfinished and exits 128 + the signal, as Ctrl-C exits 130."""
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "slow.py").write_text(textwrap.dedent(SLOW_FACTORY))
    out = tmp_path / "profile.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "COLUMNS": "120"}
    command = [sys.executable, "-m", "layerprof", "profile", f"{tmp_path / 'slow.py'}:stack", "--input-shape", "64",
               "--batch-sizes", "2,4", "--warmup", "1", "--min-steps", "200", "--steps", "400",
               "--steps-per-visit", "1", "--threads", "1", "--out", str(out)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not out.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)  # the first cell's first visit is saved: the sweep is measuring
    process.send_signal(getattr(signal, name))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert "interrupted:" in stderr and "Traceback" not in stderr
    profile = load_profile(out)
    assert not profile.complete
    statuses = {row.key: row.status for row in profile.rows}
    assert "unfinished" in statuses.values()
    for row in profile.rows:  # a cell marked ok was measured to the protocol's end, never one visit
        assert row.status == "unfinished" or (row.visits or 0) >= 2, row


@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_signals_raise_an_interrupt_while_a_run_lasts_and_only_then(name: str, code: int) -> None:
    import os
    import signal

    from layerprof.cli.render import Interrupted, interrupt_exit_code, signals_as_interrupts

    number = getattr(signal, name)
    before = signal.getsignal(number)
    with pytest.raises(KeyboardInterrupt) as caught, signals_as_interrupts():
        os.kill(os.getpid(), number)
        signal.sigtimedwait([], 0) if hasattr(signal, "sigtimedwait") else None  # let the handler run
    assert isinstance(caught.value, Interrupted) and interrupt_exit_code(caught.value) == code
    assert interrupt_exit_code(KeyboardInterrupt()) == 130  # Ctrl-C
    assert signal.getsignal(number) is before  # the handler is put back


@pytest.mark.parametrize(("name", "expected"), [("SIGTERM", Interrupted), ("SIGINT", KeyboardInterrupt)])
def test_an_interrupt_that_python_ignores_in_a_weakref_callback_is_raised_again(name: str, expected: type) -> None:
    """The signal arrives while a weakref callback runs (as the memory tracker's do all through a step): Python
    ignores an exception raised there, so the run went on to its end and exited 0 (seen under SIGTERM in CI)."""
    import os
    import signal
    import time
    import weakref

    from layerprof.cli.render import signals_as_interrupts

    class Storage:
        pass

    def callback(_ref: object) -> None:
        os.kill(os.getpid(), getattr(signal, name))
        for _ in range(1000):  # the handler runs here, inside the callback
            pass

    # as in a command's process (pytest-xdist's workers ignore SIGINT)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt) as caught, signals_as_interrupts():
            storage = Storage()
            ref = weakref.ref(storage, callback)
            del storage  # the callback runs
            time.sleep(1)  # the signal sent again ends the sleep
    finally:
        signal.signal(signal.SIGINT, before)
    assert type(caught.value) is expected and ref() is None
    if expected is Interrupted:
        assert caught.value.signal_number == signal.SIGTERM
