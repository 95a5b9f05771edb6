"""The fork server's process: ``python -m fedgate.run.forkserver_main`` (started by
`fedgate.run.forkserver.ForkServer`, which describes it).

It imports and warms up the client side, then, single-threaded, forks a child per
request and reports each child's exit status; a child becomes a `fedgate client` process
(its signals, descriptors, environment, directory) and runs `run_client` on its options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from types import FrameType
from typing import Any, NoReturn

from fedgate.errors import FedgateError
from fedgate.run.client_options import ClientOptions
from fedgate.run.forkserver import STOP_GRACE_S, ControlChannel, flush, options_from_json

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as `fedgate client` logs


def preload() -> int:
    """Import what a client process runs, and no more (no server, web or plotting code),
    then warm it up; returns torch's default number of threads, for the children."""
    import numpy  # noqa: F401, PLC0415 - these imports are this function's point
    import torch  # noqa: PLC0415

    import fedgate.codecs  # noqa: PLC0415
    import fedgate.run.client_runner  # noqa: PLC0415
    import fedgate.run.client_side  # noqa: PLC0415 - core.client, trainers, data
    import fedgate.transport.grpc.client  # noqa: PLC0415
    import fedgate.transport.rest.client  # noqa: F401, PLC0415

    threads = torch.get_num_threads()  # reads the setting; starts no pool
    torch.set_num_threads(1)  # the warm-up runs on this thread alone: no pool to fork
    warm_up()
    return threads


def warm_up() -> None:
    """One training step and one evaluation of a throwaway CNN: what a process pays on its
    first step and first evaluation (autograd's engine, the kernels' first dispatch) is
    paid here once, not by every client in its first round."""
    import torch  # noqa: PLC0415

    from fedgate.core.messages import TrainConfig  # noqa: PLC0415
    from fedgate.core.models import build_model  # noqa: PLC0415
    from fedgate.core.training import LocalTrainer, evaluate  # noqa: PLC0415

    model = build_model("cnn", seed=0)
    x, y = torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    weights = {name: t.detach().clone() for name, t in model.state_dict().items()}
    LocalTrainer(model, x, y).train(weights, TrainConfig(0.01, 1, 4))
    evaluate(model, weights, x, y)


def serve(control_fd: int) -> int:
    """Fork a child per request until the control socket closes; then stop the children."""
    channel = ControlChannel(socket.socket(fileno=control_fd))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the clients' and the launcher's
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)  # a child's exit wakes the select below
    signal.signal(signal.SIGCHLD, _ignore)
    signal.signal(signal.SIGTERM, _leave)
    threads = preload()
    channel.send({"event": "ready"})
    children: set[int] = set()
    try:
        while not channel.closed:
            ready, _, _ = select.select([channel.sock.fileno(), wake_r], [], [])
            if wake_r in ready:
                os.read(wake_r, 512)
            _reap(channel, children)
            if channel.sock.fileno() in ready:
                for request in channel.receive(0.0):
                    request["threads"] = threads
                    if (pid := _fork(request, channel, (wake_r, wake_w))) is not None:
                        children.add(pid)
    except SystemExit:
        pass  # SIGTERM: stop the children as on end-of-file
    finally:
        _stop_children(channel, children)
    return 0


def _ignore(signum: int, frame: FrameType | None) -> None:
    """SIGCHLD's handler: its only work is the wakeup byte Python writes for it."""


def _leave(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(0)


def _fork(request: dict[str, Any], channel: ControlChannel, pipe: tuple[int, int]) -> int | None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child writes the server's buffered output again
    try:
        pid = os.fork()
    except OSError as error:
        _tell(channel, {"event": "failed", "error": str(error)})
        return None
    if pid == 0:
        _child(request, (channel.sock.fileno(), *pipe))
    _tell(channel, {"event": "spawned", "pid": pid})
    return pid


def _reap(channel: ControlChannel, children: set[int]) -> None:
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 255 << 8
        if done:
            children.discard(pid)
            _tell(channel, {"event": "exited", "pid": pid, "code": _code(status)})


def _code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


def _tell(channel: ControlChannel, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the launcher has gone; the children are still ours
        channel.send(message)


def _stop_children(channel: ControlChannel, children: set[int]) -> None:
    for pid in children:
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while children and time.monotonic() < deadline:
        _reap(channel, children)
        time.sleep(0.05)
    for pid in children:
        _kill(pid, signal.SIGKILL)
    while children:
        _reap(channel, children)
        time.sleep(0.01)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _child(request: dict[str, Any], inherited: tuple[int, ...]) -> NoReturn:
    """In the forked child: become a `fedgate client` process, run it, exit with its code."""
    code = 1
    try:
        _become_client(request, inherited)
        code = _run_client(options_from_json(request["options"]))
    except BaseException:
        traceback.print_exc()
    finally:
        flush(sys.stdout, sys.stderr)
        os._exit(code)


def _become_client(request: dict[str, Any], inherited: tuple[int, ...]) -> None:
    """The fresh process's state: its signals, descriptors, environment and directory."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for fd in inherited:
        os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    # as PYTHONUNBUFFERED: the log shows what the client said even if it is killed
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(write_through=True)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    import torch  # noqa: PLC0415 - preloaded

    torch.set_num_threads(request["threads"])  # torch's default; --threads sets its own


def _run_client(options: ClientOptions) -> int:
    """What `fedgate client` does with its options (fedgate/cli.py, fedgate/cli_client.py):
    its log format, its closing line, its exit codes."""
    from fedgate.run.client_runner import run_client  # noqa: PLC0415 - preloaded

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    try:
        report = asyncio.run(run_client(options))
    except FedgateError as exc:
        print(f"fedgate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(
        f"{report.client_id}: {len(report.rounds)} rounds sent, {len(report.dropped)} tasks "
        f"dropped, {report.rejoins} rejoins; {report.ended or 'interrupted'}"
    )
    return 0


def main() -> NoReturn:
    parser = argparse.ArgumentParser(description="fedgate's fork server for client processes")
    parser.add_argument("--fd", type=int, required=True, help="the control socket")
    code = serve(parser.parse_args().fd)
    # os._exit: the children are reaped, nothing is left to clean up, and tearing down
    # ~2,000 modules (torch, triton, sympy) takes seconds the launcher would wait for
    flush(sys.stdout, sys.stderr)
    os._exit(code)


if __name__ == "__main__":
    main()
