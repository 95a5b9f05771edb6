"""Start `fedgate serve` and `fedgate client` as real processes on loopback.

Used by `fedgate sim --transport grpc|rest|mixed`, `fedgate demo` and the end-to-end
tests: the server binds free ports and reports them in a ready file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from fedgate.core.messages import FederationStatus
from fedgate.errors import TransportError
from fedgate.transport.rest import schemas

READY_TIMEOUT_S = 120.0


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    admin_token: str
    run_id: str
    log_path: Path

    def address(self, transport: str) -> str:
        port = self.grpc_port if transport == "grpc" else self.http_port
        return f"127.0.0.1:{port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def status(self) -> dict[str, Any]:
        """The operator status, as JSON (raises TransportError if the server is gone)."""
        try:
            response = httpx.get(
                f"{self.http_url}/api/v1/status",
                timeout=10.0,
                headers={"Authorization": f"Bearer {self.admin_token}"},
            )
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise TransportError(f"cannot read the server's status: {error}") from None
        body: dict[str, Any] = response.json()
        return body

    def watch(self) -> Iterator[FederationStatus]:
        """The server's status stream (server-sent events) until the run ends or it exits."""
        url = f"{self.http_url}/api/v1/status/watch"
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        try:
            timeout = httpx.Timeout(10.0, read=None)  # the stream is quiet between changes
            with httpx.stream("GET", url, headers=headers, timeout=timeout) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        body = schemas.StatusJson.model_validate_json(line.removeprefix("data: "))
                        yield schemas.status_from_json(body)
        except httpx.HTTPError:
            return  # the server went away; its exit status tells the rest

    def stop(self, timeout_s: float = 15.0) -> int:
        return stop_process(self.process, timeout_s)


def fedgate_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedgate", *args]


def start_server(serve_args: list[str], workdir: Path) -> ServerProcess:
    """`fedgate serve` on free loopback ports; returns once both transports listen."""
    ready = workdir / "server-ready.json"
    log_path = workdir / "server.log"
    command = fedgate_command(
        "serve",
        "--host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--ready-file",
        str(ready),
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
    return ServerProcess(
        process,
        info["grpc_port"],
        info["http_port"],
        info["admin_token"],
        info["run_id"],
        log_path,
    )


def start_client(
    server: ServerProcess, transport: str, client_args: list[str], log_path: Path
) -> subprocess.Popen[bytes]:
    command = fedgate_command(
        "client", "--server", server.address(transport), "--transport", transport, *client_args
    )
    return _spawn(command, log_path)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int:
    """Ask a process to stop (SIGTERM), then insist (SIGKILL)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _spawn(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log: IO[bytes] = log_path.open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    finally:
        log.close()  # the child holds its own descriptor


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
