"""Per-element error bounds of the float casts lossy codecs make (see `BoundedCodec`).

Round-to-nearest into a float with ``p`` significant bits is within half a step,
``2**-p * |x|``, while ``|x|`` is in the normal range; below it, steps are a fixed size
and the error is at most half of one.
"""

from __future__ import annotations

import torch

# bfloat16 keeps 8 significant bits; its subnormal steps are 2**-133 apart.
BF16_RELATIVE = 2.0**-8
BF16_SUBNORMAL_HALF_STEP = 2.0**-134
BF16_MAX = float(torch.finfo(torch.bfloat16).max)
# float16 keeps 11 significant bits down to 2**-14; below that its steps are 2**-24.
FP16_RELATIVE = 2.0**-11
FP16_SUBNORMAL_HALF_STEP = 2.0**-25
FP16_MAX = float(torch.finfo(torch.float16).max)
# torch casts float64 to the narrow types through float32: one more rounding.
DOUBLE_ROUNDING = 2.0**-24


def rounding_bound(tensor: torch.Tensor, relative: float, absolute: float) -> torch.Tensor:
    """``relative * |x|``, at least ``absolute``; zeros for non-float tensors (exact)."""
    if not tensor.is_floating_point():
        return torch.zeros(tensor.shape, dtype=torch.float64)
    if tensor.dtype == torch.float64:
        relative += DOUBLE_ROUNDING
    return (tensor.detach().cpu().double().abs() * relative).clamp(min=absolute)


def bf16_bound(tensor: torch.Tensor) -> torch.Tensor:
    """2**-8 of |x| (2**-134 near zero); finite values beyond bfloat16's range become inf."""
    bound = rounding_bound(tensor, BF16_RELATIVE, BF16_SUBNORMAL_HALF_STEP)
    return bound.masked_fill(tensor.detach().cpu().double().abs() > BF16_MAX, float("inf"))


def fp16_bound(tensor: torch.Tensor) -> torch.Tensor:
    """2**-11 of |x| (2**-25 below 2**-14); beyond ±65504 (clamped), the distance to it."""
    magnitude = tensor.detach().cpu().double().abs()
    bound = rounding_bound(tensor, FP16_RELATIVE, FP16_SUBNORMAL_HALF_STEP)
    return torch.where(magnitude > FP16_MAX, magnitude - FP16_MAX, bound)
