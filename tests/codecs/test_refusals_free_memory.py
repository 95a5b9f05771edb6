"""Refusing a payload costs little, and what it cost is freed at once, not by the collector.

Every case runs with the garbage collector off: memory a refusal leaves in a reference
cycle (a worker's future holding the exception, a traceback holding the frames with
their buffers) would then stay, and traced memory would grow with each repeat. Bombs
and headers the model's layout does not admit are refused before anything big is
allocated: their peak is measured too.
"""

from __future__ import annotations

import gc
import json
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
import zstandard

from fedgate.codecs import (
    DecodeLimits,
    TensorDict,
    canonical_names,
    frame_codecs,
    frames,
    get_codec,
)
from fedgate.core.data import digits
from fedgate.core.models import build_model
from fedgate.errors import CodecError, DecodedSizeExceeded, InvalidUpdate, UpdateLayoutMismatch

MB = 1024**2
BOMB_BYTES = 1024**3  # what the bomb expands to: 1 GiB of zeros from ~32 KB
REPEATS = 20
MOST_GROWTH = 64 * 1024  # over all repeats; a leak is the payload's size on each
MOST_PEAK = 2 * MB  # a refusal before expanding anything: small buffers and parsing
LENGTH = struct.Struct("<I")


def cnn() -> TensorDict:
    model = build_model("cnn", digits(0).model_spec, seed=0)
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


MODEL = cnn()
LIMITS = DecodeLimits.for_model(MODEL)
FRAME_CODECS = frame_codecs(variants=True)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """One zstd frame that declares (and would really expand to) 1 GiB."""
    stream = zstandard.ZstdCompressor(level=1).compressobj(size=BOMB_BYTES)
    zeros = bytes(MB)
    frame = b"".join(stream.compress(zeros) for _ in range(BOMB_BYTES // MB)) + stream.flush()
    assert len(frame) < 40 * 1024 and zstandard.frame_content_size(frame) == BOMB_BYTES
    return frame


@contextmanager
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def refuse(decode: Callable[[], object]) -> None:
    # No `as` and no pytest.raises: the test itself must keep nothing of the refusal.
    try:
        decode()
    except (CodecError, InvalidUpdate):
        return
    raise AssertionError("the payload was accepted")


def refusal_cost(decode: Callable[[], object], repeats: int = REPEATS) -> tuple[int, int]:
    """Traced bytes (left after all repeats, peak of any one) beyond a warmed-up baseline."""
    with collector_off():
        tracemalloc.start()
        try:
            refuse(decode)  # warm up: lazy imports, the codec thread pool, caches
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            for _ in range(repeats):
                refuse(decode)
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return current - baseline, peak - baseline


def assert_cheap(decode: Callable[[], object]) -> None:
    growth, peak = refusal_cost(decode)
    assert growth < MOST_GROWTH, f"{growth} bytes left behind"
    assert peak < MOST_PEAK, f"peak {peak} bytes"


def raises(kind: type[Exception], decode: Callable[[], object]) -> None:
    with pytest.raises(kind):
        decode()


# --- bombs and lying headers: refused before anything big is allocated ---------------


def test_a_bf16_zstd_bomb_is_refused_from_its_declared_size(bomb: bytes) -> None:
    codec = get_codec("bf16-zstd")
    raises(DecodedSizeExceeded, lambda: codec.decode(bomb, LIMITS))
    assert_cheap(lambda: codec.decode(bomb, LIMITS))


def split_envelope(payload: bytes) -> tuple[dict[str, object], list[bytes]]:
    """A frame envelope's header document and its body frames, as they are."""
    (length,) = LENGTH.unpack_from(payload, 4)
    header = json.loads(zstandard.ZstdDecompressor().decompress(payload[8 : 8 + length]))
    bodies, offset = [], 8 + length
    for size, _ in header["frames"]:
        bodies.append(payload[offset : offset + size])
        offset += size
    return header, bodies


def envelope(header: object, bodies: list[bytes], head: bytes | None = None) -> bytes:
    head = head or zstandard.ZstdCompressor().compress(json.dumps(header).encode())
    return frames.MAGIC + LENGTH.pack(len(head)) + head + b"".join(bodies)


@pytest.mark.parametrize("name", FRAME_CODECS)
def test_a_frame_codec_bomb_is_refused_from_its_declared_size(name: str, bomb: bytes) -> None:
    """As the header frame, or as a body frame behind the model's honest header."""
    codec = get_codec(name)
    header, bodies = split_envelope(codec.encode(MODEL))
    in_header = envelope(None, bodies, head=bomb)
    raises(DecodedSizeExceeded, lambda: codec.decode(in_header, LIMITS))
    assert_cheap(lambda: codec.decode(in_header, LIMITS))
    table = header["frames"]
    assert isinstance(table, list)
    table[0][0] = len(bomb)
    in_body = envelope(header, [bomb, *bodies[1:]])
    raises(CodecError, lambda: codec.decode(in_body, LIMITS))
    assert_cheap(lambda: codec.decode(in_body, LIMITS))


def container_declaring(shape: list[int]) -> bytes:
    header = json.dumps({"tensors": [{"name": "w", "dtype": "float32", "shape": shape}]})
    text = header.encode() + b" " * (-(8 + len(header)) % 8)
    return b"FGT1" + LENGTH.pack(len(text)) + text + bytes(4 * MB)  # a body, not 2 GiB


def test_a_container_declaring_a_huge_tensor_is_refused_from_its_header() -> None:
    payload = container_declaring([1 << 29])
    raises(UpdateLayoutMismatch, lambda: get_codec("raw").decode(payload, LIMITS))
    assert_cheap(lambda: get_codec("raw").decode(payload, LIMITS))  # not even a copy


@pytest.mark.parametrize("name", canonical_names())
def test_a_payload_of_another_layout_is_refused_cheaply(name: str) -> None:
    codec = get_codec(name)
    wrong = dict(MODEL)
    wrong["classifier.1.weight"] = wrong["classifier.1.weight"].t().contiguous()
    payload = codec.encode(wrong)
    raises(UpdateLayoutMismatch, lambda: codec.decode(payload, LIMITS))
    growth, _ = refusal_cost(lambda: codec.decode(payload, LIMITS))
    assert growth < MOST_GROWTH


# --- refusals after real work: what was built is freed at once -----------------------


def big_model() -> TensorDict:
    """Three 4 MiB tensors: three body frames, decoded on the codec's worker threads."""
    g = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.randn(1024, 1024, generator=g) for i in range(3)}


BIG = big_model()


def last_frame_hides_its_size(payload: bytes) -> bytes:
    """The payload with its last body frame re-made without a declared content size:
    refused only once the frames before it are decompressed and built."""
    header, bodies = split_envelope(payload)
    content = zstandard.ZstdDecompressor().decompress(bodies[-1])
    stream = zstandard.ZstdCompressor().compressobj()
    last = stream.compress(content) + stream.flush()
    table = header["frames"]
    assert isinstance(table, list) and len(table) == 3
    table[-1][0] = len(last)
    return envelope(header, [*bodies[:-1], last])


@pytest.mark.parametrize("name", frame_codecs())
@pytest.mark.parametrize("layout", [False, True], ids=["no-layout", "layout"])
def test_a_refusal_after_decoding_frames_leaves_nothing_behind(name: str, layout: bool) -> None:
    codec = get_codec(name)
    payload = last_frame_hides_its_size(codec.encode(BIG))
    limits = DecodeLimits.for_model(BIG) if layout else DecodeLimits()
    raises(CodecError, lambda: codec.decode(payload, limits))
    growth, peak = refusal_cost(lambda: codec.decode(payload, limits), repeats=4)
    assert peak > 2 * MB, "the control: the refusal came after real work"
    assert growth < MOST_GROWTH, f"{growth / MB:.1f} MB left behind"


@pytest.mark.parametrize("layout", [False, True], ids=["no-layout", "layout"])
def test_a_refusal_after_decompressing_a_container_leaves_nothing_behind(layout: bool) -> None:
    """bf16-zstd: a container whose header is fine but whose body is cut short."""
    packed = zstandard.ZstdDecompressor().decompress(get_codec("bf16-zstd").encode(BIG))
    cut = zstandard.ZstdCompressor().compress(packed[:-8])
    limits = DecodeLimits.for_model(BIG) if layout else DecodeLimits()
    raises(CodecError, lambda: get_codec("bf16-zstd").decode(cut, limits))
    growth, peak = refusal_cost(lambda: get_codec("bf16-zstd").decode(cut, limits), repeats=6)
    assert peak > 2 * MB, "the control: the container was decompressed"
    assert growth < MOST_GROWTH, f"{growth / MB:.1f} MB left behind"
