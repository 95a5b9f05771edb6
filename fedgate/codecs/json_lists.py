"""`json`: tensors as nested JSON lists — the human-readable baseline others are compared to."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fedgate.codecs import container
from fedgate.codecs.base import DEFAULT_LIMITS, DTYPES, DecodeLimits, TensorDict
from fedgate.errors import CodecError

FORMAT = "fedgate-json/1"


@dataclass(frozen=True)
class JsonCodec:
    name: str = "json"
    media_type: str = "application/vnd.fedgate.tensors+json"
    lossy: bool = False

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes:
        # json.dumps' default separators (", ", ": "): the baseline as people write it
        entries = [self._entry(name, tensor) for name, tensor in tensors.items()]
        return json.dumps({"format": FORMAT, "tensors": entries}).encode()

    def decode(self, data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> TensorDict:
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise CodecError(self.name, f"body is not valid JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise CodecError(self.name, f"body is not a {FORMAT} document")
        entries = document.get("tensors")
        if not isinstance(entries, list):
            raise CodecError(self.name, "document has no 'tensors' list")
        specs = container.check_specs(
            self.name, [container.spec_from_entry(self.name, e) for e in entries], limits
        )
        return {
            spec.name: self._tensor(spec, entry.get("data"))
            for spec, entry in zip(specs, entries, strict=True)
        }

    def _entry(self, name: str, tensor: torch.Tensor) -> dict[str, Any]:
        dtype = container.dtype_or_error(self.name, tensor.dtype)
        return {
            "name": name,
            "dtype": dtype,
            "shape": list(tensor.shape),
            "data": tensor.detach().cpu().tolist(),
        }

    def _tensor(self, spec: container.TensorSpec, data: object) -> torch.Tensor:
        try:
            tensor = torch.tensor(data, dtype=DTYPES[spec.dtype])
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise CodecError(self.name, f"tensor {spec.name!r}: bad data: {exc}") from None
        if tensor.numel() == 0 == math.prod(spec.shape):
            return tensor.reshape(spec.shape)  # JSON cannot tell [] of shape (0, 4) from (0,)
        if tuple(tensor.shape) != spec.shape:
            raise CodecError(
                self.name,
                f"tensor {spec.name!r}: data has shape {tuple(tensor.shape)}, "
                f"header says {spec.shape}",
            )
        return tensor
