"""Aggregation maths: plain functions over state dicts, which the strategies compose.

Everything here is deterministic and works on CPU tensors. Sums are kept in float64 so
that a result does not depend on the order updates arrived in, and integer buffers
round exactly. "Distance" is always the L2 norm of a difference over every floating-point
tensor of a model taken together (integer buffers such as step counters are not weights
and are left out).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    # Annotations only: the codecs (zstandard, msgpack) stay out of environments that
    # train without them (fedgate.core.training is imported by the flower bench suite).
    from fedgate.codecs import TensorDict

Tensors = Mapping[str, torch.Tensor]

# The largest stacked slice a coordinate-wise reduction sorts at once (elements): sorting
# allocates values and int64 indices, so a whole large model at once would triple memory.
REDUCE_CHUNK_ELEMENTS = 1 << 22
# The size below which a tensor is measured packed with its neighbours (`Anchor`), and the
# size of a pack: past it, one call's arithmetic outweighs its overhead.
PACK_ELEMENTS = 1 << 16


def zeros_accumulator(model: Tensors) -> TensorDict:
    """float64 zeros shaped like ``model``."""
    return {name: torch.zeros(t.shape, dtype=torch.float64) for name, t in model.items()}


def accumulate(acc: TensorDict, tensors: Tensors, weight: float) -> None:
    """acc += weight * tensors, in the accumulator's precision, in place."""
    for name, total in acc.items():
        # add_ computes in the accumulator's dtype (type promotion): no converted copy
        total.add_(tensors[name], alpha=weight)


def weighted_mean(acc: Tensors, total_weight: float, like: Tensors) -> TensorDict:
    """acc / total_weight, cast back to the dtypes of ``like`` (fp32 for fp32 weights,
    integers rounded)."""
    if total_weight <= 0:
        raise ValueError("cannot average with a total weight of zero")
    out: TensorDict = {}
    for name, reference in like.items():
        mean = acc[name] / total_weight
        out[name] = _cast(mean, reference)
    return out


def distance(tensors: Tensors, base: Tensors) -> float:
    """‖tensors - base‖₂ over the floating-point tensors of ``base``, in float64.

    NaN or infinity when ``tensors`` holds a non-finite value (or the sum overflows):
    callers treat a non-finite distance as an update that cannot be trusted.
    """
    return Anchor(base).distance(tensors)


def norm(tensors: Tensors) -> float:
    """‖tensors‖₂ over the floating-point tensors, in float64."""
    return Anchor(tensors).norm


class Anchor:
    """A model that many others are measured against (a round's global model): the
    distances of every update to it, and of the result.

    Per-update cost is what matters for small models, where each torch call costs more
    than its arithmetic: the small floating-point tensors are packed, in order, into
    float64 runs of up to `PACK_ELEMENTS` converted once here, so an update is measured in
    a handful of calls. Large tensors are converted when measured (a float64 copy of a
    large model held for a whole round would cost more memory than the calls save).
    """

    def __init__(self, model: Tensors) -> None:
        self._packs: list[tuple[list[str], torch.Tensor]] = []  # names, float64 run
        self._large: list[tuple[str, torch.Tensor]] = []
        pending: list[str] = []
        pending_elements = 0
        for name, tensor in model.items():
            if not tensor.is_floating_point():
                continue
            if tensor.numel() >= PACK_ELEMENTS:
                self._large.append((name, tensor))
                continue
            pending.append(name)
            pending_elements += tensor.numel()
            if pending_elements >= PACK_ELEMENTS:
                self._packs.append((pending, _packed(model, pending)))
                pending, pending_elements = [], 0
        if pending:
            self._packs.append((pending, _packed(model, pending)))
        self._norm: float | None = None

    def distance(self, tensors: Tensors) -> float:
        """‖tensors - model‖₂ (see `distance`); ``tensors`` has the model's layout."""
        total = 0.0
        for names, run in self._packs:
            diff = _packed(tensors, names)
            diff.sub_(run)
            total += float(torch.dot(diff, diff))
        for name, reference in self._large:
            diff = tensors[name].to(torch.float64) - reference.to(torch.float64)
            total += float(torch.dot(diff.flatten(), diff.flatten()))
        return math.sqrt(total) if total >= 0 else math.nan  # NaN stays NaN

    @property
    def norm(self) -> float:
        """‖model‖₂ over its floating-point tensors (computed once)."""
        if self._norm is None:
            total = sum(float(torch.dot(run, run)) for _, run in self._packs)
            for _, reference in self._large:
                flat = reference.to(torch.float64).flatten()
                total += float(torch.dot(flat, flat))
            self._norm = math.sqrt(total) if total >= 0 else math.nan
        return self._norm


def _packed(tensors: Tensors, names: Sequence[str]) -> torch.Tensor:
    """The named tensors, flattened into one new float64 vector."""
    flat = torch.cat([tensors[name].reshape(-1) for name in names])
    # a float64 cat is already the new vector; any other is copied by the cast
    return flat.to(torch.float64)


def clip_update(
    tensors: Tensors, base: Tensors, clip_norm: float, before: float | None = None
) -> tuple[TensorDict, float]:
    """The update with its difference to ``base`` scaled down to norm ``clip_norm`` at most,
    and the distance it had before (``before``, when the caller measured it already).

    ``clip_norm <= 0`` turns clipping off. An update within the norm is returned as it is
    (same tensors, bit for bit); integer tensors are never changed. A non-finite distance
    is returned unclipped: no scaling makes NaN trustworthy, and the caller names it.
    """
    if before is None:
        before = distance(tensors, base)
    if clip_norm <= 0 or not math.isfinite(before) or before <= clip_norm:
        return dict(tensors), before
    scale = clip_norm / before
    clipped: TensorDict = {}
    for name, reference in base.items():
        t = tensors[name]
        if not reference.is_floating_point():
            clipped[name] = t
            continue
        start = reference.to(torch.float64)
        clipped[name] = (start + scale * (t.to(torch.float64) - start)).to(t.dtype)
    return clipped, before


def trim_count(participants: int, fraction: float) -> int:
    """How many values a trimmed mean drops from each end: ⌊fraction · participants⌋."""
    return math.floor(fraction * participants)


def median_trim(participants: int) -> int:
    """The trim that turns a trimmed mean into the median: the middle value for an odd
    count, the mean of the two middle values for an even one."""
    return (participants - 1) // 2


def trimmed_mean(stack: torch.Tensor, trim: int) -> torch.Tensor:
    """Coordinate-wise mean over dim 0 of ``stack`` after dropping its ``trim`` lowest and
    ``trim`` highest values, in float64. ``trim = median_trim(n)`` gives the median."""
    n = stack.shape[0]
    if trim < 0 or n - 2 * trim < 1:
        raise ValueError(f"trimming {trim} from each end of {n} values leaves nothing")
    ordered = stack.sort(dim=0).values
    return ordered[trim : n - trim].to(torch.float64).mean(dim=0)


def reduce_held(
    held: Sequence[torch.Tensor], like: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``reduce`` applied coordinate-wise over the updates ``held`` of one tensor, a slice of
    columns at a time (bounded scratch memory), cast to the dtype of ``like``."""
    n = len(held)
    flat = [t.reshape(-1) for t in held]
    size = like.numel()
    step = max(1, REDUCE_CHUNK_ELEMENTS // max(n, 1))
    out = torch.empty(size, dtype=torch.float64)
    for start in range(0, size, step):
        stop = min(size, start + step)
        out[start:stop] = reduce(torch.stack([f[start:stop] for f in flat]))
    return _cast(out.reshape(like.shape), like)


def convex_reach(distances: Sequence[float]) -> float:
    """The farthest a weighted mean with non-negative weights can lie from the global
    model: ‖Σ wᵢdᵢ‖ ≤ Σ wᵢ‖dᵢ‖ ≤ maxᵢ ‖dᵢ‖ (the norm is convex)."""
    return max(distances, default=0.0)


def trimmed_reach(distances: Sequence[float], trim: int) -> float:
    """The farthest a coordinate-wise trimmed mean can lie from the global model.

    Per coordinate the result a lies within the kept values, so when a > 0 the largest
    kept value and the ``trim`` values above it — trim + 1 updates — are each ≥ a (and
    likewise below when a < 0). Hence (trim + 1) · a² ≤ Σᵢ dᵢ² per coordinate, and summed
    over coordinates ‖a‖² ≤ Σᵢ ‖dᵢ‖² / (trim + 1). For the median (trim = ⌊(n-1)/2⌋)
    that is at most √2 · maxᵢ ‖dᵢ‖; with no trim the mean is convex (`convex_reach`).
    """
    if trim == 0:
        return convex_reach(distances)
    return math.sqrt(sum(d * d for d in distances) / (trim + 1))


def _cast(value: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    rounded = value if reference.is_floating_point() else value.round()
    return rounded.to(reference.dtype)
