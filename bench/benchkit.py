"""What the bench suites share: the models, and the fedgate server process they talk to.

Importable from the suites and ``conftest.py`` because pytest puts ``bench/`` on
``sys.path`` (it has no ``__init__.py``), and from ``bench_server.py``, which runs from here.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Coroutine, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import torch

from fedgate.core.config import RunConfig
from fedgate.core.evaluation_process import without_grpc_fork_handlers
from fedgate.core.models import ModelSpec

# Input shapes the models are benchmarked at: the CNN on 8x8 digits, the resnets as they
# run on CIFAR-sized images.
MODEL_SPECS: dict[str, ModelSpec] = {
    "cnn": ModelSpec(),
    "resnet18": ModelSpec(in_channels=3, image_size=32),
    "resnet50": ModelSpec(in_channels=3, image_size=32),
}
MB = 1_000_000
SERVER_SCRIPT = Path(__file__).with_name("bench_server.py")
REPLY_PREFIX = "BENCH-REPLY "  # marks protocol lines among anything else the server prints
T = TypeVar("T")


def fp32_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes of a state dict as its tensors hold them (numel x element size)."""
    return sum(t.numel() * t.element_size() for t in state.values())


def rate_mb_s(size: float, seconds: float | None) -> float | None:
    """MB/s with MB = 10^6 bytes; None when there is no positive time to divide by."""
    return size / seconds / MB if seconds else None


class EventLoop:
    """An event loop the benchmark drives one call at a time; its tasks live across calls.

    Not `asyncio.Runner`: on Python 3.11 its ``run`` installs a SIGINT handler holding the
    task and, restoring the old one, formats that handler's repr, the task's result
    included: seconds of CPU for a result that holds a model, inside the timed call.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(call)

    def close(self) -> None:
        self.loop.run_until_complete(_cancel_others())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


async def _cancel_others() -> None:
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(frozen=True)
class Hosted:
    """A federation the bench server hosts: where its transports listen."""

    grpc_port: int
    http_port: int
    admin_token: str
    run_id: str
    addresses: dict[str, str]  # by transport (the gateway's)

    def address(self, transport: str) -> str:
        return self.addresses[transport]


def server_environment() -> dict[str, str]:
    """The bench server's environment, as `fedgate serve` runs: gRPC's fork handlers off,
    for the evaluation worker it forks (`fedgate.core.evaluation_process`)."""
    environ = dict(os.environ)
    without_grpc_fork_handlers(environ)
    return environ


class BenchServerError(RuntimeError):
    pass


class BenchServer:
    """``bench_server.py`` in a process of its own, hosting one federation at a time.

    Commands go to its stdin and replies come back on its stdout, one JSON line each; its
    log (stderr) goes to ``log_path`` and is quoted when something fails.
    """

    def __init__(
        self, log_path: Path, threads: int | None = 1, script: Path = SERVER_SCRIPT
    ) -> None:
        """``threads``: the server's torch threads (None: the script's own choice)."""
        self.log_path = log_path
        argv = [sys.executable, str(script), *([] if threads is None else [str(threads)])]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=server_environment(),
            )

    def start(
        self, model: str, run: RunConfig, dataset: str | None = None, store: str = "memory"
    ) -> Hosted:
        """Host a fresh federation: ``model`` for ``dataset``'s inputs (evaluated on its test
        split), or at its bench input shape without evaluation when ``dataset`` is None;
        writing its run to ``store`` (``memory``, or ``sqlite``: a fresh SQLite file)."""
        command = {"op": "start", "model": model, "dataset": dataset, "run": asdict(run)}
        reply = self._call({**command, "store": store})
        return Hosted(
            reply["grpc_port"],
            reply["http_port"],
            reply["admin_token"],
            reply["run_id"],
            reply["addresses"],
        )

    def stop(self) -> dict[str, Any]:
        """End the hosted federation; returns its results document (`fedgate.run.results`),
        with ``"store"``: the rounds its store holds and the time its writes took."""
        results: dict[str, Any] = self._call({"op": "stop"})["results"]
        return results

    def close(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()  # end of commands: the server exits
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _call(self, command: dict[str, Any]) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(json.dumps(command) + "\n")
            stdin.flush()
        except BrokenPipeError:
            raise BenchServerError(f"the bench server has exited:\n{self.log_tail()}") from None
        reply = _read_reply(stdout)
        if reply is None:
            raise BenchServerError(f"the bench server has exited:\n{self.log_tail()}")
        if "error" in reply:
            raise BenchServerError(f"bench server: {reply['error']}\n{self.log_tail()}")
        return reply

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _read_reply(stdout: IO[str]) -> dict[str, Any] | None:
    for line in stdout:
        if line.startswith(REPLY_PREFIX):
            reply: dict[str, Any] = json.loads(line.removeprefix(REPLY_PREFIX))
            return reply
    return None
