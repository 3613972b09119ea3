"""What fits: the fit's search finds the exact boundary batch in few traces, on real models and scripted needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerprof.cli.commands import app
from layerprof.measure.cells import CellContext
from layerprof.predict.estimate import ESTIMATE_DEVICE, build_fake_model, estimate_cell
from layerprof.predict.fit import FitSearch
from layerprof.sources.models import ModelOptions
from tests.predict.test_estimate import EXAMPLE, settings


def test_fit_search_returns_the_boundary_batch() -> None:
    options = ModelOptions(input_shape=(64,), num_classes=10)
    search = FitSearch(f"{EXAMPLE}:mlp", options, settings(1))
    mode, loaded = build_fake_model(f"{EXAMPLE}:mlp", options, "32-true")

    def independent_need(z: int, batch_size: int) -> int:
        with mode:
            layers = loaded.split()
            row, _ = estimate_cell(CellContext(loaded, layers, settings(z), ESTIMATE_DEVICE), batch_size, z)
        return row.peak_memory_bytes + 768 * 2**20  # the CUDA context reserve

    budget = (independent_need(8, 300) + independent_need(8, 301)) // 2
    result = search.largest_batch(8, budget)
    assert independent_need(8, result.largest_batch_size) <= budget < independent_need(8, result.largest_batch_size + 1)
    assert result.largest_batch_size == 300
    # fewer trainable layers need less memory, so at least as large a batch fits
    assert search.largest_batch(1, budget).largest_batch_size >= 300
    assert search.smallest_gpu(8, 300) == "1g.5gb"


def test_fit_on_a_cpu_target_reserves_no_cuda_context() -> None:
    """`fit --target cpu`: a cell needs its estimated peak and nothing more (issue 40: reserving the 768 MiB CUDA
    context cut the largest batch at 1 GiB from 321,358 to 79,960)."""
    options = ModelOptions(input_shape=(64,), num_classes=10)
    search = FitSearch(f"{EXAMPLE}:mlp", options, settings(1, target="cpu"))
    mode, loaded = build_fake_model(f"{EXAMPLE}:mlp", options, "32-true")

    def independent_need(z: int, batch_size: int) -> int:
        with mode:
            context = CellContext(loaded, loaded.split(), settings(z, target="cpu"), ESTIMATE_DEVICE)
            row, _ = estimate_cell(context, batch_size, z)
        return row.peak_memory_bytes  # no context reserve on a CPU

    assert search.reserve == 0 and search.need_bytes(8, 300) == independent_need(8, 300)
    budget = (independent_need(8, 300) + independent_need(8, 301)) // 2
    assert budget < 768 * 2**20  # with a CUDA context reserved, nothing would fit
    assert search.largest_batch(8, budget).largest_batch_size == 300


@pytest.mark.parametrize(
    ("need_mib", "expected"),
    [(4000, "1g.5gb"), (22000, "A10"), (23030, "L4"), (81000, "H100"), (81600, "A100-80GB"), (200_000, None)],
)
def test_smallest_gpu_is_the_smallest_that_holds_the_need(need_mib: int, expected: str | None) -> None:
    # A10 (23,028 MiB) is listed after L4 (23,034) and H100 (81,559) before A100-80GB (81,920): listing order
    # is not size order
    search = FitSearch.__new__(FitSearch)
    search.need_bytes = lambda _z, _b: need_mib * 2**20
    assert search.smallest_gpu(1, 1) == expected


class ScriptedSearch(FitSearch):
    """The search on a scripted need: no model, every probe counted."""

    def __init__(self, need) -> None:  # noqa: ANN001
        self.need, self.probes, self.needs, self.traces = need, [], {}, {}
        self.smallest_batch = 1
        self.time_model = None
        self.need_lines = {}

    def need_bytes(self, trainable_layers: int, batch_size: int) -> int:
        self.probes.append(batch_size)
        return self.need(batch_size)


@pytest.mark.parametrize(
    ("need", "budget", "answer", "most_traces"),
    [
        (lambda b: 1000 + 10 * b, 5005, 400, 4),  # affine: batch 1, 64, the crossing, the next batch
        (lambda b: 1000 + 10 * b + (512 if b > 200 else 0), 5005, 349, 8),  # a block-rounding jump on the way
        (lambda b: 1000 + 10 * b, 1000 + 10 * 64, 64, 3),  # exactly at the first probe
        (lambda b: 1000 + 10 * b, 1005, 0, 1),  # only the fixed part fits: not even batch 1
        (lambda b: 1000 + 10 * b, 1010, 1, 3),
        (lambda b: 1000 + b // 1000, 10**9, 1 << 24, 30),  # everything up to the limit fits
    ],
)
def test_the_fit_search_finds_the_exact_boundary_in_few_traces(
    need, budget: int, answer: int, most_traces: int
) -> None:  # noqa: ANN001, E501
    search = ScriptedSearch(need)
    result = search.largest_batch(3, budget)
    assert result.largest_batch_size == answer
    if answer:
        assert need(answer) <= budget and (answer == 1 << 24 or need(answer + 1) > budget)
    assert len(set(search.probes)) <= most_traces


def test_fit_starts_at_two_where_batchnorm_cannot_train_one_sample(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["fit", "paper-resnet18-cifar100", "--memory", "1280MiB", "--layers", "1,11", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["smallest_batch_size"] == 2
    full = next(r for r in report["results"] if r["trainable_layers"] == 11)
    assert full["largest_batch_size"] > 2 and full["predicted_step_time_ms"] > 0
    assert report["time_model"].startswith("predicted for H100 (default constants)")


def test_the_fit_search_does_not_crawl_along_a_bent_line() -> None:
    # as the allocator's rounding makes it: the line rises steeply, then a stretch above the budget is nearly flat,
    # so a line through two failing batches points far below them (a crawl of +1 steps, seen on a real MLP)
    def need(batch_size: int) -> int:
        if batch_size < 21_900:
            return 600_000_000 + 20_500 * batch_size
        return 1_078_900_000 + 342 * (batch_size - 21_900)

    search = ScriptedSearch(need)
    result = search.largest_batch(1, 2**30)
    assert result.largest_batch_size == 21_899
    assert len(set(search.probes)) <= 34  # at most twice a bisection of the 23,000 batches: no crawl


def test_the_fit_search_bisects_where_the_line_keeps_missing() -> None:
    # a curved need (the line through the bracket's ends stays on one side): without halving, the bracket
    # would shrink by a little each step
    search = ScriptedSearch(lambda b: b * b)
    result = search.largest_batch(1, 10**10 + 5)
    assert result.largest_batch_size == 100_000
    assert len(set(search.probes)) <= 40
