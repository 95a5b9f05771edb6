"""Codec work the server's event loop must not wait behind: GIL-bound codecs in processes.

The federation decodes updates and encodes model versions off its event loop, in worker
threads. That keeps the loop free only while the codec releases the GIL (numpy, torch and
zstd calls do). A codec that parses or builds Python objects (`holds_gil`: JSON) holds it
throughout: JSON on ResNet-18 held the server's loop for seconds, healthy clients missed
heartbeats and rounds were retried. `CodecOffload` runs such a codec's work on large
payloads in a small pool of worker processes instead, and everything else in threads.

What crosses to a worker is our own. Bulk bytes go through files in a private spool
directory, written and read with `os.write` / `os.read` on threads (which let go of the
GIL while the kernel copies; pickling 260 MB of JSON to a worker held the loop for a
second each way): the payload as it arrived (the worker decodes it with the very
`DecodeLimits` the server would use, so it refuses the same hostile input with the same
error), tensors as their raw bytes (never torch's shared-memory pickling; read back on a
private memory map, without a copy), encoded payloads as bytes. Pickled, between our own
processes only: file names, codec names, limits, tensor layouts, and a refusal, rebuilt
here as the same fedgate error (type, code, message). Nothing a peer sent is unpickled.

The pool starts at the first offloaded call (a server whose clients use fast codecs never
starts it); its workers are forked from a forkserver that has imported the codecs, so a
worker starts in milliseconds rather than re-importing torch. Its owner (the federation)
closes it; after `close`, work runs in threads again rather than starting a new pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import itertools
import math
import mmap
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from fedgate.codecs import Buffer, Codec, DecodeLimits, TensorDict, get_codec, holds_gil
from fedgate.codecs.base import DEFAULT_LIMITS, DTYPES, dtype_name
from fedgate.codecs.container import tensor_bytes
from fedgate.errors import FedgateError, ServerError

DEFAULT_WORKERS = 2
# Below this many payload (or model) bytes a GIL-bound codec stays in a thread: JSON of
# 1 MiB parses in about 0.1 s, cheaper than the round trip to a worker, and tiny models
# (tests, the digits CNN at ~0.5 MB of JSON) never start the pool.
MIN_OFFLOAD_BYTES = 1 << 20
# Added to the server's niceness in each worker: codec work yields the CPU to the loop.
# Measured (bench/stall_probe.py, 2 cores, 2 busy processes beside): 0 -> worst stall
# 116 ms, round 44 s; 5 -> 50 ms, 84 s; 10 -> 56 ms, 222 s (the JSON client waits).
WORKER_NICENESS = 5
CLOSE_GRACE_S = 2.0  # for idle workers to exit before those still working are terminated
T = TypeVar("T")


ALIGN = 64  # each tensor's bytes start at a multiple of this in a spooled file


@dataclass(frozen=True)
class Packed:
    """Where each tensor lies in a spooled file: what crosses with the file's name."""

    entries: tuple[tuple[str, str, tuple[int, ...], int], ...]  # name, dtype, shape, offset

    @classmethod
    def write(cls, path: str, tensors: Mapping[str, torch.Tensor]) -> Packed:
        """Write ``tensors``' bytes to ``path``, each at an aligned offset."""
        entries: list[tuple[str, str, tuple[int, ...], int]] = []
        chunks: list[bytes | memoryview] = []
        offset = 0
        for name, tensor in tensors.items():
            entries.append((name, dtype_name(tensor.dtype), tuple(tensor.shape), offset))
            data = tensor_bytes(tensor)
            pad = -len(data) % ALIGN
            chunks += [data, bytes(pad)]
            offset += len(data) + pad
        spool_write(path, chunks)
        return cls(tuple(entries))

    def read(self, path: str) -> TensorDict:
        """The tensors again, bit for bit, on a private copy-on-write map of ``path``: no
        copy is made here (pages load as the tensors are first read)."""
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            mapped = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_COPY) if size else None
        out: TensorDict = {}
        for name, dtype, shape, offset in self.entries:
            count = math.prod(shape)
            if count == 0 or mapped is None:
                out[name] = torch.empty(shape, dtype=DTYPES[dtype])
                continue
            flat = torch.frombuffer(mapped, dtype=DTYPES[dtype], count=count, offset=offset)
            out[name] = flat.reshape(shape)
        return out


def spool_write(path: str, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
    """Write ``chunks`` to a new file at ``path``; `os.write` lets go of the GIL while the
    kernel copies, where pickling would hold it for the whole copy (a second per 260 MB)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for chunk in chunks:
            view = memoryview(chunk).cast("B")
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def spool_read(path: str) -> bytes:
    """A whole file, read with the GIL let go while the kernel copies (unbuffered)."""
    with open(path, "rb", buffering=0) as file:
        return file.read()


@dataclass(frozen=True)
class Refusal:
    """A fedgate error raised in a worker, carried back by value.

    Fedgate errors do not pickle as they are (their constructors take other arguments
    than ``args``); this carries the class, message and attributes, and `error` rebuilds
    the same error here, so callers and the wire see what an in-thread decode raises.
    """

    kind: type[FedgateError]
    message: str
    state: dict[str, Any]

    @classmethod
    def of(cls, error: FedgateError) -> Refusal:
        return cls(type(error), error.message, dict(vars(error)))

    def error(self) -> FedgateError:
        error = self.kind.__new__(self.kind)
        Exception.__init__(error, self.message)  # ``args`` as FedgateError sets them
        vars(error).update(self.state)
        return error


def _start_worker() -> None:
    """Each worker: one torch thread and a lower CPU priority (the server's cores are for
    the server: a JSON decode takes seconds of CPU, and on a busy machine the kernel would
    otherwise let it run while the event loop waits for a core), and Ctrl-C is the
    server's to handle (it closes the pool), not a traceback per worker."""
    torch.set_num_threads(1)
    os.nice(WORKER_NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_in_worker(codec: str, src: str, dst: str, limits: DecodeLimits) -> Packed | Refusal:
    try:
        tensors = get_codec(codec).decode(spool_read(src), limits)
    except FedgateError as error:
        return Refusal.of(error)
    return Packed.write(dst, tensors)


def _encode_in_worker(codec: str, src: str, packed: Packed, dst: str) -> Refusal | None:
    try:
        payload = get_codec(codec).encode(packed.read(src))
    except FedgateError as error:
        return Refusal.of(error)
    spool_write(dst, [payload])
    return None


def _ready() -> None:
    """A no-op: answering it shows a worker is up."""


def _unpacked(outcome: Packed | Refusal, path: str) -> TensorDict:
    if isinstance(outcome, Refusal):
        raise outcome.error()
    return outcome.read(path)


def _nbytes(tensors: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


class CodecOffload:
    """Runs codecs where they cannot hold the event loop; owned (and closed) by one server.

    ``workers`` 0 keeps every codec in threads (the behaviour before offloading, for
    comparison); ``min_bytes`` is the smallest payload a GIL-bound codec is offloaded for.
    """

    def __init__(
        self,
        workers: int = DEFAULT_WORKERS,
        *,
        min_bytes: int = MIN_OFFLOAD_BYTES,
        method: str = "forkserver",
    ) -> None:
        self.workers = workers
        self.min_bytes = min_bytes
        self.method = method
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._spool = ""  # the private directory bulk bytes cross through, with the pool
        self._names = itertools.count()
        self._lock = threading.Lock()  # callers on the loop and on encoding threads
        self._closed = False

    def offloads(self, codec: Codec, size: int) -> bool:
        """Whether ``codec``'s work on ``size`` bytes goes to a worker process."""
        return self.workers > 0 and size >= self.min_bytes and not self._closed and holds_gil(codec)

    async def decode(self, codec: Codec, data: Buffer, limits: DecodeLimits) -> TensorDict:
        """``codec.decode(data, limits)``, in a worker process or a thread; the same
        tensors, and the same refusals, either way. The loop itself copies no bulk bytes."""
        if not self.offloads(codec, len(data)):
            return await asyncio.to_thread(codec.decode, data, limits)
        with self._files() as (src, dst):
            await asyncio.to_thread(spool_write, src, [data])
            executor, future = self._submit(_decode_in_worker, codec.name, src, dst, limits)
            try:
                outcome = await asyncio.wrap_future(future)
            except BrokenProcessPool:
                raise self._broken(executor) from None
            return await asyncio.to_thread(_unpacked, outcome, dst)

    def decode_here(self, codec: Codec, data: Buffer, limits: DecodeLimits) -> TensorDict:
        """`decode` in a worker process, waited for on this (worker) thread."""
        with self._files() as (src, dst):
            spool_write(src, [data])
            return _unpacked(self._call(_decode_in_worker, codec.name, src, dst, limits), dst)

    def encode_here(self, codec: Codec, tensors: Mapping[str, torch.Tensor]) -> bytes:
        """``codec.encode(tensors)`` in a worker process, waited for on this (worker) thread."""
        with self._files() as (src, dst):
            packed = Packed.write(src, tensors)
            refusal = self._call(_encode_in_worker, codec.name, src, packed, dst)
            if refusal is not None:
                raise refusal.error()
            return spool_read(dst)

    def runner(self, codec: Codec) -> Codec:
        """``codec`` for code already on a worker thread (which may block): its large
        payloads go to a worker process, the rest runs where it is called."""
        return OffloadedCodec(codec, self) if self.workers > 0 and holds_gil(codec) else codec

    @property
    def spool(self) -> str:
        """The directory bulk bytes cross through ("" before the pool starts, after close)."""
        return self._spool

    def worker_pids(self) -> list[int]:
        """The worker processes alive now (none before the first offloaded call)."""
        executor = self._executor
        if executor is None:
            return []
        return [p.pid for p in list(executor._processes.values()) if p.pid is not None]

    def warm(self) -> list[int]:
        """Start the pool now (a call per worker, answered); the workers' pids."""
        for future in [self._submit(_ready)[1] for _ in range(self.workers)]:
            future.result()
        return self.worker_pids()

    def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Stop the workers: idle ones exit, any still decoding after ``grace_s`` are
        terminated (the server is going away; nobody waits for that result). Blocking."""
        with self._lock:
            executor, self._executor, self._closed = self._executor, None, True
            spool, self._spool = self._spool, ""
        if executor is not None:
            processes = list(executor._processes.values())
            executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.join(grace_s)
            for process in processes:
                if process.is_alive():
                    process.terminate()
                    process.join(grace_s)
                if process.is_alive():
                    process.kill()
                    process.join()
            executor.shutdown(wait=True)
        if spool:
            shutil.rmtree(spool, ignore_errors=True)

    # ---- the pool -----------------------------------------------------------------------

    def _pool(self) -> tuple[concurrent.futures.ProcessPoolExecutor, str]:
        with self._lock:
            if self._closed:
                raise ServerError("the server is shutting down")
            if self._executor is None:
                self._executor = self._start()
            if not self._spool:
                self._spool = tempfile.mkdtemp(prefix="fedgate-offload-")
            return self._executor, self._spool

    @contextlib.contextmanager
    def _files(self) -> Iterator[tuple[str, str]]:
        """Two fresh names in the spool, for one call's input and output; removed after."""
        spool, number = self._pool()[1], next(self._names)
        paths = (os.path.join(spool, f"{number}.in"), os.path.join(spool, f"{number}.out"))
        try:
            yield paths
        finally:
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # a map of it stays valid: tensors may live on it

    def _submit(
        self, fn: Callable[..., T], *args: Any
    ) -> tuple[concurrent.futures.ProcessPoolExecutor, concurrent.futures.Future[T]]:
        executor = self._pool()[0]
        try:
            return executor, executor.submit(fn, *args)
        except BrokenProcessPool:
            raise self._broken(executor) from None

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker process, waited for on the calling thread."""
        executor, future = self._submit(fn, *args)
        try:
            return future.result()
        except BrokenProcessPool:
            raise self._broken(executor) from None

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        context = multiprocessing.get_context(self.method)
        if isinstance(context, multiprocessing.context.ForkServerContext):
            # Workers fork from a process that has imported torch and the codecs already.
            # (``__main__`` too, or every worker would import the server's main module again.)
            context.set_forkserver_preload(["__main__", __name__])
        return concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_start_worker
        )

    def _broken(self, executor: concurrent.futures.ProcessPoolExecutor) -> ServerError:
        """A worker died (killed, out of memory): forget its pool, so the next call starts
        a new one; the calls it was serving fail as the server's fault."""
        with self._lock:
            if self._executor is executor:
                self._executor = None
        executor.shutdown(wait=False, cancel_futures=True)
        return ServerError("a codec worker process died; the server starts a new one")


@dataclass(frozen=True)
class OffloadedCodec:
    """A GIL-bound codec whose large payloads are worked on in `CodecOffload`'s processes;
    called from worker threads, which wait for the result without holding the GIL."""

    codec: Codec
    offload: CodecOffload = dataclasses.field(compare=False)

    @property
    def name(self) -> str:
        return self.codec.name

    @property
    def media_type(self) -> str:
        return self.codec.media_type

    @property
    def lossy(self) -> bool:
        return self.codec.lossy

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes:
        if not self.offload.offloads(self.codec, _nbytes(tensors)):
            return self.codec.encode(tensors)
        return self.offload.encode_here(self.codec, tensors)

    def decode(self, data: Buffer, limits: DecodeLimits = DEFAULT_LIMITS) -> TensorDict:
        if not self.offload.offloads(self.codec, len(data)):
            return self.codec.decode(data, limits)
        return self.offload.decode_here(self.codec, data, limits)
