"""Parts of the Ray cluster helpers pinned without a cluster: the inventory read from the nodes Ray reports (the
session stood in for by one that lists hand-made nodes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from layerprof.errors import LayerprofError
from layerprof.measure import cluster


def nodes_session(monkeypatch: pytest.MonkeyPatch, nodes: list[dict]) -> None:
    @contextmanager
    def ray_session(address: str | None) -> Iterator[SimpleNamespace]:
        yield SimpleNamespace(nodes=lambda: nodes)

    monkeypatch.setattr(cluster, "ray_session", ray_session)


def node(resources: dict[str, float], alive: bool = True) -> dict:
    return {"Alive": alive, "Resources": resources}


def test_the_inventory_counts_the_gpus_of_alive_nodes_by_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes_session(
        monkeypatch,
        [
            node({"GPU": 2.0, "accelerator_type:L4": 1.0}),
            node({"GPU": 1.0, "accelerator_type:L4": 1.0}),
            node({"GPU": 4.0, "accelerator_type:T4": 1.0}, alive=False),
            node({"GPU": 0.0, "accelerator_type:T4": 1.0}),  # no GPU
            node({"GPU": 1.0}),  # no accelerator type
            node({"CPU": 8.0}),
        ],
    )
    assert [(item.gpu.name, item.count) for item in cluster.inventory_from_ray(None)] == [("L4", 3)]


def test_an_ambiguous_kind_in_the_inventory_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes_session(
        monkeypatch, [node({"GPU": 8.0, "accelerator_type:H100": 1.0}), node({"GPU": 1.0, "accelerator_type:L4": 1.0})]
    )
    with pytest.raises(LayerprofError, match=r"the Ray cluster's H100 nodes do not say which GPU SKU"):
        cluster.inventory_from_ray(None)
