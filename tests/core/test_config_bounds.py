"""Every run setting is bounded where it enters: the wire's integer types and JSON hold it."""

from __future__ import annotations

import math

import pytest

from fedgate.core.config import UPPER_BOUNDS, RunConfig
from fedgate.errors import ConfigError


@pytest.mark.parametrize("name", sorted(UPPER_BOUNDS))
@pytest.mark.parametrize("value", [math.inf, math.nan, 10.0**40])
def test_an_unbounded_value_is_refused_with_its_name(name: str, value: float) -> None:
    kind = type(getattr(RunConfig(), name))
    given = int(value) if kind is int and math.isfinite(value) else value
    with pytest.raises(ConfigError, match=name):
        RunConfig(**{name: given})  # type: ignore[arg-type]


def test_a_change_mid_run_is_bounded_too() -> None:
    with pytest.raises(ConfigError, match="rounds"):
        RunConfig().with_changes({"rounds": 2**40})
    assert RunConfig().with_changes({"rounds": 1_000_000}).rounds == 1_000_000
