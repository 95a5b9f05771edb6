"""Hostile payloads for the frame-envelope codecs: every lie in a header or frame is refused.

The registry-wide hostile tests (pickles, truncation, garbage, padding, too many tensors)
already run on these codecs; these build payloads an honest encoder never writes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
import torch
import zstandard

from fedgate.codecs import DecodeLimits, frame_codecs, get_codec
from fedgate.errors import CodecError, DecodedSizeExceeded
from tests.codecs.envelopes import Opened, envelope, open_envelope, seal

FRAME_CODECS = frame_codecs()  # every `FrameCodec` in the registry, a new one included


def weights() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {"w": torch.randn(32, 64, generator=g), "b": torch.randn(32, generator=g)}


def honest(name: str) -> Opened:
    return open_envelope(get_codec(name).encode(weights()))


def refuse(name: str, payload: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match) as caught:
        get_codec(name).decode(payload)
    assert get_codec(name).name in str(caught.value)


@pytest.mark.parametrize("name", FRAME_CODECS)
def test_a_frame_whose_size_disagrees_with_the_header_is_refused(name: str) -> None:
    opened = honest(name)
    opened.contents[0] += b"\x00" * 8  # a frame declaring more than its tensors need
    refuse(name, seal(opened), "header implies")


@pytest.mark.parametrize("name", FRAME_CODECS)
def test_a_frame_that_hides_its_size_is_refused(name: str) -> None:
    refuse(name, seal(honest(name), content_size=False), "declares -1 bytes")


@pytest.mark.parametrize("name", FRAME_CODECS)
def test_a_frame_table_that_misplaces_tensors_is_refused(name: str) -> None:
    for table, match in [
        ([[1, 1]], "account for every tensor"),  # 2 tensors, the table places 1
        ([[10, 1], [10, 2]], "account for every tensor"),
        ([[0, 2]], "size, count"),
        ([[True, 2]], "size, count"),
        ([[5.0, 2]], "size, count"),
        ("frames", "size, count"),
    ]:
        opened = honest(name)
        opened.header["frames"] = table
        refuse(name, seal(opened, keep_sizes=True), match)


@pytest.mark.parametrize("name", FRAME_CODECS)
def test_a_header_that_is_not_this_codecs_is_refused(name: str) -> None:
    other = next(other for other in FRAME_CODECS if other != name)
    refuse(name, get_codec(other).encode(weights()), "format")
    headers: list[object] = [[], "x", {"format": name}, {"format": name, "tensors": {}}]
    for header in headers:
        refuse(name, envelope(header), "format|tensors|frames")


def test_a_header_bomb_is_refused_before_it_expands() -> None:
    header = {"format": "int8-zstd", "tensors": [], "frames": [], "pad": " " * (4 * 1024**2)}
    with pytest.raises(DecodedSizeExceeded):
        get_codec("int8-zstd").decode(envelope(header), DecodeLimits(max_header_bytes=1024**2))


@pytest.mark.parametrize("name", FRAME_CODECS)
def test_a_header_declaring_a_huge_tensor_is_refused_without_allocating(name: str) -> None:
    entry = {"name": "w", "dtype": "float32", "shape": [1 << 20] * 3, "kind": "bytes"}
    header = {"format": name, "tensors": [entry], "frames": [[9, 1]]}
    with pytest.raises(DecodedSizeExceeded):
        get_codec(name).decode(envelope(header, [bytes(9)]))


@pytest.mark.parametrize(
    ("name", "fields", "match"),
    [
        ("shuffle-zstd", {"kind": "int8"}, "unknown kind"),
        ("int8-zstd", {"kind": "topk", "k": 1, "index": "u16"}, "unknown kind"),
        ("topk-int8", {"kind": "int8"}, "unknown kind"),
        ("shuffle-zstd", {"kind": "pickle"}, "unknown kind"),
        ("shuffle-zstd", {"kind": "shuffle", "wire": "bfloat16"}, "cannot travel"),
        ("bf16-shuffle-zstd", {"kind": "shuffle", "wire": "float16"}, "cannot travel"),
        ("fp16-zstd", {"kind": "shuffle", "wire": "bfloat16"}, "cannot travel"),
        ("int8-zstd", {"kind": "int8", "wire": "int8"}, "float32"),
    ],
)
def test_kinds_a_codec_does_not_write_are_refused(
    name: str, fields: dict[str, object], match: str
) -> None:
    opened = honest(name)
    opened.header["tensors"][0] = {"name": "w", "dtype": "float32", "shape": [32, 64], **fields}
    refuse(name, seal(opened), match)


def test_an_integer_tensor_cannot_claim_a_float_wire() -> None:
    entry = {"name": "n", "dtype": "int64", "shape": [4], "kind": "shuffle", "wire": "bfloat16"}
    header = {"format": "bf16-shuffle-zstd", "tensors": [entry], "frames": [[1, 1]]}
    refuse("bf16-shuffle-zstd", envelope(header, [b"x"]), "cannot travel")


@pytest.mark.parametrize("shape", [[], [0, 4], [1 << 30, 0]])
def test_int8_needs_a_non_empty_tensor_with_rows(shape: list[int]) -> None:
    entry = {"name": "w", "dtype": "float32", "shape": shape, "kind": "int8"}
    header = {"format": "int8-zstd", "tensors": [entry], "frames": [[1, 1]]}
    refuse("int8-zstd", envelope(header, [b"x"]), "needs a float32 tensor")


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -1.0, 1e38])
def test_int8_scales_must_be_finite_and_not_negative(scale: float) -> None:
    opened = honest("int8-zstd")
    assert opened.header["tensors"][0]["kind"] == "int8"
    opened.contents[0][4:8] = np.float32(scale).tobytes()  # the second row's scale
    refuse("int8-zstd", seal(opened), "scales must be finite")


Gaps = Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]]


def topk_payload(gaps: Gaps | None = None, fields: dict[str, object] | None = None) -> bytes:
    """A topk-int8 payload of weights(), its first tensor's fields or gaps replaced.

    The first frame starts with that tensor: its scale (4 bytes, padded to 8), then the
    low and high byte planes of its k gaps. ``gaps`` rewrites the low bytes (the high
    bytes become 0).
    """
    opened = honest("topk-int8")
    entry = opened.header["tensors"][0]
    assert entry["kind"] == "topk" and entry["index"] == "u16"
    entry.update(fields or {})
    if gaps is not None:
        k, content = entry["k"], opened.contents[0]
        low = gaps(np.frombuffer(bytes(content[8 : 8 + k]), np.uint8).copy())
        content[8 : 8 + 2 * k] = low.astype(np.uint8).tobytes() + bytes(k)
    return seal(opened)


def test_topk_duplicate_indices_are_refused() -> None:
    def duplicate(low: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        low[1:] = 1
        low[5] = 0  # a zero gap: position 5 repeats position 4
        return low

    refuse("topk-int8", topk_payload(duplicate), "duplicate indices")


def test_topk_indices_beyond_the_tensor_are_refused() -> None:
    refuse("topk-int8", topk_payload(lambda low: np.full_like(low, 255)), "out of range")


def test_topk_honest_gaps_rebuilt_by_hand_still_decode() -> None:
    """The control for the two tests above: the rewriting itself keeps a payload valid."""
    decoded = get_codec("topk-int8").decode(topk_payload(lambda low: np.full_like(low, 1)))
    assert torch.count_nonzero(decoded["w"][0, 1:]).item() >= 1


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"k": 32 * 64 + 1}, "k must be an integer"),
        ({"k": -1}, "k must be an integer"),
        ({"k": 3.0}, "k must be an integer"),
        ({"k": True}, "k must be an integer"),
        ({"index": "u8"}, "index must be"),
        ({"index": None}, "index must be"),
    ],
)
def test_topk_fields_are_checked(fields: dict[str, object], match: str) -> None:
    refuse("topk-int8", topk_payload(fields=fields), match)


@pytest.mark.parametrize("scale", [float("nan"), -0.5, 1e38])  # 1e38: 127 steps overflow
def test_topk_scales_must_be_finite_and_not_negative(scale: float) -> None:
    opened = honest("topk-int8")
    opened.contents[0][0:4] = np.float32(scale).tobytes()
    refuse("topk-int8", seal(opened), "scales must be finite")


@pytest.mark.parametrize("name", FRAME_CODECS)
def test_a_corrupt_frame_is_a_codec_error(name: str) -> None:
    payload = bytearray(get_codec(name).encode(weights()))
    frames = open_envelope(bytes(payload)).header["frames"]
    first_frame = len(payload) - sum(size for size, _ in frames)
    payload[first_frame] ^= 0xFF  # the frame's magic number
    refuse(name, bytes(payload), "not a zstd frame")


def test_a_frame_that_is_not_zstd_is_refused() -> None:
    entry = {"name": "b", "dtype": "uint8", "shape": [4], "kind": "bytes"}
    header: dict[str, object] = {"format": "shuffle-zstd", "tensors": [entry], "frames": [[4, 1]]}
    refuse("shuffle-zstd", envelope(header, [b"abcd"]), "not a zstd frame")
    frame = zstandard.ZstdCompressor().compress(b"abcd" + bytes(4))  # padded to 8
    header["frames"] = [[len(frame), 1]]
    decoded = get_codec("shuffle-zstd").decode(envelope(header, [frame]))
    assert decoded["b"].tolist() == list(b"abcd")


@pytest.mark.parametrize("name", ["int8-zstd", "topk-int8"])
def test_weights_near_the_float32_limit_travel_exactly(name: str) -> None:
    """Their scale's 127 steps would overflow: the encoder sends them as they are."""
    weight = torch.full((16, 16), torch.finfo(torch.float32).max)
    decoded = get_codec(name).decode(get_codec(name).encode({"w": weight}))
    assert torch.equal(decoded["w"], weight)
