"""`int8-zstd`: per-row symmetric int8 with float32 scales, then zstd.

Each float32 weight matrix/kernel with >= 256 elements travels as one float32 scale per
output row (dim 0), ``max|row| / 127``, and ``rint(x / scale)`` as int8: a quarter of
the bytes before zstd, and ``|x - x̂| <= scale / 2`` per element. Everything else
(biases, normalisation parameters and statistics, integer and bool buffers, and any
tensor holding NaN/inf) travels exactly, as byte planes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fedgate.codecs import frames, quantize
from fedgate.codecs.container import TensorSpec
from fedgate.codecs.frame_codec import FrameCodec


@dataclass(frozen=True)
class Int8ZstdCodec(FrameCodec):
    name: str = "int8-zstd"
    media_type: str = "application/vnd.fedgate.tensors.int8+zstd"
    lossy: bool = True

    def error_bound(self, tensor: torch.Tensor) -> torch.Tensor:
        """scale/2 per element (scale = max|row| / 127), 0 where the tensor goes exactly."""
        bound = quantize.int8_bound(tensor) if quantize.quantizable(tensor) else None
        return torch.zeros(tensor.shape, dtype=torch.float64) if bound is None else bound

    def piece(self, tensor: torch.Tensor) -> frames.Piece:
        piece = quantize.int8_piece(tensor) if quantize.quantizable(tensor) else None
        return super().piece(tensor) if piece is None else piece

    def plan(self, spec: TensorSpec, fields: Mapping[str, object]) -> frames.Plan:
        if fields.get("kind") == "int8":
            return quantize.int8_plan(self.name, spec)
        return super().plan(spec, fields)
