"""`fedgate train`: the centralized baseline federated runs are measured against
(`fedgate.run.centralized`, which loads torch only when the command runs)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from fedgate.run.results import write_json
from fedgate.run.train_spec import TrainSpec

DATA_DIR_ENV = "FEDGATE_DATA_DIR"  # read by fedgate.core.data (a test holds both equal)


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
    train.add_argument(
        "--dataset", default=defaults.dataset, help="a data set (a wrong name lists them)"
    )
    train.add_argument("--model", default=defaults.model, help="a model (a wrong name lists them)")
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--lr", dest="learning_rate", type=float, default=defaults.learning_rate)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--seed", type=int, default=defaults.seed)
    add_data_dir_option(train)
    train.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    train.add_argument("--out", type=Path, help="write the results JSON here")
    train.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415 - only when training

    from fedgate.run.centralized import train_centralized  # noqa: PLC0415

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


def epoch_printer(epochs: int) -> Any:
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
