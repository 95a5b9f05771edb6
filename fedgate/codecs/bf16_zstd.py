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

from fedgate.codecs import bounds, compression, container, layouts, release
from fedgate.codecs.base import (
    DEFAULT_LIMITS,
    DTYPES,
    FLOAT_DTYPES,
    Buffer,
    DecodeLimits,
    TensorDict,
)


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

    def decode(self, data: Buffer, limits: DecodeLimits = DEFAULT_LIMITS) -> TensorDict:
        return release.refusing(self._decode, data, limits)

    def _decode(self, data: Buffer, limits: DecodeLimits) -> TensorDict:
        packed = compression.decompress(self.name, data, content_cap(limits))
        specs, wire = container.unpack(self.name, packed, limits, wire_dtype)
        return {
            spec.name: tensor if spec.dtype == spec.wire else tensor.to(DTYPES[spec.dtype])
            for spec, tensor in zip(specs, wire, strict=True)
        }


def wire_dtype(dtype: str) -> str:
    """What the encoder sends a tensor of ``dtype`` as: floats as bfloat16, the rest as is."""
    return "bfloat16" if dtype in FLOAT_DTYPES else dtype


def content_cap(limits: DecodeLimits) -> int:
    """The most bytes the compressed container may declare it holds, checked before a
    byte is decompressed.

    With a layout: its buffers' exact size (floats as bfloat16), plus the header budget.
    Without: the decoded cap (no buffer is wider on the wire than in the model), each
    buffer's padding and the header. A smaller container is no threat; its header is
    checked against the layout once decompressed, so a wrong shape is still named as one.
    """
    framing = container.PREFIX + limits.max_header_bytes + container.ALIGN
    if limits.layout is None:
        return limits.max_decoded_bytes + container.ALIGN * limits.max_tensors + framing
    return layouts.body_bytes(limits.layout, wire_dtype) + framing
