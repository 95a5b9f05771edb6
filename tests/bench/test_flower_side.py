"""Both halves of the flower suite, without Flower: what the benchmark process writes for
Flower's processes, and that a Flower client trains and Flower's server evaluates exactly
as fedgate's do, to the bit.

``flower_app`` runs under ``.venv-flower`` with fedgate's own `LocalTrainer` and `evaluate`,
fed from files. Here, in fedgate's ``.venv`` and on the same torch, what it builds from
those files (data part, batch-order seed, recipe, held-out split) must give exactly
fedgate's weights, losses and accuracies, so the suite compares frameworks, not recipes.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import flower_app
import pytest
import torch
from federations import FederationSpec
from flower_side import (
    MAKE_TARGET,
    VENV_ENV,
    flower_unavailable,
    flower_venv,
    skip_message,
    write_inputs,
)

from fedgate.core.data import Dataset, load_dataset
from fedgate.core.messages import TrainConfig
from fedgate.core.models import build_model
from fedgate.core.trainers import build_trainer
from fedgate.core.training import evaluate, state_dict_copy

SPEC = FederationSpec("grpc", "raw", clients=3, rounds=2, partition="dirichlet:0.5", seed=7)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", SPEC.seed)


@pytest.fixture(scope="module")
def inputs(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flower-inputs")
    write_inputs(SPEC, digits, path)
    return path


def test_inputs_hold_fedgates_federation(inputs: Path, digits: Dataset) -> None:
    setup = flower_app.Setup.load(inputs)
    assert (setup.rounds, setup.clients, setup.batch_size) == (2, 3, SPEC.batch_size)
    assert (setup.learning_rate, setup.local_epochs) == (SPEC.learning_rate, SPEC.local_epochs)
    initial = state_dict_copy(build_model("cnn", digits.model_spec, seed=SPEC.seed))
    stored = flower_app.load_arrays(inputs / flower_app.INITIAL_FILE)
    assert setup.names == list(initial) == list(setup.build().state_dict())
    for name, tensor in initial.items():
        assert torch.equal(torch.from_numpy(stored[name]), tensor), name
    x_test, y_test = flower_app.load_xy(inputs / flower_app.TEST_FILE)
    assert torch.equal(x_test, digits.x_test) and torch.equal(y_test, digits.y_test)
    sizes = []
    for index in range(SPEC.clients):
        part = build_trainer(
            digits, "cnn", spec=SPEC.partition, index=index, of=SPEC.clients, seed=SPEC.seed
        )
        x, y = flower_app.load_xy(inputs / flower_app.client_file(index))
        assert torch.equal(x, part.x) and torch.equal(y, part.y), index
        sizes.append(len(y))
    assert sum(sizes) == len(digits.y_train) and len(set(sizes)) > 1  # label skew: unequal


def test_flower_trainer_and_evaluation_are_fedgates(inputs: Path, digits: Dataset) -> None:
    setup = flower_app.Setup.load(inputs)
    weights = state_dict_copy(build_model("cnn", digits.model_spec, seed=SPEC.seed))
    config = TrainConfig(SPEC.learning_rate, SPEC.local_epochs, SPEC.batch_size)
    assert setup.train_config() == config
    index = 1
    theirs = build_trainer(
        digits, "cnn", spec=SPEC.partition, index=index, of=SPEC.clients, seed=SPEC.seed
    )
    ours = flower_app.client_trainer(inputs, index)
    for number in (1, 2):  # each round's batch order comes from the seed and the round
        this_round = dataclasses.replace(config, round=number)
        flowers = dataclasses.replace(setup.train_config(), round=number)
        expected, got = theirs.train(weights, this_round), ours.train(weights, flowers)
        assert (got.loss, got.accuracy) == (expected.loss, expected.accuracy)
        for name, tensor in expected.weights.items():
            assert torch.equal(got.weights[name], tensor), name
        weights = expected.weights
    x_test, y_test = flower_app.load_xy(inputs / flower_app.TEST_FILE)
    result = evaluate(build_model("cnn", digits.model_spec), weights, digits.x_test, digits.y_test)
    assert evaluate(setup.build(), weights, x_test, y_test) == result


def test_arrays_round_trip_in_flowers_order(inputs: Path) -> None:
    setup = flower_app.Setup.load(inputs)
    state = flower_app.to_state(
        setup.names, [flower_app.load_arrays(inputs / "initial.npz")[n] for n in setup.names]
    )
    arrays = flower_app.to_arrays(state)
    assert [a.shape for a in arrays] == [tuple(t.shape) for t in state.values()]
    with pytest.raises(ValueError):  # a list of the wrong length is refused, not truncated
        flower_app.to_state(setup.names, arrays[:-1])


def test_a_missing_venv_is_reported_with_the_make_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VENV_ENV, str(tmp_path / "no-venv"))
    assert flower_venv() == tmp_path / "no-venv"
    reason = flower_unavailable(flower_venv())
    assert reason is not None and str(tmp_path / "no-venv" / "bin" / "python") in reason
    assert MAKE_TARGET in skip_message(reason)


def test_a_venv_without_flwr_is_reported(tmp_path: Path) -> None:
    venv = tmp_path / "bare"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)  # a Python, and no flwr beside it
    reason = flower_unavailable(venv)
    assert reason is not None and "flwr is not importable" in reason
    assert "No module named 'flwr'" in reason
