"""A pre-loaded fork server for `fedgate client` processes (issue 12: clients that start
in a blink).

A `fedgate client` spends about two seconds of CPU importing torch and fedgate before it
sends its first request; ten of them on two cores delay a simulation's first round by
ten. The fork server (``python -m fedgate.run.forkserver_main``) pays that once: it
imports the client side (torch, numpy, the codecs, the core's client, trainers and data,
both transports' client modules; no server code) and runs one training step (a process's
first imports ~900 more modules), then forks one child per request. Each
child is a real OS process that runs what `fedgate client` runs
(`fedgate.run.client_runner.run_client` on the request's `ClientOptions`, the enrolment
key among them: it never appears on a command line), with the request's environment,
working directory and log file, and `fedgate client`'s log format, closing line, exit
codes and SIGINT/SIGTERM behaviour.

Forking is safe because the server starts no thread of its own: it opens no gRPC channel
and runs its warm-up on one torch thread, so neither library's thread pools exist yet
(numpy's OpenBLAS pool, started at import, is shut down around fork by OpenBLAS). Each
child sets its own torch threads (``--threads``) and starts its event loop, channels and
pools after the fork, as a fresh process would.

The launcher's side is `ForkServer`: it starts the server process, asks it for children
and hands back a `ForkedProcess` for each, which polls, waits, signals and terminates
like a `subprocess.Popen` (the children are the fork server's, which reports their exit
statuses). The server ends when the launcher closes it, or dies: its control socket then
reads end-of-file and it stops its children (SIGTERM, then SIGKILL) before exiting.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any

from fedgate.errors import TransportError
from fedgate.run.client_options import ClientOptions
from fedgate.transport.tls import ClientTls

START_TIMEOUT_S = 120.0  # the server's imports, on a loaded machine
STOP_GRACE_S = 10.0  # children's time to leave after SIGTERM when the server ends
READ_CHUNK = 65536


class ControlChannel:
    """Newline-delimited JSON messages over a stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""
        self.closed = False  # the peer has gone

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self, timeout_s: float | None) -> list[dict[str, Any]]:
        """The messages that arrive within ``timeout_s`` (those already here at once)."""
        if self.closed:
            time.sleep(timeout_s or 0.0)  # nothing more will come: a poller must not spin
        else:
            ready, _, _ = select.select([self.sock], [], [], timeout_s)
            if ready:
                chunk = self.sock.recv(READ_CHUNK)
                self.closed = not chunk
                self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [json.loads(line) for line in lines if line]


# ---- the launcher's side ---------------------------------------------------------------


@dataclass(frozen=True)
class Spawn:
    """A child to fork: a client on ``options`` (its enrolment key among them: it travels
    through the fork server's socket, never a command line), its log, its whole
    environment (None: the launcher's), in the launcher's working directory."""

    options: ClientOptions
    log_path: Path
    env: dict[str, str] | None = None


def options_json(options: ClientOptions) -> dict[str, Any]:
    values = {f.name: getattr(options, f.name) for f in fields(options)}
    tls = options.tls
    values["tls"] = (
        None if tls is None else {f.name: _text(getattr(tls, f.name)) for f in fields(tls)}
    )
    values["data_dir"] = _text(options.data_dir)
    return values


def options_from_json(values: dict[str, Any]) -> ClientOptions:
    tls = values["tls"]
    return ClientOptions(
        **{
            **values,
            "tls": None if tls is None else ClientTls(**{k: _path(v) for k, v in tls.items()}),
            "data_dir": _path(values["data_dir"]),
        }
    )


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text)


class ForkedProcess:
    """A child of the fork server, handled as a `subprocess.Popen` is."""

    def __init__(self, forks: ForkServer, pid: int, args: list[str]) -> None:
        self.forks, self.pid, self.args = forks, pid, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.forks.pump(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = 0.5 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            self.forks.pump(min(left, 0.5))
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        # Popen's rule: no signal to a process known to have ended (its pid may be reused)
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """``python -m fedgate.run.forkserver_main`` in a process of its own; `spawn` forks a child.

    Starting returns at once: the server imports while the caller does other work (starts
    `fedgate serve`); the first `spawn` waits until it is ready.
    """

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        ours, theirs = socket.socketpair()
        self.channel = ControlChannel(ours)
        self.children: dict[int, ForkedProcess] = {}
        self._asked: list[list[str]] = []  # the arguments of the spawns not answered yet
        self._spawned: list[ForkedProcess] = []  # forked, not yet handed out
        self.ready = False  # it has imported the client side
        self._failure = ""  # why the latest spawn could not fork
        with log_path.open("ab") as log:
            command = [
                sys.executable,
                "-m",
                "fedgate.run.forkserver_main",
                "--fd",
                str(theirs.fileno()),
            ]
            self.process = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed module
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(theirs.fileno(),),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        theirs.close()

    def spawn(
        self, options: ClientOptions, log_path: Path, env: dict[str, str] | None = None
    ) -> ForkedProcess:
        """A client on ``options``, its output in ``log_path`` and ``env`` as its whole
        environment (default: this process's)."""
        return self.spawn_all([Spawn(options, log_path, env)])[0]

    def spawn_all(self, spawns: Sequence[Spawn]) -> list[ForkedProcess]:
        """A child per spawn, asked for all at once (no round trip waits for another)."""
        for spawn in spawns:
            env = dict(os.environ if spawn.env is None else spawn.env)
            log, cwd = str(spawn.log_path.absolute()), os.getcwd()
            options = options_json(spawn.options)
            self._send({"op": "spawn", "options": options, "log": log, "env": env, "cwd": cwd})
            self._asked.append(["fedgate", "client", spawn.options.name or spawn.log_path.name])
        self._await(lambda: len(self._spawned) >= len(spawns), "did not fork")
        children, self._spawned = self._spawned[: len(spawns)], self._spawned[len(spawns) :]
        return children

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Return once the server has imported what its children run."""
        self._await(lambda: self.ready, "is not ready", timeout_s)

    def _await(
        self, done: Callable[[], bool], failure: str, timeout_s: float = START_TIMEOUT_S
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if self._failure:
                failure, self._failure = self._failure, ""
                raise TransportError(failure)
            if self.channel.closed or self.process.poll() is not None:
                raise TransportError(f"the fork server has exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TransportError(f"the fork server {failure}:\n{self.log_tail()}")
            self.pump(0.5)

    def pump(self, timeout_s: float) -> None:
        """Read what the server has said: spawned children, exit statuses."""
        for message in self.channel.receive(timeout_s):
            event = message.get("event")
            if event == "ready":
                self.ready = True
            elif event == "spawned":  # registered at once: its exit may be in this batch
                spawned = ForkedProcess(self, int(message["pid"]), self._asked.pop(0))
                self.children[spawned.pid] = spawned
                self._spawned.append(spawned)
            elif event == "exited" and (child := self.children.get(message["pid"])):
                child.returncode = int(message["code"])
            elif event == "failed":  # raised by the spawn that waits for it, not here
                self._asked.pop(0)
                self._failure = f"the fork server cannot fork: {message['error']}"
        if self.channel.closed:
            self._orphaned()

    def close(self, timeout_s: float = STOP_GRACE_S + 5.0) -> int:
        """End the server; it stops any child still running first."""
        with contextlib.suppress(OSError):  # it has gone already
            self.channel.sock.shutdown(socket.SHUT_WR)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.pump(0.0)
        self.channel.sock.close()
        return self.process.returncode

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self.channel.send(message)
        except OSError:
            raise TransportError(f"the fork server has exited:\n{self.log_tail()}") from None

    def _orphaned(self) -> None:
        """The server has gone: its children, if any lived on, are no one's to report.
        One that has ended (or is a zombie nobody reaps) counts as killed."""
        for child in self.children.values():
            if child.returncode is None and not _alive(child.pid):
                child.returncode = -signal.SIGKILL


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def flush(*streams: IO[str]) -> None:
    for stream in streams:
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
