"""Open and re-seal frame-envelope payloads, to build hostile ones from honest ones."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import zstandard

from fedgate.codecs.frames import MAGIC

LENGTH = struct.Struct("<I")


@dataclass
class Opened:
    """A payload taken apart: its header document and each body frame's content."""

    header: dict[str, Any]
    contents: list[bytearray]


def open_envelope(payload: bytes) -> Opened:
    assert payload[:4] == MAGIC
    (length,) = LENGTH.unpack_from(payload, 4)
    head_end = 8 + length
    header = json.loads(zstandard.ZstdDecompressor().decompress(payload[8:head_end]))
    contents, offset = [], head_end
    for size, _ in header["frames"]:
        frame = payload[offset : offset + size]
        contents.append(bytearray(zstandard.ZstdDecompressor().decompress(frame)))
        offset += size
    return Opened(header, contents)


def seal(opened: Opened, *, keep_sizes: bool = False, content_size: bool = True) -> bytes:
    """Compress the contents again; the header's frame sizes follow unless ``keep_sizes``."""
    compressor = zstandard.ZstdCompressor(write_content_size=content_size)
    frames = []
    for content in opened.contents:
        if content_size:
            frames.append(compressor.compress(bytes(content)))
        else:  # streaming without a pledged size leaves the frame's size undeclared
            stream = compressor.compressobj()
            frames.append(stream.compress(bytes(content)) + stream.flush())
    header = dict(opened.header)
    if not keep_sizes:
        counts = [count for _, count in header["frames"]]
        header["frames"] = [[len(f), c] for f, c in zip(frames, counts, strict=True)]
    head = zstandard.ZstdCompressor().compress(json.dumps(header).encode())
    return MAGIC + LENGTH.pack(len(head)) + head + b"".join(frames)


def envelope(header: object, frames: list[bytes] | None = None) -> bytes:
    """A payload from a header document (anything JSON) and ready-made frames."""
    head = zstandard.ZstdCompressor().compress(json.dumps(header).encode())
    return MAGIC + LENGTH.pack(len(head)) + head + b"".join(frames or [])
