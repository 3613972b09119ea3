"""mkdocs hooks for `make docs`: the nav keeps slots for pages that other branches are adding, and drops each slot
while its page is absent, so that the strict build passes before and after the page lands. Any other nav entry whose
page is missing still fails the build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# pages named in mkdocs.yml's nav before they exist
PENDING_PAGES = frozenset({"predict.md", "cost.md", "check.md", "audit.md", "api.md", "inputs.md"})


def pruned_nav(nav: list[Any], docs_dir: Path) -> list[Any]:
    """The nav without the pending pages that are absent, and without sections left empty."""
    kept: list[Any] = []
    for entry in nav:
        title, value = next(iter(entry.items())) if isinstance(entry, dict) else (None, entry)
        if isinstance(value, list):
            value = pruned_nav(value, docs_dir)
            if not value:
                continue
        elif value in PENDING_PAGES and not (docs_dir / value).is_file():
            continue
        kept.append({title: value} if title is not None else value)
    return kept


def on_config(config: Any) -> Any:
    """mkdocs calls this with the loaded configuration before it reads the pages."""
    config["nav"] = pruned_nav(config["nav"], Path(config["docs_dir"]))
    return config
