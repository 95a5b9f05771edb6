"""What the frame-envelope codecs promise beyond a round trip: sizes, special values, top-k."""

from __future__ import annotations

import hashlib
import itertools
import math
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from fedgate.codecs import CODECS, canonical_names, get_codec, planes, quantize
from fedgate.codecs.shuffle_zstd import Fp16ZstdCodec
from fedgate.codecs.topk_int8 import TopkInt8Codec
from fedgate.core.models import ModelSpec, build_model
from tests.codecs.envelopes import open_envelope

TensorDict = dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def resnet18() -> TensorDict:
    model = build_model("resnet18", ModelSpec(in_channels=3, image_size=32), seed=0)
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="module")
def resnet18_delta() -> TensorDict:
    """What a client sends: the weights after one SGD step on random data, minus before."""
    torch.manual_seed(0)
    model = build_model("resnet18", ModelSpec(in_channels=3, image_size=32), seed=0)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = torch.nn.functional.cross_entropy(
        model(torch.randn(16, 3, 32, 32)), torch.randint(0, 10, (16,))
    )
    torch.autograd.backward(loss)
    optimizer.step()
    return {name: tensor - before[name] for name, tensor in model.state_dict().items()}


def raw_bytes(state: TensorDict) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in state.values())


def round_trip(name: str, state: TensorDict) -> TensorDict:
    return get_codec(name).decode(get_codec(name).encode(state))


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_byte_planes_invert(width: int) -> None:
    data = np.random.default_rng(width).integers(0, 256, 64 * width, dtype=np.uint8)
    split = planes.shuffle(data, width)
    assert split.reshape(width, -1)[0].tolist() == data[::width].tolist()
    out = np.empty_like(data)
    planes.unshuffle_into(split, width, out)
    assert np.array_equal(out, data)


def test_bf16_planes_beat_bf16_zstd_on_resnet18_with_the_same_values(resnet18: TensorDict) -> None:
    shuffled = get_codec("bf16-shuffle-zstd").encode(resnet18)
    plain = get_codec("bf16-zstd").encode(resnet18)
    assert len(shuffled) < 0.95 * len(plain)
    decoded, reference = (
        round_trip("bf16-shuffle-zstd", resnet18),
        round_trip("bf16-zstd", resnet18),
    )
    for name, tensor in reference.items():
        assert torch.equal(decoded[name], tensor), name


def test_fp16_planes_are_smaller_than_plain_fp16(resnet18_delta: TensorDict) -> None:
    plain = Fp16ZstdCodec(shuffled=False)
    assert len(get_codec("fp16-zstd").encode(resnet18_delta)) < len(plain.encode(resnet18_delta))
    decoded = plain.decode(plain.encode(resnet18_delta))
    assert torch.equal(decoded["fc.weight"], round_trip("fp16-zstd", resnet18_delta)["fc.weight"])


def test_fp16_clamps_finite_values_and_keeps_non_finite_ones() -> None:
    values = [1e5, -1e6, 65504.0, 65519.0, float("inf"), -float("inf"), float("nan"), 1e-8]
    decoded = round_trip("fp16-zstd", {"w": torch.tensor(values)})["w"]
    assert decoded.dtype == torch.float32
    assert decoded[:4].tolist() == [65504.0, -65504.0, 65504.0, 65504.0]
    assert decoded[4] == float("inf") and decoded[5] == -float("inf") and decoded[6].isnan()
    assert abs(decoded[7].item() - 1e-8) <= 2.0**-25


@pytest.mark.parametrize("name", sorted(CODECS))
def test_nan_and_inf_stay_non_finite(name: str) -> None:
    """The server refuses non-finite updates: no codec may turn one into a number."""
    weight = torch.randn(16, 32)
    weight[2, 3], weight[9, 0], weight[11, 30] = float("nan"), -float("inf"), float("inf")
    decoded = round_trip(name, {"w": weight})["w"]
    assert decoded[2, 3].isnan() and decoded[9, 0] == -float("inf")
    assert decoded[11, 30] == float("inf")
    if name in ("int8-zstd", "topk-int8"):
        finite = weight.isfinite()
        assert torch.equal(decoded[finite], weight[finite]), "such a tensor travels exactly"


@pytest.mark.parametrize("name", ["int8-zstd", "topk-int8"])
def test_quantizers_handle_all_zero_tensors_and_rows_without_warnings(name: str) -> None:
    rows = torch.randn(16, 32)
    rows[4] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded = round_trip(name, {"zeros": torch.zeros(16, 32), "rows": rows})
    assert torch.equal(decoded["zeros"], torch.zeros(16, 32))
    assert torch.equal(decoded["rows"][4], torch.zeros(32))


def test_int8_quantizes_per_row_and_keeps_small_tensors_exact() -> None:
    weight = torch.randn(8, 64)
    weight[1] *= 1000  # a loud row must not coarsen the others
    state = {"w": weight, "b": torch.randn(8), "small": torch.randn(3, 5)}
    decoded = round_trip("int8-zstd", state)
    error = (decoded["w"] - weight).abs()
    scales = weight.abs().amax(dim=1, keepdim=True) / 127
    assert bool((error <= scales * (0.5 + 2**-16)).all())
    assert float(error[0].max()) < 0.05
    assert torch.equal(decoded["b"], state["b"]) and torch.equal(decoded["small"], state["small"])
    header = open_envelope(get_codec("int8-zstd").encode(state)).header
    assert [entry["kind"] for entry in header["tensors"]] == ["int8", "shuffle", "shuffle"]


def test_topk_keeps_exactly_the_k_largest_magnitudes() -> None:
    magnitudes = torch.randperm(64 * 64).float().add(1).reshape(64, 64) / 100
    weight = magnitudes * torch.where(torch.rand(64, 64) < 0.5, -1.0, 1.0)
    k = math.ceil(0.05 * weight.numel())
    decoded = round_trip("topk-int8:0.05", {"w": weight})["w"]
    kept = torch.zeros(weight.numel(), dtype=torch.bool)
    kept[weight.abs().flatten().topk(k).indices] = True
    kept = kept.reshape(weight.shape)
    assert torch.equal(decoded != 0, kept), "non-zero exactly where the k largest are"
    scale = float(weight.abs().max()) / 127
    assert float((decoded[kept] - weight[kept]).abs().max()) <= scale * (0.5 + 2**-16)
    assert torch.equal(torch.sign(decoded[kept]), torch.sign(weight[kept]))


@pytest.mark.parametrize("kind", ["normal", "cauchy", "ramp", "constant", "sparse"])
def test_top_k_selection_matches_a_full_partition(kind: str) -> None:
    """`largest` partitions only the elements over a sampled threshold, or falls back."""
    rng = np.random.default_rng(7)
    n = 400_000
    magnitude = {
        "normal": np.abs(rng.standard_normal(n)),
        "cauchy": np.abs(rng.standard_cauchy(n)),
        "ramp": np.arange(n, dtype=np.float64)[::-1],
        "constant": np.ones(n),
        "sparse": np.where(rng.random(n) < 0.001, 1.0, 0.0),
    }[kind].astype(np.float32)
    for fraction in (0.0005, 0.01, 0.05, 0.2):
        k = quantize.kept_count(n, fraction)
        kept = quantize.largest(magnitude, k)
        assert kept.size == k and bool((np.diff(kept) > 0).all())
        assert np.array_equal(np.sort(magnitude[kept]), np.sort(magnitude)[n - k :])


def test_topk_fraction_is_a_parameter() -> None:
    weight = torch.randn(100, 100)
    for fraction in (0.01, 0.2, 1.0):
        codec = get_codec(f"topk-int8:{fraction}")
        assert isinstance(codec, TopkInt8Codec) and codec.fraction == fraction
        assert codec.name == f"topk-int8:{fraction}"
        decoded = codec.decode(codec.encode({"w": weight}))["w"]
        assert torch.count_nonzero(decoded).item() <= math.ceil(fraction * weight.numel())
        assert torch.count_nonzero(decoded).item() >= 0.9 * fraction * weight.numel()
    light, heavy = get_codec("topk-int8:0.01"), get_codec("topk-int8:0.2")
    assert len(light.encode({"w": weight})) < len(heavy.encode({"w": weight})) / 5
    assert light.media_type == CODECS["topk-int8"].media_type  # k travels in the payload


def test_topk_switches_to_wide_gaps_when_kept_positions_are_far_apart() -> None:
    weight = torch.zeros(300, 1000)
    weight.view(-1)[[0, 150_000, 299_999]] = torch.tensor([3.0, -2.0, 1.0])
    codec = TopkInt8Codec(fraction=1e-5)  # k = 3
    payload = codec.encode({"w": weight})
    assert open_envelope(payload).header["tensors"][0]["index"] == "u32"
    decoded = codec.decode(payload)["w"]
    assert torch.allclose(decoded, weight, atol=3.0 / 254)
    assert torch.count_nonzero(decoded).item() == 3


def test_delta_sizes_stay_within_budget(resnet18_delta: TensorDict) -> None:
    raw = raw_bytes(resnet18_delta)
    assert len(get_codec("int8-zstd").encode(resnet18_delta)) <= 0.25 * raw
    assert len(get_codec("topk-int8").encode(resnet18_delta)) <= 0.10 * raw
    lossless = len(get_codec("shuffle-zstd").encode(resnet18_delta))
    assert lossless < 0.8 * raw


def test_big_payloads_split_into_frames_and_encode_deterministically() -> None:
    g = torch.Generator().manual_seed(4)
    state = {f"layer{i}.weight": torch.randn(512, 2304, generator=g) for i in range(3)}
    for name in ("shuffle-zstd", "int8-zstd"):
        payload = get_codec(name).encode(state)
        assert len(open_envelope(payload).header["frames"]) == 3, "one frame per big tensor"
        assert payload == get_codec(name).encode(state)


def test_codecs_can_be_used_from_many_threads_at_once() -> None:
    g = torch.Generator().manual_seed(5)
    state = {f"t{i}": torch.randn(256, 4096, generator=g) for i in range(4)}
    codec = get_codec("int8-zstd")
    expected = codec.decode(codec.encode(state))

    def work(_: int) -> bool:
        decoded = codec.decode(codec.encode(state))
        return all(torch.equal(decoded[name], expected[name]) for name in state)

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(8)))


def memory_span(tensor: torch.Tensor) -> tuple[int, int]:
    """The addresses of the whole storage behind ``tensor`` (a view's included)."""
    storage = tensor.untyped_storage()
    return storage.data_ptr(), storage.data_ptr() + storage.nbytes()


def overlapping(spans: list[tuple[int, int]]) -> bool:
    ordered = sorted(span for span in spans if span[1] > span[0])
    return any(after[0] < before[1] for before, after in itertools.pairwise(ordered))


@pytest.mark.parametrize("name", canonical_names())  # the server adds into any codec's update
def test_decoded_tensors_are_writable_and_independent(name: str) -> None:
    """Every decoded tensor owns memory that no other tensor, no other decode and not the
    payload (immutable bytes) shares, and writing into it leaves all of those unchanged."""
    g = torch.Generator().manual_seed(6)
    state = {
        "w": torch.randn(32, 32, generator=g),  # quantized by int8/top-k
        "b": torch.randn(32, generator=g),
        "h": torch.randn(8, 8, generator=g).half(),
        "bf": torch.randn(8, 8, generator=g).bfloat16(),
        "n": torch.tensor(7),
        "m": torch.tensor([True, False]),
    }
    codec = get_codec(name)
    payload = codec.encode(state)
    before = hashlib.sha256(payload).digest()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not writ")  # torch: read-only memory
        decoded, again = codec.decode(payload), codec.decode(payload)
    at = np.frombuffer(payload, np.uint8).ctypes.data
    spans = [(at, at + len(payload))]
    spans += [memory_span(tensor) for tensor in [*decoded.values(), *again.values()]]
    assert not overlapping(spans), "decoded tensors share memory"
    for tensor in decoded.values():
        tensor.fill_(1)  # the server adds into decoded updates; this must not fail
    assert hashlib.sha256(payload).digest() == before, "writing changed the payload"
    fresh = codec.decode(payload)
    for key, tensor in again.items():
        assert torch.equal(tensor, fresh[key]), key
        assert not bool(decoded[key].ne(1).any()), key
