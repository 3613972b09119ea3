"""The cell table is drawn from plain records: the same text as the pandas frame gave, and no pandas import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from layerprof.outputs.tables import COLUMNS, _format, cell_frame, cell_records, formatted
from layerprof.profile import load_profile

DATA = Path(__file__).parents[1] / "data"


PROFILES = ("profile-v1-measured.json", "profile-v1-estimate.json", "profile-v2-interrupted.json")


@pytest.mark.parametrize("name", PROFILES)
def test_the_cell_records_draw_as_the_frame_did(name: str) -> None:
    """Every batch size's rows as the frame's values formatted them (pandas turns a None among floats into NaN, an
    int among floats into a float: each shows as before)."""
    profile = load_profile(DATA / name)
    first = profile.rows[0]  # a cell without figures (None in the records, NaN in the frame) and none of zero
    first.peak_memory_bytes = first.trainable_fraction = None
    first.flops = 0
    blanks = 0
    for batch in profile.batch_sizes():
        frame = cell_frame(profile, batch)
        assert list(frame.columns) == list(COLUMNS)
        # the table's rows before: each value of the frame, formatted
        before = [
            [_format(column, value) for column, value in zip(frame.columns, row, strict=True)]
            for row in frame.itertuples(index=False)
        ]
        assert formatted(cell_records(profile, batch)) == before
        blanks += sum(value == "—" for row in before for value in row)
    assert blanks >= 2


def test_drawing_a_cell_table_imports_no_pandas() -> None:
    code = (
        "import sys\nfrom layerprof.outputs.tables import cell_view\nfrom layerprof.profile import load_profile\n"
        f"profile = load_profile({str(DATA / 'profile-v1-estimate.json')!r})\n"
        "view = cell_view(profile, profile.batch_sizes()[0])\nview.markdown()\nview.rich(True)\n"
        "print('pandas' in sys.modules)\n"
    )
    root = Path(__file__).parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]
