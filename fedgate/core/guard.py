"""What updates pass through on their way into a round's aggregate, and what the aggregate
must pass before it is published. It wraps every strategy alike.

On the way in (`GuardedAggregator.add`, in the round's worker thread) each update's
distance to the round's global model is measured (L2 over all float tensors); with
``clip_norm > 0`` an update farther than that is scaled back towards the global model to
exactly ``clip_norm`` (norm clipping, composed with whatever strategy aggregates). A few
scalars per update are kept (`UpdateStats`), never the update itself, so that offenders
can be named later whatever the strategy holds.

Clipping bounds an update's norm, but a weighted mean also follows the weights, and a
weight is the client's own claim (bounded only by its enrolment key): a client claiming
90% of a round's examples steers 90% of the step however short the step is. So with
clipping on, each update's weight is also capped at the median size the round's
participants declared when they joined (the bounded weights of DP-FedAvg, McMahan et al.
2018): nobody weighs more than the median participant, and fewer than half of them cannot
raise the cap. Measured on digits with one of five clients sending its change * 100 and
claiming 10,000 examples: norm clipping alone ends 6 points below the clean run, with the
cap within 1 (tests/core/test_poisoning.py).

On the way out (`GuardedAggregator.check`) the result is refused when

- it holds NaN or infinite values, or
- it *explodes*: its distance to the global model is more than ``EXPLOSION_FACTOR`` times
  the strategy's reach (plus the rounding of the model's float dtype). The reach is how
  far a correct result can lie given only the distances of the (clipped) updates folded
  in: ``max ‖dᵢ‖`` for a weighted mean (the norm is convex), ``√(Σ‖dᵢ‖² / (t+1))`` for a
  coordinate-wise mean trimming t from each end (the median: at most √2 · max ‖dᵢ‖);
  with clipping on it never exceeds ``clip_norm`` times that factor. A result beyond it
  was not computed correctly from the updates the round accepted (overflow, precision
  lost, a broken strategy), and nobody may train from it.

Explosion is deliberately *not* "larger than a typical update": a finite update that is
simply large (a scaled model-replacement attack) passes this check by construction, and
honest rounds with one client far ahead of the rest must not be refused. Bounding large
updates is what clipping and the robust strategies are for.

The offenders of a refused result are the updates whose distance is not finite; when
there is none, the update with the largest pull, weight * distance as folded (ties: all
of them) — the smallest exclusion that can bring the result back; a retry that is refused
again names the next. The federation drops the offenders with the reason and retries the
round without them.
"""

from __future__ import annotations

import logging
import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from fedgate.core.aggregation import Anchor, clip_update
from fedgate.core.strategy import Aggregator, UpdateMeta, get_strategy

if TYPE_CHECKING:
    from fedgate.codecs import TensorDict
    from fedgate.core.config import RunConfig

log = logging.getLogger("fedgate.aggregation")

EXPLOSION_FACTOR = 2.0  # margin over the strategy's mathematical reach


@dataclass(frozen=True)
class UpdateStats:
    """What the guard keeps of one update: who sent it, with what weight, how far it was
    from the global model as sent and as folded in (after clipping)."""

    client_id: str
    weight: int  # as claimed
    distance: float  # to the global model, as sent
    folded: float  # as folded in, after clipping
    folded_weight: int  # as folded in, after the cap

    @property
    def finite(self) -> bool:
        return math.isfinite(self.distance) and math.isfinite(self.folded)


@dataclass(frozen=True)
class Refusal:
    """Why a round's result may not be published, and whose updates to leave out."""

    reason: str
    offenders: tuple[str, ...]


class GuardedAggregator:
    """A strategy's aggregator with optional norm clipping, per-update statistics and the
    publication check. It is itself an `Aggregator`."""

    def __init__(
        self, inner: Aggregator, global_model: Mapping[str, torch.Tensor], clip_norm: float = 0.0
    ) -> None:
        self.inner = inner
        self.clip_norm = clip_norm
        self.weight_cap: int | None = None  # set by `cap_weights` when clipping is on
        self.stats: list[UpdateStats] = []
        self._global = dict(global_model)
        self._anchor = Anchor(self._global)

    @property
    def count(self) -> int:
        return self.inner.count

    @property
    def capacity(self) -> int:
        return self.inner.capacity

    def cap_weights(self, declared: Sequence[int]) -> None:
        """With clipping on, cap every weight at the median of the positive dataset sizes
        the round's participants ``declared`` at join (no cap if none declared one)."""
        sizes = [d for d in declared if d > 0]
        if self.clip_norm > 0 and sizes:
            self.weight_cap = statistics.median_low(sizes)

    def add(
        self,
        tensors: Mapping[str, torch.Tensor],
        weight: int,
        *,
        client_id: str,
        meta: UpdateMeta | None = None,
        distance: float | None = None,
    ) -> None:
        """Clip, cap and fold one update; ``distance`` is its `measure`, when taken."""
        before = self.measure(tensors) if distance is None else distance
        clipped, before = clip_update(tensors, self._global, self.clip_norm, before)
        clipping = self.clip_norm > 0 and math.isfinite(before)
        folded = min(before, self.clip_norm) if clipping else before
        folded_weight = weight if self.weight_cap is None else min(weight, self.weight_cap)
        self.inner.add(clipped, folded_weight, client_id=client_id, meta=meta)
        self.stats.append(UpdateStats(client_id, weight, before, folded, folded_weight))

    def measure(self, tensors: Mapping[str, torch.Tensor]) -> float:
        """The distance of ``tensors`` (the model's layout) to the global model; read-only,
        so callers may measure outside the round's lock."""
        return self._anchor.distance(tensors)

    def result(self) -> TensorDict:
        return self.inner.result()

    def reach(self, distances: Sequence[float]) -> float:
        return self.inner.reach(distances)

    def check(self, result: Mapping[str, torch.Tensor], label: str = "round") -> Refusal | None:
        """None if ``result`` may be published, else why not and who to leave out."""
        reason = self._fault(result)
        if reason is None:
            return None
        offenders = name_offenders(self.stats)
        refusal = Refusal(f"{reason}; excluded {_describe(self.stats, offenders)}", offenders)
        log.warning("%s: aggregate refused: %s", label, refusal.reason)
        return refusal

    def _fault(self, result: Mapping[str, torch.Tensor]) -> str | None:
        bad = sum(int((~torch.isfinite(t)).sum()) for t in result.values() if t.is_floating_point())
        if bad:
            return f"the aggregate holds {bad} NaN or infinite values"
        folded = [s.folded for s in self.stats]
        reach = self.reach(folded) if all(math.isfinite(d) for d in folded) else math.inf
        moved = self._anchor.distance(result)
        slack = _rounding(self._global) * (self._anchor.norm + reach)
        if moved > EXPLOSION_FACTOR * reach + slack:
            return (
                f"the aggregate lies {moved:.4g} from the global model, more than "
                f"{EXPLOSION_FACTOR:g} * {reach:.4g}, the farthest a correct result of "
                "these updates can lie"
            )
        return None


def name_offenders(stats: Sequence[UpdateStats]) -> tuple[str, ...]:
    """Updates with a non-finite distance; if none, those with the largest pull."""
    broken = tuple(s.client_id for s in stats if not s.finite)
    if broken or not stats:
        return broken
    top = max(s.folded_weight * s.folded for s in stats)
    return tuple(s.client_id for s in stats if s.folded_weight * s.folded == top)


def open_aggregator(
    config: RunConfig, global_model: Mapping[str, torch.Tensor]
) -> GuardedAggregator:
    """The guarded aggregator of a round run with ``config`` on ``global_model``."""
    inner = get_strategy(config.strategy).aggregator(global_model)
    return GuardedAggregator(inner, global_model, config.clip_norm)


def fit_selection(
    selected: Sequence[str], capacity: int, rng: random.Random, label: str = "round"
) -> list[str]:
    """``selected``, or a seeded sample of ``capacity`` of them when the round's aggregator
    cannot hold more (median and trimmed mean hold every update)."""
    if len(selected) <= capacity:
        return list(selected)
    log.warning(
        "%s: %d clients selected but the strategy holds at most %d updates; sampling %d",
        label,
        len(selected),
        capacity,
        capacity,
    )
    return sorted(rng.sample(sorted(selected), capacity))


def _describe(stats: Sequence[UpdateStats], offenders: Sequence[str]) -> str:
    if not offenders:
        return "nobody (no update was folded)"
    by_id = {s.client_id: s for s in stats}
    return ", ".join(
        f"{c} (distance {by_id[c].distance:.4g}, weight {by_id[c].weight})" for c in offenders
    )


def _rounding(model: Mapping[str, torch.Tensor]) -> float:
    """Twice the unit rounding of the model's coarsest float dtype: what casting a float64
    result back to the model's dtype may add, relative to the values' size."""
    eps = [torch.finfo(t.dtype).eps for t in model.values() if t.is_floating_point()]
    return 2 * max(eps, default=0.0)
