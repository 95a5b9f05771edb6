"""A whole federation in one command: a server and N clients, with results as JSON."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

import fedgate
from fedgate.codecs import codec_names, get_codec
from fedgate.core.client import FederatedClient
from fedgate.core.config import RunConfig
from fedgate.core.data import Dataset, load_dataset
from fedgate.core.federation import Federation
from fedgate.core.messages import FederationStatus, RoundRecord
from fedgate.core.models import build_model
from fedgate.core.partition import partition
from fedgate.core.training import EvalResult, LocalTrainer, evaluate, state_dict_copy
from fedgate.errors import ConfigError
from fedgate.transport.inproc import InProcTransport

MIXED = "mixed"


@dataclass(frozen=True)
class SimConfig:
    clients: int = 5
    rounds: int = 20
    transport: str = "inproc"
    codec: str = "raw"  # a registry name, or "mixed": clients take the codecs in turn
    partition: str = "iid"
    dataset: str = "digits"
    model: str = "cnn"
    seed: int = 0
    learning_rate: float = 0.1
    local_epochs: int = 1
    batch_size: int = 32
    clients_per_round: int = 0
    min_clients: int = 0  # 0: every client
    round_deadline_s: float = 120.0

    def codec_for(self, index: int) -> str:
        names = codec_names()
        return names[index % len(names)] if self.codec == MIXED else self.codec

    def run_config(self) -> RunConfig:
        return RunConfig(
            rounds=self.rounds,
            clients_per_round=self.clients_per_round,
            min_clients=self.min_clients or self.clients,
            round_deadline_s=self.round_deadline_s,
            learning_rate=self.learning_rate,
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            seed=self.seed,
        )

    def validate(self) -> None:
        if self.transport != "inproc":
            raise ConfigError(f"unknown transport {self.transport!r}; available: inproc")
        if self.codec != MIXED:
            get_codec(self.codec)
        if self.clients < 1:
            raise ConfigError("a simulation needs at least one client")
        self.run_config()


def client_trainer(
    dataset: Dataset, model: str, *, spec: str, index: int, of: int, seed: int
) -> LocalTrainer:
    """Client ``index`` of ``of``'s trainer on its part of the training split."""
    parts = partition(dataset.y_train.numpy(), of, spec, seed)
    rows = torch.from_numpy(parts[index])
    return LocalTrainer(
        build_model(model, dataset.model_spec),
        dataset.x_train[rows],
        dataset.y_train[rows],
        seed=seed * 1000 + index,
    )


def server_federation(config: SimConfig, dataset: Dataset) -> Federation:
    """A federation on a freshly seeded model that evaluates on the held-out split."""
    model = build_model(config.model, dataset.model_spec, seed=config.seed)
    eval_model = build_model(config.model, dataset.model_spec)

    def evaluator(weights: Mapping[str, torch.Tensor]) -> EvalResult:
        return evaluate(eval_model, weights, dataset.x_test, dataset.y_test)

    return Federation(state_dict_copy(model), config.run_config(), evaluator=evaluator)


async def simulate(
    config: SimConfig, on_round: Callable[[RoundRecord], None] | None = None
) -> dict[str, Any]:
    """Run the whole federation in this process and return the results document."""
    config.validate()
    started = time.perf_counter()
    dataset = load_dataset(config.dataset, config.seed)
    federation = server_federation(config, dataset)
    if on_round is not None:
        federation.listeners.append(on_round)
    run = federation.start()
    clients = [
        FederatedClient(
            InProcTransport(federation),
            client_trainer(
                dataset,
                config.model,
                spec=config.partition,
                index=i,
                of=config.clients,
                seed=config.seed,
            ),
            name=f"client-{i}",
            codec=config.codec_for(i),
        )
        for i in range(config.clients)
    ]
    client_tasks = [asyncio.create_task(c.run()) for c in clients]
    try:
        status = await run
        await asyncio.gather(*client_tasks)
    finally:
        for task in client_tasks:
            task.cancel()
        await federation.close()
    return results_document(config, status, time.perf_counter() - started)


def results_document(
    config: SimConfig, status: FederationStatus, duration_s: float
) -> dict[str, Any]:
    rounds = [round_entry(r) for r in status.history if r.outcome == "completed"]
    total_up = sum(t.up for t in status.bytes_by_transport.values())
    total_down = sum(t.down for t in status.bytes_by_transport.values())
    return {
        "config": dataclasses.asdict(config),
        "run_id": status.run_id,
        "state": status.state.value,
        "rounds": rounds,
        "attempts": [round_entry(r) for r in status.history if r.outcome != "completed"],
        "final_accuracy": rounds[-1]["accuracy"] if rounds else None,
        "final_loss": rounds[-1]["loss"] if rounds else None,
        "bytes_up": total_up,
        "bytes_down": total_down,
        "bytes_by_transport": _traffic(status.bytes_by_transport),
        "bytes_by_codec": _traffic(status.bytes_by_codec),
        "duration_s": round(duration_s, 3),
        "machine": machine_info(),
    }


def round_entry(record: RoundRecord) -> dict[str, Any]:
    return {
        "round": record.round,
        "attempt": record.attempt,
        "outcome": record.outcome,
        "accuracy": _finite(record.accuracy),
        "loss": _finite(record.loss),
        "train_loss": _finite(record.train_loss),
        "participants": len(record.participants),
        "participant_ids": list(record.participants),
        "num_examples": record.num_examples,
        "bytes_up": record.bytes_up,
        "bytes_down": record.bytes_down,
        "duration_s": record.duration_s,
    }


def machine_info() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": _cpu_count(),
        "torch": torch.__version__,
        "fedgate": fedgate.__version__,
    }


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _traffic(table: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {key: {"up": t.up, "down": t.down} for key, t in sorted(table.items())}


def _finite(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None
