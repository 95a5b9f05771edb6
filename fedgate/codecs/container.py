"""A small binary container for named tensors: magic, a JSON header, then raw buffers.

Layout: ``MAGIC (4 bytes) | header length (u32 little-endian) | header JSON | buffers``.
The header lists, in order, each tensor's name, its dtype in the model (``dtype``), the
dtype its buffer is stored in (``wire``) and its shape. Buffers follow in little-endian
byte order, each padded to 8 bytes (the header too) so every tensor can be viewed in
place with its natural alignment. Buffer sizes follow from wire dtype and shape, so the
body length is checked exactly against the header before any tensor is built.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from fedgate.codecs import layouts
from fedgate.codecs.base import (
    DTYPES,
    MAX_DIMS,
    MAX_NAME_LENGTH,
    Buffer,
    DecodeLimits,
    dtype_name,
    itemsize,
)
from fedgate.errors import CodecError, DecodedSizeExceeded

MAGIC = b"FGT1"
_LENGTH = struct.Struct("<I")
PREFIX = len(MAGIC) + _LENGTH.size
ALIGN = 8
_PADDING = bytes(ALIGN)

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("fedgate's binary codecs require a little-endian machine")


@dataclass(frozen=True)
class TensorSpec:
    """What the header says about one tensor."""

    name: str
    dtype: str
    wire: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def wire_nbytes(self) -> int:
        return self.numel * itemsize(self.wire)

    @property
    def padded_nbytes(self) -> int:
        return _aligned(self.wire_nbytes)


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """A tensor's buffer as bytes without copying when it is already contiguous on CPU."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    array: Any = flat.view(torch.uint8).numpy()
    return memoryview(array)


def pack(
    codec: str,
    tensors: Mapping[str, torch.Tensor],
    original_dtypes: Mapping[str, str] | None = None,
) -> bytes:
    """Write tensors as they are (cast to wire dtypes by the caller).

    ``original_dtypes`` names the dtype a tensor had in the model when the caller cast it
    for the wire, so the decoder can restore it.
    """
    originals = original_dtypes or {}
    specs = []
    parts: list[bytes | memoryview] = []
    for name, tensor in tensors.items():
        wire = dtype_or_error(codec, tensor.dtype)
        specs.append(
            {
                "name": name,
                "dtype": originals.get(name, wire),
                "wire": wire,
                "shape": list(tensor.shape),
            }
        )
        buffer = tensor_bytes(tensor)
        parts += [buffer, _PADDING[: _aligned(len(buffer)) - len(buffer)]]
    header = json.dumps({"tensors": specs}, separators=(",", ":")).encode()
    header += b" " * (_aligned(PREFIX + len(header)) - PREFIX - len(header))
    return b"".join([MAGIC, _LENGTH.pack(len(header)), header, *parts])


WireRule = Callable[[str], str]


Body = bytearray | npt.NDArray[np.uint8]  # the one writable buffer a model's tensors share


def same_dtype(dtype: str) -> str:
    """The wire rule of codecs that send every tensor in its own dtype."""
    return dtype


def unpack(
    codec: str, data: Buffer, limits: DecodeLimits, wire_for: WireRule = same_dtype
) -> tuple[list[TensorSpec], list[torch.Tensor]]:
    """Read the container: the checked specs, and the tensors in their wire dtypes.

    The tensors share one buffer: ``data`` itself when it is a bytearray the caller hands
    over (a fresh decompression, say), else one private copy made after every check, by
    numpy, which lets go of the GIL while it copies (``bytearray(data)`` holds it: 28 ms
    for a 45 MB update, during which a server's event loop waits).
    """
    specs, position = read_header(codec, data, limits, wire_for)
    body = data if isinstance(data, bytearray) else np.frombuffer(data, dtype=np.uint8).copy()
    tensors: list[torch.Tensor] = []
    for spec in specs:
        if spec.numel == 0:
            tensors.append(torch.empty(spec.shape, dtype=DTYPES[spec.wire]))
            continue
        tensors.append(_from_buffer(body, position, spec))
        position += spec.padded_nbytes
    return specs, tensors


def read_header(
    codec: str, data: Buffer, limits: DecodeLimits, wire_for: WireRule = same_dtype
) -> tuple[list[TensorSpec], int]:
    """Parse and check the header; return the specs and where the buffers start.

    Each tensor must travel in the dtype ``wire_for`` its dtype, the one the codec's
    encoder writes: a payload cannot make the decoder build another.
    """
    if len(data) < PREFIX or bytes(data[: len(MAGIC)]) != MAGIC:
        raise CodecError(codec, "not a fedgate tensor container (bad magic or empty body)")
    (header_length,) = _LENGTH.unpack_from(data, len(MAGIC))
    if header_length > limits.max_header_bytes:
        raise DecodedSizeExceeded(
            codec, f"header of {header_length} bytes exceeds {limits.max_header_bytes}"
        )
    end = PREFIX + header_length
    if end > len(data):
        raise CodecError(codec, f"truncated header: {header_length} bytes declared")
    specs = parse_specs(codec, bytes(data[PREFIX:end]), limits)
    for spec in specs:
        if spec.wire != wire_for(spec.dtype):
            raise CodecError(
                codec, f"tensor {spec.name!r}: {spec.dtype} cannot travel as {spec.wire}"
            )
    declared = sum(spec.padded_nbytes for spec in specs)
    if declared != len(data) - end:
        raise CodecError(
            codec,
            f"body holds {len(data) - end} bytes of tensor data but the header declares "
            f"{declared} (truncated or padded payload)",
        )
    return specs, end


def parse_specs(codec: str, header: bytes, limits: DecodeLimits) -> list[TensorSpec]:
    try:
        document = json.loads(header)
    except (ValueError, RecursionError) as exc:
        raise CodecError(codec, f"header is not valid JSON: {exc}") from None
    entries = document.get("tensors") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise CodecError(codec, "header has no 'tensors' list")
    layouts.check_count(codec, len(entries), limits)
    return check_specs(codec, [spec_from_entry(codec, entry) for entry in entries], limits)


def spec_from_entry(codec: str, entry: object) -> TensorSpec:
    """Validate one header entry (a dict from JSON or msgpack) into a `TensorSpec`."""
    if not isinstance(entry, dict):
        raise CodecError(codec, "tensor entry is not a map")
    name, dtype = entry.get("name"), entry.get("dtype")
    wire, shape = entry.get("wire", dtype), entry.get("shape")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise CodecError(codec, f"tensor name must be a string of 1-{MAX_NAME_LENGTH} chars")
    for label, value in (("dtype", dtype), ("wire dtype", wire)):
        if not isinstance(value, str) or value not in DTYPES:
            raise CodecError(codec, f"tensor {name!r}: unsupported {label} {_short(value)}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise CodecError(
            codec, f"tensor {name!r}: shape must be a list of at most {MAX_DIMS} sizes >= 0"
        )
    assert isinstance(dtype, str) and isinstance(wire, str)
    return TensorSpec(name=name, dtype=dtype, wire=wire, shape=tuple(shape))


def check_specs(codec: str, specs: Sequence[TensorSpec], limits: DecodeLimits) -> list[TensorSpec]:
    """Refuse too many tensors, duplicate names, anything but the limits' layout (when
    they have one), and outputs over the size cap."""
    layouts.check_count(codec, len(specs), limits)
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise CodecError(codec, "duplicate tensor names in payload")
    layouts.check_layout(codec, specs, limits)
    if len(specs) > limits.max_tensors:
        raise DecodedSizeExceeded(
            codec, f"{len(specs)} tensors exceed the limit of {limits.max_tensors}"
        )
    decoded = sum(spec.numel * itemsize(spec.dtype) for spec in specs)
    if decoded > limits.max_decoded_bytes:
        raise DecodedSizeExceeded(
            codec, f"decoded size {decoded} bytes exceeds the cap of {limits.max_decoded_bytes}"
        )
    return list(specs)


def _short(value: object) -> str:
    """A hostile value for a message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _from_buffer(body: Body, position: int, spec: TensorSpec) -> torch.Tensor:
    if spec.wire == "bool":  # any non-zero byte is True; never reinterpret raw bytes as bool
        flat = torch.frombuffer(body, dtype=torch.uint8, count=spec.numel, offset=position)
        return flat.ne(0).reshape(spec.shape)
    flat = torch.frombuffer(body, dtype=DTYPES[spec.wire], count=spec.numel, offset=position)
    return flat.reshape(spec.shape)


def dtype_or_error(codec: str, dtype: torch.dtype) -> str:
    """The wire name of ``dtype``, or a `CodecError` naming the codec."""
    try:
        return dtype_name(dtype)
    except TypeError as exc:
        raise CodecError(codec, str(exc)) from None
