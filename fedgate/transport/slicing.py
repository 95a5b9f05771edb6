"""A payload in pieces for a wire and back, without copies on the event loop.

Going out, `slices` are `memoryview`s of the bytes: handed over whole, a large body is
copied by each layer it passes (h11, the socket transport, protobuf) on the loop; in
slices each layer sees a piece at a time. Coming in, a body of a declared size is copied
into its place piece by piece as it arrives (`fedgate.transport.filling`: downloads, gRPC
uploads); the others are kept as they arrive and `joined` once, off the loop when large.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence

SLICE_BYTES = 1 << 20  # REST bodies; gRPC cuts its chunks at its own CHUNK_BYTES
# Below this a join costs less than the hand-off to a thread.
JOIN_ON_LOOP_BYTES = 1 << 20


def slices(payload: bytes | bytearray, size: int = SLICE_BYTES) -> Iterator[memoryview]:
    """``payload`` in ``size`` pieces, without a copy."""
    view = memoryview(payload)
    for start in range(0, len(view), size):
        yield view[start : start + size]


async def streamed(
    payload: bytes | bytearray, size: int = SLICE_BYTES
) -> AsyncIterator[memoryview]:
    """`slices` as an async iterator, for an HTTP body streamed in or out."""
    for piece in slices(payload, size):
        yield piece


async def joined(parts: Sequence[bytes | memoryview]) -> bytes:
    """``b"".join(parts)``, made on a thread when it is large: `bytes.join` lets go of the
    GIL while it copies exact ``bytes`` of a megabyte or more, so a body received in pieces
    (an upload of 260 MB of JSON) becomes one ``bytes`` without holding the loop."""
    if len(parts) == 1 and isinstance(parts[0], bytes):
        return parts[0]
    if sum(map(len, parts)) < JOIN_ON_LOOP_BYTES:
        return b"".join(parts)
    return await asyncio.to_thread(b"".join, parts)
