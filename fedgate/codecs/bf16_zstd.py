"""`bf16-zstd`: floating tensors cast to bfloat16, packed, then zstd-compressed.

The design's "bf16-pickle-zstd", without pickle: the container is fedgate's own header +
buffers, so decoding runs no code whatever the bytes say. Integer and bool buffers (e.g.
BatchNorm's ``num_batches_tracked``) keep their dtype; floats are restored to the dtype
they had in the model, so a decoded update matches the global model's dtypes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fedgate.codecs import bounds, compression, container
from fedgate.codecs.base import DEFAULT_LIMITS, DTYPES, FLOAT_DTYPES, DecodeLimits, TensorDict

# The largest container header a legal payload can carry beyond its buffers.
_HEADER_ALLOWANCE = 16 * 1024**2


@dataclass(frozen=True)
class Bf16ZstdCodec:
    name: str = "bf16-zstd"
    media_type: str = "application/vnd.fedgate.tensors.bf16+zstd"
    lossy: bool = True
    level: int = 3

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes:
        cast: dict[str, torch.Tensor] = {}
        originals: dict[str, str] = {}
        for name, tensor in tensors.items():
            original = container.dtype_or_error(self.name, tensor.dtype)
            originals[name] = original
            cast[name] = tensor.to(torch.bfloat16) if original in FLOAT_DTYPES else tensor
        return compression.compress(container.pack(self.name, cast, originals), self.level)

    def error_bound(self, tensor: torch.Tensor) -> torch.Tensor:
        """2**-8 of |x| (2**-134 near zero); values beyond bfloat16's range become inf."""
        return bounds.bf16_bound(tensor)

    def decode(self, data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> TensorDict:
        cap = limits.max_decoded_bytes + _HEADER_ALLOWANCE
        packed = compression.decompress(self.name, data, cap)
        specs, _ = container.read_header(self.name, packed, limits)
        wire = container.unpack(self.name, packed, limits)
        return {
            spec.name: tensor if spec.dtype == spec.wire else tensor.to(DTYPES[spec.dtype])
            for spec, tensor in zip(specs, wire, strict=True)
        }
