"""A server killed mid-round comes back on the same store and finishes the run, with real
processes: `fedgate serve` (SIGKILL, then restarted on the same database and ports) and
four `fedgate client`s, two on gRPC and two on REST, that are never restarted.

The run must end as if nothing happened: every round number completed exactly once, no
update counted twice, and the final model bit-identical to a run that was not
interrupted (same seeds: each client's batch order depends only on its seed and the round
number, and FedAvg's float64 sum of four float32 updates is exact in any order).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fedgate.core.messages import RoundOutcome, RunState
from fedgate.core.ports import StoredRun
from fedgate.run.launch import ServerProcess, start_client, start_server, stop_process
from fedgate.store import open_store
from tests import test_client_resilience as resilience
from tests.pg import fresh_postgres_database

ROUNDS = 5
KILL_IN_ROUND = 3
ADMIN_TOKEN = "resume-test-admin-token"
SERVE = (
    f"--rounds {ROUNDS} --min-clients 4 --deadline 60 --local-epochs 3 "
    f"--heartbeat-interval 2 --heartbeat-timeout 30 --exit-when-done --admin-token {ADMIN_TOKEN}"
).split()
CLIENTS = (("grpc", 0), ("rest", 1), ("grpc", 2), ("rest", 3))
FINISH_WITHIN_S = 240.0


@dataclass(frozen=True)
class Finished:
    run: StoredRun
    client_exit_codes: list[int]
    restarts: int


def sqlite_url(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'runs.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    workdir = tmp_path_factory.mktemp("uninterrupted")
    return run_federation(workdir, sqlite_url(workdir), kill_in_round=None)


def test_a_server_killed_mid_round_resumes_and_finishes_the_run(
    db_url: str, tmp_path: Path, uninterrupted: Finished
) -> None:
    resumed = run_federation(tmp_path, db_url, kill_in_round=KILL_IN_ROUND)

    assert resumed.restarts == 1
    assert resumed.client_exit_codes == [0, 0, 0, 0]  # never restarted, left on STOP
    run = resumed.run
    completed = [r for r in run.history if r.outcome is RoundOutcome.COMPLETED]
    assert [r.round for r in completed] == list(range(1, ROUNDS + 1))
    # the attempt the crash cut short is in the history, and its round ran again
    cut = [r for r in run.history if r.outcome is RoundOutcome.ABANDONED]
    assert [r.round for r in cut] == [KILL_IN_ROUND]
    # the same four clients throughout: nobody had to join again
    assert len(run.clients) == 4
    assert Counter(c.rounds_completed for c in run.clients) == {ROUNDS: 4}
    assert all(len(r.participants) == 4 for r in completed)
    assert run.model.version == ROUNDS
    assert run.model.sha256 == uninterrupted.run.model.sha256
    assert [r.accuracy for r in completed] == [
        r.accuracy for r in uninterrupted.run.history if r.outcome is RoundOutcome.COMPLETED
    ]


def run_federation(workdir: Path, db_url: str, *, kill_in_round: int | None) -> Finished:
    serve_args = [*SERVE, "--db", db_url]
    server = start_server(serve_args, workdir)
    clients = [
        start_client(
            server,
            transport,
            f"--index {i} --of 4 --partition iid --seed 0 --name c{i}".split(),
            workdir / f"client{i}.log",
        )
        for transport, i in CLIENTS
    ]
    restarts = 0
    try:
        if kill_in_round is not None:
            server = kill_and_restart(server, serve_args, workdir, kill_in_round, db_url)
            restarts += 1
        codes = [wait_exit(client, workdir) for client in clients]
        server.process.wait(FINISH_WITHIN_S)
    finally:
        for client in clients:
            stop_process(client)
        server.stop()
    with_store = open_store(db_url)
    try:
        run = with_store.runs.load_run(server.run_id)
    finally:
        with_store.close()
    return Finished(run, codes, restarts)


def kill_and_restart(
    server: ServerProcess, serve_args: list[str], workdir: Path, in_round: int, db_url: str
) -> ServerProcess:
    """SIGKILL the server while round ``in_round`` is open, a client trains or uploads, and
    the store knows the round is open (the writer thread records the phase a moment after
    status shows it: a kill before that is a kill between rounds, as far as resuming can
    tell), then start it again on the same store and ports."""
    wait_for(
        server,
        lambda s: (
            s["round"] == in_round
            and s["state"] == "running"
            and any(c["state"] in ("training", "uploading") for c in s["clients"])
        ),
    )
    wait_until_stored_open(db_url, server.run_id, in_round)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    return start_server(
        serve_args,
        workdir,
        ports=(server.grpc_port, server.http_port),
        enrolment_key=server.enrolment_key,
    )


def wait_until_stored_open(db_url: str, run_id: str, in_round: int, within_s: float = 30.0) -> None:
    store = open_store(db_url)
    try:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            snapshot = store.runs.load_run(run_id).snapshot
            if (snapshot.state, snapshot.round_number) == (RunState.RUNNING, in_round):
                return
            time.sleep(0.005)
        raise AssertionError(f"the store never showed round {in_round} open: {snapshot}")
    finally:
        store.close()


def wait_exit(client: subprocess.Popen[bytes], workdir: Path) -> int:
    try:
        return client.wait(FINISH_WITHIN_S)
    except subprocess.TimeoutExpired:
        logs = {p.name: p.read_text()[-3000:] for p in workdir.glob("*.log")}
        raise AssertionError(f"a client did not finish: {json.dumps(logs, indent=1)}") from None


def wait_for(
    server: ServerProcess, predicate: Callable[[dict[str, Any]], bool], within_s: float = 120.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = server.status()
        if predicate(status):
            return status
        time.sleep(0.02)
    raise AssertionError(f"condition not reached; last status: {json.dumps(status)[:2000]}")


def test_a_client_stopped_across_a_server_restart_takes_part_again(tmp_path: Path) -> None:
    """SIGSTOP two clients (gRPC, REST) past their heartbeat timeout and two rounds, kill the
    server and start it again on its store, then SIGCONT them: they join again and take
    part in a later round; the two that never stopped go on under their old ids."""
    options = [
        *("--rounds", "1000", "--min-clients", "2", "--deadline", str(resilience.DEADLINE_S)),
        *("--heartbeat-interval", str(resilience.HEARTBEAT_INTERVAL_S)),
        *("--heartbeat-timeout", str(resilience.HEARTBEAT_TIMEOUT_S)),
        *("--db", sqlite_url(tmp_path), "--exit-when-done", "--admin-token", ADMIN_TOKEN),
    ]
    server = start_server(options, tmp_path)
    plan = {"client-0": "grpc", "client-1": "rest", **resilience.STALLED}
    clients: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for index, (name, transport) in enumerate(plan.items()):
            args = ["--index", str(index), "--of", "4", "--name", name, "--threads", "1"]
            clients[name] = start_client(server, transport, args, tmp_path / f"{name}.log")
        seen = resilience.wait_for(
            server,
            lambda s: s["round"] >= 3 and all(resilience.ids_of(s, n) for n in plan),
        )
        for name in resilience.STALLED:
            os.kill(clients[name].pid, signal.SIGSTOP)
        stopped_in = server.status()["round"]
        stalled_ids = [resilience.ids_of(seen, name)[0] for name in resilience.STALLED]
        failed = resilience.wait_for(
            server,
            lambda s: (
                s["round"] >= stopped_in + 2
                and all(resilience.state_of(s, i) == "failed" for i in stalled_ids)
            ),
        )
        # client transitions reach the store with the next round's commit (or within a
        # second): killed before it, the server would come back with them not failed
        resilience.wait_for(server, lambda s: s["rounds_completed"] > failed["rounds_completed"])
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        server = start_server(
            options,
            tmp_path,
            ports=(server.grpc_port, server.http_port),
            enrolment_key=server.enrolment_key,
        )
        resumed_in = server.status()["round"]
        for name in resilience.STALLED:
            os.kill(clients[name].pid, signal.SIGCONT)
        back = resilience.wait_for(
            server,
            lambda s: all(resilience.took_part_after(s, n, resumed_in) for n in plan),
        )
        assert all(p.poll() is None for p in clients.values()), "a client exited mid-run"
        resilience.end_run_after(server, int(back["rounds_completed"]) + 1)
        assert server.process.wait(timeout=60) == 0
        codes = {name: process.wait(timeout=30) for name, process in clients.items()}
    finally:
        for process in clients.values():
            stop_process(process)
        server.stop()
    assert codes == dict.fromkeys(plan, 0)
    for name in ("client-0", "client-1"):  # never stopped: the restart did not make them rejoin
        assert resilience.ids_of(back, name) == resilience.ids_of(seen, name)
    for name, first in zip(resilience.STALLED, stalled_ids, strict=True):
        ids = resilience.ids_of(back, name)  # joined again (more than once on a busy machine)
        assert ids[0] == first and len(ids) >= 2
