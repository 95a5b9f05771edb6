"""`shuffle-zstd`, `bf16-shuffle-zstd` and `fp16-zstd`: byte planes, then zstd.

All three split each tensor into byte planes (`planes`) inside the frame envelope
(`frames`), so both cores share the work: they are `FrameCodec`'s defaults, told which
dtype floats travel as. `shuffle-zstd` sends every tensor exactly; the other two first
cast floating tensors to bfloat16 / float16 and restore the model's dtype on decode.
Integer and bool buffers always travel exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedgate.codecs import bounds, planes
from fedgate.codecs.frame_codec import FrameCodec


@dataclass(frozen=True)
class ShuffleZstdCodec(FrameCodec):
    """Lossless: every tensor's byte planes, zstd-compressed."""

    name: str = "shuffle-zstd"
    media_type: str = "application/vnd.fedgate.tensors.shuffle+zstd"
    lossy: bool = False


@dataclass(frozen=True)
class Bf16ShuffleZstdCodec(FrameCodec):
    """Floats as bfloat16 (relative error <= 2**-8), byte planes, zstd."""

    name: str = "bf16-shuffle-zstd"
    media_type: str = "application/vnd.fedgate.tensors.bf16-shuffle+zstd"
    lossy: bool = True
    float_wire: str | None = "bfloat16"

    def error_bound(self, tensor: torch.Tensor) -> torch.Tensor:
        return bounds.bf16_bound(tensor)  # the cast's: 2**-8 of |x|


@dataclass(frozen=True)
class Fp16ZstdCodec(FrameCodec):
    """Floats as float16, finite values clamped to ±65504, byte planes, zstd."""

    name: str = "fp16-zstd"
    media_type: str = "application/vnd.fedgate.tensors.fp16+zstd"
    lossy: bool = True
    float_wire: str | None = "float16"

    def error_bound(self, tensor: torch.Tensor) -> torch.Tensor:
        return bounds.fp16_bound(tensor)  # the cast's (2**-11 of |x|) and the clamp's

    def to_wire(self, tensor: torch.Tensor, wire: torch.dtype) -> torch.Tensor:
        return to_fp16(tensor)


def to_fp16(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as float16, finite values beyond its range clamped to ±65504.

    A plain cast would turn them into ±inf, which the server refuses as non-finite; inf
    and NaN themselves stay what they are (the server should still refuse those).
    """
    values = tensor.detach().cpu()
    if values.numel() and not _magnitude(values) <= bounds.FP16_MAX:  # NaN: clamp to be sure
        values = torch.where(
            values.isinf(), values, values.clamp(-bounds.FP16_MAX, bounds.FP16_MAX)
        )
    return planes.cast(values, torch.float16)


def _magnitude(tensor: torch.Tensor) -> float:
    """max|x| (NaN if any x is NaN); numpy's reductions, several times faster than torch's."""
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
        return float(tensor.abs().max())
    array = tensor.contiguous().numpy()
    return float(max(array.max(), -array.min()))
