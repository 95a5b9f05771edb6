"""Start `fedgate serve` and `fedgate client` as real processes on loopback.

Used by `fedgate sim` over a network transport, `fedgate demo` and the end-to-end tests:
the server binds free ports, one per transport of the server registry, and reports them
in a ready file. The server asks for enrolment keys, as `fedgate serve` does by default:
once it is ready, the launcher creates one through the operator API and hands it to every
client process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol

from fedgate.core.messages import FederationStatus
from fedgate.errors import ConfigError, FedgateError, TransportError
from fedgate.run.client_options import KEY_ENV, ClientOptions
from fedgate.run.forkserver import ForkedProcess, ForkServer, Spawn
from fedgate.transport.rest.admin_client import AdminClient

READY_TIMEOUT_S = 120.0
LAUNCH_KEY_CLIENTS = 64  # clients at once under the launcher's key, unless told
LAUNCH_KEY_EXAMPLES = 1_000_000  # the weight limit of each (digits has ~1,800 examples)


class ChildProcess(Protocol):
    """What the launcher needs of a process it started: a `subprocess.Popen`, or a
    `ForkedProcess` (a child of the fork server)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | Any: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    admin_token: str
    run_id: str
    log_path: Path
    enrolment_key: str = field(default="", repr=False)  # what the clients join with
    addresses: dict[str, str] = field(default_factory=dict)  # by transport

    def address(self, transport: str) -> str:
        """Where a client of ``transport`` connects (a name of the server registry)."""
        try:
            return self.addresses[transport]
        except KeyError:
            raise ConfigError(
                f"the server serves no transport {transport!r}; "
                f"available: {', '.join(self.addresses)}"
            ) from None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def status(self) -> dict[str, Any]:
        """The operator status, as JSON (raises TransportError if the server is gone)."""
        with AdminClient(self.http_url, self.admin_token) as admin:
            return admin.status_document()

    def watch(self) -> Iterator[FederationStatus]:
        """The server's status stream until the run ends or the server exits."""
        with AdminClient(self.http_url, self.admin_token) as admin:
            yield from admin.watch_status()

    def stop(self, timeout_s: float = 15.0) -> int:
        return stop_process(self.process, timeout_s)


def fedgate_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedgate", *args]


def start_server(
    serve_args: list[str],
    workdir: Path,
    *,
    key_clients: int = LAUNCH_KEY_CLIENTS,
    ports: tuple[int, int] = (0, 0),
    enrolment_key: str = "",
) -> ServerProcess:
    """`fedgate serve` on loopback (``ports``: gRPC and HTTP, 0 for free ones); returns once
    both transports listen and an enrolment key for up to ``key_clients`` clients at once
    exists (``enrolment_key``: one the store already holds, as on a restart).

    Unless ``serve_args`` name a --db, runs are kept in ``workdir``'s own SQLite file and
    each launch starts a new one (a simulation is not resumed)."""
    ready = workdir / "server-ready.json"
    ready.unlink(missing_ok=True)  # a restart must not read the last process's ports
    log_path = workdir / "server.log"
    db_file = workdir / "fedgate.db"
    db = [] if "--db" in serve_args else ["--db", f"sqlite:///{db_file}", "--new-run"]
    command = fedgate_command(
        "serve",
        "--host",
        "127.0.0.1",
        "--grpc-port",
        str(ports[0]),
        "--http-port",
        str(ports[1]),
        "--ready-file",
        str(ready),
        *db,
        *serve_args,
    )
    process = _spawn(command, log_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise TransportError(f"fedgate serve did not start:\n{_tail(log_path)}")
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    server = ServerProcess(
        process,
        info["grpc_port"],
        info["http_port"],
        info["admin_token"],
        info["run_id"],
        log_path,
        addresses=served_addresses(info),
    )
    try:
        server.enrolment_key = enrolment_key or create_launch_key(server, key_clients)
    except FedgateError as error:
        stop_process(process)
        raise TransportError(f"cannot create an enrolment key: {error}") from None
    return server


def served_addresses(ready: dict[str, Any]) -> dict[str, str]:
    """Each transport's address, as the server's ready file names them."""
    addresses = ready.get("addresses")
    if not isinstance(addresses, dict) or not addresses:
        raise TransportError("the server's ready file names no addresses (is it a fedgate serve?)")
    return {str(name): str(address) for name, address in addresses.items()}


def create_launch_key(server: ServerProcess, max_clients: int) -> str:
    """A key for the launched clients, made as an operator would (the REST admin API)."""
    with AdminClient(server.http_url, server.admin_token) as admin:
        issued = admin.create_key(f"launch-{server.run_id}", max_clients, LAUNCH_KEY_EXAMPLES)
    return issued.secret


def start_client(
    server: ServerProcess, transport: str, client_args: list[str], log_path: Path
) -> subprocess.Popen[bytes]:
    """`python -m fedgate client`, as a client owner runs it."""
    command = fedgate_command(
        "client", "--server", server.address(transport), "--transport", transport, *client_args
    )
    # the key goes in the environment: a command line is readable by every user (ps)
    return _spawn(command, log_path, {KEY_ENV: server.enrolment_key})


def fork_clients(
    server: ServerProcess, forks: ForkServer, clients: Sequence[tuple[ClientOptions, Path]]
) -> list[ForkedProcess]:
    """A `fedgate client` per (options, log) forked by ``forks`` (all asked for at once:
    they start in a blink), on ``server``'s address for its transport, with its key."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return forks.spawn_all(
        [
            Spawn(
                replace(o, server=server.address(o.transport), key=server.enrolment_key), log, env
            )
            for o, log in clients
        ]
    )


def stop_process(process: ChildProcess, timeout_s: float = 15.0) -> int:
    """Ask a process to stop (SIGTERM), then insist (SIGKILL)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _spawn(
    command: list[str], log_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log: IO[bytes] = log_path.open("ab")  # a restarted server adds to its log
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    finally:
        log.close()  # the child holds its own descriptor


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
