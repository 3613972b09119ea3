"""The documentation: it builds without a warning, every `layerprof ...` command its examples show parses (the
command and each named option exist), and each command page's option table says what `--help` says."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import typer

from layerprof.cli.commands import app

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
CLI = typer.main.get_command(app)
COMMANDS = CLI.commands  # type: ignore[attr-defined]  # a Typer app with commands is a group


def fenced_blocks(text: str) -> list[str]:
    """The contents of every ``` block."""
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)


def commands_in_block(block: str) -> list[list[str]]:
    """Each `layerprof ...` command line of a code block, continuation lines joined, as arguments after `layerprof`:
    up to a redirection, pipe or comment."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.removeprefix("$ ").strip()
        if not line or line.split()[0] != "layerprof" and not line.split()[0].endswith("/layerprof"):
            continue  # output, or another program
        words = shlex.split(line, comments=True)
        args = []
        for word in words[1:]:
            if word in (">", "|", "&&", ";", "2>&1") or word.startswith(">"):
                break
            args.append(word)
        found.append(args)
    return found


def inline_commands(text: str) -> list[list[str]]:
    """Inline code that names a command and options: `layerprof fit MODEL --gpu L4`, `ladder --split auto`."""
    found = []
    for span in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", text):
        words = span.replace("\\|", " ").replace("|", " ").split()
        if words and words[0] == "layerprof":
            words = words[1:]
        elif not (len(words) > 1 and words[0] in COMMANDS and words[1].startswith("--")):
            continue
        if words and words[0] in COMMANDS or (words and words[0].startswith("--")):
            found.append(words)
    return found


def option_names(command: str) -> set[str]:
    names = set()
    for param in COMMANDS[command].params:
        names |= {*param.opts, *param.secondary_opts}
    return names | {"--help"}


def all_examples() -> list[tuple[str, list[str], bool]]:
    """(file, arguments, whether from a code block) for every command the docs and README show."""
    examples = []
    for path in DOC_FILES:
        text = path.read_text()
        name = str(path.relative_to(ROOT))
        for block in fenced_blocks(text):
            examples += [(name, args, True) for args in commands_in_block(block)]
        prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
        examples += [(name, args, False) for args in inline_commands(prose)]
    return examples


EXAMPLES = all_examples()


def test_the_docs_show_many_commands_of_every_kind() -> None:
    """The extraction finds what it should: each command in a code block somewhere, hundreds in all."""
    in_blocks = {args[0] for _, args, block in EXAMPLES if block and args}
    assert in_blocks == set(COMMANDS), set(COMMANDS) - in_blocks
    assert len(EXAMPLES) > 100


@pytest.mark.parametrize(
    ("page", "args", "in_block"), EXAMPLES, ids=[f"{p}:{' '.join(a)[:60]}" for p, a, _ in EXAMPLES]
)
def test_every_command_in_the_docs_names_a_command_and_options_that_exist(
    page: str, args: list[str], in_block: bool
) -> None:
    if not args or args[0].startswith("--"):  # `layerprof --help`, `layerprof --version`
        assert not args or args[0] in {"--help", "--version", "--install-completion", "--show-completion"}, args
        return
    command, *rest = args
    assert command in COMMANDS, f"{page}: no command {command!r}"
    named = {word.strip("[]").split("=")[0] for word in rest if word.strip("[").startswith("--")}
    unknown = {name for name in named if not name.endswith("...")} - option_names(command)
    assert not unknown, f"{page}: layerprof {command} has no {', '.join(sorted(unknown))}"
    synopsis = any(word.startswith("[") for word in rest)  # `layerprof audit FILE [--json]`: names only
    if in_block and not synopsis:  # a whole example must parse: values of the right type, choices among the choices
        COMMANDS[command].make_context(command, list(rest))


def test_a_misspelt_option_in_an_example_is_found() -> None:
    assert commands_in_block("$ .venv/bin/layerprof ladder p.json --eta 3 \\\n    --export optuna > x.py\n") == [
        ["ladder", "p.json", "--eta", "3", "--export", "optuna"]
    ]
    assert "--etta" not in option_names("ladder")
    assert inline_commands("see `profile --per-layer` and `layerprof fit MODEL --gpu L4`, not `--json`") == [
        ["profile", "--per-layer"],
        ["fit", "MODEL", "--gpu", "L4"],
    ]


def documented_options(command: str) -> list[tuple[str, str]]:
    """The rows of the table under `## Options` on the command's page: (names, help)."""
    text = (ROOT / "docs" / "commands" / f"{command}.md").read_text()
    table = text.split("\n## Options\n", 1)[1]
    rows = []
    for line in table.strip().splitlines()[2:]:
        if not line.startswith("|"):
            break
        names, help_text = (cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:3])
        rows.append((" / ".join(re.findall(r"`([^`]+)`", names)), help_text.replace("\\|", "|").replace("\\*", "*")))
    return rows


def cli_options(command: str) -> list[tuple[str, str]]:
    """What `--help` lists for a command: (names, help) per visible argument and option, in order."""
    rows = []
    for param in COMMANDS[command].params:
        if param.hidden:
            continue
        names = (
            param.metavar if param.param_type_name == "argument" else " / ".join([*param.opts, *param.secondary_opts])
        )
        rows.append((names, " ".join((param.help or "").split())))
    return rows


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_page_lists_the_options_and_help_of_its_command(command: str) -> None:
    assert documented_options(command) == cli_options(command)


def build_docs(site: Path, docs_dir: Path | None = None) -> None:
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    overrides = {"site_dir": str(site), "strict": True} | ({"docs_dir": str(docs_dir)} if docs_dir else {})
    build(load_config(str(ROOT / "mkdocs.yml"), **overrides))


def test_the_docs_build_without_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")
    build_docs(tmp_path / "site")
    assert (tmp_path / "site" / "commands" / "profile" / "index.html").is_file()
    assert (tmp_path / "site" / "images" / "cost_curves.png").is_file()


def test_a_broken_link_fails_the_docs_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mkdocs.exceptions import Abort

    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")
    docs = shutil.copytree(ROOT / "docs", tmp_path / "docs")
    with (docs / "concepts.md").open("a") as page:
        page.write("\nSee [the models](model.md).\n")
    with pytest.raises(Abort):
        build_docs(tmp_path / "site", docs)
