"""Any codec's payload taken apart into its header document and re-sealed.

Fuzzers tamper with the fields an honest encoder writes (shapes, dtypes, frame sizes...)
and seal the result the way that format frames it, so the lie reaches the decoder's
checks instead of failing on a broken checksum or length first. The format is told from
the payload's own first bytes, not from a list of codec names.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zstandard

from fedgate.codecs import container, frames

LENGTH = struct.Struct("<I")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass
class Document:
    """A payload's header as a mutable document, and what follows it.

    ``entries`` is the header's list of tensor entries (msgpack's map of them too, its
    keys as ``name`` fields); ``contents`` each zstd frame's decompressed bytes (frame
    envelopes) or the buffers after the header (containers); ``extra`` the top-level
    fields besides the tensors.
    """

    kind: str  # "frames", "container", "zstd-container", "json" or "msgpack"
    entries: list[Any]
    extra: dict[str, Any]
    contents: list[bytearray] = field(default_factory=list)


def kind_of(payload: bytes) -> str:
    if payload.startswith(frames.MAGIC):
        return "frames"
    if payload.startswith(container.MAGIC):
        return "container"
    if payload.startswith(ZSTD_MAGIC):
        return "zstd-container"
    if payload.startswith(b"{"):
        return "json"
    return "msgpack"


def open_payload(payload: bytes) -> Document:
    kind = kind_of(payload)
    if kind == "frames":
        return _open_frames(payload)
    if kind in ("container", "zstd-container"):
        raw = payload if kind == "container" else zstandard.ZstdDecompressor().decompress(payload)
        (length,) = LENGTH.unpack_from(raw, 4)
        header = json.loads(raw[8 : 8 + length])
        body = bytearray(raw[8 + length :])
        return Document(kind, header.pop("tensors"), header, [body])
    if kind == "json":
        document = json.loads(payload)
        return Document(kind, document.pop("tensors"), document)
    document = msgpack.unpackb(payload, raw=False)
    entries = [{"name": name, **entry} for name, entry in document.pop("tensors").items()]
    return Document(kind, entries, document)


def seal(doc: Document, *, keep_sizes: bool = False) -> bytes:
    """The payload ``doc`` describes; frame sizes follow the contents unless ``keep_sizes``."""
    if doc.kind == "frames":
        return _seal_frames(doc, keep_sizes)
    if doc.kind in ("container", "zstd-container"):
        header = json.dumps({**doc.extra, "tensors": doc.entries}).encode()
        header += b" " * (-(8 + len(header)) % 8)
        raw = container.MAGIC + LENGTH.pack(len(header)) + header + b"".join(doc.contents)
        return raw if doc.kind == "container" else zstandard.ZstdCompressor().compress(raw)
    if doc.kind == "json":
        return json.dumps({**doc.extra, "tensors": doc.entries}).encode()
    tensors = {}
    for entry in doc.entries:
        rest = dict(entry) if isinstance(entry, dict) else {"entry": entry}
        name = rest.pop("name", "")
        tensors[name if isinstance(name, (str, int, bytes)) else str(name)] = rest
    packed: bytes = msgpack.packb({**doc.extra, "tensors": tensors}, use_bin_type=True)
    return packed


def _open_frames(payload: bytes) -> Document:
    (length,) = LENGTH.unpack_from(payload, 4)
    head_end = 8 + length
    header = json.loads(zstandard.ZstdDecompressor().decompress(payload[8:head_end]))
    contents, offset = [], head_end
    for size, _ in header["frames"]:
        frame = payload[offset : offset + size]
        contents.append(bytearray(zstandard.ZstdDecompressor().decompress(frame)))
        offset += size
    return Document("frames", header.pop("tensors"), header, contents)


def _seal_frames(doc: Document, keep_sizes: bool) -> bytes:
    compressor = zstandard.ZstdCompressor(write_content_size=True)
    bodies = [compressor.compress(bytes(content)) for content in doc.contents]
    header = {**doc.extra, "tensors": doc.entries}
    table = header.get("frames")
    if not keep_sizes and isinstance(table, list) and len(table) == len(bodies):
        header["frames"] = [
            [len(body), row[1] if isinstance(row, list) and len(row) == 2 else 1]
            for body, row in zip(bodies, table, strict=True)
        ]
    head = zstandard.ZstdCompressor().compress(json.dumps(header).encode())
    return frames.MAGIC + LENGTH.pack(len(head)) + head + b"".join(bodies)
