"""A run's knobs. Operators may change some mid-run; changes apply from the next round."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedgate.core.strategy import get_strategy
from fedgate.errors import ConfigError


@dataclass(frozen=True)
class RunConfig:
    rounds: int = 20
    clients_per_round: int = 0  # 0: every available client
    min_clients: int = 2  # to open a round, and to close one at its deadline
    round_deadline_s: float = 60.0
    learning_rate: float = 0.1
    local_epochs: int = 1
    batch_size: int = 32
    heartbeat_interval_s: float = 2.0
    heartbeat_timeout_s: float = 10.0
    admit_late: bool = False  # admit a joiner into an open round that has room
    seed: int = 0
    strategy: str = "fedavg"  # a name in fedgate.core.strategy.STRATEGIES (trimmed-mean:0.1)
    clip_norm: float = 0.0  # > 0: scale each update's difference to the model to this norm

    def __post_init__(self) -> None:
        _check_bounds(self)
        _check_positive(self, ("rounds", "min_clients", "local_epochs", "batch_size"))
        _check_positive(self, ("round_deadline_s", "learning_rate", "heartbeat_interval_s"))
        if self.clients_per_round < 0:
            raise ConfigError("clients_per_round must be >= 0 (0 means every available client)")
        if 0 < self.clients_per_round < self.min_clients:
            raise ConfigError(
                f"clients_per_round ({self.clients_per_round}) is below min_clients "
                f"({self.min_clients})"
            )
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ConfigError("heartbeat_timeout_s must exceed heartbeat_interval_s")
        if not (math.isfinite(self.clip_norm) and self.clip_norm >= 0):
            raise ConfigError(
                f"clip_norm must be a finite number >= 0 (0: off), got {self.clip_norm!r}"
            )
        get_strategy(self.strategy)  # an unknown name or a bad parameter is refused here

    def with_changes(self, changes: Mapping[str, Any]) -> RunConfig:
        """A copy with ``changes`` applied; unknown keys and wrong types are refused."""
        unknown = sorted(set(changes) - set(MUTABLE_FIELDS))
        if unknown:
            raise ConfigError(
                f"cannot change {', '.join(unknown)}; changeable: {', '.join(MUTABLE_FIELDS)}"
            )
        return dataclasses.replace(
            self, **{k: _coerce(k, v, type(getattr(self, k))) for k, v in changes.items()}
        )


MUTABLE_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name != "seed")


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if kind is int and value != int(value):
        raise ConfigError(f"{key} must be a whole number, got {value!r}")
    return kind(value)


def _check_positive(config: RunConfig, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value!r}")


# Every number is bounded where it enters: these values travel as int32/int64/double in the
# wire contract and as JSON, and an operator's typo must not break status for the run.
UPPER_BOUNDS: dict[str, float] = {
    "rounds": 1_000_000,
    "clients_per_round": 1_000_000,
    "min_clients": 1_000_000,
    "round_deadline_s": 30 * 86_400.0,
    "learning_rate": 1e6,
    "local_epochs": 10_000,
    "batch_size": 1_000_000,
    "heartbeat_interval_s": 3_600.0,
    "heartbeat_timeout_s": 7 * 86_400.0,
    "seed": 2**63 - 1,
    "clip_norm": 1e30,
}


def _check_bounds(config: RunConfig) -> None:
    for name, upper in UPPER_BOUNDS.items():
        value = getattr(config, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value <= upper):
            raise ConfigError(f"{name} must be a finite number <= {upper:g}, got {value!r}")
    if config.seed < 0:
        raise ConfigError(f"seed must be >= 0, got {config.seed!r}")
