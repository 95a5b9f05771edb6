"""`fedgate train`: the centralized baseline, trained and evaluated as a federation is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fedgate.cli import main
from fedgate.core.config import RunConfig
from fedgate.core.data import DATA_DIR_ENV, load_dataset
from fedgate.core.factory import build_federation
from fedgate.core.messages import TrainConfig
from fedgate.core.trainers import build_trainer
from fedgate.core.training import evaluate
from fedgate.run.centralized import train_centralized
from fedgate.run.train_spec import TrainSpec
from tests.core.cifar_files import write_cifar10


def without_timings(epochs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in epoch.items() if k != "duration_s"} for epoch in epochs]


def test_train_on_digits_writes_per_epoch_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "centralized.json"
    argv = ["train", "--dataset", "digits", "--model", "cnn", "--epochs", "2", "--seed", "3"]
    assert main([*argv, "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["kind"] == "centralized"
    assert [e["epoch"] for e in document["epochs"]] == [1, 2]
    assert document["epochs"][-1]["accuracy"] == document["final_accuracy"] > 0.85
    assert document["epochs"][1]["loss"] < document["epochs"][0]["loss"]
    assert document["num_examples"] == len(load_dataset("digits", 3).x_train)
    assert document["config"] == {
        "dataset": "digits",
        "model": "cnn",
        "epochs": 2,
        "learning_rate": 0.1,
        "batch_size": 32,
        "seed": 3,
        "data_dir": "",
    }
    assert {"machine", "duration_s", "final_loss"} <= set(document)
    shown = capsys.readouterr().out
    assert "epoch   2/2  accuracy" in shown and f"results: {out}" in shown
    again = train_centralized(TrainSpec(epochs=2, seed=3))
    assert without_timings(again["epochs"]) == without_timings(document["epochs"])


def test_an_epoch_is_a_federated_round_with_one_client_holding_everything() -> None:
    # the recipe, from the federated parts: the federation's initial model, the trainer of
    # client 0 of 1 (all the data, in order), one local epoch of round 1, the server's eval
    data = load_dataset("digits", 2)
    config = RunConfig(seed=2, learning_rate=0.05, batch_size=16)
    federation = build_federation(data, "cnn", config)
    trainer = build_trainer(data, "cnn", spec="iid", index=0, of=1, seed=2)
    assert torch.equal(trainer.x, data.x_train)
    trained = trainer.train(federation.models.current, TrainConfig(0.05, 1, 16, round=1))
    expected = evaluate(trainer.model, trained.weights, data.x_test, data.y_test)
    spec = TrainSpec(epochs=1, seed=2, learning_rate=0.05, batch_size=16)
    (epoch,) = train_centralized(spec)["epochs"]
    assert (epoch["accuracy"], epoch["loss"]) == (
        round(expected.accuracy, 6),
        round(expected.loss, 6),
    )


def test_train_reads_cifar_from_the_data_dir_and_explains_its_absence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_cifar10(tmp_path / "data", per_batch=4, test=6)
    out = tmp_path / "c.json"
    argv = ["train", "--dataset", "cifar10", "--epochs", "1", "--batch-size", "8"]
    assert main([*argv, "--data-dir", str(tmp_path / "data"), "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["num_examples"] == 20 and len(document["epochs"]) == 1
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert main(argv) == 2
    assert f"pass --data-dir DIR or set {DATA_DIR_ENV}" in capsys.readouterr().err
    assert main([*argv[:-2], "--epochs", "0"]) == 2
