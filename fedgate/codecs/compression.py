"""zstd with a hard cap on what decompression may produce."""

from __future__ import annotations

import zstandard

from fedgate.errors import CodecError, DecodedSizeExceeded


def compress(data: bytes, level: int, threads: int = 0) -> bytes:
    """One zstd frame that records its content size (so decoders can check it first)."""
    compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_content_size=True)
    out: bytes = compressor.compress(data)
    return out


def decompress(codec: str, data: bytes, cap: int) -> bytearray:
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
