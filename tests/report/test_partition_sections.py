"""Partition statistics in the results document, and drawn in the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedgate.core.data import load_dataset
from fedgate.core.partition import partition
from fedgate.errors import ConfigError
from fedgate.report import render_report
from fedgate.report.partition_sections import read_split, splits_section
from fedgate.run.results import dataset_partition, partition_statistics
from fedgate.run.sim_config import SimConfig
from fedgate.run.simulation import simulate


async def test_a_simulated_run_records_each_clients_examples_and_labels() -> None:
    config = SimConfig(clients=3, rounds=1, partition="dirichlet:0.5", seed=4)
    document = await simulate(config)
    stats = document["partition"]
    labels = load_dataset("digits", 4).y_train.numpy()
    parts = partition(labels, 3, "dirichlet:0.5", 4)
    assert (stats["spec"], stats["seed"], stats["clients"]) == ("dirichlet:0.5", 4, 3)
    assert stats["classes"] == [str(n) for n in range(10)]
    for entry, part in zip(stats["per_client"], parts, strict=True):
        assert entry["examples"] == len(part) == sum(entry["labels"])
        assert entry["labels"] == np.bincount(labels[part], minlength=10).tolist()
    names = {client["name"] for client in document["clients"]}
    assert {entry["name"] for entry in stats["per_client"]} == names
    assert json.loads(json.dumps(document))["partition"] == stats  # plain JSON


def results_file(path: Path, splits: list[dict[str, Any]]) -> Path:
    rows = [{"suite": "experiment", "partition": split} for split in splits]
    document = {"machine": {}, "command": "fedgate experiment", "results": rows}
    path.write_text(json.dumps(document))
    return path


def test_the_report_draws_each_distinct_split_once(tmp_path: Path) -> None:
    dataset = load_dataset("digits")
    iid = dataset_partition(dataset, 3, "iid", 0)
    skewed = dataset_partition(dataset, 5, "dirichlet:0.3", 1)
    path = results_file(tmp_path / "results.json", [iid, skewed, iid])
    markdown, html = render_report([path], tmp_path / "report")
    text = markdown.read_text()
    assert "## Data partition" in text
    assert "partition-1.png" in text and "partition-2.png" in text
    assert "partition-3.png" not in text  # the repeated split is drawn once
    assert (tmp_path / "report" / "partition-2.png").read_bytes().startswith(b"\x89PNG")
    assert "iid, 3 clients, seed 0" in text and "dirichlet:0.3, 5 clients, seed 1" in text
    first = iid["per_client"][0]
    assert f"| client-0 | {first['examples']:,} | 10 of 10 |" in text
    assert len(dataset.y_train) == sum(c["examples"] for c in iid["per_client"])
    assert "data:image/png;base64," in html.read_text()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"per_client": "x"}, "must be a list"),
        ({"classes": [1]}, "list of names"),
        ({"seed": "0"}, "spec .text. and seed"),
        ({"per_client": [{"name": "a", "examples": 3, "labels": [1, 1]}]}, "do not add up"),
        ({"per_client": [{"name": "a", "examples": 2, "labels": [2]}]}, "each of 2 classes"),
        ({"per_client": [{"name": "a", "examples": 0, "labels": [-1, 1]}]}, "each of 2"),
    ],
)
def test_a_malformed_partition_is_named(change: dict[str, Any], reason: str) -> None:
    good = {"spec": "iid", "seed": 0, "classes": ["a", "b"], "per_client": []}
    assert read_split(good, "f").clients == ()
    with pytest.raises(ConfigError, match=f"f: .*{reason}"):
        read_split({**good, **change}, "f")


def test_many_classes_and_clients_still_draw(tmp_path: Path) -> None:
    labels = np.arange(600) % 30
    stats = partition_statistics(labels, 10, "shards:2", 0, num_classes=30)
    section = splits_section([("thirty", stats)], tmp_path)
    assert section is not None and (tmp_path / "partition-1.png").exists()
    assert splits_section([], tmp_path) is None
