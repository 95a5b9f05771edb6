"""FedAvg maths: a running weighted sum equals the hand-computed weighted mean."""

from __future__ import annotations

import random

import torch

from fedgate.core.config import RunConfig
from fedgate.core.strategy import FedAvg, RunningMean


def test_fedavg_matches_a_hand_computed_weighted_mean() -> None:
    like = {"w": torch.zeros(2), "n": torch.tensor(0, dtype=torch.int64)}
    mean = FedAvg().aggregator(like)
    mean.add({"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(10)}, weight=1)
    mean.add({"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(20)}, weight=3)
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
    for update, weight in zip(updates, weights, strict=True):
        mean.add({"w": update}, weight)
    expected = torch.stack([w * u.double() for u, w in zip(updates, weights, strict=True)])
    expected = expected.sum(0) / sum(weights)
    assert torch.allclose(mean.result()["w"].double(), expected, atol=1e-5)


def test_the_aggregate_is_fp32_whatever_the_update_dtype() -> None:
    mean = RunningMean({"w": torch.zeros(3)})
    mean.add({"w": torch.tensor([1.0, 2.0, 3.0]).bfloat16().float()}, 1)
    assert mean.result()["w"].dtype == torch.float32


def test_selection_is_seeded_and_respects_clients_per_round() -> None:
    available = [f"c{i}" for i in range(10)]
    config = RunConfig(clients_per_round=3, min_clients=2)
    first = FedAvg().select(available, config, random.Random(7))
    again = FedAvg().select(list(reversed(available)), config, random.Random(7))
    assert first == again and len(first) == 3
    assert FedAvg().select(available, RunConfig(), random.Random(0)) == sorted(available)
