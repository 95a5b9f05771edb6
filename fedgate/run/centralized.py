"""The centralized baseline federated runs are measured against.

One model trained on all of a data set's training split with the federated recipe: the
model a federation seeded the same starts from (`build_model(..., seed=seed)`), the
clients' `LocalTrainer` (SGD with momentum 0.9, a fresh optimiser per epoch as per round,
the data set's augmentation, client 0's batch-order seed), one local epoch per "round",
and the server's evaluation (`evaluate` on the test split) after every epoch. So its
per-epoch accuracy is the line a federation's per-round accuracy would follow if one
client held all the data.

The results document is shaped like a federated one (`fedgate.run.results`): ``epochs`` in
place of ``rounds``, ``kind`` "centralized", and the same ``final_accuracy``,
``final_loss``, ``config``, ``duration_s`` and ``machine``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from fedgate.core.data import load_dataset
from fedgate.core.messages import TrainConfig
from fedgate.core.models import build_model
from fedgate.core.trainers import client_seed
from fedgate.core.training import LocalTrainer, evaluate, state_dict_copy
from fedgate.run.results import finite, provenance
from fedgate.run.train_spec import TrainSpec

EpochCallback = Callable[[dict[str, Any]], None]


def train_centralized(spec: TrainSpec, on_epoch: EpochCallback | None = None) -> dict[str, Any]:
    """Train as `TrainSpec` says; the results document (see the module's docstring)."""
    spec.validate()
    started = time.perf_counter()
    dataset = load_dataset(spec.dataset, spec.seed, spec.data_dir)
    model = build_model(spec.model, dataset.model_spec, seed=spec.seed)
    trainer = LocalTrainer(
        model,
        dataset.x_train,
        dataset.y_train,
        seed=client_seed(spec.seed, 0),
        augmentation=dataset.augmentation,
    )
    judge = build_model(spec.model, dataset.model_spec)
    weights = state_dict_copy(model)
    epochs: list[dict[str, Any]] = []
    for epoch in range(1, spec.epochs + 1):
        began = time.perf_counter()
        config = TrainConfig(spec.learning_rate, 1, spec.batch_size, round=epoch)
        trained = trainer.train(weights, config)
        weights = trained.weights
        result = evaluate(judge, weights, dataset.x_test, dataset.y_test)
        entry = {
            "epoch": epoch,
            "accuracy": finite(result.accuracy),
            "loss": finite(result.loss),
            "train_loss": finite(trained.loss),
            "train_accuracy": finite(trained.accuracy),
            "duration_s": round(time.perf_counter() - began, 3),
        }
        epochs.append(entry)
        if on_epoch is not None:
            on_epoch(entry)
    return centralized_document(spec, epochs, len(dataset.x_train), started)


def centralized_document(
    spec: TrainSpec, epochs: list[dict[str, Any]], num_examples: int, started: float
) -> dict[str, Any]:
    last = epochs[-1] if epochs else {}
    return {
        "kind": "centralized",
        "config": dataclasses.asdict(spec),
        "num_examples": num_examples,
        "epochs": epochs,
        "final_accuracy": last.get("accuracy"),
        "final_loss": last.get("loss"),
        "duration_s": round(time.perf_counter() - started, 3),
        **provenance(),
    }
