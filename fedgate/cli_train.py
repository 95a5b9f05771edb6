"""`fedgate train`: the centralized baseline federated runs are measured against.

One model trained on all of a data set's training split with the federated recipe: the
model a federation seeded the same starts from (`build_model(..., seed=seed)`), the
clients' `LocalTrainer` (SGD with momentum 0.9, a fresh optimiser per epoch as per round,
the data set's augmentation, client 0's batch-order seed), one local epoch per "round",
and the server's evaluation (`evaluate` on the test split) after every epoch. So its
per-epoch accuracy is the line a federation's per-round accuracy would follow if one
client held all the data.

The results document is shaped like a federated one (`fedgate.results`): ``epochs`` in
place of ``rounds``, ``kind`` "centralized", and the same ``final_accuracy``,
``final_loss``, ``config``, ``duration_s`` and ``machine``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedgate.core.config import RunConfig
from fedgate.core.data import DATA_DIR_ENV, DATASETS, load_dataset
from fedgate.core.factory import client_seed
from fedgate.core.messages import TrainConfig
from fedgate.core.models import MODELS, build_model
from fedgate.core.training import LocalTrainer, evaluate, state_dict_copy
from fedgate.errors import ConfigError
from fedgate.results import finite, machine_info, write_json

EpochCallback = Callable[[dict[str, Any]], None]
MAX_EPOCHS = 100_000
_RECIPE = RunConfig()  # the federated defaults: the same learning rate and batch size


@dataclass(frozen=True)
class TrainSpec:
    """What `fedgate train` trains, as its flags name it."""

    dataset: str = "digits"
    model: str = "cnn"
    epochs: int = 20
    learning_rate: float = _RECIPE.learning_rate
    batch_size: int = _RECIPE.batch_size
    seed: int = 0
    data_dir: str = ""  # "": $FEDGATE_DATA_DIR (data sets read from files only)

    def validate(self) -> None:
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise ConfigError(f"epochs must be 1 to {MAX_EPOCHS}, not {self.epochs}")
        if not self.learning_rate > 0 or self.batch_size < 1:
            raise ConfigError("the learning rate must be positive and the batch size >= 1")
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; available: {', '.join(MODELS)}")


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
        "machine": machine_info(),
    }


def add_data_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``, for every command that loads a data set."""
    parser.add_argument(
        "--data-dir",
        default="",
        metavar="DIR",
        help="where data sets read from files are (cifar10, cifar100: their extracted "
        "python batches, or the folder holding them; imagefolder: a folder per class); "
        f"default: ${DATA_DIR_ENV}. Nothing is ever downloaded",
    )


def add_train_command(commands: Any) -> None:
    defaults = TrainSpec()
    train = commands.add_parser(
        "train", help="train one model on all the data: the centralized baseline"
    )
    train.add_argument("--dataset", default=defaults.dataset, help=", ".join(DATASETS))
    train.add_argument("--model", default=defaults.model, help=", ".join(MODELS))
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--lr", dest="learning_rate", type=float, default=defaults.learning_rate)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--seed", type=int, default=defaults.seed)
    add_data_dir_option(train)
    train.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    train.add_argument("--out", type=Path, help="write the results JSON here")
    train.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [field.name for field in dataclasses.fields(TrainSpec)]
    spec = TrainSpec(**{name: getattr(args, name) for name in names})
    document = train_centralized(spec, on_epoch=epoch_printer(spec.epochs))
    accuracy, duration = _shown(document["final_accuracy"]), document["duration_s"]
    print(f"final accuracy {accuracy} after {spec.epochs} epochs in {duration:.1f}s")
    if args.out:
        write_json(args.out, document)
        print(f"results: {args.out}")
    return 0


def epoch_printer(epochs: int) -> EpochCallback:
    def show(entry: dict[str, Any]) -> None:
        print(
            f"epoch {entry['epoch']:>3}/{epochs}  accuracy {_shown(entry['accuracy'])}  "
            f"loss {_shown(entry['loss'])}  train loss {_shown(entry['train_loss'])}  "
            f"{entry['duration_s']:.2f}s",
            flush=True,
        )

    return show


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
