"""Everything the command line prints: the consoles, error lines, progress bars and the printers of each result.

The CLI (`layerprof.cli.commands`) parses, calls one library function and hands the result here; the tables themselves
(Rich and Markdown) are built by `layerprof.outputs.tables`. Heavy modules are imported inside the printers, so that
`--help` answers without torch.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from layerprof.errors import LayerprofError, LayerprofWarning

if TYPE_CHECKING:  # the printers' inputs, named for the type checker only: printing imports nothing heavy
    from types import FrameType, TracebackType

    from rich.progress import Progress, Task
    from rich.status import Status
    from typer._click.core import Command, Context, TyperOption  # the click Typer vendors (its own copy since 0.24)
    from typing_extensions import Self

    from layerprof.fidelity.correlate import ContinuedResult, CorrelationResult, TrialResult
    from layerprof.fidelity.granularity import SplitReport
    from layerprof.fidelity.ladder import Ladder
    from layerprof.fidelity.plan import ClusterPlan
    from layerprof.fidelity.recipes import RecipeFit, RecipeLadder, RecipePlan
    from layerprof.fidelity.simulate import Simulation
    from layerprof.measure.cluster import ClusterRun, KindOutcome, SweepEventKind
    from layerprof.measure.jobs import SweepJob
    from layerprof.outputs.check import CheckResult
    from layerprof.outputs.tables import TableView
    from layerprof.predict.audit import AuditReport
    from layerprof.predict.fit import FitReport
    from layerprof.predict.layercosts import LayerCostTable
    from layerprof.predict.timemodel import PredictionCheck, TimeModel
    from layerprof.profile import ModelInfo, Profile, Row


class _Deferred(type):
    """A class standing in for `real` (module, name): calling it or reading an attribute imports the real one."""

    real: tuple[str, str]

    def _class(cls) -> type:
        import importlib

        module, name = cls.real
        real: type = getattr(importlib.import_module(module), name)
        return real

    def __call__(cls, *args: object, **kwargs: object) -> object:
        return cls._class()(*args, **kwargs)

    def __getattr__(cls, attribute: str) -> object:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return getattr(cls._class(), attribute)


# typer.rich_utils (every help page) imports rich.markdown (markdown-it, pygments) and rich.traceback (attrs) at its
# top, for Markdown help text and pretty tracebacks, which this command line turns off (rich_markup_mode="rich",
# pretty_exceptions_enable=False): about a third of `layerprof --help`'s time. While it imports, the two modules
# are stood in by classes that import the real ones on first use; the real modules import as usual afterwards.
DEFERRED_RICH = {"rich.markdown": "Markdown", "rich.traceback": "Traceback"}


def _import_typer_rich_utils() -> None:
    """Import typer.rich_utils without DEFERRED_RICH's modules (used as soon as anything asks for them)."""
    import types

    if "typer.rich_utils" in sys.modules:
        return
    stood_in = {}
    for module, name in DEFERRED_RICH.items():
        if module not in sys.modules:
            stand_in = types.ModuleType(module)
            setattr(stand_in, name, _Deferred(name, (), {"real": (module, name)}))
            stood_in[module] = sys.modules[module] = stand_in
    try:
        import typer.rich_utils  # noqa: F401
    finally:
        for module, stand_in in stood_in.items():
            if sys.modules.get(module) is stand_in:
                del sys.modules[module]


_import_typer_rich_utils()


# emoji off: a name like hf:llama or a message with :word: in it is printed as written, not as a picture. Tables
# fit the terminal; a line of text (a message, a path, a command to copy) is never cut by a hard line break: the
# terminal wraps it (soft wrap), so that what a user copies is what was printed.
console = Console(emoji=False)
errors = Console(stderr=True, soft_wrap=True, emoji=False)


@contextmanager
def user_errors(unexpected_exit: int = 1) -> Iterator[None]:
    """Input errors become one red line and exit 2; anything unexpected, one line and `unexpected_exit` (1; a
    gate whose exit 1 means a regression makes it 2, so that a CI job never reads a crash as a regression)."""
    shown: set[str] = set()  # a model built twice (split, then the sweep) warns twice: say it once

    def show(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        """A layerprof warning printed as it is raised (a busy machine at a sweep's start, not at its end)."""
        if issubclass(category, LayerprofWarning) and str(message) not in shown:
            shown.add(str(message))
            errors.print(labelled("warning", "yellow", message))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            yield
    except LayerprofError as error:
        errors.print(labelled("error", "red", error))
        raise typer.Exit(error.exit_code) from None
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as error:  # noqa: BLE001
        if os.environ.get("LAYERPROF_DEBUG"):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        errors.print(
            labelled(
                "error", "red", f"unexpected {type(error).__name__}: {message} (set LAYERPROF_DEBUG=1 for a traceback)"
            )
        )
        raise typer.Exit(unexpected_exit) from None


class OneLineUsageErrors(TyperGroup):
    """The command group: an option Typer itself refuses (unknown, out of range, not a choice) is one red line on
    stderr and exit 2, as every other input error is, instead of a usage box; `layerprof` alone still shows help."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: object,
    ) -> object:
        """Run a command; in standalone mode (the console script, CliRunner) exit with its code."""
        click = sys.modules[typer.BadParameter.__module__]  # the click Typer runs on (its own copy since 0.24)
        shows_help = getattr(click, "NoArgsIsHelpError", ())
        for command in (self, *self.commands.values()):
            bare_flags(command)
        try:
            result = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except shows_help as error:
            if not standalone_mode:
                raise
            error.show()
            raise SystemExit(error.exit_code) from None
        except click.ClickException as error:
            if not standalone_mode:
                raise
            where = error.ctx.command_path if isinstance(error, click.UsageError) and error.ctx else "layerprof"
            errors.print(
                labelled("error", "red", f"{where}: {error.format_message()} (`{where} --help` lists what it takes)")
            )
            raise SystemExit(error.exit_code) from None
        except typer.Abort:  # Typer's own (its vendored click has none); plain click's where Typer runs on it
            if not standalone_mode:
                raise
            errors.print("[red]error:[/] aborted", highlight=False)
            raise SystemExit(1) from None
        if not standalone_mode:
            return result
        raise SystemExit(result if isinstance(result, int) else 0)


def labelled(label: str, style: str, text: object, colon: str = ":") -> Text:
    """`label: text`, the label in `style` and the text exactly as written: a message holding brackets
    (`pip install 'layerprof[ray]'`, `[p for p in ...]`) is not read as Rich markup."""
    return Text.assemble((f"{label}{colon}", style), f" {text}")


def bare_flags(command: Command) -> None:
    """A flag takes no value: its help row shows no type (Typer shows `<bool>`), --help's own included."""
    for param in command.params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    if getattr(command.get_help_option, "bare", False):
        return
    help_option = command.get_help_option

    def bare_help_option(ctx: Context) -> TyperOption | None:
        option = help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    bare_help_option.bare = True  # type: ignore[attr-defined]
    command.get_help_option = bare_help_option  # type: ignore[method-assign]


def note(text: str, label: str = "note", style: str = "dim") -> None:
    """One labelled line on stderr: a note, a warning, something not drawn."""
    errors.print(labelled(label, style, text))


INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT: what a shell reports for Ctrl-C


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP (`timeout`, a batch scheduler's limit, a closed terminal), raised where Ctrl-C's
    KeyboardInterrupt would be, so that every sweep, study and Ray run ends as it does on Ctrl-C."""

    def __init__(self, signal_number: int) -> None:
        """The signal that ended the run."""
        super().__init__(signal_number)
        self.signal_number = signal_number


# How a run that is stopped ends: 128 + the signal's number, as a shell reports a process a signal killed
INTERRUPT_SIGNALS = ("SIGTERM", "SIGHUP")


def interrupt_exit_code(error: KeyboardInterrupt) -> int:
    """130 for Ctrl-C (SIGINT), 143 for SIGTERM, 129 for SIGHUP: 128 + the signal's number."""
    return 128 + error.signal_number if isinstance(error, Interrupted) else INTERRUPTED_EXIT_CODE


@contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise `Interrupted` (a KeyboardInterrupt) as Ctrl-C does: the
    finished cells are saved, the others marked unfinished. Outside the main thread (where Python cannot set a
    handler) nothing changes.

    A signal's exception is raised in whatever Python code runs when it arrives; where that is a weakref callback or
    a `__del__` (the memory tracker's callbacks run all through a step), Python prints it as "Exception ignored" and
    goes on, and the run would end as if never stopped. So while the block runs, an interrupt that Python ignores
    sends its signal again (from a timer thread, 10 ms later), to be raised in ordinary code."""
    import os
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    resent: list[tuple[threading.Timer, int]] = []  # interrupts Python ignored, sent again

    def settle() -> int | None:
        """Stop the timers of interrupts sent again (each has sent its signal or never will): the last one's number."""
        for timer, _ in resent:
            timer.cancel()
            timer.join()
        number = resent[-1][1] if resent else None
        resent.clear()
        return number

    def interrupt(signal_number: int, _frame: FrameType | None) -> None:
        settle()
        raise Interrupted(signal_number)

    def raise_again(unraisable: sys.UnraisableHookArgs) -> None:
        error = unraisable.exc_value
        if not isinstance(error, KeyboardInterrupt):
            previous_hook(unraisable)
            return
        number = error.signal_number if isinstance(error, Interrupted) else signal.SIGINT
        # from another thread, a moment later: raised here, inside the hook, it would be ignored again
        timer = threading.Timer(0.01, os.kill, (os.getpid(), number))
        resent.append((timer, number))
        timer.start()

    numbers = [getattr(signal, name) for name in INTERRUPT_SIGNALS if hasattr(signal, name)]
    previous = {number: signal.signal(number, interrupt) for number in numbers}
    previous_hook, sys.unraisablehook = sys.unraisablehook, raise_again
    try:
        yield
    finally:
        try:
            pending = settle()  # before the handlers are put back: a signal sent again lands on ours
        finally:
            sys.unraisablehook = previous_hook
            for number, handler in previous.items():
                signal.signal(number, handler)
    if pending is not None:  # the block ended before the signal sent again was raised in it
        raise Interrupted(pending) if pending != signal.SIGINT else KeyboardInterrupt


@contextmanager
def interrupt_keeps(kept: str) -> Iterator[None]:
    """Ctrl-C (or SIGTERM, SIGHUP: `signals_as_interrupts`) inside: one line on stderr that says what is kept and
    how to go on (`kept`), then exit code 130 (143, 129: `interrupt_exit_code`)."""
    try:
        with signals_as_interrupts():
            yield
    except KeyboardInterrupt as error:
        note(kept, "interrupted", "yellow")
        raise typer.Exit(interrupt_exit_code(error)) from None


def line(text: str, style: str | None = None) -> None:
    """One plain line on stdout, printed as written (no highlighting)."""
    console.print(text, highlight=False, style=style, soft_wrap=True, markup=False)


def as_json(data: object) -> None:
    """JSON on stdout, for scripts (plain print: no wrapping, no colour)."""
    print(json.dumps(data, indent=2))


def wrote(paths: list[Path], tail: str = "") -> None:
    """The `wrote A, B` line that ends a command that saved files."""
    line(f"wrote {', '.join(str(p) for p in paths)}{tail}")


def status(text: str) -> Status:
    """A spinner with `text` while a step runs."""
    return console.status(text)


# ---------------------------------------------------------------- sweeps (profile, estimate)


def run_job(job: SweepJob, where: str) -> Profile:
    """Run a sweep under a progress bar; Ctrl-C (or SIGTERM, SIGHUP) keeps the saved rows, marks the rest
    unfinished and exits 130 (143, 129: `interrupt_exit_code`)."""
    from layerprof.sources.layers import ORDER_TITLES

    settings = job.settings
    order = "" if job.order[0] == "forward" else f" in {ORDER_TITLES[job.order[0]]}"
    line(
        f"{job.spec}: {len(job.layers)} layers{order} · batch sizes {', '.join(map(str, settings.batch_sizes))} · "
        f"z = {short_range(settings.trainable_layer_counts)} · {where}"
        + (f" · {settings.recipe_text}" if settings.recipe_text else "")
    )
    if job.resume is not None:
        left = job.resume.unfinished_cells()
        kept = len(job.resume.planned_cells()) - len(left)
        line(
            f"resuming the interrupted {job.path}: {kept} finished cell(s) kept, {len(left)} to measure "
            "(--restart measures every cell anew)"
        )
    saved = f"finished cells are saved in {job.path}, the others marked unfinished; rerun the same command to resume"
    with interrupt_keeps(saved), SweepProgress(console) as progress:
        return job.run(progress)


def short_range(values: tuple[int, ...]) -> str:
    """`1..12` for a run of consecutive values, else the values comma-separated."""
    if len(values) > 2 and values == tuple(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ",".join(map(str, values))


class _Bar:
    """A Rich progress display that is its own context manager (the bar shows while the block runs)."""

    _progress: Progress

    def __enter__(self) -> Self:
        self._progress.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._progress.__exit__(kind, error, traceback)


def time_left_text(deadline: float | None, now: float) -> str:
    """The ETA column: the time until `deadline` (a `time.monotonic()` instant), or a dash where none is known."""
    if deadline is None:
        return "-:--:-- left"
    seconds = max(0, round(deadline - now))
    return f"~{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d} left"


class SweepProgress(_Bar):
    """A Rich progress bar of a sweep: the round, the cell or visit within it, and the time left. Round 1 (the
    first visit of every cell) is timed from the cells done so far; later rounds from the sweep's own estimate of
    what the unsettled cells' remaining visits take (`round_started`), counted down as the round runs. The
    events it hears are kept in `events`, as plain tuples, for tests."""

    def __init__(self, target: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn

        class TimeLeft(ProgressColumn):
            def render(self, task: Task) -> Text:
                from rich.text import Text

                deadline = task.fields.get("deadline")
                if deadline is None and task.completed and task.total:  # round 1: the pace of its cells so far
                    elapsed = task.elapsed or 0.0
                    deadline = time.monotonic() + elapsed / task.completed * (task.total - task.completed)
                return Text(time_left_text(deadline, time.monotonic()), style="progress.remaining")

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]} ·"),
            TimeLeft(),
            console=target,
            transient=True,
        )
        self._task = self._progress.add_task("starting", total=None, unit="cells", deadline=None)
        self.events: list[tuple[object, ...]] = []

    def cell_started(self, batch_size: int, trainable_layers: int, position: int, total: int) -> None:
        """A cell of round 1 begins: name it in the bar."""
        self.events.append(("cell_started", batch_size, trainable_layers, position, total))
        description = f"round 1 · batch {batch_size}, z={trainable_layers}"
        self._progress.update(self._task, total=total, description=description)

    def round_started(self, round_index: int, cells: int, seconds_left: float | None) -> None:
        """A timed round begins: count its visits, and count down the time its cells' remaining visits take."""
        self.events.append(("round_started", round_index, cells, seconds_left))
        self._progress.reset(
            self._task,
            total=cells,
            completed=0,
            description=f"round {round_index + 1} · {cells} cell(s) settling",
            unit="visits",
            deadline=None if seconds_left is None else time.monotonic() + seconds_left,
        )

    def visit_finished(self, round_index: int, done: int, cells: int) -> None:
        """A visit of a timed round ended: advance."""
        self.events.append(("visit_finished", round_index, done, cells))
        self._progress.update(self._task, completed=done)

    def round_finished(self, round_index: int, unsettled: int) -> None:
        """A round of visits ends."""
        self.events.append(("round_finished", round_index, unsettled))

    def machine_busy(self, reason: str) -> None:
        """Other work slows the sweep: say so now, not at the end."""
        self.events.append(("machine_busy", reason))
        self._progress.console.print(labelled("warning", "yellow", reason))

    def cell_finished(self, row: Row) -> None:
        """A cell ends: advance, and print it if it did not succeed."""
        self.events.append(("cell_finished", row.batch_size, row.trainable_layers, row.status))
        self._progress.advance(self._task)
        if not row.ok and row.status != "skipped":
            label = f"batch {row.batch_size}, z={row.trainable_layers}: {row.status}"
            self._progress.console.print(labelled(label, "yellow", row.message, colon=""), soft_wrap=True)


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A transient bar; yields `advance(done, total)`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True
    )
    bar = progress.add_task(label, total=None)
    with progress:
        yield lambda done, total: progress.update(bar, completed=done, total=total)


def model_names(names: dict[str, list[str]], json_only: bool) -> None:
    """`models`: each source's names, presets with their descriptions (or the lists as JSON)."""
    from layerprof.outputs.tables import print_model_names
    from layerprof.sources.names import PRESETS

    if json_only:
        as_json(names)
    else:
        print_model_names(console, names, {name: preset["description"] for name, preset in PRESETS.items()})


def fit(result: FitReport | RecipeFit, json_only: bool) -> None:
    """`fit`: the largest batch per z (or the result as JSON); across recipes, each recipe's beside the others'."""
    from layerprof.fidelity.recipes import RecipeFit
    from layerprof.outputs.tables import fit_view

    if json_only:
        as_json(result.to_dict())
    elif isinstance(result, RecipeFit):
        across_recipes(result, "table")
    else:
        console.print(fit_view(result).rich())


def across_recipes(result: RecipeLadder | RecipePlan | RecipeFit, output_format: str) -> None:
    """A decision across recipes (`layerprof.fidelity.recipes`): its tables."""
    from layerprof.outputs.recipes import recipe_views

    for view in recipe_views(result):
        table(view, output_format)


def audit(report: AuditReport, json_only: bool) -> None:
    """`audit`: each finding (where, cost, fix) and the bottom line (or the report as JSON)."""
    from layerprof.outputs.tables import audit_summary, audit_view

    if json_only:
        as_json(report.to_dict())
        return
    if report.findings:
        console.print(audit_view(report).rich())
        for finding in report.findings:
            console.print(labelled(finding.kind, "bold", finding.message), soft_wrap=True)
            line(f"  fix: {finding.fix}")
    else:
        line("no findings: your freezing does what it says", "green")
    for text in audit_summary(report):
        line(text)
    for text in report.notes:
        note(text)


def table(view: TableView, output_format: str, blank: bool = True) -> None:
    """One table: as Markdown (a blank line after it where `blank`) with `--format md`, else for the terminal."""
    if output_format == "md":
        print(view.markdown() + ("\n" if blank else ""))
    else:
        console.print(view.rich())


def cell_tables(result: Profile, output_format: str) -> None:
    """One table of cells per batch size."""
    from layerprof.outputs.tables import cell_view

    for batch_size in result.batch_sizes():
        table(cell_view(result, batch_size), output_format)


def breakdown(result: Profile, output_format: str) -> None:
    """An estimate's memory by category, one table per batch size."""
    from layerprof.outputs.tables import breakdown_view

    for batch_size in result.batch_sizes():
        table(breakdown_view(result, batch_size), output_format)


def layer_times(result: Profile, output_format: str) -> None:
    """`profile --per-layer`: each layer's forward and backward time, per batch size."""
    from layerprof.outputs.tables import layer_times_view

    for times in result.layer_times or []:
        table(layer_times_view(times, result.model.spec), output_format)


def calibration(time_model: TimeModel | None) -> None:
    """Which time model an estimate uses and what it was fitted to."""
    from layerprof.outputs.tables import calibration_lines

    for text in calibration_lines(time_model):
        line(text)


def prediction_check(checks: list[PredictionCheck], measured: Profile, output_format: str) -> None:
    """`estimate --against`: predicted beside measured step times."""
    from layerprof.outputs.tables import prediction_view

    table(prediction_view(checks, measured.environment.device_name), output_format)


def sweep_end(result: Profile, path: Path, output_format: str) -> None:
    """After a sweep: the recommended ladder (where the cells allow one), the files written and (a measured sweep)
    its wall time and the share of it inside training steps."""
    from layerprof.fidelity.ladder import recommended_ladder

    if result.failure_summary() is None:
        recommended, why_none = recommended_ladder(result)
        if recommended is None:
            note(str(why_none), "no ladder", "yellow")
        else:
            ladder(recommended, output_format)
            line("`layerprof ladder PROFILE --help` for other eta, GPU memory, brackets and exports.")
    timing = result.timing
    tail = f" · sweep {timing.sweep_wall_s:.0f} s, {timing.share_in_steps:.0%} inside training steps"
    line(f"wrote {path} and {path.with_suffix('.csv')}{tail if timing.sweep_wall_s else ''}")


def sweep_warnings(result: Profile) -> None:
    """Cells that failed, and cells other work on the machine disturbed."""
    failed = [row for row in result.rows if row.status == "error"]
    if failed:
        errors.print(f"[yellow]warning:[/] {len(failed)} cell(s) failed; see the status column")
    disturbed = [row for row in result.rows if row.disturbed]
    if disturbed:
        named = ", ".join(f"batch {row.batch_size} z={row.trainable_layers}" for row in disturbed[:6])
        more = f" and {len(disturbed) - 6} more" if len(disturbed) > 6 else ""
        note(
            f"other work on the machine disturbed {named}{more}: their step times may be off (see disturbed_reason "
            "in the profile); measure on a quiet machine or give --max-time",
            "warning",
            "yellow",
        )


# ---------------------------------------------------------------- profile on Ray


def ray_sweeps_line(model: str, kinds: int, batch_sizes: tuple[int, ...], address: str | None) -> int:
    """The line that opens a profile on Ray: GPU kinds x batch sizes = sweeps, and where; the number of sweeps."""
    sweeps = kinds * len(batch_sizes)
    line(
        f"{model}: {kinds} GPU kind(s) x batch sizes {', '.join(map(str, batch_sizes))} = {sweeps} sweeps · Ray "
        f"{address or '(local instance)'}"
    )
    return sweeps


class RayProgress(_Bar):
    """Profile on Ray: a bar of sweeps, a line per sweep as it ends; `on_event` is `profile_on_ray`'s callback."""

    def __init__(self, sweeps: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("sweeps ·"))
        self._progress = Progress(*columns, TimeElapsedColumn(), console=console, transient=True)
        self._task = self._progress.add_task("submitting", total=sweeps)
        self._running: set[str] = set()

    def on_event(self, event: SweepEventKind, outcome: KindOutcome, batch_size: int, detail: str) -> None:
        """One `SweepEvent` of `layerprof.measure.cluster`: submitted, skipped, retry, done or failed."""
        from layerprof.measure.cluster import SweepEventKind

        name = f"{outcome.kind.label} batch {batch_size}"
        if event == SweepEventKind.submitted:
            self._running.add(name)
        elif event == SweepEventKind.skipped:
            self._progress.advance(self._task)
        elif event in (SweepEventKind.done, SweepEventKind.failed):
            self._running.discard(name)
            self._progress.advance(self._task)
            failed = event == SweepEventKind.failed
            said = detail if failed else f"wrote {detail}"
            self._progress.console.print(labelled(name, "red" if failed else "green", said), soft_wrap=True)
        elif event == SweepEventKind.retry:
            self._progress.console.print(Text(f"{name}: {detail}; retrying", style="yellow"), soft_wrap=True)
        self._progress.update(self._task, description=f"running: {', '.join(sorted(self._running)) or '-'}")


def ray_outcomes(run: ClusterRun) -> None:
    """A line per GPU kind (batch sizes done, complete or not, the file), the next command, and what failed."""
    for outcome in run.outcomes:
        state = "complete" if set(outcome.done) >= set(outcome.batch_sizes) else "incomplete"
        skipped = f" ({', '.join(map(str, outcome.skipped))} already there)" if outcome.skipped else ""
        done = ", ".join(map(str, sorted(outcome.done))) or "-"
        line(f"{outcome.kind.label} ({outcome.kind.resource}): batch sizes {done}{skipped} · {state} · {outcome.path}")
    finished = [str(o.path) for o in run.outcomes if o.done]
    if len(finished) > 1:
        line(f"next: layerprof plan {' '.join(finished)} --cluster COUNTxGPU,...")
    if run.failed:
        for outcome in run.outcomes:
            for failure in outcome.failures:
                errors.print(labelled(outcome.kind.label, "red", failure))
        errors.print("rerun the same command to run what is missing: finished sweeps are skipped")


# ---------------------------------------------------------------- layers, ladders, correlation


def layer_costs(costs: LayerCostTable, path: Path | None, json_only: bool, output_format: str) -> None:
    """`layers --costs`: what each layer costs (and the files written)."""
    from layerprof.outputs.tables import layer_costs_view

    if json_only:
        as_json(costs.to_dict())
        return
    table(layer_costs_view(costs), output_format, blank=False)
    if path:
        line(f"wrote {path} and {path.with_suffix('.csv')}")


def layer_split(model: str, info: ModelInfo, json_only: bool, output_format: str) -> None:
    """`layers`: the split in forward order, and how much trains at each z."""
    from layerprof.outputs.tables import layer_view
    from layerprof.sources.layers import ORDER_TITLES

    if json_only:
        as_json([layer.to_dict() for layer in info.layers])
    else:
        title = f"{model}: {len(info.layers)} layers, {ORDER_TITLES[info.order]}"
        table(layer_view(title, info.layers), output_format, blank=False)


def ladder(result: Ladder | RecipeLadder, output_format: str) -> None:
    """A ladder's rungs, and (in a terminal) what halving over them spends; across recipes, which gives each rung."""
    from layerprof.fidelity.ladder import Ladder
    from layerprof.outputs.tables import ladder_summary_lines, ladder_view

    if not isinstance(result, Ladder):
        across_recipes(result, output_format)
        return
    table(ladder_view(result), output_format)
    if output_format == "md":
        return
    for text in ladder_summary_lines(result):
        line(f"  {text}")


def split_report(report: SplitReport, output_format: str) -> None:
    """`ladder --split auto`: the splits at other depths and the one chosen."""
    from layerprof.outputs.tables import split_view

    table(split_view(report), output_format, blank=False)
    line(f"split: {report.reason}")


class TrialFailures:
    """Correlate: advances the trials bar and keeps one line per failed trial, shown after the study."""

    def __init__(self, advance: Callable[[int, int], None]) -> None:
        self.advance = advance
        self.lines: list[str] = []

    def on_result(self, result: TrialResult | ContinuedResult, done: int, planned: int) -> None:
        """`run_study`'s callback: a trial (or continued chain) finished."""
        from layerprof.fidelity.correlate import ContinuedResult

        self.advance(done, planned)
        if isinstance(result, ContinuedResult):
            if result.error is not None:
                rung = result.segments[-1] if result.segments else None
                where = f"{rung.trainable_layers}@{rung.budget_fraction:g}" if rung else "its start"
                self.lines.append(f"config {result.config_index}, continued, at {where}: {result.error}")
        elif result.loss is None:
            self.lines.append(f"config {result.config_index} at z={result.trainable_layers}: {result.error}")

    def show(self) -> None:
        """The first five failures and how many more."""
        for failure in self.lines[:5]:
            note(failure, "failed trial (excluded from rho)", "yellow")
        if len(self.lines) > 5:
            errors.print(f"[yellow]... and {len(self.lines) - 5} more failed trials[/]")


def correlation(result: CorrelationResult, paths: list[Path]) -> None:
    """A correlate study: rho per cell, the continued chains, notes, and the files written."""
    from layerprof.outputs.tables import continued_view, correlation_view

    console.print(correlation_view(result).rich())
    if result.continued:
        console.print(continued_view(result).rich())
    for cell in result.cells:
        if cell.note:
            errors.print(labelled(f"z={cell.trainable_layers}, budget {cell.budget_fraction:g}", "yellow", cell.note))
    if result.judge == "same-seed":
        from layerprof.fidelity.judging import SAME_SEED_WARNING

        again = f"layerprof correlate {result.task} ... --judge-seeds 2 (or --seeds 3), the same --out"
        errors.print(labelled("judge", "yellow", SAME_SEED_WARNING.format(command=again)))
    wrote(paths, f" · {result.wall_seconds:.0f} s · {result.executor}")


WIDE_NOTE = "--wide shows every column; --json every figure"


def views(make: Callable[[bool], list[TableView]], output_format: str, wide: bool) -> None:
    """Tables that have a narrow and a wide form: Markdown of the wide ones, or the terminal's (narrow unless
    `wide`, then with the note on how to see every column). `make(wide)` builds them."""
    from layerprof.outputs.tables import markdown_views

    if output_format == "md":
        print(markdown_views(make(True)) + "\n")
        return
    for view in make(wide):
        console.print(view.rich(wide))
    if not wide:
        line(WIDE_NOTE, style="dim")


def simulation(result: Simulation, output_format: str, written: list[Path], wide: bool = False) -> None:
    """A simulate run: one table per algorithm (or Markdown), the legend and the files written."""
    from layerprof.outputs.tables import simulation_legend, simulation_views

    views(lambda wide_form: simulation_views(result, wide_form), output_format, wide)
    line(simulation_legend(result), style="dim")
    wrote(written)


def cluster_plan(result: ClusterPlan | RecipePlan, output_format: str, wide: bool = False) -> None:
    """A plan: rungs placed on the GPUs, the summary, and its notes; across recipes, each recipe's plan in a line
    and then the whole plan of the one that ends soonest."""
    from layerprof.fidelity.recipes import RecipePlan
    from layerprof.outputs.tables import plan_price_lines, plan_views

    if isinstance(result, RecipePlan):
        across_recipes(result, output_format)
        line(f"  the plan of {result.chosen}:", style="bold")
        result = result.best
    plan = result
    views(lambda _wide_form: plan_views(plan), output_format, wide)  # the plan's tables are the same either way
    for text in [*plan_price_lines(result), *result.notes]:
        line(f"  {text}", style="dim")


def check_result(result: CheckResult) -> None:
    """A gate's cells, then one line: regression, inconclusive or pass."""
    from layerprof.outputs.check import rich_check_table

    console.print(rich_check_table(result))
    if result.regressions:
        errors.print(labelled("regression", "red", result.regression_summary()))
    elif result.inconclusive:
        errors.print(labelled("inconclusive", "yellow", result.inconclusive_summary()))
    else:
        line(f"pass: {result.cells_compared} cells compared")
    if result.disturbed_note:
        errors.print(labelled("warning", "yellow", result.disturbed_note))
