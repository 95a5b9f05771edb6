"""FedAvg maths (a running weighted sum equals the hand-computed weighted mean), norm
clipping and the weight cap that comes with it, strategies by name, the metadata an
aggregator is given, and what strategies hand the federation besides an aggregate."""

from __future__ import annotations

import asyncio
import functools
import math
import random
from collections.abc import Mapping

import pytest
import torch

from fedgate.core.aggregation import clip_update, distance
from fedgate.core.config import RunConfig
from fedgate.core.guard import GuardedAggregator
from fedgate.core.messages import RoundOutcome
from fedgate.core.strategy import (
    STRATEGIES,
    FedAdam,
    FedAvg,
    FedProx,
    RunningMean,
    TrimmedMean,
    UpdateMeta,
    get_strategy,
    strategy_names,
)
from fedgate.errors import ConfigError
from fedgate.run.sim_config import SimConfig
from tests.core.hostile import run_in_process


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
    assert strategy_names() == ("fedavg", "fedprox", "fedadam", "median", "trimmed-mean")
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
        "fedavg:1",
        "fedprox:",
        "fedprox:-0.1",
        "fedprox:inf",
        "fedadam:0",
        "fedadam:-1",
        "fedadam:nan",
        "fedadam:x",
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


def test_fedprox_and_fedadam_take_their_parameter_in_the_name() -> None:
    assert get_strategy("fedprox").proximal_mu == 0.01
    prox = get_strategy("fedprox:0.5")
    assert isinstance(prox, FedProx) and prox.proximal_mu == 0.5
    assert prox.name == "fedprox:0.5" and get_strategy("fedprox").name == "fedprox"
    adam = get_strategy("fedadam:0.1")
    assert isinstance(adam, FedAdam) and adam.settings.lr == 0.1 and adam.name == "fedadam:0.1"
    assert get_strategy("fedadam").name == "fedadam"
    for name in ("fedavg", "fedadam", "median", "trimmed-mean", "trimmed-mean:0.1"):
        assert get_strategy(name).proximal_mu == 0.0, name  # only fedprox trains with it
    for name in strategy_names():  # every base name is a valid run config
        assert RunConfig(strategy=name).strategy == name
        assert get_strategy(name).name == name


def test_strategies_without_server_state_publish_the_aggregate_as_it_is() -> None:
    current = {"w": torch.zeros(2)}
    aggregate = {"w": torch.tensor([1.0, 2.0])}
    state = {"m/w": torch.ones(2)}  # another strategy's, from earlier rounds: kept for it
    for name in ("fedavg", "fedprox", "median", "trimmed-mean"):
        model, kept = STRATEGIES[name].finish(current, aggregate, state)
        assert model.keys() == {"w"} and model["w"] is aggregate["w"], name  # not a copy
        assert kept.keys() == {"m/w"} and kept["m/w"] is state["m/w"], name
    assert STRATEGIES["fedavg"].finish(current, aggregate, {})[1] == {}


class Recording(RunningMean):
    """FedAvg's mean that keeps the metadata it was given."""

    def __init__(self, global_model: dict[str, torch.Tensor]) -> None:
        super().__init__(global_model)
        self.seen: list[tuple[str, int, UpdateMeta | None]] = []

    def add(
        self,
        tensors: Mapping[str, torch.Tensor],
        weight: int,
        *,
        client_id: str,
        meta: UpdateMeta | None = None,
    ) -> None:
        super().add(tensors, weight, client_id=client_id, meta=meta)
        self.seen.append((client_id, weight, meta))


def test_the_guard_hands_each_update_s_metadata_to_the_strategy() -> None:
    base = {"w": torch.zeros(2)}
    inner = Recording(base)
    guarded = GuardedAggregator(inner, base, clip_norm=5.0)
    guarded.cap_weights([3, 3, 3])
    meta = UpdateMeta("a", 10_000, train_loss=0.25, round_id="4.2", key_id="k1")
    guarded.add({"w": torch.tensor([1.0, 2.0])}, 10_000, client_id="a", meta=meta)
    guarded.add({"w": torch.tensor([1.0, 2.0])}, 1, client_id="b")
    # the weight folded is capped; the metadata says what the client claimed
    assert inner.seen == [("a", 3, meta), ("b", 1, None)]
    assert math.isnan(UpdateMeta("c", 1).train_loss)


LEARN_ROUNDS = 10


@functools.cache
def digits_accuracies(strategy: str) -> tuple[float, ...]:
    """Each round's accuracy of a 5-client in-process digits federation (~1.5 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `fedgate sim` runs its clients; the figures are seeded
    try:
        config = SimConfig(clients=5, rounds=LEARN_ROUNDS, strategy=strategy, seed=0)
        status = asyncio.run(run_in_process(config))
    finally:
        torch.set_num_threads(threads)
    assert [(r.round, r.outcome) for r in status.history] == [
        (n, RoundOutcome.COMPLETED) for n in range(1, LEARN_ROUNDS + 1)
    ]
    return tuple(r.accuracy for r in status.history)


@pytest.mark.parametrize("strategy", ["fedprox", "fedadam"])
def test_fedprox_and_fedadam_learn_digits_in_a_federation(strategy: str) -> None:
    accuracies = digits_accuracies(strategy)
    assert accuracies[-1] > 0.88  # measured: fedavg 0.919, fedprox 0.922, fedadam 0.936
    # the proximal term reached the clients, the Adam step the published models
    assert accuracies != digits_accuracies("fedavg")
