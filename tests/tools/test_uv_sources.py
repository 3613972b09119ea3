"""tools/uv_sources.py: uv gets the package sources and caps pip is configured with (make install)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.tools.conftest import load_tool

uv_sources = load_tool("uv_sources")
TOOL = Path(__file__).parents[2] / "tools" / "uv_sources.py"


def pairs(options: list[str]) -> dict[str, list[str]]:
    """uv's options as {option: [values]} (a switch: [""])."""
    found: dict[str, list[str]] = {}
    index = 0
    while index < len(options):
        option = options[index]
        takes_value = index + 1 < len(options) and not options[index + 1].startswith("--")
        found.setdefault(option, []).append(options[index + 1] if takes_value else "")
        index += 2 if takes_value else 1
    return found


def test_pip_config_list_lines_are_read_with_their_quoting() -> None:
    listing = (
        ":env:.find-links='/opt/wheels'\n"
        "global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'\n"
        "global.cert='/etc/ssl/certs/ca-certificates.crt'\n"
        "not a setting\n"
    )
    assert uv_sources.pip_configuration(listing) == {
        ":env:.find-links": "/opt/wheels",
        "global.extra-index-url": "file:///opt/pypi/simple file:///opt/pypi-more/simple",
        "global.cert": "/etc/ssl/certs/ca-certificates.crt",
    }


def test_each_option_maps_to_uvs_with_pips_precedence_and_splitting() -> None:
    values = {
        "global.index-url": "https://mirror.example/simple",
        "global.extra-index-url": "file:///a/simple file:///b/simple",
        "install.extra-index-url": "file:///c/simple",  # [install] over [global]
        "global.find-links": "/global/wheels",
        ":env:.find-links": "/env/wheels /more/wheels",  # PIP_FIND_LINKS over both sections
        "install.find-links": "/install/wheels",
        "global.constraint": "/etc/xdg/pip/constraints.txt",
        "global.trusted-host": "mirror.example",
        "global.cert": "/etc/ssl/certs/ca-certificates.crt",  # not mapped
        "global.timeout": "60",  # not mapped
    }
    assert uv_sources.uv_options(values) == [
        "--index-strategy", "unsafe-best-match",
        "--index-url", "https://mirror.example/simple",
        "--extra-index-url", "file:///c/simple",
        "--find-links", "/env/wheels", "--find-links", "/more/wheels",
        "--constraint", "/etc/xdg/pip/constraints.txt",
        "--allow-insecure-host", "mirror.example",
    ]  # fmt: skip


def test_no_index_is_a_switch_set_only_when_pip_reads_it_as_true() -> None:
    assert uv_sources.uv_options({"global.no-index": "true"}) == [
        "--index-strategy",
        "unsafe-best-match",
        "--no-index",
    ]
    assert uv_sources.uv_options({":env:.no-index": "1"})[-1] == "--no-index"
    assert uv_sources.uv_options({"global.no-index": "false"}) == ["--index-strategy", "unsafe-best-match"]
    assert uv_sources.uv_options({}) == ["--index-strategy", "unsafe-best-match"]


def test_the_tool_reads_pips_real_configuration(tmp_path: Path) -> None:
    """Through pip itself: a config file's [install] section and PIP_* variables, as `make install` runs it."""
    config = tmp_path / "pip.conf"
    config.write_text(
        "[global]\nextra-index-url = file:///global/simple\nfind-links = /global/wheels\n"
        "[install]\nextra-index-url = file:///x/simple file:///y/simple\nconstraint = /caps/constraints.txt\n"
    )
    machine = {name: value for name, value in os.environ.items() if not name.startswith("PIP_")}
    environment = {**machine, "PIP_CONFIG_FILE": str(config), "PIP_FIND_LINKS": "/env/wheels"}
    done = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, env=environment, timeout=60)
    assert done.returncode == 0, done.stderr
    options = pairs(done.stdout.split())
    assert options["--index-strategy"] == ["unsafe-best-match"]
    assert options["--extra-index-url"] == ["file:///x/simple", "file:///y/simple"]
    assert options["--find-links"] == ["/env/wheels"]
    assert options["--constraint"] == ["/caps/constraints.txt"]  # [install] over any [global] cap of the machine
