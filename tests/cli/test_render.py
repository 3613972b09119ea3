"""What the CLI prints is what the library said: brackets in a message are not Rich markup, lines are not cut."""

from __future__ import annotations

import pytest
import typer

from layerprof.cli import render
from layerprof.errors import LayerprofError


def test_an_error_with_brackets_is_printed_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as stopped, render.user_errors():
        raise LayerprofError("the Ray executor needs Ray: pip install 'layerprof[ray]'")
    assert stopped.value.exit_code == 2
    assert capsys.readouterr().err == "error: the Ray executor needs Ray: pip install 'layerprof[ray]'\n"


def test_notes_and_lines_keep_brackets_and_long_paths_whole(capsys: pytest.CaptureFixture[str]) -> None:
    path = "/tmp/" + "d" * 150 + "/profile.json"
    render.note("build the optimizer from [p for p in model.parameters() if p.requires_grad]", "fix", "bold")
    render.line(f"resuming the interrupted {path}: 2 finished cell(s) kept, 2 to measure [red]x[/]")
    captured = capsys.readouterr()
    assert captured.err == "fix: build the optimizer from [p for p in model.parameters() if p.requires_grad]\n"
    # one line, however narrow the console: the terminal wraps it, a copied path is the path
    assert captured.out == f"resuming the interrupted {path}: 2 finished cell(s) kept, 2 to measure [red]x[/]\n"


def test_an_abort_is_one_line_and_exit_1() -> None:
    """`except click.Abort` named an attribute Typer's vendored click lacks: any exception that reached it (a broken
    pipe under `layerprof --help | head`) ended in an AttributeError traceback."""
    from typer.testing import CliRunner

    app = typer.Typer(cls=render.OneLineUsageErrors)

    @app.command()
    def stop() -> None:
        raise typer.Abort()

    @app.command()
    def other() -> None:
        pass

    result = CliRunner().invoke(app, ["stop"])
    assert result.exit_code == 1 and "error: aborted" in result.output


def test_help_imports_neither_markdown_nor_pretty_tracebacks_and_both_still_work() -> None:
    """typer.rich_utils imports rich.markdown and rich.traceback for features the CLI turns off: they were a third of
    `layerprof --help`'s time. They are stood in while it imports; used, the stand-ins give the real classes. Nor
    does --help import torch, or importlib.metadata (20 ms: only a model source's installed release needs it)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\nfrom layerprof.cli.commands import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('rich.markdown', 'rich.traceback', 'markdown_it', 'pygments', 'torch', 'importlib.metadata')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
        "import typer.rich_utils as utils, rich.markdown, rich.traceback\n"
        "assert type(utils.Markdown('**x**')) is rich.markdown.Markdown\n"
        "assert type(utils.Traceback.from_exception(ValueError, ValueError('x'), None)) is rich.traceback.Traceback\n"
        "print('ok', file=sys.stderr)\n"
    )
    root = Path(__file__).parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stderr.split() == ["[]", "ok"], done.stderr
    assert "Usage" in done.stdout
