"""Flower's half of the flower bench suite: Flower's legacy server, or one legacy Flower
client, as a process of its own under ``.venv-flower/bin/python`` (``make flower-env``),
and the client and strategy the Flower App (``deployment_app.py``) runs too.

Why another virtualenv: flwr 1.41 needs protobuf < 7 and exact fastapi / uvicorn /
starlette minors, while fedgate's generated gRPC code needs protobuf >= 7.35 and fedgate
runs newer fastapi / uvicorn; one environment cannot hold both. So this file imports
nothing of fedgate but its torch-only modules (`fedgate.core.models`, `.training`,
`.messages`; the benchmark process puts the checkout on PYTHONPATH), and everything else
comes in files the benchmark process writes
(`flower_side.write_inputs`, in fedgate's ``.venv``), in the format defined here:
``setup.json`` (`Setup`), ``initial.npz`` (the model fedgate's server starts from),
``test.npz`` (the held-out split) and ``client-<i>.npz`` (client i's part of the training
split, as ``fedgate client --index i`` takes it). The strategy writes what it measured to
a JSON file the benchmark process reads (`RoundLog.document`), once the last round is
evaluated.

Two ways of running Flower, both measured (``flower_side``):

- legacy: ``flwr.server.start_server`` / ``flwr.client.start_client``, run by `main`
  here. 1.41.0 still ships them (deprecated since 1.13, under ``flwr.compat``): a server
  process and one process per client, joined by Flower's gRPC transport (``grpc-bidi``:
  one bidirectional stream per client, on which the server pushes each instruction).
- deployment, the way Flower 1.x is deployed today: ``flower-superlink``, one
  ``flower-supernode`` per client and ``flwr run`` of the Flower App in this directory
  (``deployment_app.py``, ``pyproject.toml``). Every message passes through the
  SuperLink's store; each SuperNode polls the SuperLink's Fleet API (HTTP in 1.41), sleeps
  3 s when it found no message and 0.5 s steps while waiting for a reply to push, and
  starts a ``flwr-clientapp`` process for each message
  (``flwr/supernode/start_client_internal.py``): with rounds of a few hundred
  milliseconds that times Flower's polling and process start-up more than its transport,
  which is what its users get.

Both run the same client (`bench_client`) and strategy (`bench_strategy`), so rounds are
timed and payloads counted in the same places. 1.41.0 rather than the newest, 1.42.0: see
``requirements.txt``.

What the server measures, per round (`CountingFedAvg`):

- wall time: from ``configure_fit`` having built the round's instructions (after waiting
  for the clients to connect) to the aggregated model having been evaluated on the
  held-out split, after which Flower's loop starts the next round: the round's cadence,
  as fedgate's server records its rounds (opened to the model published; fedgate
  evaluates in the background while the next round runs), in the same place, the
  server process;
- bytes: the serialized tensors (``Parameters.tensors``, one ``np.save`` buffer each) in
  every client's ``FitIns`` and in every ``FitRes``: payload bytes, as fedgate counts its
  encoded models and updates; protobuf and gRPC framing are counted on neither side;
- loss and accuracy of the aggregate on the held-out split (`evaluate`).

Training and evaluation are fedgate's own (`LocalTrainer`, `evaluate`): SGD with momentum
0.9, a fresh optimiser per round, batches drawn by a generator seeded per client, one torch
thread per client as ``fedgate client --threads 1``. FedAvg is Flower's own, weighted by
example counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedgate.core.messages import TrainConfig
from fedgate.core.models import ModelSpec, build_model
from fedgate.core.training import LocalTrainer, evaluate

Array = npt.NDArray[Any]
TensorDict = dict[str, torch.Tensor]
SETUP_FILE, INITIAL_FILE, TEST_FILE = "setup.json", "initial.npz", "test.npz"
# Flower reports usage to its developers, and its SuperLink / SuperNode look for a newer
# flwr online, unless told not to; a benchmark calls no one. Read when flwr is imported,
# so set before any flwr import.
QUIET_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


@dataclass(frozen=True)
class Setup:
    """The federation, as ``setup.json``: the hyper-parameters and how to build the model."""

    rounds: int
    clients: int
    learning_rate: float
    local_epochs: int
    batch_size: int
    model: str
    model_spec: dict[str, Any]  # fedgate.core.models.ModelSpec's fields
    names: list[str]  # the state dict's tensor names, in order: Flower sends bare lists
    client_seeds: list[int]  # each client's batch-order seed, as fedgate's trainers have

    @classmethod
    def load(cls, inputs: Path) -> Setup:
        return cls(**json.loads((inputs / SETUP_FILE).read_text()))

    def save(self, inputs: Path) -> None:
        (inputs / SETUP_FILE).write_text(json.dumps(asdict(self), indent=2))

    def build(self) -> nn.Module:
        return build_model(self.model, ModelSpec(**self.model_spec))

    def train_config(self) -> TrainConfig:
        return TrainConfig(self.learning_rate, self.local_epochs, self.batch_size)


def client_file(index: int) -> str:
    return f"client-{index}.npz"


def ready_file(out: Path) -> Path:
    """Created by the server once it listens, beside the round log it will write to ``out``."""
    return out.with_name(out.name + ".ready")


def save_arrays(path: Path, arrays: Mapping[str, Array]) -> None:
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub wants a bool here


def load_arrays(path: Path) -> dict[str, Array]:
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def to_state(names: Sequence[str], arrays: Sequence[Array]) -> TensorDict:
    # Copies: Flower's deserialized arrays may be read-only, torch wants to own its memory.
    return {
        name: torch.from_numpy(np.array(a, copy=True))
        for name, a in zip(names, arrays, strict=True)
    }


def to_arrays(state: Mapping[str, torch.Tensor]) -> list[Array]:
    return [t.detach().cpu().numpy() for t in state.values()]


def load_xy(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    arrays = load_arrays(path)
    return torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])


def client_trainer(inputs: Path, index: int) -> LocalTrainer:
    """Client ``index``'s trainer: its part of the data and its batch-order seed."""
    setup = Setup.load(inputs)
    x, y = load_xy(inputs / client_file(index))
    return LocalTrainer(setup.build(), x, y, setup.client_seeds[index])


# ---- a client ------------------------------------------------------------------------


def bench_client(inputs: Path, index: int) -> Any:
    """Flower client ``index`` (a `flwr.client.Client`): trains when told, as fedgate's do."""
    from flwr.client import NumPyClient  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

    torch.set_num_threads(1)  # as fedgate's client processes (--threads 1)
    setup = Setup.load(inputs)
    trainer, recipe = client_trainer(inputs, index), setup.train_config()

    class BenchClient(NumPyClient):  # type: ignore[misc,unused-ignore]
        def get_parameters(self, config: dict[str, Any]) -> list[Array]:
            return to_arrays(trainer.model.state_dict())

        def fit(
            self, parameters: list[Array], config: dict[str, Any]
        ) -> tuple[list[Array], int, dict[str, Any]]:
            # the round number seeds the batch order, as in fedgate's clients
            this_round = dataclasses.replace(recipe, round=int(config.get("round", 0)))
            result = trainer.train(to_state(setup.names, parameters), this_round)
            return to_arrays(result.weights), result.num_examples, {"train_loss": result.loss}

    return BenchClient().to_client()


def run_client(inputs: Path, index: int, address: str) -> None:
    """Legacy Flower client ``index``: connect to ``address``, train when told, until let go."""
    from flwr.client import start_client  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

    start_client(server_address=address, client=bench_client(inputs, index), insecure=True)


# ---- the server process ---------------------------------------------------------------


class RoundLog:
    """What the strategy saw, per round: when it started and ended, bytes, loss, accuracy;
    written to ``out`` once the last round has been evaluated."""

    def __init__(self, out: Path, last_round: int) -> None:
        self.out, self.last_round = out, last_round
        self.rounds: dict[int, dict[str, float]] = {}

    def at(self, number: int) -> dict[str, float]:
        return self.rounds.setdefault(number, {"round": number})

    def document(self) -> dict[str, Any]:
        rounds = [self.rounds[n] for n in sorted(self.rounds) if n > 0]  # 0: the initial model
        for entry in rounds:
            entry["duration_s"] = entry["ended"] - entry["started"]
        versions = {name: metadata.version(name) for name in ("flwr", "torch", "numpy")}
        return {"versions": versions, "rounds": rounds}

    def save(self) -> None:
        # Renamed into place: the benchmark process may be polling for the file.
        partial = self.out.with_name(self.out.name + ".partial")
        partial.write_text(json.dumps(self.document(), indent=2))
        partial.replace(self.out)


def counting_fedavg(log: RoundLog, ready: Path | None, **options: Any) -> Any:
    """Flower's FedAvg, noting each round's start, end, payload bytes and failures."""
    from flwr.server.strategy import FedAvg  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

    class CountingFedAvg(FedAvg):  # type: ignore[misc,unused-ignore]
        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            # Returns once enough clients are connected: waiting for them is not the round.
            instructions = super().configure_fit(server_round, parameters, client_manager)
            entry = log.at(server_round)
            entry["started"] = time.perf_counter()
            entry["bytes_down"] = sum(len(t) for t in parameters.tensors) * len(instructions)
            return instructions

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            entry = log.at(server_round)
            entry["bytes_up"] = sum(len(t) for _, r in results for t in r.parameters.tensors)
            entry["results"], entry["failures"] = len(results), len(failures)
            return super().aggregate_fit(server_round, results, failures)

        def evaluate(self, server_round: int, parameters: Any) -> Any:
            outcome = super().evaluate(server_round, parameters)
            log.at(server_round)["ended"] = time.perf_counter()
            if server_round == 0 and ready is not None:  # the server listens, clients may come
                ready.touch()
            if server_round == log.last_round:
                log.save()
            return outcome

    return CountingFedAvg(**options)


def bench_strategy(inputs: Path, out: Path, ready: Path | None = None) -> tuple[Any, Setup]:
    """The strategy both ways of running Flower use: FedAvg over every client, evaluating
    on the held-out split after each round, its round log written to ``out`` at the end
    (``ready`` touched once the initial model is evaluated)."""
    from flwr.common import ndarrays_to_parameters  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

    setup = Setup.load(inputs)
    initial = load_arrays(inputs / INITIAL_FILE)
    x_test, y_test = load_xy(inputs / TEST_FILE)
    eval_model, log = setup.build(), RoundLog(out, setup.rounds)

    def evaluate_fn(
        server_round: int, arrays: list[Array], config: dict[str, Any]
    ) -> tuple[float, dict[str, float]]:
        result = evaluate(eval_model, to_state(setup.names, arrays), x_test, y_test)
        log.at(server_round).update(loss=result.loss, accuracy=result.accuracy)
        return result.loss, {"accuracy": result.accuracy}

    strategy = counting_fedavg(
        log,
        ready,
        fraction_fit=1.0,  # every client in every round, as fedgate's runs
        fraction_evaluate=0.0,  # no federated evaluation: fedgate has none
        min_fit_clients=setup.clients,
        min_available_clients=setup.clients,
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=lambda server_round: {"round": server_round},
        initial_parameters=ndarrays_to_parameters([initial[name] for name in setup.names]),
    )
    return strategy, setup


def run_server(inputs: Path, port: int, out: Path) -> None:
    """Flower's legacy server on 127.0.0.1:``port``; its round log goes to ``out``."""
    from flwr.server import ServerConfig, start_server  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

    strategy, setup = bench_strategy(inputs, out, ready_file(out))
    start_server(
        server_address=f"127.0.0.1:{port}",
        config=ServerConfig(num_rounds=setup.rounds),
        strategy=strategy,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--inputs", type=Path, required=True, help="flower_side.write_inputs")
    parser.add_argument("--port", type=int, required=True, help="the server's, on 127.0.0.1")
    parser.add_argument("--out", type=Path, help="server: write the round log here")
    parser.add_argument("--index", type=int, default=0, help="client: which part of the data")
    args = parser.parse_args(argv)
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)  # when run by hand; the suite sets it too
    if args.role == "server":
        if args.out is None:
            parser.error("the server needs --out")
        run_server(args.inputs, args.port, args.out)
    else:
        run_client(args.inputs, args.index, f"127.0.0.1:{args.port}")


if __name__ == "__main__":
    main()
