"""The fedgate server of the bench suites: a real Federation behind a real Gateway (gRPC and
REST on loopback), in a process of its own, hosting one federation after another.

Why not ``fedgate serve``: it holds the model built for its data set's inputs (1x8x8 for
digits), while the transport suite needs the resnets at 3x32x32 as the codec suite
measures them; and it serves one run per process, while the rounds suite runs dozens of
federations, each of which would pay ~3 s of interpreter and torch start-up. Everything
else is what ``fedgate serve`` does (`fedgate.core.factory`, `fedgate.gateway.Gateway`),
with one torch thread (``fedgate serve --threads 1``), as ``fedgate sim`` runs its server:
the suites run every client on this machine too.

Protocol (`benchkit.BenchServer` speaks it): one JSON command per stdin line, one reply
per command on stdout, prefixed with ``benchkit.REPLY_PREFIX``:

- ``{"op": "start", "model": M, "dataset": D | null, "run": {RunConfig fields},
  "store": "memory" | "sqlite"}`` starts a federation and its gateway on free ports and
  replies with the ports, admin token and run id. With a dataset, the model is built for
  its inputs and every round is evaluated on its test split (as ``fedgate serve --dataset
  D --model M``); without, the model is built at its ``MODEL_SPECS`` shape, seed 0, and
  there is no evaluation. ``store`` (default ``memory``) is where the run is written:
  the in-memory store, or a fresh SQLite file in a temporary directory of its own
  (`fedgate.store.open_store`, as ``fedgate serve --db`` opens one), closed and deleted
  on stop.
- ``{"op": "stop"}`` stops the gateway and the federation and replies with the results
  document of the run (`fedgate.run.results.results_document`), plus under ``"store"`` what
  the store holds of it and how long its writes took (`TimedStore`).

End of input stops whatever runs and exits.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from benchkit import MODEL_SPECS, REPLY_PREFIX

from fedgate.core.config import RunConfig
from fedgate.core.data import Dataset, load_dataset
from fedgate.core.factory import build_federation
from fedgate.core.federation import Federation
from fedgate.core.memory_store import InMemoryRunStore
from fedgate.core.messages import RunState
from fedgate.core.models import build_model
from fedgate.core.ports import (
    ClientEvent,
    ConfigChange,
    ModelInfo,
    ModelVersion,
    RoundCommit,
    RoundEvaluation,
    RunMeta,
    RunSnapshot,
    RunStore,
    RunSummary,
    StoredClient,
    StoredRun,
)
from fedgate.core.training import state_dict_copy
from fedgate.gateway.heap import settle_heap
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.run.results import results_document
from fedgate.store import SqlStore, open_store

STORES = ("memory", "sqlite")
Closer = SqlStore | tempfile.TemporaryDirectory[str]  # what a stopped federation leaves behind


class TimedStore:
    """A `RunStore` that times the writes it passes on (on the recorder's writer thread).

    The harness sees a store's cost only as the difference of two noisy round latencies;
    this is the time the writes themselves took, to read that difference against."""

    def __init__(self, inner: RunStore) -> None:
        self.inner = inner
        self.create_s = math.nan  # the run and its initial model, before any round
        self.commits_s: list[float] = []  # one per `commit_round`: a closed round attempt
        self.writes_s = 0.0  # every later write call, commits included

    def _timed(self, started: float) -> float:
        took = time.perf_counter() - started
        self.writes_s += took
        return took

    def create_run(self, meta: RunMeta, snapshot: RunSnapshot, model: ModelVersion) -> None:
        started = time.perf_counter()
        try:
            self.inner.create_run(meta, snapshot, model)
        finally:
            self.create_s = time.perf_counter() - started

    def commit_round(self, commit: RoundCommit) -> None:
        started = time.perf_counter()
        try:
            self.inner.commit_round(commit)
        finally:
            self.commits_s.append(self._timed(started))

    def record_evaluation(self, run_id: str, evaluation: RoundEvaluation) -> None:
        started = time.perf_counter()
        try:
            self.inner.record_evaluation(run_id, evaluation)
        finally:
            self._timed(started)

    def save_clients(
        self,
        run_id: str,
        clients: tuple[StoredClient, ...],
        events: tuple[ClientEvent, ...] = (),
    ) -> None:
        started = time.perf_counter()
        try:
            self.inner.save_clients(run_id, clients, events)
        finally:
            self._timed(started)

    def add_config_change(self, run_id: str, change: ConfigChange) -> None:
        started = time.perf_counter()
        try:
            self.inner.add_config_change(run_id, change)
        finally:
            self._timed(started)

    def set_run_state(self, run_id: str, state: RunState) -> None:
        started = time.perf_counter()
        try:
            self.inner.set_run_state(run_id, state)
        finally:
            self._timed(started)

    def unfinished_run(self) -> StoredRun | None:
        return self.inner.unfinished_run()

    def load_run(self, run_id: str) -> StoredRun:
        return self.inner.load_run(run_id)

    def list_runs(self) -> list[RunSummary]:
        return self.inner.list_runs()

    def client_events(self, run_id: str) -> list[ClientEvent]:
        return self.inner.client_events(run_id)

    def list_models(self, run_id: str) -> list[ModelInfo]:
        return self.inner.list_models(run_id)

    def load_model(self, run_id: str, version: int) -> ModelVersion:
        return self.inner.load_model(run_id, version)

    def close(self) -> None:
        self.inner.close()


@dataclass
class Running:
    gateway: Gateway
    config: dict[str, Any]
    started: float
    store: TimedStore
    closers: list[Closer] = field(default_factory=list)  # closed in order on stop


class Host:
    def __init__(self) -> None:
        self.running: Running | None = None
        self.datasets: dict[tuple[str, int], Dataset] = {}
        self.heap_settled = False

    async def start(self, command: dict[str, Any]) -> dict[str, Any]:
        if self.running is not None:
            await self.stop()
        run = RunConfig(**command["run"])
        kind = str(command.get("store", "memory"))
        store, closers = await open_run_store(kind)
        try:
            model, dataset = str(command["model"]), command.get("dataset")
            federation = self.federation(model, dataset, run, store)
            gateway = Gateway(federation, GatewaySettings(grpc_port=0, http_port=0))
            await gateway.start()
        except BaseException:
            await asyncio.to_thread(close_all, closers)
            raise
        if not self.heap_settled:  # as `fedgate serve` does; once, not each federation's
            settle_heap()
            self.heap_settled = True
        federation.start()
        config = {"model": model, "dataset": dataset, "store": kind, **command["run"]}
        self.running = Running(gateway, config, time.perf_counter(), store, closers)
        return {
            "grpc_port": gateway.grpc_port,
            "http_port": gateway.http_port,
            "addresses": gateway.addresses,
            "admin_token": gateway.settings.admin_token,
            "run_id": federation.run_id,
        }

    def federation(
        self, model: str, dataset: str | None, run: RunConfig, store: RunStore
    ) -> Federation:
        meta = RunMeta("", dataset or "", model)
        if dataset is None:
            initial = build_model(model, MODEL_SPECS[model], seed=0)
            return Federation(state_dict_copy(initial), run, store=store, meta=meta)
        key = (dataset, run.seed)
        if key not in self.datasets:  # loading digits costs a second; runs share it
            self.datasets[key] = load_dataset(dataset, run.seed)
        # evaluated as `fedgate serve` evaluates (its default)
        return build_federation(
            self.datasets[key], model, run, store=store, meta=meta, evaluate_in="process"
        )

    async def stop(self) -> dict[str, Any]:
        running, self.running = self.running, None
        if running is None:
            return {"results": None}
        federation = running.gateway.federation
        status = federation.status()
        try:
            await running.gateway.stop(grace_s=1.0)  # the recorder's writes end here
            duration = time.perf_counter() - running.started
            results = results_document(running.config, status, duration)
            results["store"] = await asyncio.to_thread(store_figures, running, status.run_id)
        finally:
            await asyncio.to_thread(close_all, running.closers)
        return {"results": results}


async def open_run_store(kind: str) -> tuple[TimedStore, list[Closer]]:
    """The store a federation writes to, and what to close (in order) when it stops."""
    if kind == "memory":
        return TimedStore(InMemoryRunStore()), []
    if kind != "sqlite":
        raise ValueError(f"unknown store {kind!r}; available: {', '.join(STORES)}")
    directory = tempfile.TemporaryDirectory(prefix="fedgate-bench-store-")
    try:
        url = f"sqlite:///{Path(directory.name) / 'fedgate.db'}"
        sql: SqlStore = await asyncio.to_thread(open_store, url)
    except BaseException:
        directory.cleanup()
        raise
    return TimedStore(sql.runs), [sql, directory]


def store_figures(running: Running, run_id: str) -> dict[str, Any]:
    """What the store holds of the run once it is written, and what its writes cost."""
    [summary] = [s for s in running.store.list_runs() if s.run_id == run_id]
    return {
        "kind": running.config["store"],
        "rounds_stored": summary.rounds_completed,
        "commits_s": running.store.commits_s,
        "create_s": running.store.create_s,
        "writes_s": running.store.writes_s,
    }


def close_all(closers: list[Closer]) -> None:
    for closer in closers:
        if isinstance(closer, SqlStore):
            closer.close()
        else:
            closer.cleanup()


async def serve(host: Host | None = None) -> None:
    """Commands from stdin, replies on stdout, for ``host`` (a `Host` unless given: the
    stall probe passes its own)."""
    host = host or Host()
    while line := await asyncio.to_thread(sys.stdin.readline):
        try:
            command = json.loads(line)
            op = command.get("op")
            if op == "start":
                reply = await host.start(command)
            elif op == "stop":
                reply = await host.stop()
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as error:
            reply = {"error": f"{type(error).__name__}: {error}"}
        print(REPLY_PREFIX + json.dumps(reply), flush=True)
    await host.stop()


if __name__ == "__main__":
    # one torch thread, as `fedgate sim`'s server (`fedgate serve --threads 1`); another
    # count for comparing (`cpu_per_round.py --server-threads`)
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    asyncio.run(serve())
