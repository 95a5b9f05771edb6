"""Robust aggregation: the coordinate-wise median and trimmed mean of a round's updates.

Each participant counts once, whatever ``num_examples`` it claims: the weight is the
client's own statement, and a robust aggregate must not let one statement buy the model.
Per coordinate, the trimmed mean drops the ⌊β·n⌋ lowest and highest values and averages
the rest; the median keeps the middle one (or the mean of the middle two). So up to
⌊β·n⌋ hostile clients in a round (fewer than half for the median) can move no coordinate
outside the range the honest updates span.

Memory: unlike FedAvg's running sum these must see every update of the round at once,
so they grow with the round's participants: each update is held in the model's own dtype
(one model's worth per participant, never widened to float64). To bound it, a round of
these strategies takes at most `held_capacity` participants — `HELD_BYTES_BUDGET` divided
by the model's size, and never fewer than `MIN_HELD` — sampled from those selected (the
federation logs when it samples down). For the 0.15 MB digits CNN that is about 7,000
participants; for ResNet-50 (~100 MB) it is 10.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from fedgate.core.aggregation import reduce_held, trimmed_mean, trimmed_reach
from fedgate.errors import Conflict

if TYPE_CHECKING:
    from fedgate.codecs import TensorDict
    from fedgate.core.strategy import UpdateMeta  # strategy imports this module

HELD_BYTES_BUDGET = 1 << 30  # updates a median or trimmed-mean round may hold, in bytes
MIN_HELD = 3  # below three updates neither aggregate can outvote a single one


def held_capacity(model: Mapping[str, torch.Tensor]) -> int:
    """How many updates of ``model`` a holding aggregator may keep within the budget."""
    per_update = sum(t.numel() * t.element_size() for t in model.values())
    return max(MIN_HELD, HELD_BYTES_BUDGET // max(per_update, 1))


class CoordinateTrimmedMean:
    """Holds a round's updates; its result is their coordinate-wise trimmed mean, with
    ``trim(n)`` values dropped from each end when n updates were added."""

    def __init__(self, global_model: Mapping[str, torch.Tensor], trim: Callable[[int], int]):
        self._like = dict(global_model)
        self._trim = trim
        self._held: list[Mapping[str, torch.Tensor]] = []
        self._capacity = held_capacity(global_model)

    @property
    def count(self) -> int:
        return len(self._held)

    @property
    def capacity(self) -> int:
        return self._capacity

    def add(
        self,
        tensors: Mapping[str, torch.Tensor],
        weight: int,
        *,
        client_id: str,
        meta: UpdateMeta | None = None,
    ) -> None:
        """Hold ``tensors`` (the weight is ignored: every participant counts once)."""
        if len(self._held) >= self._capacity:
            raise Conflict(
                f"this round already holds {self._capacity} updates, the most its "
                f"strategy keeps; update from {client_id} refused"
            )
        self._held.append({name: tensors[name].detach() for name in self._like})

    def result(self) -> TensorDict:
        n = len(self._held)
        if n == 0:
            raise ValueError("cannot aggregate a round without updates")
        trim = self._trim(n)

        def reduce(stack: torch.Tensor) -> torch.Tensor:
            return trimmed_mean(stack, trim)

        return {
            name: reduce_held([u[name] for u in self._held], like, reduce)
            for name, like in self._like.items()
        }

    def reach(self, distances: Sequence[float]) -> float:
        return trimmed_reach(distances, self._trim(len(distances)))
