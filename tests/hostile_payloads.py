"""Hostile update bodies, built by hand for each codec's own format from a valid encoding.

Each builder returns the bytes and the fedgate error codes a server may answer with; the
status that goes with a code is the adapter's table's (checked by `Outcome.documented`).
Formats are recognised by their first bytes, so a new codec in a known envelope is
covered without touching this file; a new envelope gets the generic attacks.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

import msgpack
import torch
import zstandard

from fedgate.codecs import get_codec

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CONTAINER_MAGIC = b"FGT1"
FRAMES_MAGIC = b"FGF1"
BOMB_BYTES = 1 << 30  # what a bomb claims (or holds) once decompressed
HUGE = 2**63  # a dimension no int64 holds
HUGE_NUMEL = 2**29

CODEC_ERRORS = frozenset({"codec_error", "decoded_size_exceeded"})
SHAPE_ERRORS = CODEC_ERRORS | {"update_layout_mismatch", "invalid_update", "payload_too_large"}

Attack = tuple[bytes, frozenset[str]]


class Exploit:
    """Unpickling this runs a shell command: proof enough if the marker file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def pickle_payload(marker: Path) -> bytes:
    return pickle.dumps({"weights": Exploit(marker)})


@functools.cache
def zstd_bomb(declare_size: bool) -> bytes:
    """A frame of ``BOMB_BYTES`` zeros, about 32 KB; with or without its size declared."""
    return _compress_zeros(b"", BOMB_BYTES, declare_size)


def _compress_zeros(prefix: bytes, zeros: int, declare_size: bool) -> bytes:
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=declare_size)
    stream = compressor.compressobj(size=len(prefix) + zeros if declare_size else -1)
    out = [stream.compress(prefix)]
    block = bytes(16 << 20)
    left = zeros
    while left:
        out.append(stream.compress(block[: min(left, len(block))]))
        left -= min(left, len(block))
    out.append(stream.flush())
    return b"".join(out)


def attacks(codec: str, model: Mapping[str, torch.Tensor], marker: Path) -> dict[str, Attack]:
    """Every payload attack on ``codec``, by name."""
    valid = get_codec(codec).encode(model)
    found: dict[str, Attack] = {
        "pickle": (pickle_payload(marker), CODEC_ERRORS),
        "zstd-bomb": (zstd_bomb(True), CODEC_ERRORS),
        "zstd-bomb-undeclared": (zstd_bomb(False), CODEC_ERRORS),
        "truncated": (valid[: len(valid) // 2], CODEC_ERRORS),
    }
    tamper = _tamperer(valid)
    if tamper is not None:
        found["dims-beyond-int64"] = (tamper(valid, [0, HUGE]), SHAPE_ERRORS)
        found["huge-tensor"] = (tamper(valid, [HUGE_NUMEL]), SHAPE_ERRORS)
    if valid.startswith(ZSTD_MAGIC):
        found["valid-container-huge-tensor"] = (_container_bomb(valid), SHAPE_ERRORS)
    if valid.startswith(FRAMES_MAGIC):
        found["frame-body-bomb"] = (_frames_body_bomb(valid), SHAPE_ERRORS)
    return found


Tamper = Callable[[bytes, list[int]], bytes]


def _tamperer(valid: bytes) -> Tamper | None:
    """A function that rewrites the first tensor's shape in ``valid``'s own format."""
    if valid.startswith(CONTAINER_MAGIC):
        return _container_shape
    if valid.startswith(ZSTD_MAGIC):
        return lambda data, shape: zstandard.ZstdCompressor().compress(
            _container_shape(zstandard.ZstdDecompressor().decompress(data), shape)
        )
    if valid.startswith(FRAMES_MAGIC):
        return _frames_shape
    if valid.startswith(b"{"):
        return _json_shape
    return _msgpack_shape


def _container_shape(data: bytes, shape: list[int]) -> bytes:
    (length,) = struct.unpack_from("<I", data, 4)
    header = json.loads(data[8 : 8 + length])
    header["tensors"][0]["shape"] = shape
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return CONTAINER_MAGIC + struct.pack("<I", len(text)) + text + data[8 + length :]


def _frames_header(data: bytes) -> tuple[dict[str, object], bytes]:
    (length,) = struct.unpack_from("<I", data, 4)
    header = json.loads(zstandard.ZstdDecompressor().decompress(data[8 : 8 + length]))
    return header, data[8 + length :]


def _frames_pack(header: Mapping[str, object], body: bytes) -> bytes:
    head = zstandard.ZstdCompressor(write_content_size=True).compress(json.dumps(header).encode())
    return FRAMES_MAGIC + struct.pack("<I", len(head)) + head + body


def _frames_shape(data: bytes, shape: list[int]) -> bytes:
    header, body = _frames_header(data)
    tensors = header["tensors"]
    assert isinstance(tensors, list)
    tensors[0]["shape"] = shape
    return _frames_pack(header, body)


def _frames_body_bomb(data: bytes) -> bytes:
    """The real header, and one body frame that decompresses to a gigabyte."""
    header, _ = _frames_header(data)
    bomb = zstd_bomb(True)
    tensors = header["tensors"]
    assert isinstance(tensors, list)
    header["frames"] = [[len(bomb), len(tensors)]]
    return _frames_pack(header, bomb)


def _container_bomb(data: bytes) -> bytes:
    """A well-formed compressed container whose first tensor really holds 2**29 zeros."""
    inner = zstandard.ZstdDecompressor().decompress(data)
    (length,) = struct.unpack_from("<I", inner, 4)
    header = json.loads(inner[8 : 8 + length])
    first = header["tensors"][0]
    first["shape"] = [HUGE_NUMEL]
    header["tensors"] = [first]
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    prefix = CONTAINER_MAGIC + struct.pack("<I", len(text)) + text
    size = HUGE_NUMEL * torch.empty((), dtype=getattr(torch, first["wire"])).element_size()
    return _compress_zeros(prefix, size, declare_size=True)


def _json_shape(data: bytes, shape: list[int]) -> bytes:
    document = json.loads(data)
    document["tensors"][0]["shape"] = shape
    document["tensors"][0]["data"] = []
    return json.dumps(document).encode()


def _msgpack_shape(data: bytes, shape: list[int]) -> bytes:
    document = msgpack.unpackb(data, raw=False)
    first = next(iter(document["tensors"]))
    document["tensors"][first]["shape"] = shape
    packed: bytes = msgpack.packb(document, use_bin_type=True)
    return packed


def json_of_numel(numel: int) -> bytes:
    """A fedgate-json document with one tensor of ``numel`` zeros (tens of MB for 10**7)."""
    head = b'{"format": "fedgate-json/1", "tensors": [{"name": "w", "dtype": "float32", '
    shape = b'"shape": [%d], "data": [' % numel
    return head + shape + b"0.0, " * (numel - 1) + b"0.0]}]}"
