"""Inference in the core: the input shape rules, the default choice of version, and a
`Deployment` over a real in-memory run store that follows a run's published versions."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import numpy as np
import pytest
import torch

from fedgate.core.config import RunConfig
from fedgate.core.data import load_dataset
from fedgate.core.inference import (
    Deployment,
    InputSpec,
    PredictLimits,
    Predictor,
    as_batch,
    best_model,
)
from fedgate.core.memory_store import InMemoryRunStore
from fedgate.core.messages import RoundOutcome, RoundRecord, RunState
from fedgate.core.models import build_model
from fedgate.core.ports import ModelInfo, ModelVersion, RoundCommit, RunMeta, RunSnapshot
from fedgate.core.ratelimit import Rate
from fedgate.errors import (
    ConfigError,
    InvalidInput,
    NoModelDeployed,
    NotFound,
    Overloaded,
    RateLimited,
)

DIGITS = load_dataset("digits")
SPEC = InputSpec.of(DIGITS)
RUN = "run-1"


def test_the_input_spec_is_the_data_sets() -> None:
    assert (SPEC.shape, SPEC.numel, SPEC.num_classes) == ((1, 8, 8), 64, 10)
    assert SPEC.model_spec == DIGITS.model_spec
    assert SPEC.background == 0.0  # bright strokes on black
    assert InputSpec.of(load_dataset("synthetic")).background is None  # no plain background
    assert SPEC.max_batch == 256


def test_inputs_are_taken_in_the_models_shape_or_as_rows() -> None:
    one = DIGITS.x_test[0]
    assert as_batch(one, SPEC).shape == (1, 1, 8, 8)
    assert torch.equal(as_batch(one, SPEC)[0], one)
    assert torch.equal(as_batch(DIGITS.x_test[:5], SPEC), DIGITS.x_test[:5])
    rows = DIGITS.x_test[:3].reshape(3, 64).numpy().astype(np.float64)
    assert torch.equal(as_batch(rows, SPEC), DIGITS.x_test[:3])
    integers = np.arange(64, dtype=np.int64).reshape(1, 1, 8, 8)
    assert as_batch(integers, SPEC).dtype == torch.float32


@pytest.mark.parametrize(
    ("values", "says"),
    [
        (np.zeros((8, 8)), "does not fit the model"),
        (np.zeros((2, 3, 8, 8)), "does not fit the model"),
        (np.zeros((2, 63)), "does not fit the model"),
        (np.zeros((0, 1, 8, 8)), "1 to 256 inputs, not 0"),
        (np.zeros((257, 64)), "1 to 256 inputs, not 257"),
        (np.full((1, 1, 8, 8), np.nan), "finite"),
        (np.full((1, 1, 8, 8), -np.inf), "finite"),
        (np.ones((1, 1, 8, 8), dtype=bool), "real numbers"),
    ],
)
def test_other_inputs_are_refused_saying_why(values: np.ndarray, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        as_batch(values, SPEC)


def info(version: int, accuracy: float) -> ModelInfo:
    return ModelInfo(version, version, accuracy, math.nan, f"{version:064x}")


def test_the_default_version_is_the_best_evaluated_one() -> None:
    assert best_model([info(0, math.nan)]) is None  # the untrained initial model
    assert best_model([info(0, math.nan), info(1, math.nan), info(2, math.nan)]) == info(
        2, math.nan
    )
    models = [info(0, math.nan), info(1, 0.5), info(2, 0.9), info(3, 0.7), info(4, math.nan)]
    assert best_model(models) == info(2, 0.9)
    assert best_model([*models, info(5, 0.9)]) == info(5, 0.9)  # a tie: the newer


# ---- a deployment over a store -----------------------------------------------------------


def weights(seed: int) -> dict[str, torch.Tensor]:
    return dict(build_model("cnn", SPEC.model_spec, seed=seed).state_dict())


class Run:
    """A run as the store sees it: versions published with their held-out accuracy."""

    def __init__(self) -> None:
        self.store = InMemoryRunStore()
        self.version = 0
        snapshot = RunSnapshot(RUN, RunState.RUNNING, 1, 1, 0, RunConfig(), None, "[]")
        self.snapshot = snapshot
        self.store.create_run(
            RunMeta(RUN, "digits", "cnn"), snapshot, ModelVersion.of(0, weights(0))
        )

    def publish(self, accuracy: float) -> None:
        self.version += 1
        record = RoundRecord(
            self.version,
            1,
            RoundOutcome.COMPLETED,
            (),
            (),
            0,
            self.version,
            accuracy,
            1.0,
            0,
            0,
            0.1,
        )
        model = ModelVersion.of(self.version, weights(self.version))
        snapshot = dataclasses.replace(self.snapshot, model_version=self.version)
        self.store.commit_round(RoundCommit(snapshot, record, model, ()))

    def deployment(self, limits: PredictLimits | None = None) -> Deployment:
        predictor = Predictor("cnn", SPEC)
        return Deployment(self.store, RUN, predictor, published=lambda: self.version, limits=limits)


def softmax(version: int, batch: torch.Tensor) -> torch.Tensor:
    model = build_model("cnn", SPEC.model_spec)
    model.load_state_dict(weights(version))
    model.eval()
    with torch.inference_mode():
        return torch.softmax(model(batch), dim=1)


async def test_nothing_is_deployed_until_a_round_has_completed() -> None:
    run = Run()
    deployment = run.deployment()
    assert await deployment.deployed() is None
    with pytest.raises(NoModelDeployed, match="no round has completed"):
        await deployment.predict(as_batch(DIGITS.x_test[:1], SPEC))
    with pytest.raises(NoModelDeployed):
        await deployment.deploy(None)
    assert [m.version for m in await deployment.models()] == [0]


async def test_the_best_version_is_served_and_followed_as_rounds_complete() -> None:
    run = Run()
    deployment = run.deployment()
    batch = as_batch(DIGITS.x_test[:4], SPEC)
    run.publish(0.5)
    result = await deployment.predict(batch)
    assert (result.model.version, result.model.accuracy, result.model.loss) == (1, 0.5, 1.0)
    expected = softmax(1, batch)
    assert [p.label for p in result.predictions] == expected.argmax(1).tolist()
    assert [list(p.probabilities) for p in result.predictions] == expected.tolist()
    run.publish(0.8)
    run.publish(0.6)  # worse: the best stays version 2
    deployed = await deployment.deployed()
    assert deployed is not None and (deployed.model.version, deployed.pinned) == (2, False)
    assert (await deployment.predict(batch)).model.accuracy == 0.8
    listed = await deployment.models()
    assert [(m.version, m.round, m.accuracy) for m in listed[1:]] == [
        (1, 1, 0.5),
        (2, 2, 0.8),
        (3, 3, 0.6),
    ]


async def test_an_operator_pins_a_version_and_unpins_it() -> None:
    run = Run()
    deployment = run.deployment()
    run.publish(0.9)
    run.publish(0.4)
    pinned = await deployment.deploy(2)
    assert (pinned.model.version, pinned.pinned) == (2, True)
    run.publish(0.95)  # a better one: a pinned version stays
    batch = as_batch(DIGITS.x_test[:2], SPEC)
    assert (await deployment.predict(batch)).model.version == 2
    assert deployment.predictor.version == 2
    back = await deployment.deploy(None)
    assert (back.model.version, back.pinned) == (3, False)
    assert (await deployment.deploy(0)).model.version == 0  # even the initial model
    with pytest.raises(NotFound, match="no model version 7"):
        await deployment.deploy(7)
    assert (await deployment.deployed()).model.version == 0  # type: ignore[union-attr]


async def test_calls_are_limited_per_peer_and_at_once() -> None:
    run = Run()
    run.publish(0.5)
    deployment = run.deployment(PredictLimits(per_peer=Rate(burst=2, per_s=0.01)))
    deployment.admit("10.0.0.1")
    deployment.admit("10.0.0.1")
    with pytest.raises(RateLimited, match=r"predictions from peer '10\.0\.0\.1'"):
        deployment.admit("10.0.0.1")
    deployment.admit("10.0.0.2")  # another peer has its own
    busy = run.deployment(PredictLimits(max_pending=1))
    started, release = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow() -> torch.Tensor:
        loop.call_soon_threadsafe(started.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
        return as_batch(DIGITS.x_test[:1], SPEC)

    first = asyncio.ensure_future(busy.predict(slow))
    await started.wait()
    with pytest.raises(Overloaded):
        await busy.predict(as_batch(DIGITS.x_test[:1], SPEC))
    release.set()
    assert (await first).model.version == 1
    assert (await busy.predict(as_batch(DIGITS.x_test[:1], SPEC))).model.version == 1


def test_a_predictor_takes_only_its_architectures_weights() -> None:
    predictor = Predictor("cnn", SPEC)
    with pytest.raises(NoModelDeployed):
        predictor.predict(as_batch(DIGITS.x_test[:1], SPEC))
    other = InputSpec.of(load_dataset("synthetic"))
    alien = dict(
        build_model("cnn", dataclasses.replace(other.model_spec, num_classes=3)).state_dict()
    )
    with pytest.raises(ConfigError, match="does not fit the architecture"):
        predictor.load(ModelVersion.of(1, alien))
    assert predictor.version is None
