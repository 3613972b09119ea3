"""Print the package sources pip is configured with as `uv pip install` options, so that uv installs from the same
places under the same caps as pip would (`make install` uses it).

    .venv/bin/python tools/uv_sources.py     # e.g. --index-strategy unsafe-best-match --extra-index-url file:///...

uv reads no pip configuration: on a machine whose pip is pointed at a local wheel folder or mirror (`find-links`,
`extra-index-url` in a pip.conf or `PIP_*` variables) and capped by a constraints file, uv would download a CUDA
build of torch (3 GB) from PyPI instead of taking it from disk. pip itself is the slow installer here (torch and
torchvision from a local mirror: 2 min 6 s by pip, 17 s by uv on the same 2-core machine), so `make install` hands
uv what pip would use.

What is read: the effective value of each option below as pip resolves it (`pip config list`: a `PIP_*` variable
over an `[install]` section over a `[global]` one), split on whitespace as pip splits list options. Mapped:
index-url, extra-index-url, find-links, no-index, constraint, trusted-host. The index strategy is always pip's own
(`unsafe-best-match`: the best version across every index; uv's default takes a package only from the first index
that lists it). Not mapped: `cert` (uv uses its own roots or `SSL_CERT_FILE`), `proxy` (uv reads `HTTPS_PROXY`).
"""

from __future__ import annotations

import ast
import subprocess
import sys

# pip's option -> uv's option
OPTIONS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "no-index": "--no-index",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}
SWITCHES = {"no-index"}  # options that take no value: set when pip reads them as true
# a `PIP_*` variable (":env:") wins over the [install] section, which wins over [global]
SECTIONS = (":env:", "install", "global")
TRUE = {"1", "true", "yes", "on"}


def pip_configuration(listing: str) -> dict[str, str]:
    """`pip config list`'s lines (`section.option='value'`) as a dictionary keyed by `section.option`."""
    values = {}
    for line in listing.splitlines():
        key, equals, value = line.partition("=")
        if equals and "." in key:
            values[key.strip()] = ast.literal_eval(value.strip())
    return values


def effective(values: dict[str, str], option: str) -> str | None:
    """The value pip uses for `option`: the first section in SECTIONS that sets it."""
    for section in SECTIONS:
        if f"{section}.{option}" in values:
            return values[f"{section}.{option}"]
    return None


def uv_options(values: dict[str, str]) -> list[str]:
    """The `uv pip install` options that name the same sources and caps as pip's configuration."""
    options = ["--index-strategy", "unsafe-best-match"]
    for option, uv_option in OPTIONS.items():
        value = effective(values, option)
        if value is None:
            continue
        if option in SWITCHES:
            options += [uv_option] if value.strip().lower() in TRUE else []
            continue
        for item in value.split():
            options += [uv_option, item]
    return options


def main() -> None:
    """Print the options for pip's configuration in this interpreter's environment, space-separated."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    print(" ".join(uv_options(pip_configuration(listing))))


if __name__ == "__main__":
    main()
