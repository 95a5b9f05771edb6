"""The Codec seam: how a model's tensors become bytes on the wire and back.

Codecs see only tensors and bytes. Decoding treats every byte as hostile: no code runs,
sizes are checked before memory is allocated, and every failure is a `CodecError` that
names the codec and what was wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol, runtime_checkable

import torch

from fedgate.errors import ConfigError, FedgateError, UnknownCodec

TensorDict = dict[str, torch.Tensor]
# What a decoder reads: bytes as received, or a bytearray handed over to it (an upload
# assembled in one buffer), which its tensors may then share instead of copying it.
Buffer = bytes | bytearray

# The dtypes a payload may declare. Anything else is refused before any allocation.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}
FLOAT_DTYPES = frozenset({"float32", "float64", "float16", "bfloat16"})

MAX_NAME_LENGTH = 512
MAX_DIMS = 8


@dataclass(frozen=True)
class TensorLayout:
    """One tensor as the model holds it: what a payload must declare for it, exactly."""

    name: str
    dtype: str  # a key of DTYPES, the dtype in the model
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * itemsize(self.dtype)


# What a payload's header may spend beyond its tensors' entries (format name, framing,
# padding), and per tensor: an entry's fields (dtype, wire dtype, kind, k, index...) and
# one row of a frame table, besides the name and the shape's digits.
HEADER_BASE_BYTES = 1024
HEADER_ENTRY_BYTES = 256
HEADER_DIM_BYTES = 24
# Entries beyond the layout a decoder still parses, so that a mismatch can name them
# (``unexpected 'x'``) rather than only count them; headers have room for them.
NAMED_EXTRAS = 16
EXTRA_ENTRY_BYTES = HEADER_ENTRY_BYTES + 64


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds applied while decoding untrusted bytes."""

    max_decoded_bytes: int = 2 * 1024**3
    max_tensors: int = 10_000
    max_header_bytes: int = 16 * 1024**2
    # When set, a payload must hold exactly these tensors (names, dtypes, shapes); every
    # decoder refuses anything else BEFORE decompressing a body or allocating a tensor.
    layout: tuple[TensorLayout, ...] | None = None

    @classmethod
    def for_model(cls, tensors: Mapping[str, torch.Tensor]) -> DecodeLimits:
        """Limits that admit exactly ``tensors``' layout: decoded bytes = the model's size,
        max_tensors = its count, a header budget derived from the layout (not 16 MiB)."""
        layout = tuple(
            TensorLayout(name, dtype_name(tensor.dtype), tuple(tensor.shape))
            for name, tensor in tensors.items()
        )
        return cls(
            max_decoded_bytes=sum(entry.nbytes for entry in layout),
            max_tensors=len(layout),
            max_header_bytes=header_budget(layout),
            layout=layout,
        )

    @cached_property
    def layout_by_name(self) -> dict[str, TensorLayout] | None:
        """The layout by name (None without one), built once per limits object."""
        return None if self.layout is None else {entry.name: entry for entry in self.layout}


def header_budget(layout: Sequence[TensorLayout]) -> int:
    """The most header bytes an honest payload of ``layout`` needs, in any codec, with
    room for `NAMED_EXTRAS` short entries more.

    Names are counted as JSON writes them (escapes included), so a header an honest
    encoder wrote always fits, and a header padded to smuggle work in never does.
    """
    entries = sum(
        HEADER_ENTRY_BYTES + len(json.dumps(entry.name)) + HEADER_DIM_BYTES * len(entry.shape)
        for entry in layout
    )
    return HEADER_BASE_BYTES + entries + NAMED_EXTRAS * EXTRA_ENTRY_BYTES


DEFAULT_LIMITS = DecodeLimits()


@runtime_checkable
class Codec(Protocol):
    """Turns a state dict into bytes and back. Implementations are stateless."""

    @property
    def name(self) -> str: ...

    @property
    def media_type(self) -> str: ...

    @property
    def lossy(self) -> bool: ...

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes: ...

    def decode(self, data: Buffer, limits: DecodeLimits = DEFAULT_LIMITS) -> TensorDict: ...


@runtime_checkable
class BoundedCodec(Codec, Protocol):
    """A lossy codec that states how far a decoded value may be from the one encoded.

    ``error_bound(tensor)`` is, per element, the largest ``|decode(encode(x)) - x|`` the
    codec allows for ``tensor`` (float64, same shape; zeros where it is exact). Every lossy
    codec states one, so tests hold each codec to its own claim rather than a shared one.
    Non-finite inputs are outside the bound: codecs keep them non-finite instead.
    """

    def error_bound(self, tensor: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SparseCodec(Codec, Protocol):
    """A codec that suits model deltas only (it drops most of a tensor's elements), and so
    names registered codecs for what it cannot carry well.

    ``dense_codec`` (never itself a `SparseCodec`) carries whole models: a first download
    has nothing to take a delta from. ``downlink_codec`` carries model deltas down to the
    clients that send in this one; it may be this codec, or a denser variant of it.
    """

    @property
    def dense_codec(self) -> str: ...

    @property
    def downlink_codec(self) -> str: ...


@runtime_checkable
class GilBoundCodec(Codec, Protocol):
    """A codec whose encode and decode hold the GIL for their whole run (pure-Python work:
    parsing text into lists, building lists from tensors), so a thread does not keep them
    off a server's event loop: a large payload would hold the loop for seconds.

    An optional capability: a codec that declares ``gil_bound`` True is run by servers in
    a worker process for large payloads (`fedgate.core.offload`); codecs whose work is
    numpy, torch or zstd calls (which release the GIL) leave it out and stay on threads.
    """

    @property
    def gil_bound(self) -> bool: ...


def holds_gil(codec: Codec) -> bool:
    """Whether ``codec`` declares itself GIL-bound (`GilBoundCodec`, ``gil_bound`` True).

    The attribute is read, not ``isinstance``-checked: a runtime Protocol check costs tens
    of microseconds, and this is asked on every upload."""
    return bool(getattr(codec, "gil_bound", False))


class InvalidCodecParameter(UnknownCodec, ConfigError):
    """A codec name whose ``:parameter`` the codec refuses (or a codec that takes none).

    An `UnknownCodec` to the wire (the name names no usable codec), a `ConfigError` to
    command-line code; the message says what the parameter should have been.
    """

    def __init__(self, name: str, reason: str, available: list[str]) -> None:
        FedgateError.__init__(self, f"codec {name!r}: {reason}")
        self.codec = name
        self.reason = reason
        self.available = sorted(available)


def dtype_name(dtype: torch.dtype) -> str:
    """The wire name of a tensor dtype; dtypes outside `DTYPES` cannot be sent."""
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise TypeError(f"dtype {dtype} cannot be sent; supported: {sorted(DTYPES)}") from None


def itemsize(name: str) -> int:
    return DTYPES[name].itemsize  # no tensor made: decoding asks once per tensor
