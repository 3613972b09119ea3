"""Parts of fidelity/simulate.py that the end-to-end tests leave unpinned (issue 40: mutants that survived)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from layerprof.errors import LayerprofError
from layerprof.fidelity import simulate as simulate_module
from layerprof.fidelity.simulate import (
    CellTable,
    Outcome,
    RungPrice,
    _numpy_percentile,
    _priced_asha,
    asha,
    asha_outcome,
    load_study,
    simulate,
)
from tests.fidelity.test_continue import random_lowest_rung, write_mixed_study

LAYERS = ((1, 1.0), (2, 1.0), (3, 1.0))


def price(seconds: float | None, flops: float | None, need: int | None) -> RungPrice:
    return RungPrice(
        steps=10,
        trial_gpu_seconds=seconds,
        trial_flops=flops,
        peak_memory_bytes=need,
        memory_need_bytes=need,
        parallel_slots=1,
    )


def test_asha_is_priced_by_each_rungs_price_times_the_trials_that_reached_it() -> None:
    outcome = Outcome([], 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, trials_per_rung=[9.0, 3.5, 1.0])
    _priced_asha(outcome, [price(2.0, 10.0, 100), price(4.0, 30.0, 300), price(8.0, 50.0, 200)])
    assert outcome.gpu_seconds == pytest.approx(9 * 2 + 3.5 * 4 + 8)  # 40
    assert outcome.flops == pytest.approx(9 * 10 + 3.5 * 30 + 50)  # 245
    assert outcome.peak_memory_bytes == 300
    # a rung the profile cannot price leaves that figure unpriced
    unpriced = Outcome([], 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, trials_per_rung=[9.0, 3.0])
    _priced_asha(unpriced, [price(None, 10.0, None), price(4.0, 30.0, 300)])
    assert (unpriced.gpu_seconds, unpriced.flops, unpriced.peak_memory_bytes) == (None, 9 * 10 + 3 * 30, None)


def test_a_continued_run_that_failed_at_its_first_rung_costs_only_that_rung(tmp_path: Path) -> None:
    directory = write_mixed_study(tmp_path / "s", random_lowest_rung, {LAYERS: lambda index, k: index + k}, configs=3)
    lines = [json.loads(line) for line in (directory / "trials.jsonl").read_text().splitlines()]
    for line in lines:
        if line.get("kind") == "continued" and line["config_index"] == 0:  # it stops at the rung that fails
            line["segments"] = [{**line["segments"][0], "loss": None, "error": "out of memory"}]
            line["error"] = "out of memory"
    (directory / "trials.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    tables, chain = load_study(directory).continued_tables(list(LAYERS))
    assert chain == LAYERS
    # config 0 failed at the first rung: inf from there, its one segment's training 1 s and evaluation 1 s, then 0;
    # config 1 trains rung k for k + 1 s and evaluates for 1 s
    assert [t.losses[0] for t in tables] == [[math.inf]] * 3
    assert [t.seconds[0] for t in tables] == [[2.0], [0.0], [0.0]]
    assert [t.losses[1] for t in tables] == [[1.0], [2.0], [3.0]]
    assert [t.seconds[1] for t in tables] == [[2.0], [3.0], [4.0]]


def test_a_path_whose_every_start_was_continued_asks_for_no_more_runs(tmp_path: Path) -> None:
    study = write_mixed_study(
        tmp_path / "s",
        random_lowest_rung,
        {LAYERS: lambda index, k: index + k, LAYERS[1:]: lambda index, k: index + 10 * k},
    )
    result = simulate(study, eta=3, repeats=3, paths=["layers"])
    assert result.path("layers").continued.runs == "recorded"
    assert not [note for note in result.notes if note.startswith("no continued runs")]


def test_the_percentile_interpolates_as_numpy_does() -> None:
    # numpy's virtual index (n - 1) q: 1.2 between 2 and 4, 2.7 between 4 and 8, 0.3 between 1 and 2
    assert _numpy_percentile([1.0, 2.0, 4.0, 8.0], 0.4) == pytest.approx(2.4)
    assert _numpy_percentile([1.0, 2.0, 4.0, 8.0], 0.9) == pytest.approx(6.8)
    assert _numpy_percentile([1.0, 2.0, 4.0, 8.0], 0.1) == pytest.approx(1.3)
    assert _numpy_percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0


def test_repeats_and_workers_must_be_at_least_one(tmp_path: Path) -> None:
    with pytest.raises(LayerprofError, match="--repeats must be at least 1, got 0"):
        simulate(tmp_path / "no-study", repeats=0)
    with pytest.raises(LayerprofError, match="--workers must be at least 1, got 0"):
        simulate(tmp_path / "no-study", workers=0)


class BatchesOfAsha:
    """A replay's ASHA in batches (a stand-in, to isolate `asha_outcome`'s loop): repeat r has regret r % 2 / 2,
    seconds 10 + r % 3, wall 5 s and reached 4 then 1 trials."""

    worst_regret, workers, folds = 1.0, 2, [0]

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def run_asha(self, tables: object, count: int, eta: float, first: int, stop: int) -> tuple:
        self.calls.append((first, stop))
        repeats = range(first, stop)
        return (
            [r % 2 / 2 for r in repeats],
            [10.0 + r % 3 for r in repeats],
            [5.0] * len(repeats),
            [[4, 1]] * len(repeats),
        )


def test_asha_until_stable_joins_each_batch_figure_to_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulate_module, "MAX_REPEATS", 2500)  # regrets of 0 and 0.5 never settle: stop at 2,500
    replay = BatchesOfAsha()
    outcome = asha_outcome(replay, [], 9, 3.0, None)  # type: ignore[arg-type]
    assert replay.calls == [(0, 1000), (1000, 2000), (2000, 2500)]
    assert outcome.repeats == 2500
    assert outcome.regret_mean == pytest.approx(0.25)  # half 0, half 0.5: no seconds among the regrets
    assert outcome.regret_high == 0.5 and outcome.best_found_share == pytest.approx(0.5)
    assert outcome.recorded_seconds == pytest.approx((2500 // 3 * 33 + 10) / 2500)  # 10, 11, 12, ... 10
    assert outcome.trials_per_rung == [4.0, 1.0]
    assert outcome.brackets == [{"first_rung": 0, "configs_per_rung": [4.0, 1.0]}]
    fixed = asha_outcome(BatchesOfAsha(), [], 9, 3.0, 7)  # type: ignore[arg-type]
    assert fixed.repeats == 7 and fixed.regret_mean == pytest.approx(1.5 / 7)


def test_mean_losses_over_the_seeds_that_succeeded() -> None:
    inf = math.inf
    table = CellTable(losses=[[1.0, 3.0, inf], [inf, inf, 2.0], [inf, inf, inf]], seconds=[[1.0] * 3] * 3)
    assert table.mean_losses() == [2.0, 2.0, None]
    assert table.mean_losses([0, 1]) == [2.0, None, None]
    assert table.mean_losses([2]) == [None, 2.0, None]


def test_asha_stopped_before_the_top_picks_the_best_at_the_highest_rung_by_its_own_seed() -> None:
    # candidates (0, 1) and (1, 0): their own seeds' losses 2.0 and 1.0; the seeds not drawn (0.5, 3.0) never count
    low = CellTable(losses=[[0.5, 2.0], [1.0, 3.0]], seconds=[[1.0, 1.0], [1.0, 1.0]])
    top = CellTable(losses=[[0.1, 0.1], [0.1, 0.1]], seconds=[[9.0, 9.0], [9.0, 9.0]])
    run = asha([low, top], [(0, 1), (1, 0)], 2, workers=1, decide=lambda *_: False)
    assert run.reached == {(0, 1): 0, (1, 0): 0}
    assert (run.pick, run.seconds, run.wall_seconds) == ((1, 0), 2.0, 2.0)
