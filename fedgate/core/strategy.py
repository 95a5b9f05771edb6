"""The Strategy seam: choose a round's clients, and fold their updates into a new model.

A strategy is chosen per run by name (``RunConfig.strategy``; the registry `STRATEGIES`)
and may change mid-run: the federation opens each round's aggregator from the strategy
named in that round's config. The maths are plain functions (`fedgate.core.aggregation`)
that strategies compose; norm clipping and the check of the result before it is
published wrap every strategy alike (`fedgate.core.guard`).

- ``fedavg``: a running weighted sum as updates arrive, so the server holds one float64
  accumulator the size of the model however many clients report.
- ``median``, ``trimmed-mean[:β]``: coordinate-wise, each participant counting once
  (`fedgate.core.robust`); they hold every update of the round, within a memory budget.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import torch

from fedgate.core.aggregation import (
    accumulate,
    convex_reach,
    median_trim,
    trim_count,
    weighted_mean,
    zeros_accumulator,
)
from fedgate.core.robust import CoordinateTrimmedMean
from fedgate.errors import ConfigError

if TYPE_CHECKING:
    from fedgate.codecs import TensorDict
    from fedgate.core.config import RunConfig  # config validates names against this module

DEFAULT_TRIM = 0.2  # trimmed-mean's β when the name gives none


class Aggregator(Protocol):
    """Folds the updates of one round; not thread-safe (the round serialises calls)."""

    @property
    def count(self) -> int:
        """Updates folded so far."""
        ...

    @property
    def capacity(self) -> int:
        """The most updates this aggregator takes (its memory bound)."""
        ...

    def add(self, tensors: Mapping[str, torch.Tensor], weight: int, *, client_id: str) -> None:
        """Fold one checked update, sent by ``client_id`` with aggregation weight ``weight``."""
        ...

    def result(self) -> TensorDict: ...

    def reach(self, distances: Sequence[float]) -> float:
        """The farthest from the global model a correct result can lie, given the distances
        of the updates folded: a bound the guard holds the result to."""
        ...


class Strategy(Protocol):
    @property
    def name(self) -> str: ...

    def select(self, available: Sequence[str], config: RunConfig, rng: random.Random) -> list[str]:
        """Choose the clients for a round from those available (at least min_clients)."""
        ...

    def aggregator(self, global_model: Mapping[str, torch.Tensor]) -> Aggregator: ...


def sample_clients(available: Sequence[str], config: RunConfig, rng: random.Random) -> list[str]:
    """A uniform random sample of ``clients_per_round`` (0: all), sorted; seeded by ``rng``."""
    wanted = config.clients_per_round or len(available)
    return sorted(rng.sample(sorted(available), min(wanted, len(available))))


class RunningMean:
    """Weighted mean of updates as they arrive."""

    def __init__(self, global_model: Mapping[str, torch.Tensor]) -> None:
        self._like = dict(global_model)
        self._acc = zeros_accumulator(global_model)
        self._weight = 0.0
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    @property
    def capacity(self) -> int:
        return sys.maxsize  # memory does not grow with the updates

    def add(self, tensors: Mapping[str, torch.Tensor], weight: int, *, client_id: str) -> None:
        accumulate(self._acc, tensors, float(weight))
        self._weight += weight
        self._count += 1

    def result(self) -> TensorDict:
        return weighted_mean(self._acc, self._weight, self._like)

    def reach(self, distances: Sequence[float]) -> float:
        return convex_reach(distances)


class FedAvg:
    """McMahan et al.: a random sample of clients, mean weighted by example count."""

    name = "fedavg"

    def select(self, available: Sequence[str], config: RunConfig, rng: random.Random) -> list[str]:
        return sample_clients(available, config, rng)

    def aggregator(self, global_model: Mapping[str, torch.Tensor]) -> Aggregator:
        return RunningMean(global_model)


class Median:
    """Coordinate-wise median (Yin et al. 2018): robust while hostile clients are fewer
    than half a round's participants."""

    name = "median"

    def select(self, available: Sequence[str], config: RunConfig, rng: random.Random) -> list[str]:
        return sample_clients(available, config, rng)

    def aggregator(self, global_model: Mapping[str, torch.Tensor]) -> Aggregator:
        return CoordinateTrimmedMean(global_model, median_trim)


class TrimmedMean:
    """Coordinate-wise β-trimmed mean (Yin et al. 2018): drops ⌊β·n⌋ values from each end
    of every coordinate, so up to that many hostile clients per round are outvoted.
    0 < β < 0.5: trimming half or more from each end would leave nothing."""

    def __init__(self, fraction: float = DEFAULT_TRIM) -> None:
        if not 0 < fraction < 0.5:
            raise ConfigError(
                f"trimmed-mean trims a fraction in (0, 0.5) from each end, got {fraction!r} "
                "(0.5 or more would leave nothing to average)"
            )
        self.fraction = fraction

    @property
    def name(self) -> str:
        return "trimmed-mean" if self.fraction == DEFAULT_TRIM else f"trimmed-mean:{self.fraction}"

    def select(self, available: Sequence[str], config: RunConfig, rng: random.Random) -> list[str]:
        return sample_clients(available, config, rng)

    def aggregator(self, global_model: Mapping[str, torch.Tensor]) -> Aggregator:
        fraction = self.fraction
        return CoordinateTrimmedMean(global_model, lambda n: trim_count(n, fraction))

    @classmethod
    def from_parameter(cls, text: str) -> TrimmedMean:
        try:
            fraction = float(text)
        except ValueError:
            raise ConfigError(f"trimmed-mean:<fraction> needs a number, got {text!r}") from None
        if not math.isfinite(fraction):
            raise ConfigError(f"trimmed-mean:<fraction> needs a finite number, got {text!r}")
        return cls(fraction)


STRATEGIES: dict[str, Strategy] = {
    "fedavg": FedAvg(),
    "median": Median(),
    "trimmed-mean": TrimmedMean(),
}
# strategies that take a parameter after a colon, as codecs do: trimmed-mean:0.1
PARAMETERISED: dict[str, Callable[[str], Strategy]] = {
    "trimmed-mean": TrimmedMean.from_parameter,
}


def strategy_names() -> list[str]:
    return list(STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """The strategy ``name`` stands for (``base`` or ``base:parameter``); ConfigError else."""
    base, colon, parameter = name.partition(":")
    if base not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}")
    if not colon:
        return STRATEGIES[base]
    if base not in PARAMETERISED:
        raise ConfigError(f"strategy {base!r} takes no parameter, got {name!r}")
    return PARAMETERISED[base](parameter)
