"""Flower suite: one federation run by Flower (its gRPC transport) and by fedgate (gRPC,
REST), side by side, in one run.

The same model (digits CNN, seed 0), data (digits, the same seeded train/test split),
partition (iid over the same clients, each the same `TimedTrainer`: SGD with momentum,
the same learning rate, epochs and batch size), client count (4; ``--fedgate-quick``: 2)
and rounds (8; quick: 2), every client in every round, FedAvg weighted by examples, the
server evaluating on the held-out split after each round. Both servers run in a process
of their own and the clients in the benchmark process, all on loopback
(`federations.py`, `flower_side.py`). fedgate's clients use the ``raw`` codec, the
closest to Flower's serialized ndarrays (raw little-endian bytes with a small header).

pytest-benchmark times each round the same way for both frameworks: from the moment the
first client is handed round n's work to the moment the first client is handed round
n+1's (or is let go after the last round). Row fields (``suite="flower"``):
``framework``, ``transport``, ``round_wall_s`` (median round; also ``_mean_s`` ...
``round_wall_rounds``), ``bytes_per_round`` (payload bytes both ways per round, see
`flower_side.py` for how Flower's are counted), ``accuracy`` (held-out, after the last
round), ``accuracy_per_round``, ``server_round_s`` (each server's own round time).

Flower runs only when flwr is installed (the optional ``compare`` extra); without it its
benchmark is skipped with a message saying so, and fedgate's side still runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from benchkit import BenchServer, EventLoop
from federations import FederationSpec, figures_info, make_trainers, run_timed, warm_up
from flower_side import FLOWER_MISSING, FlowerRun, flower_installed

from fedgate.core.data import Dataset, load_dataset
from fedgate.core.models import build_model

CLIENTS = {False: 4, True: 2}
ROUNDS = {False: 8, True: 2}
CODEC = "raw"
RUNS = [("flower", "grpc"), ("fedgate", "grpc"), ("fedgate", "rest")]

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def loop() -> Iterator[EventLoop]:
    # One torch thread per training call, for both frameworks' clients.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    event_loop = EventLoop()
    try:
        yield event_loop
    finally:
        event_loop.close()
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", 0)


@pytest.fixture(scope="module")
def warmed(bench_server: BenchServer, loop: EventLoop, digits: Dataset) -> None:
    warm_up(bench_server, loop, digits, ("grpc", "rest"))


def run_flower(
    benchmark: Any, spec: FederationSpec, dataset: Dataset, workdir: Path
) -> dict[str, Any]:
    """Flower's federation with pytest-benchmark timing each round; the figures as a row."""
    names = list(build_model(spec.model, dataset.model_spec).state_dict())
    run = FlowerRun(spec, workdir)
    rounds = iter(range(1, spec.rounds + 1))
    try:
        run.start(make_trainers(dataset, spec), names)
        benchmark.pedantic(lambda: run.through_round(next(rounds)), rounds=spec.rounds)
    except BaseException:
        run.abort()
        raise
    results = run.finish()["rounds"]
    assert len(results) == spec.rounds
    traffic = [r["bytes_up"] + r["bytes_down"] for r in results]
    accuracy = [float(r["accuracy"]) for r in results]
    return {
        "bytes_per_round": statistics.fmean(traffic),
        "bytes_up_per_round": statistics.fmean(r["bytes_up"] for r in results),
        "bytes_down_per_round": statistics.fmean(r["bytes_down"] for r in results),
        "server_round_s": statistics.median(r["duration_s"] for r in results),
        "accuracy": accuracy[-1],
        "accuracy_per_round": accuracy,
    }


def run_fedgate(
    benchmark: Any, server: BenchServer, loop: EventLoop, spec: FederationSpec, dataset: Dataset
) -> dict[str, Any]:
    figures, results = run_timed(benchmark, server, loop, spec, dataset)
    assert len(results["rounds"]) == spec.rounds
    info = figures_info(figures)
    keep = ("bytes_per_round", "bytes_up_per_round", "bytes_down_per_round", "server_round_s")
    return {key: info[key] for key in (*keep, "accuracy", "accuracy_per_round")}


@pytest.mark.parametrize(("framework", "transport"), RUNS)
def test_flower_vs_fedgate(
    benchmark: Any,
    bench_server: BenchServer,
    loop: EventLoop,
    digits: Dataset,
    tmp_path: Path,
    framework: str,
    transport: str,
    quick: bool,
    warmed: None,
) -> None:
    spec = FederationSpec(transport, CODEC, CLIENTS[quick], ROUNDS[quick])
    benchmark.group = "flower vs fedgate"
    if framework == "flower":
        if not flower_installed():
            pytest.skip(FLOWER_MISSING)
        figures = run_flower(benchmark, spec, digits, tmp_path)
    else:
        figures = run_fedgate(benchmark, bench_server, loop, spec, digits)
    benchmark.extra_info.update(
        framework=framework,
        transport=transport,
        payload=CODEC if framework == "fedgate" else "flower ndarrays",
        clients=spec.clients,
        rounds=spec.rounds,
        timing="round_wall",
        **figures,
    )
