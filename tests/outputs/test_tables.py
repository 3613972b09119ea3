"""The one table view: a table as data (title, headers, rows, which columns are text), drawn for a terminal
(`.rich()`) and written as Markdown (`.markdown()`); every printer builds one."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from layerprof.outputs.tables import TableView, cell_view
from layerprof.profile import load_profile

DATA = Path(__file__).parents[1] / "data"


def drawn(view: TableView, wide: bool = True) -> str:
    console = Console(width=100, file=io.StringIO(), color_system=None, emoji=False)
    console.print(view.rich(wide))
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_markdown_has_the_heading_the_aligned_table_and_the_notes() -> None:
    view = TableView(
        "title", ["name", "ms", "× full "], [["a|b", "1.0", "2×"]], left=("name",), heading="**H**", notes="n."
    )
    assert view.markdown() == ("**H**\n\n| name | ms | × full |\n| --- | ---: | ---: |\n| a\\|b | 1.0 | 2× |\n\nn.")
    assert TableView("t", ["x"], [["1"]]).markdown() == "| x |\n| ---: |\n| 1 |"  # no heading, no notes


def test_rich_aligns_text_left_figures_right_and_styles_each_row() -> None:
    view = TableView("t", ["name", "ms"], [["a", "1"], ["b", "2"]], left=("name",), styles=[None, "yellow"])
    table = view.rich()
    assert [column.justify for column in table.columns] == ["left", "right"]
    assert [row.style for row in table.rows] == [None, "yellow"]
    assert table.title == "t" and table.title_justify == "left"
    assert TableView("t", ["x"], [["1"]], look="plain").rich().title_justify == "center"


def test_a_narrow_view_keeps_the_narrow_columns_and_stacks_long_headers_unless_wide() -> None:
    headers = ["path", "regret median [90%]", "not shown narrow"]
    view = TableView("t", headers, [["p", "0.1", "x"]], left=("path",), look="narrow")
    assert [column.header for column in view.rich(wide=False).columns] == ["path", "regret median\n[90%]"]
    assert [column.header for column in view.rich(wide=True).columns] == headers
    assert "not shown narrow" not in drawn(view, wide=False) and "x" in drawn(view, wide=True)


def test_the_cell_table_of_a_profile_reads_as_before() -> None:
    profile = load_profile(DATA / "profile-v1-measured.json")
    batch = profile.batch_sizes()[0]
    lines = cell_view(profile, batch).markdown().splitlines()
    assert lines[0].startswith(f"**{profile.model.spec}**, batch {batch}, ")
    assert lines[2] == "| z | trainable % | step ms | × full | peak MiB | × full | GFLOPs | status |"
    assert lines[3] == "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    assert len(lines) == 4 + len(profile.rows_for(batch))
