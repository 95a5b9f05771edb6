"""Every registered codec round-trips state dicts: exactly when lossless, within bounds when not."""

from __future__ import annotations

import pytest
import torch

from fedgate.codecs import CODECS, Codec, get_codec
from fedgate.core.models import build_model
from fedgate.errors import UnknownCodec

ALL = sorted(CODECS)
LOSSLESS = sorted(n for n, c in CODECS.items() if not c.lossy)
LOSSY = sorted(n for n, c in CODECS.items() if c.lossy)
# bfloat16 keeps 8 significand bits: round-to-nearest is within 2**-9 of |x| (relative).
BF16_RELATIVE_BOUND = 2.0**-8


def mixed_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "odd.weight": torch.randn(3, generator=g),  # not a multiple of 8 bytes: alignment
        "bn.num_batches_tracked": torch.tensor(12345678901, dtype=torch.int64),
        "half": torch.randn(5, generator=g).half(),
        "brain": torch.randn(7, generator=g).bfloat16(),
        "double": torch.randn(2, 2, generator=g, dtype=torch.float64),
        "mask": torch.tensor([True, False, True]),
        "counts": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "bytes": torch.arange(5, dtype=torch.uint8),
        "scalar": torch.tensor(3.25),
        "empty": torch.empty(0, 4),
        "wide": torch.randn(1, 1, 1, 1, 1, 1, 1, 2, generator=g),
    }


@pytest.mark.parametrize("name", ALL)
def test_registry_entry_is_a_codec(name: str) -> None:
    codec = get_codec(name)
    assert isinstance(codec, Codec)
    assert codec.name == name
    assert codec.media_type.startswith("application/")


@pytest.mark.parametrize("name", ALL)
def test_names_shapes_dtypes_and_order_survive(name: str) -> None:
    state = mixed_state()
    decoded = get_codec(name).decode(get_codec(name).encode(state))
    assert list(decoded) == list(state)
    for key, tensor in state.items():
        assert decoded[key].dtype == tensor.dtype, key
        assert decoded[key].shape == tensor.shape, key


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_codecs_round_trip_exactly(name: str) -> None:
    state = mixed_state()
    decoded = get_codec(name).decode(get_codec(name).encode(state))
    for key, tensor in state.items():
        assert torch.equal(decoded[key], tensor), key


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_codecs_keep_special_values(name: str) -> None:
    state = {"w": torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-45])}
    decoded = get_codec(name).decode(get_codec(name).encode(state))["w"]
    assert torch.equal(decoded.isnan(), state["w"].isnan())
    finite = ~state["w"].isnan()
    assert torch.equal(decoded[finite], state["w"][finite])


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_codecs_stay_within_the_stated_bound(name: str) -> None:
    state = mixed_state()
    decoded = get_codec(name).decode(get_codec(name).encode(state))
    for key, tensor in state.items():
        if tensor.is_floating_point():
            error = (decoded[key].double() - tensor.double()).abs()
            assert bool((error <= BF16_RELATIVE_BOUND * tensor.double().abs()).all()), key
        else:
            assert torch.equal(decoded[key], tensor), f"{key}: integer buffers stay exact"


@pytest.mark.parametrize("name", ALL)
def test_a_resnet18_state_dict_round_trips(name: str) -> None:
    if name == "json":
        pytest.skip("JSON of ResNet-18 takes ~40s; the bench suite measures it")
    state = build_model("resnet18", seed=0).state_dict()
    codec = get_codec(name)
    decoded = codec.decode(codec.encode(state))
    assert list(decoded) == list(state)
    relative = max(
        float((decoded[k].double() - t.double()).norm() / (t.double().norm() + 1e-12))
        for k, t in state.items()
    )
    assert relative <= (BF16_RELATIVE_BOUND if codec.lossy else 0.0)


def test_unknown_codec_lists_the_available_ones() -> None:
    with pytest.raises(UnknownCodec) as caught:
        get_codec("gzip-fp8")
    for name in ALL:
        assert name in str(caught.value)
