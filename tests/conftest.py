from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def linear_stack(width: int = 32, depth: int = 4, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(*(nn.Linear(width, width, bias=bias) for _ in range(depth)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
