"""`topk-int8[:fraction]`: the largest-magnitude elements of each tensor, as int8, then zstd.

For each float32 weight matrix/kernel with >= 256 elements, only the ``k =
ceil(fraction * numel)`` elements of largest magnitude travel: their positions as gaps
(byte planes of uint16, or uint32 if a gap does not fit) and their values as symmetric
int8 with one float32 scale per tensor; every other element decodes to 0. Everything
else travels exactly. Meant for deltas, where the client keeps what was not sent as a
residual for the next round (error feedback lives in the client loop, not here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fedgate.codecs import frames, quantize
from fedgate.codecs.base import InvalidCodecParameter
from fedgate.codecs.container import TensorSpec
from fedgate.codecs.frame_codec import FrameCodec

NAME = "topk-int8"
DEFAULT_FRACTION = 0.1
DOWNLINK_FACTOR = 5.0
# The fractions a name may ask for. Each distinct codec name costs the server cached
# encodings, so the set is small: every fraction the docs and benchmarks use, closed
# under the downlink rule (``min(1, fraction * DOWNLINK_FACTOR)`` is in it for each), so
# the codecs models are sent down in have canonical names too.
FRACTIONS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.025,
    0.05,
    0.1,
    0.125,
    0.2,
    0.25,
    0.5,
    0.625,
    1.0,
)


@dataclass(frozen=True)
class TopkInt8Codec(FrameCodec):
    """A `SparseCodec`: it names the codecs whole models and downlink deltas travel in."""

    name: str = NAME
    media_type: str = "application/vnd.fedgate.tensors.topk-int8+zstd"
    lossy: bool = True
    fraction: float = DEFAULT_FRACTION
    # Whole models (a first download, with nothing to take a delta from) would lose 95% of
    # their weights here; this is the codec the platform sends them in instead.
    dense_codec: str = "int8-zstd"

    @property
    def downlink_codec(self) -> str:
        """The codec model deltas are sent down in to clients that send in this one.

        The global model moves by the average of many clients' sparse updates, which is far
        denser than any one of them; sent at the clients' own k, the downlink lags and
        accuracy suffers (measured on digits: -1 to -4 points at k=5%). It keeps
        DOWNLINK_FACTOR times as many elements.
        """
        wanted = min(1.0, self.fraction * DOWNLINK_FACTOR) * (1 - 1e-9)  # float slack
        return canonical_name(min(f for f in FRACTIONS if f >= wanted))

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")

    def error_bound(self, tensor: torch.Tensor) -> torch.Tensor:
        """Kept elements: scale/2 (scale = max|x| / 127); dropped ones: |x| (they are 0)."""
        bound = quantize.topk_bound(tensor, self.fraction) if quantize.quantizable(tensor) else None
        return torch.zeros(tensor.shape, dtype=torch.float64) if bound is None else bound

    def piece(self, tensor: torch.Tensor) -> frames.Piece:
        quantizable = quantize.quantizable(tensor)
        piece = quantize.topk_piece(tensor, self.fraction) if quantizable else None
        return super().piece(tensor) if piece is None else piece

    def plan(self, spec: TensorSpec, fields: Mapping[str, object]) -> frames.Plan:
        if fields.get("kind") == "topk":
            return quantize.topk_plan(self.name, spec, fields)
        return super().plan(spec, fields)


def canonical_name(fraction: float) -> str:
    """The one name of the codec keeping ``fraction``: the plain name for the default."""
    return NAME if fraction == DEFAULT_FRACTION else f"{NAME}:{fraction!r}"


def variant_names() -> list[str]:
    """Every name this codec answers to, canonical spellings only."""
    return [canonical_name(fraction) for fraction in FRACTIONS]


_VARIANTS = {
    fraction: TopkInt8Codec(canonical_name(fraction), fraction=fraction) for fraction in FRACTIONS
}


def with_fraction(parameter: str, available: list[str]) -> TopkInt8Codec:
    """``topk-int8:<parameter>``: the fraction of elements kept, one of `FRACTIONS`.

    Any spelling of an allowed number ("0.1", "0.10", "1e-1") gives the one codec with
    the canonical name, so equivalent names share one cache entry on the server.
    """
    try:
        fraction = float(parameter)
    except ValueError:
        fraction = math.nan
    codec = _VARIANTS.get(fraction)  # nan is never a key
    if codec is None:
        allowed = ", ".join(repr(f) for f in FRACTIONS)
        reason = f"the fraction of elements kept must be one of {allowed}; got {parameter!r}"
        raise InvalidCodecParameter(f"{NAME}:{parameter}", reason, available)
    return codec


DEFAULT_CODEC = _VARIANTS[DEFAULT_FRACTION]
