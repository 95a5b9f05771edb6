"""Clients that never give up on their own, against real servers.

In process, over real loopback servers (both transports): a server that goes away and
comes back is waited for, one log line when it goes and one when it is back; a server
replaced by another run is rejoined, the task of the old one dropped; a give-up limit,
when set, ends the wait. With real processes (`fedgate serve`, `fedgate client`): a
client stopped (SIGSTOP) past its heartbeat timeout and two rounds rejoins when it is let
go (SIGCONT), takes part in a later round, and runs until the run ends, exit code 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from fedgate.cli import main
from fedgate.core.client import FederatedClient
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import TrainConfig
from fedgate.core.retry import Backoff
from fedgate.core.training import TrainResult
from fedgate.errors import TransportError
from fedgate.run.launch import ServerProcess, start_client, start_server, stop_process
from fedgate.transport.connect import connect
from fedgate.transport.servers import ServerSettings, get_server_adapter, port_of
from tests.conftest import tiny_model

TRANSPORTS = ["grpc", "rest"]
QUICK = Backoff(initial_s=0.05, max_s=0.3)
TOKEN = "test-admin-token"


class HeldTrainer:
    """Trains like `tests.core.test_client.StepTrainer`, but holds its first round until
    `release`, so that a test can change the server under a client that holds a task."""

    num_examples = 10

    def __init__(self) -> None:
        self.holding = threading.Event()
        self._release = threading.Event()
        self._held = False

    def release(self) -> None:
        self._release.set()

    def train(self, weights: Mapping[str, torch.Tensor], config: TrainConfig) -> TrainResult:
        if not self._held:
            self._held = True
            self.holding.set()
            if not self._release.wait(30):
                raise TimeoutError("the test never released the trainer")
        moved = {n: t + 0.1 if t.is_floating_point() else t.clone() for n, t in weights.items()}
        return TrainResult(moved, self.num_examples, loss=1.0, accuracy=0.5)


def run_config(rounds: int) -> RunConfig:
    return RunConfig(rounds=rounds, min_clients=1, round_deadline_s=30.0, seed=0)


async def serve(federation: Federation, transport: str, port: int = 0) -> tuple[Any, str]:
    adapter = get_server_adapter(transport)
    address = await adapter.start(federation, ServerSettings(admin_token=TOKEN, port=port))
    return adapter, address


async def held_in_training(trainer: HeldTrainer) -> None:
    assert await asyncio.to_thread(trainer.holding.wait, 10), "the client never trained"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_server_that_goes_away_is_waited_for_and_logged_once(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    federation = Federation(tiny_model(), run_config(rounds=3))
    adapter, address = await serve(federation, transport)
    trainer = HeldTrainer()
    client = FederatedClient(connect(transport, address), trainer, "a", "raw", backoff=QUICK)
    try:
        federation.start()
        with caplog.at_level(logging.DEBUG, logger="fedgate.client"):
            running = asyncio.create_task(client.run())
            await held_in_training(trainer)
            await adapter.stop(0.0)
            trainer.release()  # its upload now finds no server
            await asyncio.sleep(1.5)
            adapter, _ = await serve(federation, transport, port_of(address))
            report = await asyncio.wait_for(running, 30)
    finally:
        await adapter.stop(0.0)
        await client.transport.close()
        await federation.close()
    assert report.rounds == [1, 2, 3] and report.rejoins == 0 and report.dropped == []
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 2, said
    assert said[0].startswith("a: cannot reach the server (")
    assert said[1].startswith("a: over after ") and said[1].endswith("s: cannot reach the server")
    retries = [r for r in caplog.records if r.levelno == logging.DEBUG and "retry " in r.msg]
    assert len(retries) >= 3  # attempted again and again, logged once


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_server_restarted_on_a_new_run_is_rejoined_and_the_old_task_dropped(
    transport: str,
) -> None:
    """A restart that lost the run (no store): the id and the task the client holds mean
    nothing to the new server. It joins the new run and takes part, the old task gone."""
    old, new = Federation(tiny_model(), run_config(3)), Federation(tiny_model(), run_config(2))
    adapter, address = await serve(old, transport)
    trainer = HeldTrainer()
    client = FederatedClient(connect(transport, address), trainer, "a", "raw", backoff=QUICK)
    try:
        old.start()
        running = asyncio.create_task(client.run())
        await held_in_training(trainer)
        first_id = client.report.client_id
        await adapter.stop(0.0)
        await old.close()
        adapter, _ = await serve(new, transport, port_of(address))
        new.start()
        trainer.release()
        report = await asyncio.wait_for(running, 30)
    finally:
        await adapter.stop(0.0)
        await client.transport.close()
        await new.close()
    assert report.rejoins == 1 and report.client_id != first_id
    assert len(report.dropped) == 1 and first_id in report.dropped[0]
    assert report.rounds == [1, 2]  # the new run's, from tasks of its own
    assert report.ended == "the run is over: stopped by the server"
    assert [c.client_id for c in new.status().clients] == [report.client_id]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_give_up_limit_ends_the_wait_for_a_server_that_never_comes(
    transport: str,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}" if transport == "grpc" else f"http://127.0.0.1:{port}"
    backoff = Backoff(initial_s=0.05, max_s=0.2, give_up_after_s=1.0)
    trainer = HeldTrainer()
    client = FederatedClient(connect(transport, address), trainer, "a", "raw", backoff=backoff)
    started = time.monotonic()
    try:
        with pytest.raises(TransportError, match="a: giving up after 1s: cannot reach the server"):
            await asyncio.wait_for(client.run(), 10)
    finally:
        await client.transport.close()
    assert 1.0 <= time.monotonic() - started < 5.0


# ---- real processes ------------------------------------------------------------------------

HEARTBEAT_INTERVAL_S = 0.5
HEARTBEAT_TIMEOUT_S = 2.0
DEADLINE_S = 5.0
STALLED = {"client-2": "grpc", "client-3": "rest"}  # one stopped client per transport


def wait_for(
    server: ServerProcess, predicate: Callable[[dict[str, Any]], bool], within_s: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = server.status()
        if predicate(status):
            return status
        time.sleep(0.05)
    raise AssertionError(f"condition not reached; last status: {str(status)[:3000]}")


def ids_of(status: dict[str, Any], name: str) -> list[str]:
    return [c["client_id"] for c in status["clients"] if c["name"] == name]


def state_of(status: dict[str, Any], client_id: str) -> str:
    return next(str(c["state"]) for c in status["clients"] if c["client_id"] == client_id)


def took_part_after(status: dict[str, Any], name: str, round_number: int) -> bool:
    ids = set(ids_of(status, name))
    return any(
        r["round"] > round_number and ids & set(r["participants"])
        for r in status["history"]
        if r["outcome"] == "completed"
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    options = [
        *("--rounds", "1000", "--min-clients", "2", "--deadline", str(DEADLINE_S)),
        *("--heartbeat-interval", str(HEARTBEAT_INTERVAL_S)),
        *("--heartbeat-timeout", str(HEARTBEAT_TIMEOUT_S)),
        *("--db", f"sqlite:///{tmp_path / 'runs.db'}", "--exit-when-done"),
    ]
    process = start_server(options, tmp_path)
    yield process
    process.stop()


def test_a_client_stopped_past_its_timeout_rejoins_and_runs_to_the_end(
    server: ServerProcess, tmp_path: Path
) -> None:
    plan = {"client-0": "grpc", "client-1": "rest", **STALLED}
    clients: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for index, (name, transport) in enumerate(plan.items()):
            args = ["--index", str(index), "--of", "4", "--name", name, "--threads", "1"]
            clients[name] = start_client(server, transport, args, tmp_path / f"{name}.log")
        # stopped in the middle of the run, holding a task (or about to be handed one)
        seen = wait_for(
            server,
            lambda s: (
                s["round"] >= 3
                and s["state"] == "running"
                and all(ids_of(s, name) for name in plan)
            ),
        )
        for name in STALLED:
            os.kill(clients[name].pid, signal.SIGSTOP)
        stopped_in = server.status()["round"]
        first_ids = {name: ids_of(seen, name)[0] for name in STALLED}
        # past the heartbeat timeout (failed) and past two rounds
        wait_for(
            server,
            lambda s: (
                s["round"] >= stopped_in + 3
                and all(state_of(s, i) == "failed" for i in first_ids.values())
            ),
        )
        resumed_in = server.status()["round"]
        for name in STALLED:
            os.kill(clients[name].pid, signal.SIGCONT)
        back = wait_for(
            server, lambda s: all(took_part_after(s, name, resumed_in) for name in STALLED)
        )
        assert all(p.poll() is None for p in clients.values()), "a client exited mid-run"
        end_run_after(server, int(back["rounds_completed"]) + 2)
        assert server.process.wait(timeout=60) == 0
        codes = {name: process.wait(timeout=30) for name, process in clients.items()}
    finally:
        for process in clients.values():
            stop_process(process)
    assert codes == dict.fromkeys(plan, 0)
    for name, first_id in first_ids.items():
        now = ids_of(back, name)
        # it joined again, under a new id (again later if a busy machine starved it past
        # the 2 s heartbeat timeout once more)
        assert len(now) >= 2 and now[0] == first_id
        log = (tmp_path / f"{name}.log").read_text()
        assert "the server forgot this client" in log and "Traceback" not in log


def end_run_after(server: ServerProcess, rounds: int) -> None:
    """The operator cuts the run short: it finishes after ``rounds`` rounds."""
    response = httpx.patch(
        f"{server.http_url}/api/v1/run/config",
        json={"rounds": rounds},
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=10.0,
    )
    assert response.status_code == 200, response.text


def test_a_refused_key_ends_the_client_process_with_a_clear_message(
    server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    for transport in TRANSPORTS:
        args = ["client", "--server", server.address(transport), "--transport", transport]
        assert main([*args, "--key", "fgk_0123456789ab_wrong"]) == 2
        said = capsys.readouterr().err
        assert "fedgate: error: client-0: the server refused its enrolment key" in said
        assert "not retrying; check the enrolment key (--key, or $FEDGATE_ENROLMENT_KEY)" in said


def test_a_give_up_limit_ends_the_client_process_with_a_clear_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["client", "--server", f"127.0.0.1:{port}", "--transport", "rest"]
    assert main([*args, "--give-up-after", "0.5"]) == 2
    said = capsys.readouterr().err
    assert "fedgate: error: client-0: giving up after" in said
    assert "cannot reach the server" in said
