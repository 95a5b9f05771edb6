"""`FrameCodec`: what every codec that writes the frame envelope (`frames`) shares.

A frame codec decides two things: how one tensor travels (`FrameCodec.piece`) and how one
checked header entry is read back (`FrameCodec.plan`). The envelope, its checks against
`DecodeLimits`, and the worker threads that share the frames are the same for all of them.

By default every tensor travels exactly, as byte planes; with ``float_wire`` set, floating
tensors travel cast to that dtype and come back in the model's. Codecs that quantize
override the two hooks for the tensors they quantize and defer to these for the rest.
The registry finds frame codecs by this class (`fedgate.codecs.frame_codecs`), so the
envelope's hostile-input tests cover a new one without being told.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fedgate.codecs import frames, planes
from fedgate.codecs.base import DEFAULT_LIMITS, DTYPES, Buffer, DecodeLimits, TensorDict
from fedgate.codecs.container import TensorSpec


@dataclass(frozen=True)
class FrameCodec:
    """A `Codec` in the frame envelope. Subclasses give their fields defaults."""

    name: str
    media_type: str
    lossy: bool
    level: int = 1  # zstd's, for the body frames
    # The dtype floating tensors travel as (a key of `DTYPES`); None: their own.
    float_wire: str | None = None
    # Wider tensors as byte planes (`planes`) unless False; measured on fp16: ~8-12% smaller.
    shuffled: bool = True

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes:
        return frames.pack(self.name, tensors, self.piece, self.level)

    def decode(self, data: Buffer, limits: DecodeLimits = DEFAULT_LIMITS) -> TensorDict:
        return frames.unpack(self.name, data, limits, self.plan)

    def piece(self, tensor: torch.Tensor) -> frames.Piece:
        """``tensor`` exactly, or cast to ``float_wire`` if it is floating and not already."""
        wire = None if self.float_wire is None else DTYPES[self.float_wire]
        if wire is None or not tensor.is_floating_point() or tensor.dtype == wire:
            return planes.exact_piece(tensor, shuffled=self.shuffled)
        return planes.exact_piece(self.to_wire(tensor, wire), shuffled=self.shuffled, cast=True)

    def plan(self, spec: TensorSpec, fields: Mapping[str, object]) -> frames.Plan:
        """How to read a tensor `piece` wrote; any other kind or wire dtype is refused."""
        return planes.exact_plan(self.name, spec, fields, cast_from=self.float_wire)

    def to_wire(self, tensor: torch.Tensor, wire: torch.dtype) -> torch.Tensor:
        """A floating ``tensor`` cast to ``wire``; a codec may bring values into range first."""
        return planes.cast(tensor, wire)
