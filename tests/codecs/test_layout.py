"""Decoding bounded by the model: every codec refuses what the model's layout does not admit.

`DecodeLimits.for_model` hands a decoder the exact tensors (names, dtypes, shapes) it may
produce; the payload's header is checked against them before a body frame is
decompressed or a tensor allocated, and a mismatch is an `UpdateLayoutMismatch`.
"""

from __future__ import annotations

import json
import re
import struct

import msgpack
import pytest
import torch
import zstandard

from fedgate.codecs import (
    CODECS,
    DecodeLimits,
    TensorDict,
    TensorLayout,
    canonical_names,
    frame_codecs,
    get_codec,
    json_lists,
)
from fedgate.codecs.base import DTYPES, header_budget
from fedgate.codecs.container import MAGIC
from fedgate.core import delta
from fedgate.core.data import digits
from fedgate.core.models import ModelSpec, build_model
from fedgate.errors import CodecError, DecodedSizeExceeded, InvalidUpdate, UpdateLayoutMismatch
from tests.codecs.documents import open_payload, seal

ALL = canonical_names()
CODEC_NAMES = list(CODECS)


def cnn() -> TensorDict:
    model = build_model("cnn", digits(0).model_spec, seed=0)
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def trained(weights: TensorDict, seed: int = 1) -> TensorDict:
    """Weights after a small random step: what a client's update looks like."""
    g = torch.Generator().manual_seed(seed)
    return {
        name: t + 1e-2 * torch.randn(t.shape, generator=g) if t.is_floating_point() else t
        for name, t in weights.items()
    }


def with_buffers(weights: TensorDict) -> TensorDict:
    """The CNN plus the buffers a ResNet has: an int64 counter and a bool mask."""
    return {
        **weights,
        "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
    }


MODEL = with_buffers(cnn())
LIMITS = DecodeLimits.for_model(MODEL)


def assert_exactly(decoded: TensorDict, layout: tuple[TensorLayout, ...] | None) -> None:
    assert layout is not None
    assert list(decoded) == [entry.name for entry in layout]
    for entry in layout:
        assert decoded[entry.name].dtype == DTYPES[entry.dtype], entry.name
        assert tuple(decoded[entry.name].shape) == entry.shape, entry.name


def test_limits_for_a_model_are_the_models_own() -> None:
    assert LIMITS.layout is not None and LIMITS.layout_by_name is not None
    assert LIMITS.max_decoded_bytes == sum(t.numel() * t.element_size() for t in MODEL.values())
    assert LIMITS.max_tensors == len(MODEL)
    assert LIMITS.max_header_bytes == header_budget(LIMITS.layout) < 16 * 1024
    assert LIMITS.layout[0] == TensorLayout("features.0.weight", "float32", (16, 1, 3, 3))
    assert [entry.name for entry in LIMITS.layout] == list(MODEL)
    assert DecodeLimits.for_model(MODEL) == LIMITS, "equal limits for equal models"
    assert DecodeLimits().layout is None


@pytest.mark.parametrize("name", ALL)
def test_the_models_limits_admit_every_codecs_encoding_of_it(name: str) -> None:
    codec = get_codec(name)
    assert_exactly(codec.decode(codec.encode(MODEL), LIMITS), LIMITS.layout)
    change = delta.difference(trained(MODEL), MODEL)  # what delta codecs send
    assert_exactly(codec.decode(codec.encode(change), LIMITS), LIMITS.layout)


@pytest.mark.parametrize("name", [n for n in CODEC_NAMES if n != "json"])
def test_a_resnets_limits_admit_its_encodings(name: str) -> None:
    """JSON of a ResNet takes ~40 s; the header budget is the same code for every codec."""
    model = build_model("resnet18", ModelSpec(in_channels=3, image_size=32), seed=0)
    weights = {key: tensor.detach() for key, tensor in model.state_dict().items()}
    limits = DecodeLimits.for_model(weights)
    codec = get_codec(name)
    assert_exactly(codec.decode(codec.encode(weights), limits), limits.layout)
    if codec.lossy:
        change = delta.difference(trained(weights), weights)
        assert_exactly(codec.decode(codec.encode(change), limits), limits.layout)


def variant(change: str) -> TensorDict:
    """The model with one lie in it: what a hostile or mistaken client sends."""
    weights = dict(MODEL)
    if change == "transposed":  # same size, wrong shape: no size cap can catch it
        weights["classifier.1.weight"] = weights["classifier.1.weight"].t().contiguous()
    elif change == "wider":
        weights["classifier.3.weight"] = torch.zeros(12, 64)
    elif change == "dtype":
        weights["classifier.3.bias"] = weights["classifier.3.bias"].double()
    elif change == "int dtype":
        weights["bn.num_batches_tracked"] = torch.tensor(7, dtype=torch.int32)
    elif change == "extra":
        weights["smuggled"] = torch.zeros(3)
    elif change == "missing":
        del weights["features.2.bias"]
    elif change == "renamed":
        weights["features.2.bias.x"] = weights.pop("features.2.bias")
    return weights


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    ("change", "match"),
    [
        ("transposed", r"'classifier.1.weight' has shape \(512, 64\), model has \(64, 512\)"),
        ("dtype", "'classifier.3.bias' has dtype float64, model has float32"),
        ("int dtype", "'bn.num_batches_tracked' has dtype int32, model has int64"),
        ("extra", "missing none, unexpected 'smuggled'"),
        ("missing", "missing 'features.2.bias', unexpected none"),
        ("renamed", "missing 'features.2.bias', unexpected 'features.2.bias.x'"),
    ],
)
def test_a_layout_mismatch_is_named(name: str, change: str, match: str) -> None:
    codec = get_codec(name)
    payload = codec.encode(variant(change))
    with pytest.raises(UpdateLayoutMismatch, match=match) as caught:
        codec.decode(payload, LIMITS)
    assert isinstance(caught.value, InvalidUpdate) and caught.value.code == "update_layout_mismatch"
    assert codec.decode(payload), "without a layout, clients decode as before"


@pytest.mark.parametrize("name", ALL)
def test_a_bigger_tensor_is_refused_as_a_mismatch_or_as_too_big(name: str) -> None:
    """A header names the wrong shape (422); where the bigger data itself is over what the
    model allows before any header can be read (one zstd frame; one msgpack object), the
    size is refused first (413), before a byte is decompressed or copied."""
    with pytest.raises((UpdateLayoutMismatch, DecodedSizeExceeded)) as caught:
        get_codec(name).decode(get_codec(name).encode(variant("wider")), LIMITS)
    if name not in ("bf16-zstd", "msgpack"):
        assert isinstance(caught.value, UpdateLayoutMismatch)
        assert "(12, 64), model has (10, 64)" in str(caught.value)


FRAME_CODECS = frame_codecs(variants=True)


@pytest.mark.parametrize("name", FRAME_CODECS)
def test_frame_headers_are_checked_before_any_body_frame(name: str) -> None:
    """The body frames are not even zstd: the header's lie is what gets reported."""
    doc = open_payload(get_codec(name).encode(MODEL))
    doc.entries[0]["shape"] = [1 << 29]
    sealed = seal(doc)
    first_body = len(sealed) - sum(size for size, _ in open_payload(sealed).extra["frames"])
    garbage = sealed[:first_body] + bytes(len(sealed) - first_body)
    with pytest.raises(UpdateLayoutMismatch, match=r"has shape \(536870912,\)"):
        get_codec(name).decode(garbage, LIMITS)
    with pytest.raises(CodecError):  # without a layout the size cap still holds
        get_codec(name).decode(garbage)


def model_entries(shape: list[int]) -> list[dict[str, object]]:
    """The model's header entries, the first tensor's shape replaced by ``shape``."""
    assert LIMITS.layout is not None
    entries: list[dict[str, object]] = [
        {"name": entry.name, "dtype": entry.dtype, "shape": list(entry.shape)}
        for entry in LIMITS.layout
    ]
    entries[0]["shape"] = shape
    return entries


def container_declaring(shape: list[int]) -> bytes:
    """A container of the model's tensors, the first declaring ``shape``; small buffers."""
    header = json.dumps({"tensors": model_entries(shape)}).encode()
    header += b" " * (-(8 + len(header)) % 8)
    return MAGIC + struct.pack("<I", len(header)) + header + bytes(64)


@pytest.mark.parametrize("shape", [[1 << 29], [0, 1 << 63], [1 << 63, 1 << 63], [16, 1, 3, 3, 0]])
def test_declared_shapes_beyond_the_model_are_refused_from_the_header(shape: list[int]) -> None:
    expected = rf"'features.0.weight' has shape {re.escape(str(tuple(shape)))}, model has"
    body = container_declaring(shape)
    with pytest.raises(UpdateLayoutMismatch, match=expected):
        get_codec("raw").decode(body, LIMITS)
    with pytest.raises(UpdateLayoutMismatch, match=expected):
        get_codec("bf16-zstd").decode(zstandard.ZstdCompressor().compress(body), LIMITS)
    tensors = {e.pop("name"): {**e, "data": b""} for e in model_entries(shape)}
    document = {"format": "fedgate-msgpack/1", "tensors": tensors}
    with pytest.raises(UpdateLayoutMismatch, match=expected):
        get_codec("msgpack").decode(msgpack.packb(document), LIMITS)
    entries = [{**e, "data": []} for e in model_entries(shape)]
    text = json.dumps({"format": json_lists.FORMAT, "tensors": entries}).encode()
    with pytest.raises(UpdateLayoutMismatch, match=expected):
        get_codec("json").decode(text, LIMITS)


def test_a_wire_dtype_the_encoder_never_writes_is_refused() -> None:
    """raw sends tensors as they are, bf16-zstd floats as bfloat16: a header saying
    otherwise would have the decoder build a tensor of another dtype than it names."""
    entry = {"name": "w", "dtype": "float32", "wire": "float16", "shape": [4]}
    text = json.dumps({"tensors": [entry]}).encode()
    text += b" " * (-(8 + len(text)) % 8)
    body = MAGIC + struct.pack("<I", len(text)) + text + bytes(8)
    with pytest.raises(CodecError, match="cannot travel as float16"):
        get_codec("raw").decode(body)
    with pytest.raises(CodecError, match="cannot travel as float16"):
        get_codec("bf16-zstd").decode(zstandard.ZstdCompressor().compress(body))
    document = {"format": "fedgate-msgpack/1", "tensors": {"w": {**entry, "data": bytes(8)}}}
    with pytest.raises(CodecError, match="cannot travel as float16"):
        get_codec("msgpack").decode(msgpack.packb(document))


def test_json_is_checked_against_the_layout_before_torch_builds_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torch.tensor of a nested list builds whatever it is given: it must not see one."""
    calls: list[object] = []
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: calls.append(a))
    flat = {"name": "classifier.1.weight", "dtype": "float32", "shape": [512, 64]}
    for entry in (
        {**flat, "data": [0.0] * (512 * 64)},  # right size, not nested as the shape
        {**flat, "shape": [1 << 29], "data": [0.0] * 10},  # an inflated shape
        {**flat, "data": [[0.0] * 64] * 511 + [[0.0] * 65]},  # one row too long
        {**flat, "data": [[0.0] * 64] * 511 + [["x"] * 64]},  # not numbers
    ):
        body = json.dumps({"format": json_lists.FORMAT, "tensors": [entry]}).encode()
        with pytest.raises((CodecError, InvalidUpdate)):
            get_codec("json").decode(body)
        with pytest.raises((CodecError, InvalidUpdate)):
            get_codec("json").decode(body, LIMITS)
    assert calls == []


@pytest.mark.parametrize(
    ("shape", "data"), [([0], []), ([0, 4], []), ([4, 0], [[], [], [], []]), ([], 3.5)]
)
def test_json_keeps_empty_and_scalar_tensors(shape: list[int], data: object) -> None:
    entry = {"name": "t", "dtype": "float32", "shape": shape, "data": data}
    body = json.dumps({"format": json_lists.FORMAT, "tensors": [entry]}).encode()
    decoded = get_codec("json").decode(body)["t"]
    assert tuple(decoded.shape) == tuple(shape) and decoded.dtype == torch.float32


def test_msgpack_limits_follow_the_layout() -> None:
    """No object in the document may be bigger than the model's largest tensor."""
    largest = max(t.numel() * t.element_size() for t in MODEL.values())
    document = {
        "format": "fedgate-msgpack/1",
        "tensors": {
            "classifier.1.weight": {"dtype": "uint8", "shape": [], "data": bytes(largest + 1)}
        },
    }
    with pytest.raises(DecodedSizeExceeded, match="max_bin_len"):
        get_codec("msgpack").decode(msgpack.packb(document), LIMITS)
    many_dims = {"format": "fedgate-msgpack/1", "tensors": {"w": {"shape": [1] * 9}}}
    with pytest.raises(DecodedSizeExceeded, match="max_array_len"):
        get_codec("msgpack").decode(msgpack.packb(many_dims), LIMITS)
    many: dict[str, object] = {f"t{i}": {} for i in range(len(MODEL) + 40)}
    with pytest.raises(DecodedSizeExceeded, match="max_map_len"):
        get_codec("msgpack").decode(msgpack.packb({"tensors": many}), LIMITS)


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_tensors_beyond_the_layout_are_named_or_refused_by_count(name: str) -> None:
    """A few extras are named; many are refused by their count (or their header's size)
    before they are parsed."""
    few = {**MODEL, **{f"more{i}": torch.zeros(1) for i in range(3)}}
    with pytest.raises(UpdateLayoutMismatch, match="unexpected 'more0', 'more1', 'more2'"):
        get_codec(name).decode(get_codec(name).encode(few), LIMITS)
    many = {**MODEL, **{f"more{i}": torch.zeros(1) for i in range(40)}}
    with pytest.raises((UpdateLayoutMismatch, DecodedSizeExceeded)) as caught:
        get_codec(name).decode(get_codec(name).encode(many), LIMITS)
    if isinstance(caught.value, UpdateLayoutMismatch):
        assert f"has {len(many)} tensors, the model has {len(MODEL)}" in str(caught.value)
