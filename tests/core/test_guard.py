"""The check before a round's result is published: non-finite and exploding aggregates are
refused, and the updates to blame are named from the statistics kept as they arrived."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import pytest
import torch

from fedgate.codecs import TensorDict
from fedgate.core.config import RunConfig
from fedgate.core.guard import GuardedAggregator, UpdateStats, name_offenders, open_aggregator
from fedgate.core.strategy import Median, RunningMean

BASE = {"w": torch.zeros(2), "steps": torch.tensor(0, dtype=torch.int64)}


def update(*values: float) -> TensorDict:
    return {"w": torch.tensor(values), "steps": torch.tensor(1)}


class Amplified(RunningMean):
    """A broken strategy: the weighted mean, times ``factor``."""

    def __init__(self, global_model: Mapping[str, torch.Tensor], factor: float) -> None:
        super().__init__(global_model)
        self.factor = factor

    def result(self) -> TensorDict:
        mean = super().result()
        return {k: t * self.factor if t.is_floating_point() else t for k, t in mean.items()}


def test_a_correct_mean_is_published() -> None:
    guarded = GuardedAggregator(RunningMean(BASE), BASE)
    guarded.add(update(3.0, 4.0), 1, client_id="a")
    guarded.add(update(1.0, 0.0), 1, client_id="b")
    assert guarded.check(guarded.result()) is None


def test_a_non_finite_aggregate_is_refused_and_its_source_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guarded = GuardedAggregator(RunningMean(BASE), BASE)
    guarded.add(update(1.0, 1.0), 10, client_id="good")
    guarded.add(update(math.nan, 1.0), 10, client_id="bad")  # a check upstream failed
    with caplog.at_level(logging.WARNING, logger="fedgate.aggregation"):
        refusal = guarded.check(guarded.result(), "round 4.1")
    assert refusal is not None and refusal.offenders == ("bad",)
    assert refusal.reason.startswith("the aggregate holds 1 NaN or infinite values; excluded bad")
    assert "round 4.1: aggregate refused" in caplog.text and "bad" in caplog.text


def test_an_exploding_aggregate_is_refused_and_the_largest_pull_named() -> None:
    for factor, refused in ((1.9, False), (2.1, True)):  # EXPLOSION_FACTOR is 2
        guarded = GuardedAggregator(Amplified(BASE, factor), BASE)
        guarded.add(update(3.0, 4.0), 1, client_id="light")  # distance 5, pull 5
        guarded.add(update(3.0, 4.0), 2, client_id="heavy")  # distance 5, pull 10
        refusal = guarded.check(guarded.result())  # the mean is 5 away, times the factor
        assert (refusal is not None) is refused, factor
    assert refusal is not None and refusal.offenders == ("heavy",)
    assert "more than 2 * 5, the farthest a correct result" in refusal.reason
    assert refusal.reason.endswith("excluded heavy (distance 5, weight 2)")


def test_offenders_are_the_non_finite_updates_first() -> None:
    stats = [
        UpdateStats("huge", 10**6, 1e9, 1e9, 10**6),
        UpdateStats("nan", 1, math.nan, math.nan, 1),
        UpdateStats("inf", 1, math.inf, math.inf, 1),
    ]
    assert name_offenders(stats) == ("nan", "inf")
    assert name_offenders(stats[:1]) == ("huge",)
    tie = [UpdateStats("a", 2, 3.0, 3.0, 2), UpdateStats("b", 3, 2.0, 2.0, 3)]
    assert name_offenders([*tie, UpdateStats("c", 1, 1.0, 1.0, 1)]) == ("a", "b")
    assert name_offenders([]) == ()


def test_clipping_bounds_what_the_guard_accepts() -> None:
    config = RunConfig(clip_norm=1.0)
    guarded = open_aggregator(config, BASE)
    guarded.add(update(30.0, 40.0), 1, client_id="a")  # clipped to (0.6, 0.8)
    assert [s.folded for s in guarded.stats] == [1.0]
    assert guarded.check(guarded.result()) is None
    # a result 3 away cannot come from updates clipped to 1
    assert guarded.check(update(1.8, 2.4)) is not None


def test_robust_strategies_are_checked_against_their_own_reach() -> None:
    base = {"w": torch.zeros(3)}
    guarded = GuardedAggregator(Median().aggregator(base), base)
    for i, row in enumerate(([1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0])):
        guarded.add({"w": torch.tensor(row)}, 1, client_id=f"c{i}")
    # the median (1, 1, 1) is farther than any update (sqrt 3 > sqrt 2), and correct
    assert guarded.check(guarded.result()) is None
    assert guarded.check({"w": torch.full((3,), 2.5)}) is not None  # sqrt(18.75) > 2 sqrt 3
