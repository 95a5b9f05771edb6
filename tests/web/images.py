"""Pictures for inference tests: digits drawn as people draw them, and hostile files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.hostile_payloads import Exploit


def digit_png(
    digit: torch.Tensor, scale: int = 8, *, dark_on_white: bool = False, canvas: int = 0
) -> bytes:
    """A digits image (1, 8, 8) in [0, 1] as a grey PNG, ``scale`` times larger (each pixel
    a block), drawn dark on white if asked, in the middle of a ``canvas``-pixel square."""
    pixels = (digit[0].numpy() * 255).round().astype(np.uint8)
    if dark_on_white:
        pixels = 255 - pixels
    image = Image.fromarray(pixels, "L").resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
    if canvas:
        paper = Image.new("L", (canvas, canvas), 255 if dark_on_white else 0)
        paper.paste(image, ((canvas - image.width) // 2, (canvas - image.height) // 2))
        image = paper
    return encoded(image, "PNG")


def encoded(image: Image.Image, kind: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, kind, **options)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` grey pixels, with one row of
    data: 2.5 G pixels for the defaults, in about a hundred bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = zlib.compress(b"\x00" * (width + 1))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", row)
        + png_chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    """A photo-sized JPEG cut off after its first third."""
    noise = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    whole = encoded(Image.fromarray(noise, "RGB"), "JPEG", quality=90)
    return whole[: len(whole) // 3]


def pickled_npy(marker: Path) -> bytes:
    """An NPY file of object dtype whose unpickling would create ``marker``."""
    out = io.BytesIO()
    np.save(out, np.array([Exploit(marker)], dtype=object), allow_pickle=True)
    return out.getvalue()
