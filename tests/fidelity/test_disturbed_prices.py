"""A simulation priced by a profile whose cells other work disturbed says so, whichever paths it replays: the
ladder's note covers only the ladder's rungs, and `--paths budget,layers` priced from a disturbed cell kept no
warning at all (issue 39)."""

from __future__ import annotations

from pathlib import Path

from layerprof.fidelity.simulate import simulate
from tests.fidelity.test_simulate import perfect, priced_profile, write_study, write_task

DISTURBED = "the device seconds of z = "


def test_prices_from_a_disturbed_cell_carry_a_note_naming_its_z(tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", 9, perfect, task=write_task(tmp_path))
    quiet = simulate(study, eta=3, repeats=3, profile=priced_profile(), paths=["budget", "layers"])
    assert not any(note.startswith(DISTURBED) for note in quiet.notes)
    profile = priced_profile()
    for row in profile.rows:
        row.disturbed = row.trainable_layers == 2
    noisy = simulate(study, eta=3, repeats=3, profile=profile, paths=["budget", "layers"])
    (note,) = [note for note in noisy.notes if note.startswith(DISTURBED)]
    assert note.startswith("the device seconds of z = 2 rest on profile cells (batch 8) other work disturbed")
    # the budget path alone trains at z = 3 only: its prices rest on no disturbed cell
    budget = simulate(study, eta=3, repeats=3, profile=profile, paths=["budget"])
    assert not any(note.startswith(DISTURBED) for note in budget.notes)
