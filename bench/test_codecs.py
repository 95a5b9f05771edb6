"""Codec suite: size, encode/decode time and lossy error for every model x codec.

Every codec in the registry is covered (new codecs join automatically), plus the design's
"binary" baseline, ``pickle.dumps`` of the fp32 state dict, which is measured here only:
unpickling runs code, so it is never a wire codec.

Each (model, codec) gives two benchmarks, ``test_encode`` and ``test_decode``, merged into
one results row by ``fedgate.benchrun`` through ``extra_info["row"]``; ``extra_info["timing"]``
names the row field their median lands in (``encode_s``, ``decode_s``).

Lossy codecs also report relative L2 errors over all float tensors, computed against a
"trained" state: the seeded model after ONE plain SGD step (lr 0.05, batch of 16 random
N(0, 1) inputs with random labels, train mode, so BatchNorm running stats move too).
That step is the same for every model, cheap (~3 s for ResNet-50) and gives update deltas
with the structure of real ones instead of synthetic noise.

- ``rel_l2``: the global weights through the codec.
- ``rel_l2_delta``: the update delta (trained - global) itself through the codec.
- ``rel_l2_delta_via_weights``: the delta the server derives when a client sends its
  trained weights through the codec (what fedgate clients do today), relative to the
  true delta.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
import torch
from torch import nn

from fedgate.codecs import CODECS
from fedgate.core.models import ModelSpec

BASELINE = "pickle (baseline)"
CODEC_NAMES = [*CODECS, BASELINE]
# Per benchmark: rounds are sized from a probe so that each stays near its time budget;
# slow combinations (JSON on the resnets) get a single round.
BUDGET_S = {False: 2.0, True: 0.3}
MAX_ROUNDS = {False: 30, True: 10}
PROBE_BYTES = 4 * 1024**2
SGD_BATCH = 16
SGD_LR = 0.05

# JSON on ResNet-50 takes about a minute per call; the suite's own budget is the guard.
pytestmark = pytest.mark.timeout(3600)

TensorDict = dict[str, torch.Tensor]


class Measured(Protocol):
    """What the suite needs of a codec; the registry's codecs and the baseline fit it."""

    @property
    def name(self) -> str: ...

    @property
    def lossy(self) -> bool: ...

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes: ...

    def decode(self, data: bytes) -> TensorDict: ...


class PickleBaseline:
    name = BASELINE
    lossy = False

    def encode(self, tensors: Mapping[str, torch.Tensor]) -> bytes:
        return pickle.dumps(dict(tensors), protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes) -> TensorDict:
        # Only ever the bytes encode() just produced in this process, never a peer's.
        decoded: TensorDict = pickle.loads(data)
        return decoded


def measured(name: str) -> Measured:
    return PickleBaseline() if name == BASELINE else CODECS[name]


@dataclass(frozen=True)
class States:
    weights: TensorDict  # the global model
    trained: TensorDict  # after one local SGD step
    delta: TensorDict  # trained - weights

    @property
    def input_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.weights.values())


def _copy(model: nn.Module) -> TensorDict:
    # The full state dict, BatchNorm buffers included: that is what crosses the wire.
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def build_states(model: nn.Module, spec: ModelSpec) -> States:
    weights = _copy(model)
    generator = torch.Generator().manual_seed(1)
    shape = (SGD_BATCH, spec.in_channels, spec.image_size, spec.image_size)
    inputs = torch.randn(shape, generator=generator)
    labels = torch.randint(0, spec.num_classes, (SGD_BATCH,), generator=generator)
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=SGD_LR)
    torch.autograd.backward(nn.functional.cross_entropy(model(inputs), labels))
    optimiser.step()
    trained = _copy(model)
    delta = {name: trained[name] - weights[name] for name in weights}
    return States(weights, trained, delta)


@pytest.fixture(scope="session")
def states(
    make_model: Callable[[str], tuple[nn.Module, ModelSpec]],
) -> Callable[[str], States]:
    cache: dict[str, States] = {}

    def get(model_name: str) -> States:
        if model_name not in cache:
            cache[model_name] = build_states(*make_model(model_name))
        return cache[model_name]

    return get


@pytest.fixture(scope="session")
def payloads() -> dict[tuple[str, str], bytes]:
    """Encodings made by test_encode, handed to test_decode (and then dropped)."""
    return {}


def rel_l2(decoded: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> float:
    """||decoded - reference|| / ||reference|| over all float tensors concatenated."""
    error = norm = 0.0
    for name, ref in reference.items():
        if ref.is_floating_point():
            exact = ref.double()
            error += float((decoded[name].double() - exact).square().sum())
            norm += float(exact.square().sum())
    assert norm > 0, "reference has no non-zero float values"
    return math.sqrt(error / norm)


def lossy_errors(codec: Measured, states: States, payload: bytes) -> dict[str, float]:
    via_weights = codec.decode(codec.encode(states.trained))
    derived = {name: via_weights[name] - states.weights[name] for name in states.weights}
    return {
        "rel_l2": rel_l2(codec.decode(payload), states.weights),
        "rel_l2_delta": rel_l2(codec.decode(codec.encode(states.delta)), states.delta),
        "rel_l2_delta_via_weights": rel_l2(derived, states.delta),
    }


def probe_seconds(codec: Measured, weights: TensorDict, op: str) -> float:
    """Estimated seconds ``op`` takes on ``weights``, timed on a leading slice of it."""
    sample: TensorDict = {}
    for name, tensor in weights.items():
        sample[name] = tensor
        if sum(t.numel() * t.element_size() for t in sample.values()) >= PROBE_BYTES:
            break
    scale = sum(t.numel() * t.element_size() for t in weights.values()) / sum(
        t.numel() * t.element_size() for t in sample.values()
    )
    encoded = codec.encode(sample)  # also warms up the code path
    target: Callable[[], object] = (
        (lambda: codec.encode(sample)) if op == "encode" else (lambda: codec.decode(encoded))
    )
    start = time.perf_counter()
    target()
    return (time.perf_counter() - start) * scale


def rounds_for(codec: Measured, weights: TensorDict, op: str, quick: bool) -> int:
    estimate = probe_seconds(codec, weights, op)
    return max(1, min(MAX_ROUNDS[quick], int(BUDGET_S[quick] / max(estimate, 1e-9))))


def row_info(model_name: str, codec: Measured, states: States, payload: bytes) -> dict[str, Any]:
    return {
        "row": f"{model_name}/{codec.name}",
        "model": model_name,
        "codec": codec.name,
        "lossy": codec.lossy,
        "baseline": codec.name == BASELINE,
        "bytes": len(payload),
        "input_bytes": states.input_bytes,
        "tensors": len(states.weights),
    }


@pytest.mark.parametrize("codec_name", CODEC_NAMES)
def test_encode(
    benchmark: Any,
    model_name: str,
    codec_name: str,
    states: Callable[[str], States],
    payloads: dict[tuple[str, str], bytes],
    quick: bool,
) -> None:
    codec, state = measured(codec_name), states(model_name)
    rounds = rounds_for(codec, state.weights, "encode", quick)
    benchmark.group = f"{model_name} encode"
    payload: bytes = benchmark.pedantic(
        codec.encode, args=(state.weights,), rounds=rounds, iterations=1
    )
    assert isinstance(payload, bytes) and payload
    payloads[(model_name, codec_name)] = payload
    benchmark.extra_info.update(row_info(model_name, codec, state, payload), timing="encode")
    if codec.lossy:
        benchmark.extra_info.update(lossy_errors(codec, state, payload))


@pytest.mark.parametrize("codec_name", CODEC_NAMES)
def test_decode(
    benchmark: Any,
    model_name: str,
    codec_name: str,
    states: Callable[[str], States],
    payloads: dict[tuple[str, str], bytes],
    quick: bool,
) -> None:
    codec, state = measured(codec_name), states(model_name)
    payload = payloads.pop((model_name, codec_name), None) or codec.encode(state.weights)
    rounds = rounds_for(codec, state.weights, "decode", quick)
    benchmark.group = f"{model_name} decode"
    decoded: TensorDict = benchmark.pedantic(
        codec.decode, args=(payload,), rounds=rounds, iterations=1
    )
    assert list(decoded) == list(state.weights)
    for name, original in state.weights.items():
        assert decoded[name].shape == original.shape and decoded[name].dtype == original.dtype
        assert codec.lossy or torch.equal(decoded[name], original), name
    benchmark.extra_info.update(row_info(model_name, codec, state, payload), timing="decode")
