"""The Strategy seam: choose a round's clients, and fold their updates into a new model.

Aggregation maths are plain functions over state dicts; strategies compose them. FedAvg
folds each update into a running weighted sum as it arrives, so the server holds one
accumulator the size of the model, however many clients report.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Protocol

import torch

from fedgate.codecs import TensorDict
from fedgate.core.config import RunConfig
from fedgate.errors import ConfigError


def zeros_accumulator(model: Mapping[str, torch.Tensor]) -> TensorDict:
    """float64 zeros shaped like ``model``.

    The sum is kept in float64 so that the fp32 mean does not depend on the order updates
    arrived in (a run is reproducible from its seed), and integer buffers round exactly.
    """
    return {name: torch.zeros(t.shape, dtype=torch.float64) for name, t in model.items()}


def accumulate(acc: TensorDict, tensors: Mapping[str, torch.Tensor], weight: float) -> None:
    """acc += weight * tensors, in the accumulator's precision, in place."""
    for name, total in acc.items():
        total.add_(tensors[name].to(total.dtype), alpha=weight)


def weighted_mean(
    acc: Mapping[str, torch.Tensor], total_weight: float, like: Mapping[str, torch.Tensor]
) -> TensorDict:
    """acc / total_weight, cast back to the dtypes of ``like`` (fp32 for fp32 weights,
    integers rounded)."""
    if total_weight <= 0:
        raise ValueError("cannot average with a total weight of zero")
    out: TensorDict = {}
    for name, reference in like.items():
        mean = acc[name] / total_weight
        out[name] = (mean if reference.is_floating_point() else mean.round()).to(reference.dtype)
    return out


class Aggregator(Protocol):
    """Folds updates of one round; not thread-safe (the round serialises calls)."""

    @property
    def count(self) -> int: ...

    def add(self, tensors: Mapping[str, torch.Tensor], weight: int) -> None: ...

    def result(self) -> TensorDict: ...


class Strategy(Protocol):
    @property
    def name(self) -> str: ...

    def select(self, available: Sequence[str], config: RunConfig, rng: random.Random) -> list[str]:
        """Choose the clients for a round from those available (at least min_clients)."""
        ...

    def aggregator(self, global_model: Mapping[str, torch.Tensor]) -> Aggregator: ...


class RunningMean:
    """Weighted mean of updates as they arrive."""

    def __init__(self, global_model: Mapping[str, torch.Tensor]) -> None:
        self._like = {name: t for name, t in global_model.items()}
        self._acc = zeros_accumulator(global_model)
        self._weight = 0.0
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def add(self, tensors: Mapping[str, torch.Tensor], weight: int) -> None:
        accumulate(self._acc, tensors, float(weight))
        self._weight += weight
        self._count += 1

    def result(self) -> TensorDict:
        return weighted_mean(self._acc, self._weight, self._like)


class FedAvg:
    """McMahan et al.: a random sample of clients, mean weighted by example count."""

    name = "fedavg"

    def select(self, available: Sequence[str], config: RunConfig, rng: random.Random) -> list[str]:
        wanted = config.clients_per_round or len(available)
        chosen = rng.sample(sorted(available), min(wanted, len(available)))
        return sorted(chosen)

    def aggregator(self, global_model: Mapping[str, torch.Tensor]) -> Aggregator:
        return RunningMean(global_model)


STRATEGIES: dict[str, Strategy] = {"fedavg": FedAvg()}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}"
        ) from None
