"""The Strategy seam: choose a round's clients, and fold their updates into a new model.

A strategy is chosen per run by name (``RunConfig.strategy``; the registry `STRATEGIES`)
and may change mid-run: the federation opens each round's aggregator from the strategy
named in that round's config. The maths are plain functions (`fedgate.core.aggregation`)
that strategies compose; norm clipping and the check of the result before it is
published wrap every strategy alike (`fedgate.core.guard`).

- ``fedavg``: a running weighted sum as updates arrive, so the server holds one float64
  accumulator the size of the model however many clients report.
- ``fedprox[:μ]``: FedAvg on the server; each client adds (μ/2)·‖w - w_global‖² to its
  local loss (Li et al. 2020), told μ through the task (`Strategy.proximal_mu`).
- ``fedadam[:η]``: FedAvg's mean, then a server-side Adam step along the pseudo-gradient
  (`fedgate.core.server_opt`); its moments are state the federation keeps between rounds
  (`Strategy.finish`), in the run store, so a resumed run steps on from where it stopped.
- ``median``, ``trimmed-mean[:β]``: coordinate-wise, each participant counting once
  (`fedgate.core.robust`); they hold every update of the round, within a memory budget.

A round therefore runs: ``select`` the clients; hand each the task with ``proximal_mu``;
fold their updates into ``aggregator(global)`` (through the guard); once the guard has
accepted the aggregate, ``finish(global, aggregate, state)`` gives the model to publish and
the server state to keep with the round (an empty dict for strategies without any).
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
from fedgate.core.config import STRATEGY_NAMES
from fedgate.core.robust import CoordinateTrimmedMean
from fedgate.core.server_opt import AdamSettings, adam_step
from fedgate.errors import ConfigError

if TYPE_CHECKING:
    from fedgate.codecs import TensorDict
    from fedgate.core.config import RunConfig  # config validates names against this module

DEFAULT_TRIM = 0.2  # trimmed-mean's β when the name gives none
DEFAULT_MU = 0.01  # fedprox's μ when the name gives none (Li et al. try 0.001 to 1)
DEFAULT_SERVER_LR = AdamSettings().lr  # fedadam's η when the name gives none


@dataclass(frozen=True)
class UpdateMeta:
    """What the server knows of an update besides its tensors, for strategies that weigh
    or track clients. ``num_examples`` is the client's claim as sent (the weight folded may
    be capped by the guard); ``train_loss`` is the client's own report (NaN: none), as
    untrusted as the tensors; ``key_id`` is the enrolment key it joined with ("": none)."""

    client_id: str
    num_examples: int
    train_loss: float = math.nan
    round_id: str = ""  # "<round>.<attempt>"
    key_id: str = ""


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

    def add(
        self,
        tensors: Mapping[str, torch.Tensor],
        weight: int,
        *,
        client_id: str,
        meta: UpdateMeta | None = None,
    ) -> None:
        """Fold one checked update, sent by ``client_id`` with aggregation weight ``weight``
        (``meta``: what else is known of it; None where only the id is, as in tools)."""
        ...

    def result(self) -> TensorDict: ...

    def reach(self, distances: Sequence[float]) -> float:
        """The farthest from the global model a correct result can lie, given the distances
        of the updates folded: a bound the guard holds the result to."""
        ...


class Strategy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def proximal_mu(self) -> float:
        """μ of the proximal term clients add to their loss (`TrainConfig.proximal_mu`);
        0.0: none."""
        ...

    def select(self, available: Sequence[str], config: RunConfig, rng: random.Random) -> list[str]:
        """Choose the clients for a round from those available (at least min_clients)."""
        ...

    def aggregator(self, global_model: Mapping[str, torch.Tensor]) -> Aggregator: ...

    def finish(
        self,
        current: Mapping[str, torch.Tensor],
        aggregate: Mapping[str, torch.Tensor],
        state: Mapping[str, torch.Tensor],
    ) -> tuple[TensorDict, TensorDict]:
        """The model to publish after a round whose accepted aggregate of updates trained
        from ``current`` is ``aggregate``, and the server state to keep for the next round.
        ``state`` is what the previous call returned ({} at the start of a run); neither it
        nor the models are changed. Deterministic: a resumed run steps as one that ran on."""
        ...


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

    def add(
        self,
        tensors: Mapping[str, torch.Tensor],
        weight: int,
        *,
        client_id: str,
        meta: UpdateMeta | None = None,
    ) -> None:
        accumulate(self._acc, tensors, float(weight))
        self._weight += weight
        self._count += 1

    def result(self) -> TensorDict:
        return weighted_mean(self._acc, self._weight, self._like)

    def reach(self, distances: Sequence[float]) -> float:
        return convex_reach(distances)


class SampledStrategy:
    """What most strategies share: a uniform sample of clients, no proximal term, and the
    aggregate published as it is, with no server state."""

    proximal_mu = 0.0

    def select(self, available: Sequence[str], config: RunConfig, rng: random.Random) -> list[str]:
        return sample_clients(available, config, rng)

    def finish(
        self,
        current: Mapping[str, torch.Tensor],
        aggregate: Mapping[str, torch.Tensor],
        state: Mapping[str, torch.Tensor],
    ) -> tuple[TensorDict, TensorDict]:
        # The state passes through untouched: a run that switches to fedavg and back to
        # fedadam steps on with the moments it had.
        return dict(aggregate), dict(state)


class FedAvg(SampledStrategy):
    """McMahan et al.: a random sample of clients, mean weighted by example count."""

    name = "fedavg"

    def aggregator(self, global_model: Mapping[str, torch.Tensor]) -> Aggregator:
        return RunningMean(global_model)


class FedProx(SampledStrategy):
    """Li et al. 2020: FedAvg whose clients keep close to the global model, minimising
    loss + (μ/2)·‖w - w_global‖² (`fedgate.core.training`). It damps client drift on
    heterogeneous data; the server side is FedAvg's."""

    def __init__(self, mu: float = DEFAULT_MU) -> None:
        if not (math.isfinite(mu) and mu >= 0):
            raise ConfigError(f"fedprox:<mu> needs a finite number >= 0, got {mu!r}")
        self.proximal_mu = mu

    @property
    def name(self) -> str:
        mu = self.proximal_mu
        return "fedprox" if mu == DEFAULT_MU else f"fedprox:{mu}"

    def aggregator(self, global_model: Mapping[str, torch.Tensor]) -> Aggregator:
        return RunningMean(global_model)

    @classmethod
    def from_parameter(cls, text: str) -> FedProx:
        return cls(parse_number("fedprox:<mu>", text))


class FedAdam(SampledStrategy):
    """Reddi et al. 2021: FedAvg's weighted mean, then an Adam step on the server along the
    pseudo-gradient global - mean (`fedgate.core.server_opt.adam_step`; η in the name,
    β₁ 0.9, β₂ 0.99, τ 1e-3). Its moments are the state `finish` returns."""

    def __init__(self, lr: float = DEFAULT_SERVER_LR) -> None:
        if not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"fedadam:<lr> needs a finite number > 0, got {lr!r}")
        self.settings = AdamSettings(lr=lr)

    @property
    def name(self) -> str:
        lr = self.settings.lr
        return "fedadam" if lr == DEFAULT_SERVER_LR else f"fedadam:{lr}"

    def aggregator(self, global_model: Mapping[str, torch.Tensor]) -> Aggregator:
        return RunningMean(global_model)

    def finish(
        self,
        current: Mapping[str, torch.Tensor],
        aggregate: Mapping[str, torch.Tensor],
        state: Mapping[str, torch.Tensor],
    ) -> tuple[TensorDict, TensorDict]:
        return adam_step(current, aggregate, state, self.settings)

    @classmethod
    def from_parameter(cls, text: str) -> FedAdam:
        return cls(parse_number("fedadam:<lr>", text))


class Median(SampledStrategy):
    """Coordinate-wise median (Yin et al. 2018): robust while hostile clients are fewer
    than half a round's participants."""

    name = "median"

    def aggregator(self, global_model: Mapping[str, torch.Tensor]) -> Aggregator:
        return CoordinateTrimmedMean(global_model, median_trim)


class TrimmedMean(SampledStrategy):
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

    def aggregator(self, global_model: Mapping[str, torch.Tensor]) -> Aggregator:
        fraction = self.fraction
        return CoordinateTrimmedMean(global_model, lambda n: trim_count(n, fraction))

    @classmethod
    def from_parameter(cls, text: str) -> TrimmedMean:
        return cls(parse_number("trimmed-mean:<fraction>", text))


def parse_number(spelling: str, text: str) -> float:
    """The finite number ``text`` (a strategy's parameter), or ConfigError naming ``spelling``."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{spelling} needs a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{spelling} needs a finite number, got {text!r}")
    return value


STRATEGIES: dict[str, Strategy] = {
    "fedavg": FedAvg(),
    "fedprox": FedProx(),
    "fedadam": FedAdam(),
    "median": Median(),
    "trimmed-mean": TrimmedMean(),
}
# strategies that take a parameter after a colon, as codecs do: trimmed-mean:0.1
PARAMETERISED: dict[str, Callable[[str], Strategy]] = {
    "fedprox": FedProx.from_parameter,
    "fedadam": FedAdam.from_parameter,
    "trimmed-mean": TrimmedMean.from_parameter,
}


if tuple(STRATEGIES) != STRATEGY_NAMES:  # the light list the CLI and schemas read
    raise ImportError(f"fedgate.core.config.STRATEGY_NAMES must be {tuple(STRATEGIES)}")


def strategy_names() -> tuple[str, ...]:
    """The base names a run may name (the CLI's choices); some take ``:parameter``."""
    return tuple(STRATEGIES)


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
