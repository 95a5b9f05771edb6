"""`msgpack`: a msgpack map of name -> {dtype, shape, data bytes}."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import torch

from fedgate.codecs import container, layouts, release
from fedgate.codecs.base import (
    DEFAULT_LIMITS,
    DTYPES,
    MAX_DIMS,
    MAX_NAME_LENGTH,
    NAMED_EXTRAS,
    Buffer,
    DecodeLimits,
    TensorDict,
)
from fedgate.errors import CodecError, DecodedSizeExceeded

FORMAT = "fedgate-msgpack/1"
_LONGEST_WORD = 32  # the format's name, dtype names and keys are shorter
_ENTRY_KEYS = 8  # keys of the document and of an entry, with room to spare


@dataclass(frozen=True)
class MsgpackCodec:
    name: str = "msgpack"
    media_type: str = "application/vnd.fedgate.tensors+msgpack"
    lossy: bool = False

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes:
        entries = {name: self._entry(tensor) for name, tensor in tensors.items()}
        packed: bytes = msgpack.packb({"format": FORMAT, "tensors": entries}, use_bin_type=True)
        return packed

    def decode(self, data: Buffer, limits: DecodeLimits = DEFAULT_LIMITS) -> TensorDict:
        return release.refusing(self._decode, data, limits)

    def _decode(self, data: Buffer, limits: DecodeLimits) -> TensorDict:
        document = self._unpack(data, limits)
        entries = document.get("tensors")
        if not isinstance(entries, dict):
            raise CodecError(self.name, "document has no 'tensors' map")
        layouts.check_count(self.name, len(entries), limits)
        specs = container.check_specs(
            self.name,
            [
                container.spec_from_entry(self.name, {**_as_dict(v), "name": k})
                for k, v in entries.items()
            ],
            limits,
        )
        for spec in specs:  # no casts here: the bytes must be the tensor's own
            if spec.wire != spec.dtype:
                raise CodecError(
                    self.name, f"tensor {spec.name!r}: {spec.dtype} cannot travel as {spec.wire}"
                )
        return {spec.name: self._tensor(spec, entries[spec.name].get("data")) for spec in specs}

    def _entry(self, tensor: torch.Tensor) -> dict[str, Any]:
        spec_dtype = container.dtype_or_error(self.name, tensor.dtype)
        return {
            "dtype": spec_dtype,
            "shape": list(tensor.shape),
            "data": bytes(container.tensor_bytes(tensor)),
        }

    def _unpack(self, data: Buffer, limits: DecodeLimits) -> dict[str, Any]:
        try:
            document = msgpack.unpackb(data, raw=False, strict_map_key=True, **_bounds(limits))
        except ValueError as exc:
            if "exceeds max_" in str(exc):  # an object bigger than any honest one
                raise DecodedSizeExceeded(self.name, f"body holds an object that {exc}") from None
            raise CodecError(self.name, f"body is not valid msgpack: {exc}") from None
        except Exception as exc:  # msgpack raises several unrelated types on bad input
            raise CodecError(self.name, f"body is not valid msgpack: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise CodecError(self.name, f"body is not a {FORMAT} document")
        return document

    def _tensor(self, spec: container.TensorSpec, data: object) -> torch.Tensor:
        if not isinstance(data, bytes) or len(data) != spec.wire_nbytes:
            raise CodecError(
                self.name, f"tensor {spec.name!r}: expected {spec.wire_nbytes} data bytes"
            )
        if spec.numel == 0:
            return torch.empty(spec.shape, dtype=DTYPES[spec.dtype])
        if spec.dtype == "bool":
            return torch.frombuffer(bytearray(data), dtype=torch.uint8).ne(0).reshape(spec.shape)
        return torch.frombuffer(bytearray(data), dtype=DTYPES[spec.dtype]).reshape(spec.shape)


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _bounds(limits: DecodeLimits) -> dict[str, int]:
    """msgpack's own limits, from ours: no object in an honest document is bigger.

    Maps: the document (2 keys), the tensors (one per tensor), each entry (3 keys).
    Arrays: only shapes. Strings: names, dtypes and the format. Binaries: one tensor's
    bytes, the largest of the layout's when there is one. No extension types at all.
    """
    if limits.layout is None:
        largest, longest = limits.max_decoded_bytes, 4 * MAX_NAME_LENGTH
        tensors = limits.max_tensors
    else:  # room for a few unknown names, so the mismatch can name them
        largest = max((entry.nbytes for entry in limits.layout), default=0)
        longest = max((len(entry.name.encode()) for entry in limits.layout), default=0)
        longest, tensors = max(longest, 4 * _LONGEST_WORD), len(limits.layout) + NAMED_EXTRAS
    return {
        "max_bin_len": largest,
        "max_str_len": max(longest, _LONGEST_WORD),
        "max_array_len": MAX_DIMS,
        "max_map_len": max(tensors, _ENTRY_KEYS),
        "max_ext_len": 0,
    }
