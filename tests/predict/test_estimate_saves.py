"""An estimate saves its profile between cells at most every few seconds, and always the last one at its end,
finished or interrupted: the file holds what it held when it was saved after every cell."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from layerprof.predict import estimate
from layerprof.predict.estimate import estimate_model
from layerprof.profile import Profile, SweepSettings
from layerprof.sources.models import ModelOptions
from tests.measure.test_resume import FACTORY, StopAfter


@pytest.fixture
def factory(tmp_path: Path) -> str:
    (tmp_path / "factory.py").write_text(textwrap.dedent(FACTORY))
    return f"{tmp_path / 'factory.py'}:stack"


def saved_runs(factory: str, every_s: float, stop: StopAfter | None, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The profiles an estimate of 8 cells saved (as plain data), in order; `stop` interrupts it like Ctrl-C."""
    monkeypatch.setattr(estimate, "SAVE_EVERY_S", every_s)
    saved: list[dict] = []

    def save(profile: Profile) -> None:
        saved.append(profile.to_dict())

    settings = SweepSettings(batch_sizes=(2, 4), trainable_layer_counts=(1, 2, 3, 4), target="cpu")
    try:
        estimate_model(factory, ModelOptions(input_shape=(8,)), settings, save=save, observer=stop)
    except KeyboardInterrupt:
        assert stop is not None
    return saved


def comparable(saved: dict) -> dict:
    return {key: value for key, value in saved.items() if key not in ("timing", "created_at")}


def test_saves_between_cells_are_spaced_and_the_last_is_saved(factory: str, monkeypatch: pytest.MonkeyPatch) -> None:
    every = saved_runs(factory, 0.0, None, monkeypatch)
    spaced = saved_runs(factory, 3600.0, None, monkeypatch)
    assert len(every) == 9  # after each of the 8 cells, and at the end
    assert len(spaced) == 2  # after the first cell, and at the end
    assert comparable(spaced[-1]) == comparable(every[-1])
    assert spaced[-1]["complete"] and len(spaced[-1]["rows"]) == 8


@pytest.mark.parametrize("cells", [3, 8])
def test_an_interrupted_estimate_saves_what_it_finished(
    factory: str, monkeypatch: pytest.MonkeyPatch, cells: int
) -> None:
    """Ctrl-C after the third cell: the file holds three finished cells and five unfinished, as when every cell
    was saved; so it does after the last cell (no cell left unfinished, the sweep not marked complete)."""
    every = saved_runs(factory, 0.0, StopAfter(cells=cells), monkeypatch)
    spaced = saved_runs(factory, 3600.0, StopAfter(cells=cells), monkeypatch)
    assert len(spaced) == 2
    assert comparable(spaced[-1]) == comparable(every[-1])
    assert not spaced[-1]["complete"]
    statuses = [row["status"] for row in spaced[-1]["rows"]]
    assert statuses.count("ok") == cells and len(statuses) == 8
