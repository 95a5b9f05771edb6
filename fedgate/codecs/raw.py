"""`raw`: every tensor's bytes as they are, behind a small JSON header."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fedgate.codecs import container, release
from fedgate.codecs.base import DEFAULT_LIMITS, Buffer, DecodeLimits, TensorDict


@dataclass(frozen=True)
class RawCodec:
    name: str = "raw"
    media_type: str = "application/vnd.fedgate.tensors.raw"
    lossy: bool = False

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes:
        return container.pack(self.name, tensors)

    def decode(self, data: Buffer, limits: DecodeLimits = DEFAULT_LIMITS) -> TensorDict:
        return release.refusing(self._decode, data, limits)

    def _decode(self, data: Buffer, limits: DecodeLimits) -> TensorDict:
        specs, tensors = container.unpack(self.name, data, limits)
        return {spec.name: tensor for spec, tensor in zip(specs, tensors, strict=True)}
