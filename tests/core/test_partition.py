"""Partitioners: disjoint, complete, reproducible, and skewed the way their names say."""

from __future__ import annotations

import numpy as np
import pytest

from fedgate.core.data import load_dataset
from fedgate.core.partition import MIN_PER_CLIENT, partition
from fedgate.errors import ConfigError

LABELS = load_dataset("digits").y_train.numpy()
SPECS = ["iid", "dirichlet:0.5", "dirichlet:100", "quantity:0.5", "shards:2"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("clients", [1, 5, 10])
def test_parts_are_disjoint_and_cover_every_example(spec: str, clients: int) -> None:
    parts = partition(LABELS, clients, spec, seed=3)
    assert len(parts) == clients
    joined = np.concatenate(parts)
    assert len(joined) == len(LABELS) == len(np.unique(joined))
    assert min(len(p) for p in parts) >= MIN_PER_CLIENT


@pytest.mark.parametrize("spec", SPECS)
def test_the_same_seed_gives_the_same_split(spec: str) -> None:
    first, again = partition(LABELS, 6, spec, seed=11), partition(LABELS, 6, spec, seed=11)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = partition(LABELS, 6, spec, seed=12)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def label_spread(parts: list[np.ndarray]) -> float:
    """Mean share of a client's examples that carry its most common label."""
    return float(np.mean([np.bincount(LABELS[p]).max() / len(p) for p in parts]))


def test_dirichlet_skews_labels_more_as_alpha_shrinks() -> None:
    skewed = label_spread(partition(LABELS, 10, "dirichlet:0.1", seed=0))
    mild = label_spread(partition(LABELS, 10, "dirichlet:100", seed=0))
    iid = label_spread(partition(LABELS, 10, "iid", seed=0))
    assert skewed > 0.4 > 0.2 > mild and iid < 0.2


def test_quantity_skews_sizes_but_not_labels() -> None:
    sizes = [len(p) for p in partition(LABELS, 10, "quantity:0.3", seed=0)]
    assert max(sizes) > 4 * min(sizes)
    assert label_spread(partition(LABELS, 10, "quantity:0.3", seed=0)) < 0.45


def test_shards_give_each_client_few_labels() -> None:
    parts = partition(LABELS, 10, "shards:2", seed=0)
    assert max(len(np.unique(LABELS[p])) for p in parts) <= 4


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "iid:2",
        "dirichlet",
        "dirichlet:",
        "dirichlet:-1",
        "dirichlet:x",
        "shards:1.5",
        "shards:1000",
        "zipf:2",
        "quantity:0",
    ],
)
def test_bad_specs_are_refused_with_the_valid_forms(spec: str) -> None:
    with pytest.raises(ConfigError):
        partition(LABELS, 10, spec)


def test_too_many_clients_are_refused() -> None:
    with pytest.raises(ConfigError):
        partition(LABELS, len(LABELS), "iid")
