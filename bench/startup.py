"""How fast clients start, and what a whole simulation costs against a framework-free loop
(issue 12 item 1; measured by ``test_client_startup`` and ``test_whole_run`` in
``test_rounds.py``).

- `help_wall_s`: ``fedgate client --help`` from process start to exit.
- `first_request_s`: from starting a client (``python -m fedgate client``, or a child of a
  ready fork server) to its first connection reaching the server's port, a plain TCP
  listener here: both transports connect when they send their first request (the join),
  after the client has imported, loaded its data and built its trainer.
- `whole_run_s`: `fedgate.run.simulation.run_simulation` from call to return, servers and
  client processes included.
- `reference_run`: the same arithmetic with no framework, in one process: each client's
  local training (SGD, momentum 0.9, as `LocalTrainer`), FedAvg weighted by examples, and
  the evaluation on the test split after every round, in a plain loop. Data loading and
  the split are in the timing, as they are in a simulation's.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedgate.core.data import load_dataset
from fedgate.core.models import build_model
from fedgate.core.partition import partition
from fedgate.run.client_options import ClientOptions
from fedgate.run.forkserver import ForkServer
from fedgate.run.forkserver_main import warm_up
from fedgate.run.launch import ChildProcess, fedgate_command, stop_process
from fedgate.run.sim_config import SimConfig

CONNECT_LIMIT_S = 120.0  # a client that has not connected by then is broken, not slow


def help_wall_s() -> float:
    """Wall time of ``fedgate client --help`` (a fresh interpreter each time)."""
    start = time.perf_counter()
    subprocess.run(fedgate_command("client", "--help"), check=True, capture_output=True)
    return time.perf_counter() - start


def client_args(address: str, transport: str) -> list[str]:
    return ["--server", address, "--transport", transport, "--threads", "1"]


def first_request_s(transport: str, log_path: Path, forks: ForkServer | None = None) -> float:
    """Seconds from starting a client to its first request reaching the server's port:
    exec'd (``forks`` None) or forked from ``forks`` (which should be ready: its imports
    are paid once, before any client)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        listener.settimeout(CONNECT_LIMIT_S)
        args = client_args(address, transport)
        start = time.perf_counter()
        process: ChildProcess
        if forks is None:
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    fedgate_command("client", *args), stdout=log, stderr=subprocess.STDOUT
                )
        else:
            options = ClientOptions(address, transport, "raw", index=0, of=1, threads=1)
            process = forks.spawn(options, log_path)
        try:
            connection, _ = listener.accept()
            elapsed = time.perf_counter() - start
            connection.close()
        finally:
            stop_process(process)
    return elapsed


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """This process's torch threads for a while. One, for the runs in this process: the
    client processes train on one each (``--threads 1``), and two threads' pool on a
    loaded 2-core machine makes a small CNN's steps wait for each other (minutes, not
    seconds, for the reference loop)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def whole_run_s(config: SimConfig) -> tuple[float, dict[str, Any]]:
    """Wall time of a whole simulation, and its results document."""
    from fedgate.run.simulation import run_simulation  # noqa: PLC0415 - the launcher's side

    with torch_threads(1):
        start = time.perf_counter()
        document = run_simulation(config)
        return time.perf_counter() - start, document


def reference_run(config: SimConfig) -> tuple[float, float]:
    """(wall time, final accuracy) of the framework-free loop on ``config``'s federation."""
    with torch_threads(1):
        warm_up()  # untimed: torch.optim imports ~900 modules (torch._dynamo) on first use
        return _reference_run(config)


def _reference_run(config: SimConfig) -> tuple[float, float]:
    start = time.perf_counter()
    dataset = load_dataset(config.dataset, config.seed)
    parts = partition(dataset.y_train.numpy(), config.clients, config.partition, config.seed)
    shares = [(dataset.x_train[p], dataset.y_train[p]) for p in map(torch.from_numpy, parts)]
    model = build_model(config.model, dataset.model_spec, seed=config.seed)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    accuracy = 0.0
    for round_number in range(1, config.rounds + 1):
        updates = [
            (local_training(model, weights, x, y, config, seed=round_number * 1000 + i), len(y))
            for i, (x, y) in enumerate(shares)
        ]
        weights = fedavg(updates)
        accuracy = evaluate(model, weights, dataset.x_test, dataset.y_test)
    return time.perf_counter() - start, accuracy


def local_training(
    model: nn.Module,
    weights: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    config: SimConfig,
    seed: int,
) -> dict[str, torch.Tensor]:
    model.load_state_dict(weights)
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(config.local_epochs):
        for batch in torch.split(torch.randperm(len(x), generator=generator), config.batch_size):
            optimiser.zero_grad(set_to_none=True)
            loss_fn(model(x[batch]), y[batch]).backward()
            optimiser.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fedavg(updates: list[tuple[dict[str, torch.Tensor], int]]) -> dict[str, torch.Tensor]:
    """The weighted mean of the clients' weights, by their numbers of examples."""
    total = sum(n for _, n in updates)
    first = updates[0][0]
    mean = {name: torch.zeros_like(t, dtype=torch.float64) for name, t in first.items()}
    for weights, n in updates:
        for name, tensor in weights.items():
            mean[name] += tensor.double() * (n / total)
    return {name: tensor.to(first[name].dtype) for name, tensor in mean.items()}


def evaluate(
    model: nn.Module, weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> float:
    model.load_state_dict(weights)
    model.eval()
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())
