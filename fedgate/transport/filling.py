"""A payload that comes in pieces, written into one buffer of its declared size as they come.

Kept as pieces and joined at the end, a downloaded model is copied once more than it
must be, into memory touched for the first time all at once: measured with ResNet-50 in
raw (94 MB, 4 MiB gRPC messages) the client held 23 messages, then joined them, each pass
faulting in 94 MB (~23,000 pages at ~1.7 us each here), and its decoder copied the joined
``bytes`` a third time because tensors cannot share immutable memory. A `Filling` makes
one buffer the size the sender declared and copies each piece into its place when it
arrives, on a thread of their own (numpy's copy lets go of the GIL), so the copies and
their page faults overlap the transport taking in the next piece; each piece is let go
of once copied, and its memory is the next one's. One thread, not the loop's pool of
them: copies on several threads at once contend for the process's page tables, and a
ResNet-50 came down in 105-114 ms that way against 97-106 on one. The result is a
``bytearray``, which a decoder takes over and shares instead of copying
(`fedgate.codecs.container.unpack`).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Below this a payload is copied on the loop: the hand-off to a thread costs more.
FILL_ON_LOOP_BYTES = 1 << 20


# CPython's constructor: given no source, it leaves the memory as allocated
_BYTEARRAY_OF_SIZE = ctypes.pythonapi.PyByteArray_FromStringAndSize
_BYTEARRAY_OF_SIZE.restype = ctypes.py_object
_BYTEARRAY_OF_SIZE.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)


def unzeroed_bytearray(size: int) -> bytearray:
    """``size`` bytes in a new bytearray, not zeroed first: ``bytearray(size)`` writes every
    byte, holding the GIL (94 MB: ~40 ms, most of it page faults) before the first piece
    is copied in, and makes all of it resident. Callers write every byte before anyone
    reads one (`Filling.result` checks that they did)."""
    made = _BYTEARRAY_OF_SIZE(None, size)  # raises MemoryError when there is no such memory
    assert isinstance(made, bytearray)
    return made


class _CopyingThread:
    """The one thread copies run on, started on first use in each process (a forked child
    starts its own: the parent's thread does not exist there)."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        os.register_at_fork(after_in_child=self._forget)

    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="fedgate-fill")
        return self._executor

    def _forget(self) -> None:
        self._executor = None


_COPYING_THREAD = _CopyingThread()


def _copy(target: np.ndarray, pieces: list[bytes | memoryview]) -> None:
    """``pieces`` one after the other into ``target``, which is exactly as long."""
    start = 0
    for piece in pieces:
        np.copyto(target[start : start + len(piece)], np.frombuffer(piece, dtype=np.uint8))
        start += len(piece)


class Filling:
    """``size`` bytes filled in order by `add`; `result` once they have all come.

    Pieces of a large payload go to the copying thread a megabyte or more at a time
    (a transport's pieces can be a socket read each, tens of kilobytes)."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"a payload cannot be {size} bytes")
        self.size = size
        self.filled = 0
        self._buffer = unzeroed_bytearray(size) if size else bytearray()
        self._target = np.frombuffer(self._buffer, dtype=np.uint8)
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._copies: list[asyncio.Future[None]] = []

    def add(self, piece: bytes | memoryview) -> None:
        """Take ``piece`` as the bytes after what came before; a piece that passes the
        declared size is refused, and nothing of it kept."""
        end = self.filled + len(piece)
        if end > self.size:
            raise ValueError(f"{end} bytes passed the declared {self.size}")
        self._pending.append(piece)
        self._pending_bytes += len(piece)
        self.filled = end
        if self.size < FILL_ON_LOOP_BYTES or self._pending_bytes >= FILL_ON_LOOP_BYTES:
            self._copy_pending()

    async def result(self) -> bytearray:
        """The payload, once every copy is done; fewer bytes than declared are refused."""
        if self.filled != self.size:
            raise ValueError(f"{self.filled} of the declared {self.size} bytes came")
        self._copy_pending()
        copies, self._copies = self._copies, []
        await asyncio.gather(*copies)
        return self._buffer

    def _copy_pending(self) -> None:
        """Copy what is pending into its place: on the loop when the payload is small,
        else on the copying thread (numpy lets go of the GIL while it copies)."""
        target = self._target[self.filled - self._pending_bytes : self.filled]
        pieces, self._pending, self._pending_bytes = self._pending, [], 0
        if not pieces:
            return
        if self.size < FILL_ON_LOOP_BYTES:
            _copy(target, pieces)
        else:
            loop = asyncio.get_running_loop()
            copier = _COPYING_THREAD.executor()
            self._copies.append(loop.run_in_executor(copier, _copy, target, pieces))
