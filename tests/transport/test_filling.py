"""A payload received in pieces fills one buffer of its declared size, byte for byte, large
ones by copies on one thread off the event loop (a forked child's own), and a wrong total
is refused."""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np
import pytest

from fedgate.transport import filling
from fedgate.transport.filling import FILL_ON_LOOP_BYTES, Filling, unzeroed_bytearray


def pieces_of(payload: bytes, sizes: list[int]) -> list[memoryview]:
    view, start, out = memoryview(payload), 0, []
    for size in sizes:
        out.append(view[start : start + size])
        start += size
    out.append(view[start:])
    return out


@pytest.mark.parametrize(
    "total, sizes",
    [
        (0, []),
        (5, [5]),
        (5000, [1, 0, 7, 4096]),  # small: copied on the loop
        (3 * FILL_ON_LOOP_BYTES + 17, [1, FILL_ON_LOOP_BYTES, 0, 333_333]),  # large
    ],
)
async def test_pieces_fill_the_buffer_byte_for_byte(total: int, sizes: list[int]) -> None:
    payload = os.urandom(total)
    fill = Filling(total)
    for piece in pieces_of(payload, sizes):
        fill.add(piece)
    result = await fill.result()
    assert type(result) is bytearray and result == payload


async def test_a_large_payload_is_copied_on_one_thread_off_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    names: list[str] = []
    copy = filling._copy

    def spied(target: np.ndarray, pieces: list[bytes | memoryview]) -> None:
        threads.append(threading.get_ident())
        names.append(threading.current_thread().name)
        copy(target, pieces)

    monkeypatch.setattr(filling, "_copy", spied)
    payload = os.urandom(2 * FILL_ON_LOOP_BYTES)
    large = Filling(len(payload))
    for piece in pieces_of(payload, [FILL_ON_LOOP_BYTES]):
        large.add(piece)
    assert await large.result() == payload
    small = Filling(10)
    small.add(b"0123456789")
    assert await small.result() == b"0123456789"
    loop_thread = threading.get_ident()
    assert len(threads) == 3 and loop_thread not in threads[:2] and threads[2] == loop_thread
    assert threads[0] == threads[1] and names[0].startswith("fedgate-fill")


def test_a_forked_child_fills_on_a_copying_thread_of_its_own() -> None:
    payload = os.urandom(3 * FILL_ON_LOOP_BYTES)

    async def fill() -> bytearray:
        filling_ = Filling(len(payload))
        for piece in pieces_of(payload, [FILL_ON_LOOP_BYTES, FILL_ON_LOOP_BYTES]):
            filling_.add(piece)
        return await filling_.result()

    assert asyncio.run(fill()) == payload  # the parent's thread now exists
    pid = os.fork()
    if pid == 0:  # the child: the parent's copying thread is not here
        os._exit(0 if asyncio.run(asyncio.wait_for(fill(), 10)) == payload else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


async def test_small_pieces_of_a_large_payload_are_copied_a_megabyte_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches: list[int] = []
    copy = filling._copy

    def spied(target: np.ndarray, pieces: list[bytes | memoryview]) -> None:
        batches.append(len(target))
        copy(target, pieces)

    monkeypatch.setattr(filling, "_copy", spied)
    payload = os.urandom(3 * FILL_ON_LOOP_BYTES + 1000)
    fill = Filling(len(payload))
    for piece in pieces_of(payload, [64 << 10] * (len(payload) // (64 << 10))):
        fill.add(piece)
    assert await fill.result() == payload
    assert batches == [FILL_ON_LOOP_BYTES] * 3 + [1000]


async def test_a_piece_past_the_declared_size_is_refused_and_nothing_copied() -> None:
    fill = Filling(10)
    fill.add(b"x" * 6)
    with pytest.raises(ValueError, match="11 bytes passed the declared 10"):
        fill.add(b"y" * 5)
    assert fill.filled == 6
    fill.add(b"z" * 4)
    assert await fill.result() == b"x" * 6 + b"z" * 4


async def test_fewer_bytes_than_declared_are_refused() -> None:
    fill = Filling(10)
    fill.add(b"x" * 9)
    with pytest.raises(ValueError, match="9 of the declared 10 bytes came"):
        await fill.result()


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(ValueError):
        Filling(-1)


def test_an_unzeroed_bytearray_has_its_size_and_can_be_written() -> None:
    made = unzeroed_bytearray(3 << 20)
    assert type(made) is bytearray and len(made) == 3 << 20
    made[-3:] = b"end"
    assert made.endswith(b"end")


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_large_declared_size_costs_only_the_bytes_that_came() -> None:
    """What a peer that declares a large body and sends little costs: the bytes it sent,
    not the declared size (a zeroed buffer would be resident whole)."""
    before = resident_bytes()
    fill = Filling(512 << 20)
    fill.add(os.urandom(2 * FILL_ON_LOOP_BYTES))
    assert resident_bytes() - before < 64 << 20
    del fill


def test_an_unzeroed_bytearray_no_memory_holds_is_a_memory_error() -> None:
    with pytest.raises(MemoryError):
        unzeroed_bytearray(1 << 62)
