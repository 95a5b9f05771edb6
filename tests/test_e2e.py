"""End to end with real processes: `fedgate serve` and `fedgate client`s on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fedgate.cli import main
from fedgate.run.launch import ServerProcess, start_client, start_server, stop_process
from fedgate.run.sim_config import NETWORK_TRANSPORTS, SimConfig

DEADLINE_S = 15.0
ROUNDS = 6
HEARTBEAT_TIMEOUT_S = 25.0
HEARTBEAT_INTERVAL_S = 8.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    # The heartbeat timeout, and the silence (2.5 heartbeat intervals) after which a
    # selected client leaves its round, outlast the deadline: a client stopped or killed
    # mid-round is waited for until the deadline, and the round then closes with the rest.
    # (tests/core/test_uploads.py shows a silent participant leaving its round early.)
    options = (
        f"--rounds {ROUNDS} --min-clients 3 --deadline {DEADLINE_S} --local-epochs 3 "
        f"--heartbeat-interval {HEARTBEAT_INTERVAL_S} --heartbeat-timeout {HEARTBEAT_TIMEOUT_S} "
        "--exit-when-done"
    ).split()
    process = start_server(
        [*options, "--results", str(tmp_path / "results.json")],
        tmp_path,
    )
    yield process
    process.stop()


def wait_for(
    server: ServerProcess, predicate: Callable[[dict[str, Any]], bool], within_s: float = 90.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        status = server.status()
        if predicate(status):
            return status
        time.sleep(0.05)
    raise AssertionError(f"condition not reached; last status: {json.dumps(status)[:2000]}")


def client_state(status: dict[str, Any], name: str) -> str | None:
    return next((c["state"] for c in status["clients"] if c["name"] == name), None)


def round_past(number: int) -> Callable[[dict[str, Any]], bool]:
    return lambda status: int(status["round"]) > number


def stall_while_training(
    server: ServerProcess, client: subprocess.Popen[bytes], name: str, from_round: int = 2
) -> int:
    """SIGSTOP ``client`` while the server sees it training from round ``from_round`` on,
    and return the round it now holds open. A round trains in a fraction of a second, so
    the stop can land after the client's upload; the status read after it tells, and then
    the client is let go and stopped in a later round (two tries: from round 2, rounds 2
    and 3 leave the rest of the plan inside the run's 6)."""
    for _ in range(2):
        seen = wait_for(
            server,
            lambda s: (
                s["round"] >= from_round
                and s["state"] == "running"
                and client_state(s, name) == "training"
            ),
        )
        os.kill(client.pid, signal.SIGSTOP)
        now = server.status()
        if now["round"] == seen["round"] and client_state(now, name) == "training":
            return int(seen["round"])
        os.kill(client.pid, signal.SIGCONT)
        wait_for(server, round_past(int(seen["round"])))
    raise AssertionError(f"{name} could not be stopped before its upload in two rounds")


def test_clients_join_leave_and_die_mid_run(server: ServerProcess, tmp_path: Path) -> None:
    codecs = ["raw", "bf16-zstd", "msgpack", "json"]  # the transports alternate
    plan = [(NETWORK_TRANSPORTS[i % len(NETWORK_TRANSPORTS)], c) for i, c in enumerate(codecs)]
    clients: list[subprocess.Popen[bytes]] = []

    def launch(index: int) -> None:
        transport, codec = plan[index]
        args = [
            "--codec",
            codec,
            "--index",
            str(index),
            "--of",
            "4",
            "--name",
            f"client-{index}",
            "--threads",
            "1",
        ]
        clients.append(start_client(server, transport, args, tmp_path / f"client-{index}.log"))

    try:
        for index in range(3):
            launch(index)
        # a stalled client holds its round open (up to the deadline) while a fourth joins,
        # and asks for work once its trainer is built: from the next round it is counted
        stalled = stall_while_training(server, clients[2], "client-2")
        launch(3)
        joined = wait_for(server, lambda s: client_state(s, "client-3") is not None)
        assert joined["round"] == stalled, f"client-3 should have joined during round {stalled}"
        ready = wait_for(server, lambda s: client_state(s, "client-3") == "ready")
        assert ready["round"] == stalled, f"client-3 should be ready during round {stalled}"
        os.kill(clients[2].pid, signal.SIGCONT)
        # held while training (a poll alone can miss a fraction-of-a-second window), then
        # it dies mid-round without a word
        killed_in = stall_while_training(server, clients[1], "client-1", from_round=stalled + 2)
        clients[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        if killed_in < ROUNDS:
            wait_for(server, lambda s: s["round"] == killed_in + 1)
        else:  # the last round: its close ends the run, and the server exits
            server.process.wait(timeout=DEADLINE_S + 5)
        assert time.monotonic() - killed_at < DEADLINE_S + 5  # closed at its deadline
        assert server.process.wait(timeout=180) == 0
    finally:
        for process in clients:
            stop_process(process)
    results = json.loads((tmp_path / "results.json").read_text())
    ids = {c["name"]: c["client_id"] for c in results["clients"]}
    by_round = {r["round"]: set(r["participant_ids"]) for r in results["rounds"]}
    assert ids["client-3"] not in by_round[stalled] and ids["client-3"] in by_round[stalled + 1]
    assert ids["client-1"] in by_round[stalled + 1] and ids["client-1"] not in by_round[killed_in]
    assert by_round[killed_in] == {ids["client-0"], ids["client-2"], ids["client-3"]}
    states = {c["name"]: c["state"] for c in results["clients"]}
    assert states["client-1"] == "failed" and states["client-0"] == "left"
    assert len(results["rounds"]) == ROUNDS
    assert results["final_accuracy"] >= 0.93
    assert set(results["bytes_by_transport"]) == {transport for transport, _ in plan}


def test_sim_over_mixed_transports_and_codecs(tmp_path: Path) -> None:
    out = tmp_path / "mixed.json"
    code = main(
        [
            "sim",
            "--transport",
            "mixed",
            "--codec",
            "mixed",
            "--clients",
            "6",
            "--rounds",
            "15",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads(out.read_text())
    assert results["final_accuracy"] >= 0.93
    assert len(results["rounds"]) == 15
    assert set(results["bytes_by_transport"]) == set(NETWORK_TRANSPORTS[:6])  # in turn
    assert set(results["bytes_by_codec"]) == {
        SimConfig(codec="mixed").codec_for(i) for i in range(6)
    }
    for table in ("bytes_by_transport", "bytes_by_codec"):
        assert all(t["up"] > 0 and t["down"] > 0 for t in results[table].values())
    assert results["bytes_up"] == sum(t["up"] for t in results["bytes_by_transport"].values())
