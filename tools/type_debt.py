"""Count the package's type debt: uses of `Any`, `# fmt: skip` overrides and `# type: ignore` comments.

    python tools/type_debt.py            # totals and the count per folder
    python tools/type_debt.py --files    # per file, most first

`Any` is counted as every reference to the name (`Any`, `typing.Any`) outside import statements, read from the
syntax tree, so a docstring or comment that says "Any" does not count. Issue 42's targets: `Any` <= 40,
`# fmt: skip` <= 10; tests/test_architecture.py holds the package at the ceilings written there.
"""

from __future__ import annotations

import argparse
import ast
import io
import tokenize
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "layerprof"


def any_uses(source: str) -> int:
    """How many times the module's code names `Any` (imports excluded)."""
    nodes = ast.walk(ast.parse(source))
    return sum(1 for node in nodes if getattr(node, "id", None) == "Any" or getattr(node, "attr", None) == "Any")


def comments(source: str, marker: str) -> int:
    """How many comments in the module contain `marker`."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return sum(1 for token in tokens if token.type == tokenize.COMMENT and marker in token.string)


def debt_by_file(package: Path = PACKAGE) -> dict[str, Counter[str]]:
    """Each module's counts, keyed by its path relative to the repository."""
    result: dict[str, Counter[str]] = {}
    for path in sorted(package.rglob("*.py")):
        source = path.read_text()
        result[str(path.relative_to(package.parent))] = Counter(
            {
                "Any": any_uses(source),
                "fmt: skip": comments(source, "fmt: skip"),
                "type: ignore": comments(source, "type: ignore"),
            }
        )
    return result


def main() -> None:
    """Print the totals, per folder (or per file with --files)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", action="store_true", help="one row per file, most Any first")
    args = parser.parse_args()
    by_file = debt_by_file()
    groups: dict[str, Counter[str]] = {}
    for name, counts in by_file.items():
        key = name if args.files else str(Path(name).parent)
        groups.setdefault(key, Counter()).update(counts)
    total: Counter[str] = sum(by_file.values(), Counter())
    print(f"{'':44s} {'Any':>5s} {'fmt: skip':>10s} {'type: ignore':>13s}")
    for key, counts in sorted(groups.items(), key=lambda item: -item[1]["Any"]):
        if any(counts.values()):
            print(f"{key:44s} {counts['Any']:5d} {counts['fmt: skip']:10d} {counts['type: ignore']:13d}")
    print(f"{'total':44s} {total['Any']:5d} {total['fmt: skip']:10d} {total['type: ignore']:13d}")


if __name__ == "__main__":
    main()
