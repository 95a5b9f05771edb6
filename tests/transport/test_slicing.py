"""Payloads cut into slices without copies, and bodies received in pieces joined once."""

from __future__ import annotations

import asyncio
import os

import pytest

from fedgate.transport.slicing import JOIN_ON_LOOP_BYTES, joined, slices


def test_slices_are_views_of_the_payload_that_cover_it_exactly() -> None:
    payload = os.urandom(10_000)
    pieces = list(slices(payload, 4096))
    assert [len(p) for p in pieces] == [4096, 4096, 1808]
    assert all(p.obj is payload for p in pieces) and b"".join(pieces) == payload
    assert list(slices(b"", 4096)) == []


@pytest.mark.parametrize(
    "sizes",
    [
        [],
        [5],
        [1, 0, 7, 4097, 3],  # small: joined on the loop
        [JOIN_ON_LOOP_BYTES // 2, 1, JOIN_ON_LOOP_BYTES // 2 + 5],  # large: on a thread
    ],
)
async def test_a_received_body_is_joined_byte_for_byte(sizes: list[int]) -> None:
    parts = [os.urandom(size) for size in sizes]
    body = await joined(parts)
    assert type(body) is bytes and body == b"".join(parts)


async def test_a_large_body_is_joined_without_holding_the_loop() -> None:
    """`bytes.join` of exact bytes lets go of the GIL: the loop runs while it copies."""
    parts = [bytes([n]) * (1 << 20) for n in range(64)]
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    try:
        body = await joined(parts)
    finally:
        ticker.cancel()
    assert body == b"".join(parts) and ticks > 10  # thousands, when the copy lets go


async def test_views_are_joined_into_bytes_of_their_own() -> None:
    """What a gRPC client receives: slices of received messages, one alone included."""
    payload = os.urandom(3 * JOIN_ON_LOOP_BYTES)
    for size in (len(payload), JOIN_ON_LOOP_BYTES // 3):
        body = await joined(list(slices(payload, size)))
        assert type(body) is bytes and body == payload
