"""FedAvg maths (a running weighted sum equals the hand-computed weighted mean), norm
clipping and the weight cap that comes with it, and strategies by name."""

from __future__ import annotations

import math
import random

import pytest
import torch

from fedgate.core.aggregation import clip_update, distance
from fedgate.core.config import RunConfig
from fedgate.core.guard import GuardedAggregator
from fedgate.core.strategy import FedAvg, RunningMean, TrimmedMean, get_strategy, strategy_names
from fedgate.errors import ConfigError


def test_fedavg_matches_a_hand_computed_weighted_mean() -> None:
    like = {"w": torch.zeros(2), "n": torch.tensor(0, dtype=torch.int64)}
    mean = FedAvg().aggregator(like)
    mean.add({"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(10)}, weight=1, client_id="a")
    mean.add({"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(20)}, weight=3, client_id="b")
    result = mean.result()
    # (1*[1, 2] + 3*[3, 6]) / 4 = [2.5, 5.0]; (1*10 + 3*20) / 4 = 17.5 -> 18 (rounded)
    assert torch.equal(result["w"], torch.tensor([2.5, 5.0]))
    assert result["n"].dtype == torch.int64 and int(result["n"]) == 18
    assert mean.count == 2


def test_the_running_mean_equals_the_batch_mean_for_many_updates() -> None:
    g = torch.Generator().manual_seed(0)
    updates = [torch.randn(50, generator=g) for _ in range(40)]
    weights = [int(w) for w in torch.randint(1, 100, (40,), generator=g)]
    mean = RunningMean({"w": torch.zeros(50)})
    for i, (update, weight) in enumerate(zip(updates, weights, strict=True)):
        mean.add({"w": update}, weight, client_id=f"c{i}")
    expected = torch.stack([w * u.double() for u, w in zip(updates, weights, strict=True)])
    expected = expected.sum(0) / sum(weights)
    assert torch.allclose(mean.result()["w"].double(), expected, atol=1e-5)


def test_the_aggregate_is_fp32_whatever_the_update_dtype() -> None:
    mean = RunningMean({"w": torch.zeros(3)})
    mean.add({"w": torch.tensor([1.0, 2.0, 3.0]).bfloat16().float()}, 1, client_id="a")
    assert mean.result()["w"].dtype == torch.float32


def test_selection_is_seeded_and_respects_clients_per_round() -> None:
    available = [f"c{i}" for i in range(10)]
    config = RunConfig(clients_per_round=3, min_clients=2)
    first = FedAvg().select(available, config, random.Random(7))
    again = FedAvg().select(list(reversed(available)), config, random.Random(7))
    assert first == again and len(first) == 3
    assert FedAvg().select(available, RunConfig(), random.Random(0)) == sorted(available)


def test_clipping_scales_the_difference_to_the_global_model_down_to_the_norm() -> None:
    base = {"w": torch.tensor([1.0, 1.0]), "n": torch.tensor(7)}
    update = {"w": torch.tensor([4.0, 5.0]), "n": torch.tensor(1000)}  # difference [3, 4]: 5
    clipped, before = clip_update(update, base, clip_norm=1.0)
    assert before == 5.0
    assert torch.equal(clipped["w"], torch.tensor([1.6, 1.8]))  # 1 + [3, 4] / 5
    assert clipped["n"] is update["n"]  # integer buffers are not weights: never clipped
    assert distance(clipped, base) == pytest.approx(1.0, rel=1e-6)


def test_an_update_within_the_norm_or_with_clipping_off_is_untouched() -> None:
    base = {"w": torch.zeros(2)}
    update = {"w": torch.tensor([0.3, 0.4])}
    for clip_norm in (0.6, 0.0):
        clipped, before = clip_update(update, base, clip_norm)
        assert clipped["w"] is update["w"] and before == pytest.approx(0.5)


def test_a_non_finite_update_is_not_clipped_and_its_distance_says_so() -> None:
    base = {"w": torch.zeros(2)}
    for bad in (math.nan, math.inf):
        update = {"w": torch.tensor([bad, 1.0])}
        clipped, before = clip_update(update, base, 1.0)
        assert not math.isfinite(before) and clipped["w"] is update["w"]


def test_fedavg_with_clipping_averages_the_clipped_updates() -> None:
    base = {"w": torch.zeros(2)}
    guarded = GuardedAggregator(FedAvg().aggregator(base), base, clip_norm=5.0)
    guarded.add({"w": torch.tensor([6.0, 8.0])}, 1, client_id="far")  # 10 -> clipped to [3, 4]
    guarded.add({"w": torch.tensor([1.0, 2.0])}, 3, client_id="near")  # within the norm
    # (1 * [3, 4] + 3 * [1, 2]) / 4
    assert torch.equal(guarded.result()["w"], torch.tensor([1.5, 2.5]))
    assert [(s.client_id, s.distance, s.folded) for s in guarded.stats] == [
        ("far", 10.0, 5.0),
        ("near", math.sqrt(5.0), math.sqrt(5.0)),
    ]


def test_with_clipping_no_weight_exceeds_the_median_declared_size() -> None:
    base = {"w": torch.zeros(2)}
    guarded = GuardedAggregator(FedAvg().aggregator(base), base, clip_norm=5.0)
    guarded.cap_weights([1, 3, 10_000, 0])  # 0: declared nothing, not counted
    assert guarded.weight_cap == 3
    guarded.add({"w": torch.tensor([6.0, 8.0])}, 10_000, client_id="greedy")  # weighs 3
    guarded.add({"w": torch.tensor([1.0, 2.0])}, 1, client_id="small")
    # (3 * [3, 4] + 1 * [1, 2]) / 4
    assert torch.equal(guarded.result()["w"], torch.tensor([2.5, 3.5]))
    assert (guarded.stats[0].weight, guarded.stats[0].folded_weight) == (10_000, 3)
    unclipped = GuardedAggregator(FedAvg().aggregator(base), base)
    unclipped.cap_weights([1, 3, 10_000])
    assert unclipped.weight_cap is None  # weights are capped only with clipping on


def test_strategies_are_chosen_by_name_with_parameters() -> None:
    assert strategy_names() == ["fedavg", "median", "trimmed-mean"]
    assert isinstance(get_strategy("fedavg"), FedAvg)
    assert get_strategy("median").name == "median"
    assert get_strategy("trimmed-mean").name == "trimmed-mean"
    tuned = get_strategy("trimmed-mean:0.1")
    assert isinstance(tuned, TrimmedMean) and tuned.fraction == 0.1
    assert tuned.name == "trimmed-mean:0.1"
    for bad in (
        "krum",
        "",
        "median:0.1",
        "trimmed-mean:",
        "trimmed-mean:abc",
        "trimmed-mean:nan",
        "trimmed-mean:0.5",  # trims everything
        "trimmed-mean:0",
        "trimmed-mean:-0.1",
    ):
        with pytest.raises(ConfigError):
            get_strategy(bad)


def test_the_run_config_names_its_strategy_and_clip_norm() -> None:
    config = RunConfig(strategy="trimmed-mean:0.3", clip_norm=2.5)
    assert config.with_changes({"strategy": "median", "clip_norm": 0}) == RunConfig(
        strategy="median", clip_norm=0.0
    )
    for bad in (
        {"strategy": "krum"},
        {"strategy": 3},
        {"strategy": "trimmed-mean:0.6"},
        {"clip_norm": -1.0},
        {"clip_norm": math.nan},
        {"clip_norm": math.inf},
        {"clip_norm": "1"},
    ):
        with pytest.raises(ConfigError):
            config.with_changes(bad)
