"""Inference on the global model: a `Predictor` runs one model version, a `Deployment`
decides which version that is and answers predictions with it.

Pure and wire-free: tensors in, class probabilities out. Decoding what people send (images,
JSON, CSV, NPY) is the web layer's (`fedgate.web.inference`); the shape rules every input
must pass are here (`as_batch`), so that both transports refuse the same things.

The deployed version is, unless an operator deployed one by hand, the best the run has
published by held-out accuracy (`best_model`). The deployment follows the run lazily: a
call that finds the federation past the newest version it has seen reads the store's list
again, so a round that completes is served from the next call on, with no task of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from fedgate.core.data import Dataset
from fedgate.core.models import ModelSpec, build_model
from fedgate.core.ports import ModelInfo, ModelVersion, RunStore
from fedgate.core.ratelimit import Rate, RateLimiter
from fedgate.errors import ConfigError, InvalidInput, NoModelDeployed, NotFound, Overloaded

log = logging.getLogger("fedgate.inference")
T = TypeVar("T")

MAX_BATCH = 256  # inputs in one call
MAX_BATCH_VALUES = 1 << 20  # numbers in one call (4 MB as float32), whatever one input's size
PEER_PREDICTIONS = Rate(burst=30, per_s=10.0)  # calls per peer address
MAX_PENDING = 8  # calls admitted at once (running or queued for the inference thread)
# a data set has a plain background when this share of its images' border pixels is this
# close to black (or white): 77% of digits' are within 0.1 of black, few of a photo's
PLAIN_SHARE = 2 / 3
PLAIN_TOLERANCE = 0.1


@dataclass(frozen=True)
class InputSpec:
    """One model input, as the data set defines it: (channels, height, width) float32
    with values in [0, 1], and what the model outputs (``num_classes`` probabilities).

    ``background`` is the brightness of a plain background the data set's images share
    (digits: 0.0, bright strokes on black), or None when they have none (photographs):
    the web layer uses it to bring a picture that is drawn the other way round (a dark
    digit on white paper) to the data set's polarity."""

    channels: int
    height: int
    width: int
    num_classes: int
    model_spec: ModelSpec
    background: float | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def numel(self) -> int:
        return self.channels * self.height * self.width

    @property
    def max_batch(self) -> int:
        return max(1, min(MAX_BATCH, MAX_BATCH_VALUES // self.numel))

    @classmethod
    def of(cls, dataset: Dataset) -> InputSpec:
        channels, height, width = (int(n) for n in dataset.x_train.shape[1:])
        return cls(
            channels,
            height,
            width,
            dataset.num_classes,
            dataset.model_spec,
            background=plain_background(dataset.x_train),
        )


def plain_background(images: torch.Tensor) -> float | None:
    """0.0 if most border pixels of ``images`` (N, C, H, W) are black, 1.0 if most are
    white (strokes on a plain background, as in digits), else None (photographs)."""
    border = torch.cat(
        [
            images[..., 0, :].flatten(),
            images[..., -1, :].flatten(),
            images[..., :, 0].flatten(),
            images[..., :, -1].flatten(),
        ]
    )
    if border.numel() == 0:
        return None
    for background in (0.0, 1.0):
        near = (border - background).abs() < PLAIN_TOLERANCE
        if float(near.float().mean()) >= PLAIN_SHARE:
            return background
    return None


def as_batch(values: np.ndarray | torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """``values`` as a float32 batch (N, C, H, W): one input of the model's shape, a batch
    of them, or rows of flattened inputs (N, C*H*W); refused (`InvalidInput`) when the
    shape is another, the batch empty or too large, or a value not a finite number."""
    tensor = torch.as_tensor(values)
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise InvalidInput(f"inputs must be real numbers, not {tensor.dtype}")
    shape = tuple(tensor.shape)
    if shape == spec.shape:
        tensor = tensor.unsqueeze(0)
    elif len(shape) == 2 and shape[1] == spec.numel:
        tensor = tensor.reshape(shape[0], *spec.shape)
    elif shape[1:] != spec.shape:
        raise InvalidInput(
            f"an input of shape {list(shape)} does not fit the model: it takes "
            f"{list(spec.shape)}, a batch [N, {', '.join(map(str, spec.shape))}] or rows "
            f"of {spec.numel} values"
        )
    count = tensor.shape[0]
    if not 1 <= count <= spec.max_batch:
        raise InvalidInput(f"a batch holds 1 to {spec.max_batch} inputs, not {count}")
    batch = tensor.to(torch.float32)
    if not bool(torch.isfinite(batch).all()):
        raise InvalidInput("inputs must be finite numbers (no NaN or infinity)")
    return batch.contiguous()


@dataclass(frozen=True)
class Prediction:
    label: int  # the most probable class
    probabilities: tuple[float, ...]  # one per class, summing to 1


@dataclass(frozen=True)
class PredictionResult:
    model: ModelInfo  # the version that answered
    predictions: tuple[Prediction, ...]  # one per input, in order


class Predictor:
    """One model architecture, built once (when the first version is loaded: a server
    nobody asks for predictions holds no second copy of the model), and the weights of
    one version at a time.

    Thread-safe: loading a version and predicting hold one lock, so a prediction never
    runs on half-loaded weights. Call it from a worker thread, never the event loop."""

    def __init__(self, model: str, spec: InputSpec) -> None:
        self.model = model
        self.spec = spec
        self._module: nn.Module | None = None
        self._lock = threading.Lock()
        self.version: int | None = None  # the version loaded, if any

    def load(self, model: ModelVersion) -> None:
        """Serve ``model`` from now on (`ConfigError` if it is not this architecture's)."""
        with self._lock:
            module = self._module or build_model(self.model, self.spec.model_spec).eval()
            if _layout(model.weights) != _layout(module.state_dict()):
                raise ConfigError(
                    f"model version {model.version} does not fit the architecture inference "
                    "was built for (its tensors' names, shapes or dtypes differ)"
                )
            module.load_state_dict(model.weights)
            self._module, self.version = module, model.version

    def predict(self, batch: torch.Tensor) -> tuple[int, torch.Tensor]:
        """The loaded version and its class probabilities (N, classes) for ``batch``, an
        `as_batch` result."""
        if tuple(batch.shape[1:]) != self.spec.shape:
            raise InvalidInput(f"a batch must be [N, {', '.join(map(str, self.spec.shape))}]")
        with self._lock:
            if self._module is None or self.version is None:
                raise NoModelDeployed("no model version is loaded for inference")
            with torch.inference_mode():
                probabilities = torch.softmax(self._module(batch).float(), dim=1)
            return self.version, probabilities


def _layout(weights: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {name: (tuple(t.shape), t.dtype) for name, t in weights.items()}


def best_model(models: Sequence[ModelInfo]) -> ModelInfo | None:
    """The version to serve by default: the best held-out accuracy, the newer on a tie;
    the newest if none was evaluated; None while only the initial model (version 0)
    exists, which no round has trained."""
    trained = [m for m in models if m.version > 0]
    evaluated = [m for m in trained if math.isfinite(m.accuracy)]
    if evaluated:
        return max(evaluated, key=lambda m: (m.accuracy, m.version))
    return max(trained, key=lambda m: m.version, default=None)


@dataclass(frozen=True)
class Deployed:
    model: ModelInfo
    pinned: bool  # deployed by hand; False: the best so far, followed as rounds complete


@dataclass(frozen=True)
class PredictLimits:
    per_peer: Rate = PEER_PREDICTIONS
    max_pending: int = MAX_PENDING


class Deployment:
    """The model version a run's inference serves, and predictions with it.

    ``published`` says the newest version the federation has published (cheap: read on
    every call); when it passes what the store listed last, the list is read again and the
    best version deployed unless one was pinned. Store reads and predictions run on one
    thread of the deployment's own, so inference never takes the federation's workers."""

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        predictor: Predictor,
        *,
        published: Callable[[], int],
        limits: PredictLimits | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.predictor = predictor
        self.published = published
        self.limits = limits or PredictLimits()
        self._peers = RateLimiter(self.limits.per_peer, "predictions from peer")
        self._pending = 0  # calls admitted and not yet answered (counted on the event loop)
        self._lock = threading.Lock()
        self._models: list[ModelInfo] = []
        self._seen = -1  # the newest version the last read of the store listed
        self._deployed: Deployed | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="fedgate-inference")

    @property
    def spec(self) -> InputSpec:
        return self.predictor.spec

    # ---- what the adapters call, on the event loop ---------------------------------------

    def admit(self, peer: str) -> None:
        """Spend one of ``peer``'s prediction calls (`RateLimited` when it has none left):
        before the adapter reads a byte of the call's input."""
        self._peers.take(peer)

    async def predict(self, batch: torch.Tensor | Callable[[], torch.Tensor]) -> PredictionResult:
        """The deployed version's predictions for ``batch``, an `as_batch` result or what
        makes one (an input decoder: it runs on the inference thread too, off the event
        loop). At most `PredictLimits.max_pending` calls at once; more are `Overloaded`."""
        if self._pending >= self.limits.max_pending:
            raise Overloaded(f"{self._pending} predictions are running; retry in a moment")
        self._pending += 1
        try:
            return await self.offload(self._predict, batch)
        finally:
            self._pending -= 1

    async def models(self) -> list[ModelInfo]:
        """Every version the run has published, oldest first."""
        return await self.offload(self._current_models)

    async def deployed(self) -> Deployed | None:
        """The version served now (None: none yet)."""
        return await self.offload(self._current)

    async def deploy(self, version: int | None) -> Deployed:
        """Serve ``version`` from now on (`NotFound` if the run has none such); None goes
        back to serving the best, following the run."""
        return await self.offload(self._deploy, version)

    async def load(self, version: int) -> ModelVersion:
        """A version's tensors, hash checked (for downloads)."""
        return await self.offload(self.store.load_model, self.run_id, version)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def offload(self, call: Callable[..., T], *args: object) -> T:
        """``call(*args)`` on the inference thread: for the adapters' own heavy work that
        should queue with predictions (encoding a model to download)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, functools.partial(call, *args))

    # ---- sync: on the deployment's thread -----------------------------------------------

    # Every one of these runs on the deployment's one thread: they never overlap. The lock
    # is for a caller that uses them from elsewhere (a test, a future second worker).

    def _predict(self, batch: torch.Tensor | Callable[[], torch.Tensor]) -> PredictionResult:
        if callable(batch):
            batch = batch()  # decoded before the deployment is asked: bad input is 400 first
        deployed = self._current()
        if deployed is None:
            raise NoModelDeployed(
                "no model is deployed yet: no round has completed (an operator may deploy "
                "a version by hand: POST /api/v1/models/{version}/deploy)"
            )
        _, probabilities = self.predictor.predict(batch)
        predictions = tuple(
            Prediction(int(np.argmax(row)), tuple(float(p) for p in row))
            for row in probabilities.tolist()
        )
        return PredictionResult(deployed.model, predictions)

    def _current(self) -> Deployed | None:
        with self._lock:
            if self.published() > self._seen:
                self._refresh()
            return self._deployed

    def _current_models(self) -> list[ModelInfo]:
        with self._lock:
            if self.published() > self._seen or not self._models:
                self._refresh()
            return list(self._models)

    def _deploy(self, version: int | None) -> Deployed:
        with self._lock:
            self._refresh()
            if version is not None:
                self._switch(self._info(version), pinned=True)
            elif self._deployed is not None:  # unpinned: the best from now on
                self._deployed = dataclasses.replace(self._deployed, pinned=False)
                self._follow_best()
            if self._deployed is None:
                raise NoModelDeployed("no round has completed yet: there is no best version")
            return self._deployed

    def _refresh(self) -> None:
        """Read the store's list again; deploy the best version unless one is pinned."""
        self._models = self.store.list_models(self.run_id)
        self._seen = max((m.version for m in self._models), default=-1)
        if self._deployed is None or not self._deployed.pinned:
            self._follow_best()

    def _follow_best(self) -> None:
        best = best_model(self._models)
        if best is None:
            self._deployed = None
        elif self._deployed is None or self._deployed.model != best:
            self._switch(best, pinned=False)

    def _switch(self, info: ModelInfo, *, pinned: bool) -> None:
        if self.predictor.version != info.version:
            self.predictor.load(self.store.load_model(self.run_id, info.version))
            log.info("inference: serving model version %d (round %d)", info.version, info.round)
        self._deployed = Deployed(info, pinned)

    def _info(self, version: int) -> ModelInfo:
        for info in self._models:
            if info.version == version:
                return info
        raise NotFound(f"run {self.run_id} has no model version {version}")
