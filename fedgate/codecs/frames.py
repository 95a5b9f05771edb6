"""The envelope of the frame-based codecs: a compressed header, then independent zstd frames.

Layout: ``MAGIC (4 bytes) | header frame length (u32 LE) | header frame | body frames``.
The header frame is one zstd frame of JSON ``{"format": codec, "tensors": [entry, ...],
"frames": [[size, count], ...]}``, ``codec`` being the codec's name without a parameter.
An entry names a tensor (name, dtype, shape) and how it travels (``kind`` plus that
kind's fields). Body frame *i* is ``size`` compressed bytes holding the sections
of the next ``count`` tensors, each section padded with zeros to 8 bytes.

Frames are independent and end on tensor boundaries, so both sides can work on several at
once (zstd and numpy release the GIL). Every section size follows from the header, so each
frame's declared content size is checked against what the header implies, and the header
against `DecodeLimits`, before anything is decompressed.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch

from fedgate.codecs import compression, container, layouts, release
from fedgate.codecs.base import Buffer, DecodeLimits, TensorDict
from fedgate.errors import CodecError, DecodedSizeExceeded

MAGIC = b"FGF1"
_LENGTH = struct.Struct("<I")
_PREFIX = len(MAGIC) + _LENGTH.size
ALIGN = 8
_ZEROS = bytes(ALIGN)
HEADER_LEVEL = 3
# Input bytes per frame: big enough that zstd loses nothing to frame boundaries, small
# enough that a model splits into several frames for the workers to share.
FRAME_BYTES = 4 * 1024**2

Bytes = npt.NDArray[np.uint8]
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Piece:
    """One tensor, encoded: its header fields beyond name/dtype/shape, and its sections."""

    fields: dict[str, Any]
    sections: tuple[npt.NDArray[Any], ...]


@dataclass(frozen=True)
class Plan:
    """One tensor as its (checked) header entry describes it: section sizes and a builder."""

    spec: container.TensorSpec
    sizes: tuple[int, ...]
    build: Callable[[Sequence[Bytes]], torch.Tensor]


Encoder = Callable[[torch.Tensor], Piece]
Planner = Callable[[container.TensorSpec, Mapping[str, object]], Plan]


def padded(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def pack(codec: str, tensors: Mapping[str, torch.Tensor], encode: Encoder, level: int) -> bytes:
    """Encode every tensor with ``encode`` and write the envelope."""
    names = list(tensors)
    groups = _groups([_input_nbytes(tensors[name]) for name in names])

    def frame(group: range) -> tuple[list[dict[str, Any]], list[bytes]]:
        entries: list[dict[str, Any]] = []
        parts: list[bytes | memoryview] = []
        for index in group:
            name, tensor = names[index], tensors[names[index]]
            dtype = container.dtype_or_error(codec, tensor.dtype)
            piece = encode(tensor)
            entries.append(
                {"name": name, "dtype": dtype, "shape": list(tensor.shape), **piece.fields}
            )
            for section in piece.sections:
                parts += [section.data, _ZEROS[: padded(section.nbytes) - section.nbytes]]
        return entries, compression.compress_parts(parts, level)

    costs = [sum(_input_nbytes(tensors[names[i]]) for i in group) for group in groups]
    frames = parallel_map(frame, groups, costs)
    header = {
        "format": _format(codec),
        "tensors": [entry for entries, _ in frames for entry in entries],
        "frames": [
            [sum(map(len, body)), len(group)]
            for (_, body), group in zip(frames, groups, strict=True)
        ],
    }
    head = compression.compress(json.dumps(header, separators=(",", ":")).encode(), HEADER_LEVEL)
    chunks = (chunk for _, body in frames for chunk in body)
    return b"".join([MAGIC, _LENGTH.pack(len(head)), head, *chunks])


def unpack(codec: str, data: Buffer, limits: DecodeLimits, plan: Planner) -> TensorDict:
    """Check the header, then decompress and build each frame's tensors.

    Everything the header says (against the limits' layout too) is checked before the
    first body frame is decompressed; a refusal lets go of what was built at once.
    """
    return release.refusing(lambda body, bounds: _unpack(codec, body, bounds, plan), data, limits)


def _unpack(codec: str, data: Buffer, limits: DecodeLimits, plan: Planner) -> TensorDict:
    view = memoryview(data)
    header, start = _read_header(codec, view, limits)
    plans = _plans(codec, header.get("tensors"), limits, plan)
    frames = _frames(codec, header.get("frames"), view[start:], plans)

    def build(job: tuple[memoryview, list[Plan]]) -> list[torch.Tensor]:
        body, members = job
        expected = sum(padded(size) for member in members for size in member.sizes)
        content = np.frombuffer(compression.decompress_exactly(codec, body, expected), np.uint8)
        tensors, position = [], 0
        for member in members:
            sections = []
            for size in member.sizes:
                sections.append(content[position : position + size])
                position += padded(size)
            tensors.append(member.build(sections))
        return tensors

    costs = [sum(member.spec.numel for member in members) for _, members in frames]
    built = [tensor for tensors in parallel_map(build, frames, costs) for tensor in tensors]
    return {member.spec.name: tensor for member, tensor in zip(plans, built, strict=True)}


def _format(codec: str) -> str:
    return codec.partition(":")[0]


def _input_nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _groups(sizes: Sequence[int]) -> list[range]:
    """Consecutive tensors in frames of about `FRAME_BYTES` (a bigger tensor is alone)."""
    groups, start, filled = [], 0, 0
    for index, size in enumerate(sizes):
        if index > start and filled + size > FRAME_BYTES:
            groups.append(range(start, index))
            start, filled = index, 0
        filled += size
    if start < len(sizes):
        groups.append(range(start, len(sizes)))
    return groups


def _read_header(codec: str, view: memoryview, limits: DecodeLimits) -> tuple[dict[str, Any], int]:
    if len(view) < _PREFIX or bytes(view[: len(MAGIC)]) != MAGIC:
        raise CodecError(codec, "not a fedgate frame envelope (bad magic or empty body)")
    (length,) = _LENGTH.unpack_from(view, len(MAGIC))
    if length > len(view) - _PREFIX:
        raise CodecError(codec, f"truncated header: {length} bytes declared")
    head = bytes(view[_PREFIX : _PREFIX + length])
    text = compression.decompress(codec, head, limits.max_header_bytes)
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CodecError(codec, f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != _format(codec):
        found = header.get("format") if isinstance(header, dict) else None
        raise CodecError(codec, f"payload is not in this codec's format (it says {found!r})")
    return header, _PREFIX + length


def _plans(codec: str, entries: object, limits: DecodeLimits, plan: Planner) -> list[Plan]:
    if not isinstance(entries, list):
        raise CodecError(codec, "header has no 'tensors' list")
    layouts.check_count(codec, len(entries), limits)
    specs = container.check_specs(
        codec, [container.spec_from_entry(codec, entry) for entry in entries], limits
    )
    plans = [plan(spec, entry) for spec, entry in zip(specs, entries, strict=True)]
    # Kinds keep their sections within ~1.25x the tensor's decoded size; this is the net
    # under that rule, so no header can make a worker allocate more than the cap allows.
    sections = sum(padded(size) for member in plans for size in member.sizes)
    if sections > 2 * limits.max_decoded_bytes + ALIGN * 4 * len(plans):
        raise DecodedSizeExceeded(codec, f"sections of {sections} bytes exceed the cap")
    return plans


def _frames(
    codec: str, table: object, body: memoryview, plans: list[Plan]
) -> list[tuple[memoryview, list[Plan]]]:
    """Split ``body`` into frames as the header's table says, refusing any mismatch."""
    if not isinstance(table, list) or not all(_is_pair(row) for row in table):
        raise CodecError(codec, "header 'frames' must be a list of [size, count] pairs >= 1")
    if sum(count for _, count in table) != len(plans):
        raise CodecError(codec, "header 'frames' do not account for every tensor")
    if sum(size for size, _ in table) != len(body):
        raise CodecError(
            codec,
            f"body holds {len(body)} bytes of frames but the header declares "
            f"{sum(size for size, _ in table)} (truncated or padded payload)",
        )
    frames, offset, first = [], 0, 0
    for size, count in table:
        frames.append((body[offset : offset + size], plans[first : first + count]))
        offset, first = offset + size, first + count
    return frames


def _is_pair(row: object) -> bool:
    return (
        isinstance(row, list)
        and len(row) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in row)
    )


# Worker threads shared by all calls; recreated in a forked child, where threads are gone.
_WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_THREAD_PREFIX = "fedgate-codec"


def _forget_pool() -> None:
    global _pool  # noqa: PLW0603 - the one process-wide pool, reset after fork
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def parallel_map(
    function: Callable[[T], R], items: Iterable[T], costs: Sequence[int] = ()
) -> list[R]:
    """``[function(item) for item in items]``, on the shared workers when that can pay.

    The costliest items start first (given ``costs``), so a big tensor does not start
    last and leave the other workers idle while it finishes. A worker never waits on the
    pool itself (that could deadlock it): called from one, the items run right there.
    """
    work = list(items)
    inside = threading.current_thread().name.startswith(_THREAD_PREFIX)
    if len(work) <= 1 or _WORKERS <= 1 or inside:
        return [function(item) for item in work]
    global _pool  # noqa: PLW0603
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix=_THREAD_PREFIX)
        pool = _pool
    order = sorted(range(len(work)), key=lambda i: -costs[i]) if costs else range(len(work))
    futures = {index: pool.submit(function, work[index]) for index in order}
    try:
        return [futures[index].result() for index in range(len(work))]
    except BaseException:
        for future in futures.values():  # a refused payload: drop the work not yet begun
            future.cancel()
        raise
