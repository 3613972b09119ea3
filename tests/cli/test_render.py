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
