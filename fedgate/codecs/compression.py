"""zstd with a hard cap on what decompression may produce."""

from __future__ import annotations

from collections.abc import Sequence

import zstandard

from fedgate.codecs.base import Buffer
from fedgate.errors import CodecError, DecodedSizeExceeded


def compress(data: bytes, level: int, threads: int = 0) -> bytes:
    """One zstd frame that records its content size (so decoders can check it first)."""
    compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_content_size=True)
    out: bytes = compressor.compress(data)
    return out


def decompress(codec: str, data: Buffer, cap: int) -> bytearray:
    """Decompress exactly one zstd frame into a fresh buffer of at most ``cap`` bytes.

    The frame must declare its content size, which is checked against ``cap`` before
    anything is allocated (zstd itself verifies the declared size while decoding); a frame
    that hides its size, trailing bytes after the frame, or a corrupt frame are refused.
    """
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise CodecError(codec, f"not a zstd frame: {exc}") from None
    if declared < 0:  # CONTENTSIZE_UNKNOWN (-1) or CONTENTSIZE_ERROR (-2)
        raise CodecError(codec, "zstd frame does not declare its content size")
    if declared > cap:
        raise DecodedSizeExceeded(codec, f"frame declares {declared} bytes, the cap is {cap}")
    try:
        out = zstandard.ZstdDecompressor().decompress(
            data, max_output_size=cap, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise CodecError(codec, f"corrupt zstd frame: {exc}") from None
    return bytearray(out)


def compress_parts(parts: Sequence[bytes | memoryview], level: int) -> list[bytes]:
    """One zstd frame of the concatenated ``parts`` (recording its content size), in pieces.

    Streams the parts through one compressor instead of joining them first, and leaves
    the pieces for the caller to join once with everything else: no input or output is
    copied more than it has to be.
    """
    total = sum(memoryview(part).nbytes for part in parts)
    compressor = zstandard.ZstdCompressor(compression_params=_numeric_params(level))
    stream = compressor.compressobj(size=total)
    chunks = [stream.compress(part) for part in parts]
    chunks.append(stream.flush())
    return chunks


def _numeric_params(level: int) -> zstandard.ZstdCompressionParameters:
    """``level``'s parameters with a tiny match finder that only takes long matches.

    Tensor bytes hold few repeats worth finding (measured on ResNet-18 weights and
    deltas): a 2**7-entry hash table and 7-byte minimum matches compress byte planes
    ~2x faster and ~1-2% smaller than level 1's defaults, and int8 values the same.
    """
    params: zstandard.ZstdCompressionParameters = zstandard.ZstdCompressionParameters.from_level(
        level, compression_level=level, hash_log=7, min_match=7, write_content_size=True
    )
    return params


def decompress_exactly(codec: str, frame: bytes | memoryview, expected: int) -> bytes:
    """Decompress one zstd frame that must declare exactly ``expected`` bytes of content.

    The declared size is checked before anything is allocated; the caller derived
    ``expected`` from a header it has already checked against its limits.
    """
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise CodecError(codec, f"not a zstd frame: {exc}") from None
    if declared != expected:
        raise CodecError(
            codec, f"zstd frame declares {declared} bytes of content, the header implies {expected}"
        )
    try:
        out: bytes = zstandard.ZstdDecompressor().decompress(
            frame, max_output_size=max(expected, 1), allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise CodecError(codec, f"corrupt zstd frame: {exc}") from None
    if len(out) != expected:  # pragma: no cover - zstd verifies the declared size itself
        raise CodecError(codec, f"zstd frame held {len(out)} bytes, expected {expected}")
    return out
