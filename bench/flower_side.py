"""Flower's side of the flower suite: the federation fedgate runs, run by Flower instead.

The layout mirrors fedgate's in `federations.py`: Flower's server
(``flwr.server.start_server``: its gRPC transport, FedAvg) runs in a process of its own,
started from this file; the clients run in the benchmark process, one thread each in
``flwr.client.start_client``, around the same `TimedTrainer` (model, data part, seed,
optimiser) fedgate's clients use. The server evaluates on the same held-out split after
every round, as fedgate does; Flower's federated evaluation is off.

Round timing is observed the same way as for fedgate: a round starts when the first
client receives its fit instruction (the strategy puts the round number in the fit
config), and the last round ends when the server has let the clients go.

Bytes: Flower's FedAvg sends each sampled client the global model in its ``FitIns`` as
``Parameters.tensors`` (one serialized ndarray each) and gets the trained model back in
each ``FitRes``. The strategy here adds up the lengths of those serialized tensors, once
per client sent and once per result: payload bytes, as fedgate's traffic counters count
its encoded payloads. Message framing (protobuf fields, gRPC and HTTP/2 frames) is
counted on neither side.

flwr is optional (``pip install -e '.[compare]'``); nothing here imports it before it is
used, so the module loads without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from federations import WAIT_LIMIT_S, FederationSpec, TimedTrainer

from fedgate.codecs import TensorDict

FLOWER_MISSING = (
    "Flower is not installed: the flower suite measures fedgate only. "
    "Install the 'compare' extra (pip install -e '.[compare]', i.e. flwr) to run Flower "
    "side by side."
)
# Flower reports usage to its developers unless told not to; a benchmark calls no one.
QUIET_ENV = {"FLWR_TELEMETRY_ENABLED": "0"}


def flower_installed() -> bool:
    return importlib.util.find_spec("flwr") is not None


def to_state(names: Sequence[str], arrays: Sequence[Any]) -> TensorDict:
    return {
        name: torch.from_numpy(np.array(a, copy=True))
        for name, a in zip(names, arrays, strict=True)
    }


def to_arrays(state: TensorDict) -> list[Any]:
    return [t.detach().cpu().numpy() for t in state.values()]


class RoundSignal:
    """Round starts seen by the client threads, and whether they have all ended."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.latest = 0
        self.ended = False

    def started(self, number: int) -> None:
        with self._changed:
            self.latest = max(self.latest, number)
            self._changed.notify_all()

    def end(self) -> None:
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def wait_for(self, number: int, alive: Callable[[], bool]) -> None:
        """Until round ``number`` starts or the clients end; ``alive()`` False fails it."""
        give_up = time.monotonic() + WAIT_LIMIT_S
        with self._changed:
            while not (self.latest >= number or self.ended):
                if not alive() or time.monotonic() > give_up:
                    raise RuntimeError(f"Flower's round {number} never started")
                self._changed.wait(0.5)


def flower_client(
    trainer: TimedTrainer, names: list[str], spec: FederationSpec, signal: RoundSignal
) -> Any:
    """A Flower ``Client`` training with ``trainer`` (the NumPyClient API, flwr >= 1.10)."""
    from flwr.client import NumPyClient  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

    class BenchClient(NumPyClient):  # type: ignore[misc,unused-ignore]
        def get_parameters(self, config: dict[str, Any]) -> list[Any]:
            return to_arrays(dict(trainer.model.state_dict()))

        def fit(
            self, parameters: list[Any], config: dict[str, Any]
        ) -> tuple[list[Any], int, dict[str, Any]]:
            signal.started(int(config["server_round"]))
            result = trainer.train(to_state(names, parameters), spec.train_config)
            return to_arrays(result.weights), result.num_examples, {}

    return BenchClient().to_client()


class FlowerRun:
    """One Flower federation: server process + client threads, timed like `FederationRun`."""

    def __init__(self, spec: FederationSpec, workdir: Path) -> None:
        self.spec, self.workdir = spec, workdir
        self.signal = RoundSignal()
        self.results_path = workdir / "flower-results.json"
        self.log_path = workdir / "flower-server.log"
        self.server: subprocess.Popen[bytes] | None = None
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.running = 0

    def start(self, trainers: list[TimedTrainer], names: list[str]) -> None:
        port = free_port()
        spec = json.dumps(asdict(self.spec))
        argv = [sys.executable, __file__, spec, str(port), str(self.results_path)]
        env = {**os.environ, **QUIET_ENV}
        with self.log_path.open("wb") as log:
            self.server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        os.environ.update(QUIET_ENV)  # for the clients, in this process
        self.running = len(trainers)
        for trainer in trainers:
            client = flower_client(trainer, names, self.spec, self.signal)
            thread = threading.Thread(target=self._client, args=(client, port), daemon=True)
            thread.start()
            self.threads.append(thread)
        self.signal.wait_for(1, self._alive)

    def _client(self, client: Any, port: int) -> None:
        from flwr.client import start_client  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

        try:
            start_client(
                server_address=f"127.0.0.1:{port}",
                client=client,
                insecure=True,
                max_wait_time=60.0,  # for the server process to listen
            )
        except BaseException as error:
            self.errors.append(error)
        finally:
            with self.lock:
                self.running -= 1
                if self.running == 0:
                    self.signal.end()

    def _alive(self) -> bool:
        # A server that exited cleanly has let the clients go: they end on their own.
        server_ok = self.server is not None and self.server.poll() in (None, 0)
        return not self.errors and server_ok

    def through_round(self, number: int) -> None:
        self.signal.wait_for(number + 1, self._alive)

    def finish(self) -> dict[str, Any]:
        for thread in self.threads:
            thread.join(WAIT_LIMIT_S)
        if self.server is not None:
            try:
                self.server.wait(WAIT_LIMIT_S)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        if self.errors:
            raise RuntimeError(f"a Flower client failed:\n{self._log()}") from self.errors[0]
        if not self.results_path.exists():
            raise RuntimeError(f"Flower's server left no results:\n{self._log()}")
        results: dict[str, Any] = json.loads(self.results_path.read_text())
        return results

    def abort(self) -> None:
        """Stop the server; the client threads give up on their own (daemons)."""
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait()

    def _log(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])


def free_port() -> int:
    # Flower's start_server takes an address, not a socket, and does not report the port
    # it bound: ask the OS for a free one first.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# ---- the server process ---------------------------------------------------------------


class FlowerLog:
    """What the strategy saw, per round: start, end, bytes each way, accuracy."""

    def __init__(self) -> None:
        self.rounds: dict[int, dict[str, float]] = {}

    def at(self, number: int) -> dict[str, float]:
        return self.rounds.setdefault(number, {"round": number})

    def document(self) -> dict[str, Any]:
        rounds = [self.rounds[n] for n in sorted(self.rounds) if n > 0]
        for entry in rounds:
            entry["duration_s"] = entry["ended"] - entry["started"]
        return {"rounds": rounds}


def counting_fedavg(log: FlowerLog, **options: Any) -> Any:
    """Flower's FedAvg, noting when rounds start and end and the payload bytes sent."""
    from flwr.server.strategy import FedAvg  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

    class CountingFedAvg(FedAvg):  # type: ignore[misc,unused-ignore]
        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            instructions = super().configure_fit(server_round, parameters, client_manager)
            entry = log.at(server_round)
            entry["started"] = time.perf_counter()
            entry["bytes_down"] = sum(len(t) for t in parameters.tensors) * len(instructions)
            return instructions

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            sizes = [len(t) for _, res in results for t in res.parameters.tensors]
            log.at(server_round)["bytes_up"] = sum(sizes)
            return super().aggregate_fit(server_round, results, failures)

        def evaluate(self, server_round: int, parameters: Any) -> Any:
            outcome = super().evaluate(server_round, parameters)
            log.at(server_round)["ended"] = time.perf_counter()
            return outcome

    return CountingFedAvg(**options)


def serve(spec: FederationSpec, port: int, out: Path) -> None:
    """Run Flower's server for ``spec`` and write what its strategy logged to ``out``."""
    from flwr.common import ndarrays_to_parameters  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
    from flwr.server import ServerConfig, start_server  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

    from fedgate.core.data import load_dataset  # noqa: PLC0415
    from fedgate.core.models import build_model  # noqa: PLC0415
    from fedgate.core.training import evaluate, state_dict_copy  # noqa: PLC0415

    dataset = load_dataset(spec.dataset, spec.seed)
    initial = state_dict_copy(build_model(spec.model, dataset.model_spec, seed=spec.seed))
    names, eval_model, log = list(initial), build_model(spec.model, dataset.model_spec), FlowerLog()

    def evaluate_fn(
        server_round: int, arrays: list[Any], config: dict[str, Any]
    ) -> tuple[float, dict[str, float]]:
        result = evaluate(eval_model, to_state(names, arrays), dataset.x_test, dataset.y_test)
        log.at(server_round)["accuracy"] = result.accuracy
        return result.loss, {"accuracy": result.accuracy}

    strategy = counting_fedavg(
        log,
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=spec.clients,
        min_evaluate_clients=spec.clients,
        min_available_clients=spec.clients,
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=lambda server_round: {"server_round": server_round},
        initial_parameters=ndarrays_to_parameters(to_arrays(initial)),
    )
    start_server(
        server_address=f"127.0.0.1:{port}",
        config=ServerConfig(num_rounds=spec.rounds),
        strategy=strategy,
    )
    out.write_text(json.dumps(log.document()))


if __name__ == "__main__":
    serve(FederationSpec(**json.loads(sys.argv[1])), int(sys.argv[2]), Path(sys.argv[3]))
