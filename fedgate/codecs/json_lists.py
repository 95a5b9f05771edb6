"""`json`: tensors as nested JSON lists — the human-readable baseline others are compared to."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch

from fedgate.codecs import container, layouts, release
from fedgate.codecs.base import DEFAULT_LIMITS, DTYPES, Buffer, DecodeLimits, TensorDict
from fedgate.errors import CodecError

FORMAT = "fedgate-json/1"


@dataclass(frozen=True)
class JsonCodec:
    name: str = "json"
    media_type: str = "application/vnd.fedgate.tensors+json"
    lossy: bool = False
    # json.loads / dumps and list <-> tensor conversions hold the GIL throughout: on ResNet-18
    # (2 busy cores) decoding took 25 s, a thread beside it stalled up to 16 s at a stretch;
    # encoding 47 s, up to 29 s (`GilBoundCodec`: servers run it in worker processes).
    gil_bound: bool = True

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes:
        # json.dumps' default separators (", ", ": "): the baseline as people write it
        entries = [self._entry(name, tensor) for name, tensor in tensors.items()]
        return json.dumps({"format": FORMAT, "tensors": entries}).encode()

    def decode(self, data: Buffer, limits: DecodeLimits = DEFAULT_LIMITS) -> TensorDict:
        return release.refusing(self._decode, data, limits)

    def _decode(self, data: Buffer, limits: DecodeLimits) -> TensorDict:
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise CodecError(self.name, f"body is not valid JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise CodecError(self.name, f"body is not a {FORMAT} document")
        entries = document.get("tensors")
        if not isinstance(entries, list):
            raise CodecError(self.name, "document has no 'tensors' list")
        layouts.check_count(self.name, len(entries), limits)
        specs = container.check_specs(
            self.name, [container.spec_from_entry(self.name, e) for e in entries], limits
        )
        # Every list checked against its shape before torch sees any: torch.tensor of a
        # nested list builds whatever it is given, however large, before we could refuse it.
        for spec, entry in zip(specs, entries, strict=True):
            if spec.wire != spec.dtype:
                raise CodecError(
                    self.name, f"tensor {spec.name!r}: {spec.dtype} cannot travel as {spec.wire}"
                )
            self._check_nesting(spec, entry.get("data"))
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

    def _check_nesting(self, spec: container.TensorSpec, data: object) -> None:
        """Refuse ``data`` unless it is lists nested exactly as ``spec.shape``, of numbers.

        A tensor with no elements may be a bare ``[]`` (what ``tolist`` writes for a shape
        that starts with 0), whatever its shape.
        """
        if data == [] and spec.numel == 0:
            return
        level: list[object] = [data]
        for depth, size in enumerate(spec.shape):
            if not all(isinstance(item, list) and len(item) == size for item in level):
                raise CodecError(
                    self.name,
                    f"tensor {spec.name!r}: data is not nested as its shape {spec.shape} "
                    f"(at depth {depth})",
                )
            level = [element for item in level for element in cast(list[object], item)]
        if not all(isinstance(item, (int, float)) for item in level):
            raise CodecError(self.name, f"tensor {spec.name!r}: data holds a non-number")

    def _tensor(self, spec: container.TensorSpec, data: object) -> torch.Tensor:
        try:
            tensor = torch.tensor(data, dtype=DTYPES[spec.dtype])
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise CodecError(self.name, f"tensor {spec.name!r}: bad data: {exc}") from None
        return tensor.reshape(spec.shape)  # [] stands for any shape without elements
