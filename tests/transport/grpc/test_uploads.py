"""An update's body off a gRPC call: assembled byte for byte in one buffer of its declared
size, refused when it passes or falls short of that size, or when no memory holds it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from fedgate.errors import InvalidUpdate, Overloaded, PayloadTooLarge
from fedgate.transport.filling import FILL_ON_LOOP_BYTES
from fedgate.transport.grpc.uploads import receive_body
from fedgate.transport.limits import DEFAULT_UPLOAD_TIMEOUTS


async def chunks_of(payload: bytes, size: int) -> AsyncIterator[memoryview]:
    view = memoryview(payload)
    for start in range(0, len(view), size):
        yield view[start : start + size]


async def body(payload: bytes, declared: int, *, limit: int = 1 << 40) -> bytearray:
    return await receive_body(
        chunks_of(payload, 1 << 20),
        lambda chunk: chunk,
        declared,
        limit,
        DEFAULT_UPLOAD_TIMEOUTS,
        to_end=True,
    )


@pytest.mark.parametrize("size", [0, 1000, 5 * FILL_ON_LOOP_BYTES + 3])
async def test_a_body_is_assembled_byte_for_byte(size: int) -> None:
    payload = os.urandom(size)
    received = await body(payload, len(payload))
    assert type(received) is bytearray and received == payload


async def test_a_body_past_its_declared_size_is_refused() -> None:
    with pytest.raises(PayloadTooLarge, match="passed its declared"):
        await body(os.urandom(3 << 20), (3 << 20) - 1)


async def test_a_body_short_of_its_declared_size_is_refused() -> None:
    with pytest.raises(InvalidUpdate, match=f"ended after {2 << 20} of {3 << 20} bytes"):
        await body(os.urandom(2 << 20), 3 << 20)


async def test_a_declared_size_over_the_limit_is_refused_before_a_chunk_is_read() -> None:
    with pytest.raises(PayloadTooLarge, match="exceeds the limit"):
        await body(b"", 11, limit=10)


async def test_a_negative_declared_size_is_an_invalid_update() -> None:
    with pytest.raises(InvalidUpdate, match="cannot be -1 bytes"):
        await body(b"", -1)


async def test_a_declared_size_no_memory_holds_is_overloaded_not_a_crash() -> None:
    with pytest.raises(Overloaded, match="no memory"):
        await body(b"x", 1 << 62, limit=1 << 62)
