"""Every registered codec round-trips state dicts: exactly when lossless, within bounds when not."""

from __future__ import annotations

import pytest
import torch

from fedgate.codecs import CODECS, BoundedCodec, Codec, get_codec
from fedgate.core.models import build_model
from fedgate.errors import UnknownCodec

ALL = sorted(CODECS)
LOSSLESS = sorted(n for n, c in CODECS.items() if not c.lossy)
LOSSY = sorted(n for n, c in CODECS.items() if c.lossy)


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


def quantizable_state() -> dict[str, torch.Tensor]:
    """Tensors big enough to be quantized, with the rows quantizers get wrong first."""
    g = torch.Generator().manual_seed(2)
    conv = torch.randn(16, 8, 3, 3, generator=g)
    conv[3] = 0.0  # an all-zero row: its scale is 0, nothing may divide by it
    conv[5] *= 1e-30  # a row of tiny values: its own scale, not the tensor's
    conv[7, 0, 0, 0] = 1e4  # one outlier stretches only its row's scale
    return {
        "conv.weight": conv,
        "fc.weight": torch.randn(10, 64, generator=g) * 1e-3,  # delta-sized values
        "fc.bias": torch.randn(10, generator=g),
        "norm.running_var": torch.rand(300, generator=g),  # 1-D: travels exactly
        "tokens": torch.randint(-5, 5, (40, 10), generator=g),
        "denormals": torch.full((16, 16), 1e-41),  # scale would be subnormal: exact
    }


def assert_within_bound(codec: Codec, state: dict[str, torch.Tensor]) -> None:
    """Every float element within the codec's own stated bound; everything else exact."""
    assert isinstance(codec, BoundedCodec), f"{codec.name} is lossy but states no error bound"
    decoded = codec.decode(codec.encode(state))
    for key, tensor in state.items():
        if tensor.is_floating_point():
            bound = codec.error_bound(tensor)
            assert bound.shape == tensor.shape and bound.dtype == torch.float64, key
            error = (decoded[key].double() - tensor.double()).abs()
            assert bool((error <= bound).all()), f"{key}: {float((error - bound).max())} over"
        else:
            assert torch.equal(decoded[key], tensor), f"{key}: integer buffers stay exact"


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
def test_lossy_codecs_stay_within_their_stated_bound(name: str) -> None:
    assert_within_bound(get_codec(name), mixed_state())
    assert_within_bound(get_codec(name), quantizable_state())


@pytest.mark.parametrize("name", LOSSY)
def test_stated_bounds_are_not_vacuous(name: str) -> None:
    """A bound is a claim: finite, and never beyond the tensor's own largest magnitude."""
    codec = get_codec(name)
    assert isinstance(codec, BoundedCodec)
    for key, tensor in {**mixed_state(), **quantizable_state()}.items():
        if tensor.is_floating_point() and tensor.numel():
            bound = codec.error_bound(tensor)
            assert bool(bound.isfinite().all()), key
            assert bool((bound <= tensor.double().abs().max() + 2.0**-24).all()), key


@pytest.mark.parametrize("name", ALL)
def test_a_resnet18_state_dict_round_trips(name: str) -> None:
    if name == "json":
        pytest.skip("JSON of ResNet-18 takes ~40s; the bench suite measures it")
    state = build_model("resnet18", seed=0).state_dict()
    codec = get_codec(name)
    if codec.lossy:
        assert_within_bound(codec, state)
        return
    decoded = codec.decode(codec.encode(state))
    assert list(decoded) == list(state)
    for key, tensor in state.items():
        assert torch.equal(decoded[key], tensor), key


def test_unknown_codec_lists_the_available_ones() -> None:
    with pytest.raises(UnknownCodec) as caught:
        get_codec("gzip-fp8")
    for name in ALL:
        assert name in str(caught.value)
