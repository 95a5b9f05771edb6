"""The fork server's clients are `fedgate client` processes (fedgate/run/forkserver.py).

Real processes throughout: a real `fedgate serve` on loopback, the fork server, and its
forked clients over gRPC and REST: they run a federation to its end (exit 0), leave
cleanly on SIGTERM, keep their output in their own log, exit 2 when the server refuses
them, hold the enrolment key in no command line, and the fork server, with its children,
ends with whoever started it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedgate.cli import build_parser
from fedgate.run.client_options import DELTAS, ClientOptions
from fedgate.run.forkserver import ForkedProcess, ForkServer, Spawn
from fedgate.run.launch import ServerProcess, fork_clients, start_server, stop_process
from fedgate.run.sim_config import EXEC, FORK, NETWORK_TRANSPORTS, SimConfig
from fedgate.run.simulation import client_arguments, client_options, run_simulation

pytestmark = pytest.mark.timeout(300)


def options(transport: str, server: str = "", key: str = "") -> ClientOptions:
    return ClientOptions(server, transport, "raw", index=0, of=1, threads=1, key=key)


def nowhere(transport: str) -> ClientOptions:
    """A client of a port nothing listens on: it retries until it is stopped."""
    return options(transport, f"127.0.0.1:{free_port()}")


def fork_one(server: ServerProcess, forks: ForkServer, transport: str, log: Path) -> ForkedProcess:
    return fork_clients(server, forks, [(options(transport), log)])[0]


@pytest.fixture
def forks(tmp_path: Path) -> Iterator[ForkServer]:
    with ForkServer(tmp_path / "forkserver.log") as server:
        yield server


def serve(tmp_path: Path, rounds: int) -> ServerProcess:
    args = ["--rounds", str(rounds), "--min-clients", "1", "--exit-when-done"]
    return start_server(args, tmp_path, key_clients=1)


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def free_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("transport", NETWORK_TRANSPORTS)
def test_a_forked_client_runs_a_federation_to_its_end(
    transport: str, tmp_path: Path, forks: ForkServer
) -> None:
    server = serve(tmp_path, rounds=2)
    try:
        log = tmp_path / "client.log"
        client = fork_one(server, forks, transport, log)
        pids = (client.pid, forks.process.pid, os.getpid(), server.process.pid)
        seen = {pid: command_line(pid) for pid in pids}
        assert client.wait(120) == 0, log.read_text()[-3000:]
        assert client.poll() == client.returncode == 0
        assert server.process.wait(60) == 0
    finally:
        server.stop()
    assert "2 rounds sent, 0 tasks dropped, 0 rejoins; the run is over" in log.read_text()
    assert all(server.enrolment_key not in line for line in seen.values())
    assert "fedgate.run.forkserver" in seen[client.pid]  # a fork, not an exec


@pytest.mark.parametrize("transport", NETWORK_TRANSPORTS)
def test_sigterm_makes_a_forked_client_leave_cleanly(
    transport: str, tmp_path: Path, forks: ForkServer
) -> None:
    server = serve(tmp_path, rounds=1000)
    try:
        log = tmp_path / "client.log"
        client = fork_one(server, forks, transport, log)
        deadline = time.monotonic() + 120
        while not server.status()["history"]:  # a round done: it is deep in its run
            assert client.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        client.terminate()
        assert client.wait(30) == 0
        said = log.read_text()
        assert "rounds sent, 0 tasks dropped, 0 rejoins; interrupted" in said
        states = {c["name"]: c["state"] for c in server.status()["clients"]}
        assert states == {"client-0": "left"}
    finally:
        server.stop()
    client.send_signal(signal.SIGTERM)  # ended: a no-op, as for a Popen


def test_a_refused_forked_client_exits_2_with_the_reason_in_its_log(
    tmp_path: Path, forks: ForkServer
) -> None:
    server = serve(tmp_path, rounds=1)
    try:
        log = tmp_path / "client.log"
        wrong = options("grpc", server.address("grpc"), key="fgk_0123456789ab_wrong")
        (client,) = forks.spawn_all([Spawn(wrong, log)])
        assert client.wait(60) == 2
    finally:
        server.stop()
    assert "fedgate: error: client-0: the server refused its enrolment key" in log.read_text()


def test_bad_options_exit_2_with_the_reason(tmp_path: Path, forks: ForkServer) -> None:
    log = tmp_path / "client.log"
    assert forks.spawn(options("carrier-pigeon", "127.0.0.1:1"), log).wait(60) == 2
    assert "fedgate: error: unknown transport 'carrier-pigeon'" in log.read_text()


def test_closing_the_fork_server_stops_its_children(tmp_path: Path) -> None:
    forks = ForkServer(tmp_path / "forkserver.log")
    logs = [tmp_path / f"client-{i}.log" for i in range(2)]
    children = [forks.spawn(nowhere("rest"), log) for log in logs]
    deadline = time.monotonic() + 60
    while not all("retrying" in log.read_text() for log in logs):  # each in its run
        assert time.monotonic() < deadline and [c.poll() for c in children] == [None, None]
        time.sleep(0.1)
    assert forks.close() == 0
    # SIGTERM: each left as a client leaves (exit 0), and was reaped
    assert [child.wait(5) for child in children] == [0, 0]
    assert not any(alive(child.pid) for child in children)


LAUNCHER = """
import sys, time
from pathlib import Path
from fedgate.run.client_options import ClientOptions
from fedgate.run.forkserver import ForkServer
forks = ForkServer(Path(sys.argv[1]) / "forkserver.log")
options = ClientOptions(sys.argv[2], "grpc", "raw", index=0, of=1)
child = forks.spawn(options, Path(sys.argv[1]) / "c.log")
print(forks.process.pid, child.pid, flush=True)
time.sleep(600)
"""


def test_the_fork_server_and_its_children_end_when_the_launcher_dies(tmp_path: Path) -> None:
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(LAUNCHER),
            str(tmp_path),
            f"127.0.0.1:{free_port()}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert launcher.stdout is not None
        pids = [int(pid) for pid in launcher.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
    finally:
        launcher.kill()  # no chance to close anything: the fork server sees end-of-file
        launcher.wait()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, [command_line(pid) for pid in pids if alive(pid)]
        time.sleep(0.1)


def child_pids(name: str) -> list[int]:
    """This process's children whose command line holds ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[1])
            if parent == os.getpid() and name in command_line(int(entry.name)):
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_a_simulation_forks_its_clients_and_leaves_no_process_behind() -> None:
    seen: list[list[int]] = []
    config = SimConfig(clients=2, rounds=2, transport="mixed", codec="raw", client_start="fork")
    # by module: the codec offload's multiprocessing forkserver (fedgate/core/offload.py),
    # started by an earlier test in this process, is a "forkserver" child too
    server = "-m fedgate.run.forkserver_main"
    document = run_simulation(config, on_server=lambda _: seen.append(child_pids(server)))
    assert len(document["rounds"]) == 2
    assert set(document["bytes_by_transport"]) == set(NETWORK_TRANSPORTS)
    assert len(seen[0]) == 1  # one fork server, started with the server
    assert child_pids("-m fedgate") == [] and not alive(seen[0][0])


def test_stop_process_handles_a_forked_client_as_a_popen(tmp_path: Path, forks: ForkServer) -> None:
    client = forks.spawn(nowhere("grpc"), tmp_path / "c.log")
    with pytest.raises(subprocess.TimeoutExpired):
        client.wait(0.2)
    os.kill(client.pid, signal.SIGSTOP)  # it cannot leave: stop_process must insist
    assert stop_process(client, timeout_s=1.0) == -signal.SIGKILL


def test_a_forked_client_runs_on_what_its_command_line_would_say() -> None:
    config = SimConfig(clients=3, transport="mixed", codec="raw,int8-zstd", data_dir="/data")
    for index in range(config.clients):
        transport = config.transport_for(index)
        argv = ["client", "--server", "h:1", "--transport", transport]
        parsed = vars(build_parser().parse_args([*argv, *client_arguments(config, index)]))
        parsed["deltas"] = DELTAS[parsed["deltas"]]
        parsed["data_dir"] = Path(parsed["data_dir"])
        forked = dataclasses.asdict(client_options(config, index))
        shared = set(forked) - {"server", "key", "tls", "give_up_after_s"}
        assert {name: forked[name] for name in shared} == {name: parsed[name] for name in shared}


def test_forked_and_execd_clients_make_the_same_run() -> None:
    runs = [
        run_simulation(SimConfig(clients=2, rounds=2, transport="grpc", client_start=start))
        for start in (FORK, EXEC)
    ]
    forked, execd = (
        {
            **{key: run[key] for key in ("final_accuracy", "bytes_up", "bytes_down")},
            "accuracy": [r["accuracy"] for r in run["rounds"]],
        }
        for run in runs
    )
    assert forked == execd
