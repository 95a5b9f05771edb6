"""Exact sections: a tensor's bytes as they are, or split into byte planes first.

Byte planes gather the i-th byte of every element (all first bytes, then all second
bytes...). For floats the sign/exponent bytes, which vary little from one weight to the
next, then form long runs that zstd codes in a few bits, instead of being interleaved
with mantissa bytes that are close to random. Planes are split and joined with shifts
and ors on whole elements, faster than numpy's strided byte copies or a transpose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from fedgate.codecs.base import DTYPES, FLOAT_DTYPES, dtype_name, itemsize
from fedgate.codecs.container import TensorSpec
from fedgate.codecs.frames import Bytes, Piece, Plan
from fedgate.errors import CodecError

EXACT_KINDS = ("bytes", "shuffle")
_BLOCK = 1 << 17  # elements per step: small enough for cache, big enough to amortise calls
_UINTS: dict[int, type[np.unsignedinteger[Any]]] = {
    2: np.uint16,
    4: np.uint32,
    8: np.uint64,
}


def as_bytes(tensor: torch.Tensor) -> Bytes:
    """A tensor's buffer as flat bytes, without a copy when it is contiguous on CPU."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    array: Bytes = flat.view(torch.uint8).numpy()
    return array


def shuffle(data: Bytes, width: int) -> Bytes:
    """The byte planes of ``data`` read as little-endian elements of ``width`` bytes."""
    if width == 1:
        return data
    items = data.view(_UINTS[width])
    planes = np.empty((width, items.size), np.uint8)
    for start in range(0, items.size, _BLOCK):  # a block at a time: read once, from cache
        block = items[start : start + _BLOCK]
        for byte in range(width):  # plane i: each element shifted down by i bytes, truncated
            out = planes[byte, start : start + _BLOCK]
            np.right_shift(block, 8 * byte, out=out, casting="unsafe")
    return planes.reshape(-1)


def unshuffle_into(planes: Bytes, width: int, out: Bytes) -> None:
    """Interleave byte planes back into elements, writing ``out`` (``width`` bytes each)."""
    if width == 1:
        out[:] = planes
        return
    rows, items = planes.reshape(width, -1), out.view(_UINTS[width])
    for start in range(0, items.size, _BLOCK):  # the halves' temporaries stay in cache
        _interleave(rows[:, start : start + _BLOCK], items[start : start + _BLOCK])


def _interleave(rows: Bytes, out: npt.NDArray[Any] | None = None) -> npt.NDArray[Any]:
    """Elements from byte planes as whole integers: ``high << bits | low``, halves first.

    Shifts and ors over wide integers run several times faster than numpy's strided
    byte-by-byte writes, and each half is itself built the same way.
    """
    width = rows.shape[0]
    if width == 1:
        first: npt.NDArray[Any] = rows[0]
        return first
    half = width // 2
    low, high = _interleave(rows[:half]), _interleave(rows[half:])
    result: npt.NDArray[Any] = np.left_shift(high, 8 * half, dtype=_UINTS[width], out=out)
    np.bitwise_or(result, low, out=result)
    return result


def exact_piece(wire: torch.Tensor, *, shuffled: bool = True, cast: bool = False) -> Piece:
    """``wire`` as it is: byte planes if ``shuffled`` and wider than a byte, else its bytes.

    ``cast`` says ``wire`` was cast from the model's dtype, so the entry names its dtype.
    """
    width = wire.element_size()
    data = as_bytes(wire)
    fields: dict[str, Any] = {"kind": "shuffle" if shuffled and width > 1 else "bytes"}
    if cast:
        fields["wire"] = dtype_name(wire.dtype)
    return Piece(fields, (shuffle(data, width) if fields["kind"] == "shuffle" else data,))


def exact_plan(
    codec: str, spec: TensorSpec, fields: Mapping[str, object], cast_from: str | None = None
) -> Plan:
    """Read a tensor sent by `exact_piece`.

    Only a float tensor may travel in another dtype, and only in ``cast_from``, the one
    this codec casts floats to (``None``: none, every tensor travels in its own dtype).
    """
    kind = fields.get("kind")
    if kind not in EXACT_KINDS:
        raise CodecError(codec, f"tensor {spec.name!r}: unknown kind {kind!r}")
    if spec.wire != spec.dtype and (spec.wire != cast_from or spec.dtype not in FLOAT_DTYPES):
        raise CodecError(codec, f"tensor {spec.name!r}: {spec.dtype} cannot travel as {spec.wire}")
    width = itemsize(spec.wire)
    planes = kind == "shuffle"

    def build(sections: Sequence[Bytes]) -> torch.Tensor:
        if spec.numel == 0:
            return torch.empty(spec.shape, dtype=DTYPES[spec.dtype])
        if planes and spec.wire == "bfloat16" and spec.dtype == "float32":
            return _bf16_planes_to_fp32(sections[0], spec)
        out = np.empty(spec.numel * width, np.uint8)
        unshuffle_into(sections[0], width if planes else 1, out)
        if spec.wire == "bool":
            return torch.from_numpy(out).ne(0).reshape(spec.shape)
        return cast(torch.from_numpy(out).view(DTYPES[spec.wire]), DTYPES[spec.dtype]).reshape(
            spec.shape
        )

    return Plan(spec, (spec.numel * width,), build)


def _bf16_planes_to_fp32(planes: Bytes, spec: TensorSpec) -> torch.Tensor:
    """bfloat16 is the top half of a float32: shift its bits up, never making a bf16 copy."""
    out = np.empty(spec.numel, np.float32)
    rows, items = planes.reshape(2, -1), out.view(np.uint32)
    for start in range(0, spec.numel, _BLOCK):
        bits = _interleave(rows[:, start : start + _BLOCK])
        np.left_shift(bits, 16, dtype=np.uint32, out=items[start : start + _BLOCK])
    return torch.from_numpy(out).reshape(spec.shape)


def empty(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A new flat tensor whose memory numpy allocated.

    numpy asks for transparent huge pages on large buffers; torch's allocator does not,
    and first-touching tens of MB in 4 KiB pages costs more than the work done on them.
    """
    if numel == 0:  # numpy's empty buffers have stride 0, which torch cannot view
        return torch.empty(0, dtype=dtype)
    width = torch.empty((), dtype=dtype).element_size()
    return torch.from_numpy(np.empty(numel * width, np.uint8)).view(dtype)


def cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor.to(dtype)`` into memory from `empty` (``tensor`` itself if it has ``dtype``)."""
    if tensor.dtype == dtype:
        return tensor
    out = empty(tensor.numel(), dtype)
    out.copy_(tensor.reshape(-1))
    return out.reshape(tensor.shape)
