"""`msgpack`: a msgpack map of name -> {dtype, shape, data bytes}."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import torch

from fedgate.codecs import container
from fedgate.codecs.base import DEFAULT_LIMITS, DTYPES, DecodeLimits, TensorDict
from fedgate.errors import CodecError

FORMAT = "fedgate-msgpack/1"


@dataclass(frozen=True)
class MsgpackCodec:
    name: str = "msgpack"
    media_type: str = "application/vnd.fedgate.tensors+msgpack"
    lossy: bool = False

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes:
        entries = {name: self._entry(tensor) for name, tensor in tensors.items()}
        packed: bytes = msgpack.packb({"format": FORMAT, "tensors": entries}, use_bin_type=True)
        return packed

    def decode(self, data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> TensorDict:
        document = self._unpack(data, limits)
        entries = document.get("tensors")
        if not isinstance(entries, dict):
            raise CodecError(self.name, "document has no 'tensors' map")
        specs = container.check_specs(
            self.name,
            [
                container.spec_from_entry(self.name, {**_as_dict(v), "name": k})
                for k, v in entries.items()
            ],
            limits,
        )
        return {spec.name: self._tensor(spec, entries[spec.name].get("data")) for spec in specs}

    def _entry(self, tensor: torch.Tensor) -> dict[str, Any]:
        spec_dtype = container.dtype_or_error(self.name, tensor.dtype)
        return {
            "dtype": spec_dtype,
            "shape": list(tensor.shape),
            "data": bytes(container.tensor_bytes(tensor)),
        }

    def _unpack(self, data: bytes, limits: DecodeLimits) -> dict[str, Any]:
        try:
            document = msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=True,
                max_array_len=limits.max_tensors * 4,
                max_map_len=limits.max_tensors + 8,
            )
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
