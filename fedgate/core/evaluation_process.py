"""The server's evaluation in a process of its own, at the lowest CPU priority.

The scheduler evaluates each published model while the next round runs. On a worker
thread of the server that evaluation competes for the CPU with the round it overlaps:
where clients share the server's machine (`fedgate sim`, the bench suites, a lab box),
it takes a core from their training just as their tasks arrive. Made low-priority, a
thread is worse: descheduled while it holds the GIL, it stalls the event loop behind it.
A process at niceness `NICENESS` takes only the CPU the round leaves idle and holds no
lock of the server's. Measured (``bench/round_timeline.py --transport grpc``, 2 cores,
digits CNN; interleaved A/B pairs, median round open to open; every pair in
bench/README.md): this worker, 4 clients, 99.3 -> 95.7 ms (6 of 6 pairs faster) in one
set and 92.7 -> 94.4 ms (4 of 8) in another; a forkserver prototype 91.3 -> 88.0 ms (7 of
8) at 4 clients and 124.9 -> 121.5 ms (6 of 6) at 10. The machine's drift between runs
is larger than the effect: only many pairs show it.

The worker is forked from the server as the evaluator is made (as torch's DataLoader
forks its workers): it inherits the model and the held-out split, so nothing is pickled
but small messages. Each model's tensors cross through a file in a private spool
directory (`fedgate.core.offload.Packed`: raw bytes, read back on a private map), never
pickled. The worker runs torch alone, on one thread.

gRPC's own fork handlers must be off in the server (`without_grpc_fork_handlers`, called by
`fedgate serve` before it loads gRPC): with them on, a fork restarts gRPC's poller threads in
the child, on descriptors the child has closed, and the child aborts (seen in a test
process that had used a gRPC client: one fork in five). The server forks no child that
uses gRPC, so it needs them for nothing. Should a worker die anyway, that evaluation is
recorded as failed and later ones run on the server's threads (a second fork, from a
server whose threads are all running, is not one to make).

Trade-off: on a machine kept busy by *other* work, an evaluation waits for idle CPU, and
the round after next waits for it before it closes (`Scheduler._settle`, which logs a
wait of a second or more): serve with ``--evaluate-in thread`` there.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Mapping, MutableMapping

import torch

from fedgate.core.offload import Packed
from fedgate.core.scheduler import Evaluator
from fedgate.core.training import EvalResult
from fedgate.errors import ServerError

log = logging.getLogger("fedgate.evaluation")

GRPC_FORK_SUPPORT = "GRPC_ENABLE_FORK_SUPPORT"  # gRPC reads it when it is first used
NICENESS = 19  # added to the server's: the worker runs on what the round leaves idle
CLOSE_GRACE_S = 2.0


def without_grpc_fork_handlers(environ: MutableMapping[str, str] = os.environ) -> None:
    """Turn gRPC's fork handlers off in ``environ``: by default this process's and its
    children's; call before gRPC is first used (it reads the setting then)."""
    environ[GRPC_FORK_SUPPORT] = "false"


class EvaluationProcess:
    """``evaluate`` run in a forked worker process; call from a worker thread (it waits).

    Its owner closes it (`Federation.close`); after `close`, or once the worker died,
    calls evaluate in the calling thread instead."""

    def __init__(self, evaluate: Evaluator, *, niceness: int = NICENESS) -> None:
        self._evaluate_here = evaluate
        self._lock = threading.Lock()  # one evaluation at a time on the one pipe
        self._names = itertools.count()
        self._spool = tempfile.mkdtemp(prefix="fedgate-eval-")
        context = multiprocessing.get_context("fork")
        self._pipe, theirs = context.Pipe()
        self._worker: multiprocessing.process.BaseProcess | None = context.Process(
            target=_serve,
            args=(theirs, evaluate, niceness),
            name="fedgate-evaluation",
            daemon=True,  # ends with the server, whatever way it ends
        )
        self._worker.start()
        theirs.close()

    @property
    def pid(self) -> int | None:
        """The worker's process id (None once it is closed or gone)."""
        worker = self._worker
        return worker.pid if worker is not None else None

    def __call__(self, weights: Mapping[str, torch.Tensor]) -> EvalResult:
        with self._lock:
            if self._worker is None:
                return self._evaluate_here(weights)
            path = os.path.join(self._spool, f"{next(self._names)}.model")
            try:
                packed = Packed.write(path, weights)
                self._pipe.send((path, packed))
                outcome, value = self._pipe.recv()
            except (EOFError, OSError) as error:
                self._lost(error)
                raise ServerError(
                    "the evaluation process died; the server evaluates from now on"
                ) from None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        if outcome == "failed":
            raise RuntimeError(value)  # the model's own code failed; the run goes on
        assert isinstance(value, EvalResult)
        return value

    def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """End the worker; blocking. An evaluation in progress fails (the worker is killed:
        nobody waits for that result, and its pipe is closed only once no call reads it).
        Later calls run in the calling thread."""
        worker, self._worker = self._worker, None
        if worker is not None:
            if not self._lock.acquire(blocking=False):
                worker.kill()  # the call in flight reads the end of the pipe and lets go
                self._lock.acquire()
            try:
                self._pipe.close()  # an idle worker's next read ends it
                worker.join(grace_s)
                if worker.is_alive():
                    worker.kill()
                    worker.join()
            finally:
                self._lock.release()
        shutil.rmtree(self._spool, ignore_errors=True)

    def _lost(self, error: BaseException) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.join(CLOSE_GRACE_S)
            log.error(
                "the evaluation process ended (exit code %s, %s); evaluating in the server",
                worker.exitcode,
                error,
            )


def _serve(pipe: multiprocessing.connection.Connection, evaluate: Evaluator, niceness: int) -> None:
    """The worker: evaluate each model sent, answer ("ok", result) or ("failed", why), until
    the server closes the pipe. Ctrl-C is the server's to handle; of the server's open
    files it keeps standard input and output and its pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the server's handlers, inherited
    signal.set_wakeup_fd(-1)  # nor its event loop's wake-up pipe
    keep = pipe.fileno()
    # nor its files and sockets: a listener held open here would outlive the server's close
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
    os.nice(niceness)
    torch.set_num_threads(1)
    while True:
        try:
            path, packed = pipe.recv()
        except (EOFError, OSError):
            return
        try:
            answer: tuple[str, object] = ("ok", evaluate(packed.read(path)))
        except Exception as error:  # the model's own code: whatever it raises, report it
            answer = ("failed", f"{type(error).__name__}: {error}")
        try:
            pipe.send(answer)
        except OSError:  # closed while evaluating: the server no longer waits
            return
