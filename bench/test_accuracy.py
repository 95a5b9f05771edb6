"""Accuracy suite: what each codec costs in accuracy for the bytes it saves.

One whole federation per codec in the registry, all else equal: the digits CNN, 10 clients
on a ``dirichlet:0.5`` split, 30 rounds, seed 0, every client in every round, each client's
codec default for deltas (on for lossy codecs). ``--fedgate-quick``: 4 clients, 3 rounds.

The federations run in-process (`fedgate.run.simulation.simulate`): the byte counts are the
same encoded payloads the gRPC and REST adapters carry (models down, updates up), and the
rounds suite times the same codecs over real transports. pytest-benchmark times the whole
federation (one benchmark round = one federation).

Row fields (``suite="accuracy"``): ``codec``, ``clients``, ``rounds``, ``partition``,
``accuracy`` (held-out, after the last round), ``accuracy_late`` (mean of the last five
rounds: one test example is 0.28 points), ``accuracy_per_round``, ``bytes_total`` (up plus
down over the run), ``bytes_up``, ``bytes_down``, ``federation_s`` (median wall time).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fedgate.codecs import CODECS
from fedgate.run.sim_config import SimConfig
from fedgate.run.simulation import simulate

SETTINGS = {False: (10, 30), True: (4, 3)}  # (clients, rounds), full and quick
PARTITION = "dirichlet:0.5"

pytestmark = pytest.mark.timeout(1800)


def federate(config: SimConfig) -> dict[str, Any]:
    return asyncio.run(simulate(config))


@pytest.mark.parametrize("codec", list(CODECS))
def test_accuracy_for_bytes(benchmark: Any, codec: str, quick: bool) -> None:
    clients, rounds = SETTINGS[quick]
    config = SimConfig(clients=clients, rounds=rounds, partition=PARTITION, codec=codec, seed=0)
    results = benchmark.pedantic(federate, args=(config,), rounds=1, iterations=1)
    curve = [r["accuracy"] for r in results["rounds"]]
    assert len(curve) == config.rounds
    benchmark.extra_info.update(
        codec=codec,
        clients=config.clients,
        rounds=config.rounds,
        partition=PARTITION,
        model=config.model,
        accuracy=results["final_accuracy"],
        accuracy_late=sum(curve[-5:]) / len(curve[-5:]),
        accuracy_per_round=curve,
        bytes_total=results["bytes_up"] + results["bytes_down"],
        bytes_up=results["bytes_up"],
        bytes_down=results["bytes_down"],
        timing="federation",
    )
