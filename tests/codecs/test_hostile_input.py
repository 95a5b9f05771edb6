"""Decoding hostile bytes runs no code, allocates nothing unbounded, and fails precisely."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import struct
from pathlib import Path

import msgpack
import pytest
import torch
import zstandard

from fedgate.codecs import CODECS, DecodeLimits, get_codec
from fedgate.codecs.container import MAGIC
from fedgate.errors import CodecError, DecodedSizeExceeded

ALL = sorted(CODECS)


class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def state() -> dict[str, torch.Tensor]:
    return {"w": torch.randn(16, 8), "b": torch.randn(8), "n": torch.tensor(3)}


@pytest.mark.parametrize("name", ALL)
def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"w": RunsCodeWhenUnpickled(marker)})
    # the pickle alone, behind a zstd frame, and as the torch.save format's inner pickle
    for payload in (evil, zstandard.ZstdCompressor().compress(evil), MAGIC + evil):
        with pytest.raises(CodecError):
            get_codec(name).decode(payload)
    assert not marker.exists()
    pickle.loads(evil)  # the control: the payload really does run code when unpickled
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("name", ALL)
def test_truncated_bodies_are_refused_naming_the_codec(name: str) -> None:
    codec = get_codec(name)
    body = codec.encode(state())
    for cut in (0, 1, 7, len(body) // 3, len(body) // 2, len(body) - 1):
        with pytest.raises(CodecError) as caught:
            codec.decode(body[:cut])
        assert name in str(caught.value)


@pytest.mark.parametrize("name", ALL)
def test_garbage_is_refused(name: str) -> None:
    codec = get_codec(name)
    for garbage in (os.urandom(4096), b"\x00" * 64, b"{}", b"[]", b"null", "é".encode()):
        with pytest.raises(CodecError):
            codec.decode(garbage)


@pytest.mark.parametrize("name", ALL)
def test_a_padded_body_is_refused(name: str) -> None:
    codec = get_codec(name)
    with pytest.raises(CodecError):
        codec.decode(codec.encode(state()) + b"\x00" * 8 + b"trailing")


def test_a_zstd_bomb_is_refused_before_it_expands() -> None:
    codec = get_codec("bf16-zstd")
    bomb = zstandard.ZstdCompressor().compress(bytes(64 * 1024**2))  # 64 MiB of zeros
    assert len(bomb) < 64 * 1024
    with pytest.raises(DecodedSizeExceeded):
        codec.decode(bomb, DecodeLimits(max_decoded_bytes=1024**2))


def test_a_zstd_frame_that_hides_its_size_is_refused() -> None:
    codec = get_codec("bf16-zstd")
    chunks = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    bomb = b"".join(chunks.compress(bytes(1024**2)) for _ in range(64)) + chunks.flush()
    assert zstandard.frame_content_size(bomb) == -1  # unknown
    with pytest.raises(CodecError, match="content size"):
        codec.decode(bomb, DecodeLimits(max_decoded_bytes=1024**2))


def container_declaring(shape: list[int], dtype: str = "float32") -> bytes:
    header = json.dumps({"tensors": [{"name": "w", "dtype": dtype, "shape": shape}]}).encode()
    return MAGIC + struct.pack("<I", len(header)) + header


def test_a_header_declaring_a_huge_tensor_is_refused_without_allocating() -> None:
    body = container_declaring([1 << 20, 1 << 20, 1 << 20])
    with pytest.raises(DecodedSizeExceeded):
        get_codec("raw").decode(body)


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "w", "dtype": "object", "shape": [1]},
        {"name": "w", "dtype": "float32", "shape": [-1]},
        {"name": "w", "dtype": "float32", "shape": [1.5]},
        {"name": "w", "dtype": "float32", "shape": "3"},
        {"name": "", "dtype": "float32", "shape": [1]},
        {"name": 7, "dtype": "float32", "shape": [1]},
        {"name": "w", "dtype": "float32", "shape": [1] * 9},
    ],
)
def test_bad_tensor_entries_are_refused(entry: dict[str, object]) -> None:
    header = json.dumps({"tensors": [entry]}).encode()
    body = MAGIC + struct.pack("<I", len(header)) + header + bytes(8)
    with pytest.raises(CodecError):
        get_codec("raw").decode(body)
    msgpacked = msgpack.packb(
        {"format": "fedgate-msgpack/1", "tensors": {str(entry["name"]): {**entry, "data": b""}}}
    )
    with pytest.raises(CodecError):
        get_codec("msgpack").decode(msgpacked)


def test_duplicate_names_are_refused() -> None:
    entry = {"name": "w", "dtype": "float32", "shape": [1], "data": [1.0]}
    body = json.dumps({"format": "fedgate-json/1", "tensors": [entry, entry]}).encode()
    with pytest.raises(CodecError, match="duplicate"):
        get_codec("json").decode(body)


def test_json_data_that_disagrees_with_its_shape_is_refused() -> None:
    entry = {"name": "w", "dtype": "float32", "shape": [2, 2], "data": [[1.0, 2.0], [3.0]]}
    body = json.dumps({"format": "fedgate-json/1", "tensors": [entry]}).encode()
    with pytest.raises(CodecError, match="'w'"):
        get_codec("json").decode(body)


def test_deeply_nested_json_is_refused() -> None:
    with pytest.raises(CodecError):
        get_codec("json").decode(b"[" * 100_000 + b"]" * 100_000)


def test_msgpack_data_of_the_wrong_length_is_refused() -> None:
    body = msgpack.packb(
        {
            "format": "fedgate-msgpack/1",
            "tensors": {"w": {"dtype": "float32", "shape": [4], "data": bytes(12)}},
        }
    )
    with pytest.raises(CodecError, match="16 data bytes"):
        get_codec("msgpack").decode(body)


def test_too_many_tensors_are_refused() -> None:
    many = {f"t{i}": torch.zeros(1) for i in range(50)}
    for name in ALL:
        codec = get_codec(name)
        with pytest.raises(CodecError, match="exceed"):
            codec.decode(codec.encode(many), DecodeLimits(max_tensors=10))
