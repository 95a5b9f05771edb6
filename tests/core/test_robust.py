"""Coordinate-wise median and trimmed mean: exact values, each participant counting once,
the reach bound the guard relies on, and the memory bound."""

from __future__ import annotations

import pytest
import torch

from fedgate.core import aggregation, robust
from fedgate.core.aggregation import (
    distance,
    median_trim,
    trim_count,
    trimmed_mean,
    trimmed_reach,
)
from fedgate.core.robust import held_capacity
from fedgate.core.strategy import Aggregator, Median, TrimmedMean, get_strategy
from fedgate.errors import Conflict

# five updates of a two-element tensor; per coordinate, sorted:
#   first:  1, 2, 3, 4, 100      second: -5, 0, 1, 2, 10
FIVE = [[1.0, 10.0], [2.0, -5.0], [3.0, 0.0], [100.0, 1.0], [4.0, 2.0]]


def fold(aggregator: Aggregator, rows: list[list[float]]) -> None:
    for i, row in enumerate(rows):
        aggregator.add({"w": torch.tensor(row)}, 1, client_id=f"c{i}")


def test_median_and_trimmed_mean_of_a_small_stack() -> None:
    stack = torch.tensor(FIVE)
    assert torch.equal(trimmed_mean(stack, median_trim(5)), torch.tensor([3.0, 1.0]).double())
    # beta 0.2 of five: one from each end; mean of [2, 3, 4] and of [0, 1, 2]
    assert trim_count(5, 0.2) == 1
    assert torch.equal(trimmed_mean(stack, 1), torch.tensor([3.0, 1.0]).double())
    # an even count: the median is the mean of the two middle values
    even = torch.tensor([[1.0], [2.0], [3.0], [10.0]])
    assert torch.equal(trimmed_mean(even, median_trim(4)), torch.tensor([2.5]).double())
    assert torch.equal(trimmed_mean(even, 0), torch.tensor([4.0]).double())
    with pytest.raises(ValueError, match="leaves nothing"):
        trimmed_mean(even, 2)


def test_the_strategies_aggregate_exactly() -> None:
    like = {"w": torch.zeros(2)}
    median = Median().aggregator(like)
    fold(median, FIVE)
    assert torch.equal(median.result()["w"], torch.tensor([3.0, 1.0]))
    trimmed = get_strategy("trimmed-mean:0.25").aggregator(like)
    fold(trimmed, FIVE[:4])  # four: a quarter is one from each end
    # first: 1, 2, 3, 100 -> mean(2, 3); second: -5, 0, 1, 10 -> mean(0, 1)
    assert torch.equal(trimmed.result()["w"], torch.tensor([2.5, 0.5]))
    assert median.count == 5 and trimmed.count == 4


def test_weights_do_not_count_one_participant_is_one_vote() -> None:
    like = {"w": torch.zeros(1)}
    for strategy in (Median(), TrimmedMean()):
        aggregator = strategy.aggregator(like)
        for i, value in enumerate([1.0, 2.0, 3.0, 4.0]):
            aggregator.add({"w": torch.tensor([value])}, 10, client_id=f"honest-{i}")
        aggregator.add({"w": torch.tensor([1e6])}, 2**31, client_id="hostile")
        # the hostile value is outvoted whatever weight it claims: median 3; trimmed 2, 3, 4
        assert torch.equal(aggregator.result()["w"], torch.tensor([3.0])), strategy.name


def test_one_hostile_client_of_five_cannot_leave_the_honest_range() -> None:
    g = torch.Generator().manual_seed(3)
    honest = [torch.randn(200, generator=g) for _ in range(4)]
    low, high = torch.stack(honest).min(0).values, torch.stack(honest).max(0).values
    for hostile in (torch.full((200,), 1e30), torch.full((200,), -1e30), 1e4 * honest[0]):
        for strategy in (Median(), TrimmedMean()):
            aggregator = strategy.aggregator({"w": torch.zeros(200)})
            for i, update in enumerate([*honest, hostile]):
                aggregator.add({"w": update}, 1, client_id=f"c{i}")
            result = aggregator.result()["w"]
            assert bool(((result >= low) & (result <= high)).all()), strategy.name


def test_integer_buffers_take_the_median_or_the_rounded_trimmed_mean() -> None:
    like = {"steps": torch.tensor(0, dtype=torch.int64)}
    median, trimmed = Median().aggregator(like), get_strategy("trimmed-mean:0.25").aggregator(like)
    for aggregator in (median, trimmed):
        for i, steps in enumerate([10, 11, 20, 1000]):
            aggregator.add({"steps": torch.tensor(steps)}, 1, client_id=f"c{i}")
    assert median.result()["steps"].dtype == torch.int64
    assert int(median.result()["steps"]) == 16  # (11 + 20) / 2 = 15.5, rounded to even: 16
    assert int(trimmed.result()["steps"]) == 16


def test_reducing_a_slice_of_columns_at_a_time_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g = torch.Generator().manual_seed(0)
    updates = [torch.randn(7, 5, generator=g) for _ in range(6)]
    whole = Median().aggregator({"w": torch.zeros(7, 5)})
    fold(whole, [u.tolist() for u in updates])
    ordered = torch.stack(updates).sort(0).values  # six: the mean of the 3rd and 4th
    expected = ((ordered[2].double() + ordered[3].double()) / 2).float()
    assert torch.equal(whole.result()["w"], expected)
    monkeypatch.setattr(aggregation, "REDUCE_CHUNK_ELEMENTS", 4)  # 6 updates: 1 column a time
    sliced = Median().aggregator({"w": torch.zeros(7, 5)})
    fold(sliced, [u.tolist() for u in updates])
    assert torch.equal(sliced.result()["w"], expected)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 9, 10])
def test_the_result_lies_within_the_reach_the_guard_allows(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    base = {"w": torch.zeros(64)}
    for strategy in (Median(), TrimmedMean(), get_strategy("trimmed-mean:0.4")):
        for _ in range(20):
            updates = [torch.randn(64, generator=g) * torch.rand(1, generator=g) for _ in range(n)]
            aggregator = strategy.aggregator(base)
            for i, update in enumerate(updates):
                aggregator.add({"w": update}, 1, client_id=f"c{i}")
            distances = [distance({"w": u}, base) for u in updates]
            assert distance(aggregator.result(), base) <= aggregator.reach(distances) * (1 + 1e-6)


def test_the_median_reach_is_tight_where_it_beats_every_single_update() -> None:
    # each update is sqrt(2) from the model, their median (1, 1, 1) sqrt(3): the guard must
    # accept it, which "never farther than the farthest update" would not
    rows = [[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]
    base = {"w": torch.zeros(3)}
    median = Median().aggregator(base)
    fold(median, rows)
    assert torch.equal(median.result()["w"], torch.ones(3))
    reach = median.reach([2**0.5] * 3)
    assert reach == pytest.approx(3**0.5) and trimmed_reach([2**0.5] * 3, 0) == 2**0.5


def test_holding_aggregators_are_bounded_by_the_memory_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = {"w": torch.zeros(10), "steps": torch.tensor(0, dtype=torch.int64)}  # 48 bytes
    assert held_capacity(model) == robust.HELD_BYTES_BUDGET // 48
    monkeypatch.setattr(robust, "HELD_BYTES_BUDGET", 200)
    assert held_capacity(model) == 4
    monkeypatch.setattr(robust, "HELD_BYTES_BUDGET", 10)
    assert held_capacity(model) == robust.MIN_HELD == 3
    median = Median().aggregator(model)
    assert median.capacity == 3
    for i in range(3):
        median.add({"w": torch.zeros(10), "steps": torch.tensor(0)}, 1, client_id=f"c{i}")
    with pytest.raises(Conflict, match="holds 3 updates"):
        median.add({"w": torch.zeros(10), "steps": torch.tensor(0)}, 1, client_id="c3")
