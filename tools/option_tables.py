"""Rewrite the `## Options` table of every command page in docs/commands/ from the CLI itself (names and help as
`--help` gives them), so that the docs say what the commands take. tests/test_docs.py holds them equal.

    .venv/bin/python tools/option_tables.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from layerprof.cli.commands import app

ROOT = Path(__file__).resolve().parents[1]


def rows(command: typer.main.TyperCommand) -> list[str]:
    """One Markdown row per visible argument and option: its names in backticks, its help escaped."""
    lines = ["| option | what it does |", "| --- | --- |"]
    for param in command.params:
        if param.hidden:
            continue
        names = [param.metavar] if param.param_type_name == "argument" else [*param.opts, *param.secondary_opts]
        help_text = " ".join((param.help or "").split()).replace("|", "\\|").replace("*", "\\*")
        lines.append(f"| {' / '.join(f'`{name}`' for name in names)} | {help_text} |")
    return lines


def rewrite(page: Path, command: typer.main.TyperCommand) -> bool:
    """Replace the page's table under `## Options`; True when it changed."""
    text = page.read_text()
    head, tail = text.split("\n## Options\n", 1)
    old = tail.strip("\n").splitlines()
    end = next((i for i, line in enumerate(old) if i > 1 and not line.startswith("|")), len(old))
    new = "\n".join([head, "## Options", "", *rows(command), *old[end:]]) + "\n"
    page.write_text(new)
    return new != text


def main() -> None:
    group = typer.main.get_command(app)
    changed = [
        name
        for name, command in group.commands.items()  # type: ignore[attr-defined]
        if rewrite(ROOT / "docs" / "commands" / f"{name}.md", command)
    ]
    print(f"rewrote {', '.join(changed) or 'nothing'}", file=sys.stderr)


if __name__ == "__main__":
    main()
