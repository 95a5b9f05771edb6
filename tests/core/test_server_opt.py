"""FedAdam's server step: the paper's formulas by hand, moments that survive being saved
and loaded (as the run store keeps them) to the bit, a state that does not fit the model
ignored, and every step bounded however hostile the aggregate."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load, save

from fedgate.codecs import TensorDict
from fedgate.core.server_opt import AdamSettings, adam_step, initial_moments, moments_match
from fedgate.core.strategy import FedAdam, get_strategy

CURRENT = {"w": torch.tensor([1.0, 0.0, -1.0]), "steps": torch.tensor(5, dtype=torch.int64)}


def aggregates(count: int, seed: int = 0) -> list[TensorDict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"w": torch.randn(3, generator=g), "steps": torch.tensor(6 + i, dtype=torch.int64)}
        for i in range(count)
    ]


def run(
    strategy: FedAdam, model: TensorDict, state: TensorDict, steps: list[TensorDict]
) -> tuple[TensorDict, TensorDict]:
    for aggregate in steps:
        model, state = strategy.finish(model, aggregate, state)
    return model, state


def assert_bits_equal(a: TensorDict, b: TensorDict) -> None:
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert tensor.dtype == b[name].dtype and torch.equal(tensor, b[name]), name


def test_the_first_step_is_the_papers_by_hand() -> None:
    s = AdamSettings()
    assert (s.lr, s.beta1, s.beta2, s.tau) == (0.03, 0.9, 0.99, 1e-3)
    aggregate = {"w": torch.tensor([0.0, 0.0, 1.0]), "steps": torch.tensor(7)}
    model, state = adam_step(CURRENT, aggregate, {}, s)
    for i, delta in enumerate((1.0, 0.0, -2.0)):  # current - aggregate
        m = (1 - s.beta1) * delta
        v = s.beta2 * s.tau**2 + (1 - s.beta2) * delta**2
        expected = float(CURRENT["w"][i]) - s.lr * m / (math.sqrt(v) + s.tau)
        assert float(model["w"][i]) == pytest.approx(expected, rel=1e-6, abs=1e-9)
        assert float(state["m/w"][i]) == pytest.approx(m, rel=1e-6)
        assert float(state["v/w"][i]) == pytest.approx(v, rel=1e-5)
    assert model["steps"].dtype == torch.int64 and int(model["steps"]) == 7  # not stepped
    assert set(state) == {"m/w", "v/w"} and model["w"].dtype == torch.float32


def test_moments_saved_and_loaded_step_on_to_the_bit() -> None:
    steps = aggregates(4)
    straight = run(FedAdam(), dict(CURRENT), {}, steps)
    model, state = run(FedAdam(), dict(CURRENT), {}, steps[:2])
    # as the run store keeps them: a safe tensor format, read back by a new server process
    model, state = load(save(model)), load(save(state))
    resumed = run(FedAdam(), model, state, steps[2:])
    assert_bits_equal(resumed[0], straight[0])
    assert_bits_equal(resumed[1], straight[1])
    assert not torch.equal(straight[0]["w"], steps[-1]["w"])  # it did step, not copy


def test_a_step_changes_none_of_its_inputs() -> None:
    current, (aggregate,) = {k: t.clone() for k, t in CURRENT.items()}, aggregates(1)
    state = initial_moments(current, AdamSettings())
    copies = [{k: t.clone() for k, t in d.items()} for d in (current, aggregate, state)]
    adam_step(current, aggregate, state, AdamSettings())
    for original, copy in zip((current, aggregate, state), copies, strict=True):
        assert_bits_equal(original, copy)


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"m/w": torch.ones(3)},  # v missing
        {"m/w": torch.ones(4), "v/w": torch.ones(4)},  # another model's shape
        {"m/w": torch.ones(3, dtype=torch.float64), "v/w": torch.ones(3, dtype=torch.float64)},
        {"m/w": torch.ones(3), "v/w": torch.ones(3), "m/other": torch.ones(1)},
    ],
    ids=["empty", "incomplete", "shape", "dtype", "extra"],
)
def test_a_state_that_does_not_fit_the_model_starts_the_moments_afresh(state: TensorDict) -> None:
    assert not moments_match(state, CURRENT)
    (aggregate,) = aggregates(1)
    fresh = adam_step(CURRENT, aggregate, {}, AdamSettings())
    got = adam_step(CURRENT, aggregate, state, AdamSettings())
    assert_bits_equal(got[0], fresh[0])
    assert_bits_equal(got[1], fresh[1])
    assert moments_match(fresh[1], CURRENT)


def test_no_step_moves_a_weight_further_than_the_bound() -> None:
    # pseudo-gradients from 1e-4 to 1e4 per coordinate, signs and sizes at random (a hostile
    # aggregate now and then): each step stays within max_step per coordinate
    settings = AdamSettings(lr=0.1)
    g = torch.Generator().manual_seed(1)
    model: TensorDict = {"w": torch.zeros(1000)}
    state: TensorDict = {}
    largest = 0.0
    for _ in range(60):
        size = 10 ** (torch.rand(1000, generator=g) * 8 - 4)
        aggregate = {"w": model["w"] + size * torch.randn(1000, generator=g).sign()}
        stepped, state = adam_step(model, aggregate, state, settings)
        largest = max(largest, float((stepped["w"] - model["w"]).abs().max()))
        model = stepped
    assert settings.max_step() == pytest.approx(2.345 * 0.1, rel=1e-3)
    assert 0.5 * settings.max_step() < largest <= settings.max_step() * (1 + 1e-6)


def test_fedadam_is_named_with_its_server_learning_rate() -> None:
    assert isinstance(get_strategy("fedadam"), FedAdam)
    assert get_strategy("fedadam:0.1").name == "fedadam:0.1"
    assert get_strategy("fedadam:1e-2").name == "fedadam:0.01"
