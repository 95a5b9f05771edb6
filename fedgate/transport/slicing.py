"""A payload in pieces for a wire, without copies: `memoryview` slices of the bytes.

Handed over whole, a large body is copied by each layer it passes (h11, the socket
transport, protobuf) on the event loop; in slices each layer sees a piece at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

SLICE_BYTES = 1 << 20  # REST bodies; gRPC cuts its chunks at its own CHUNK_BYTES


def slices(payload: bytes, size: int = SLICE_BYTES) -> Iterator[memoryview]:
    """``payload`` in ``size`` pieces, without a copy."""
    view = memoryview(payload)
    for start in range(0, len(view), size):
        yield view[start : start + size]


async def streamed(payload: bytes, size: int = SLICE_BYTES) -> AsyncIterator[memoryview]:
    """`slices` as an async iterator, for an HTTP body streamed in or out."""
    for piece in slices(payload, size):
        yield piece
