"""Inference inputs as people send them, decoded into arrays the model's shape checks take.

Every body is hostile until checked, and each decoder refuses before it allocates:
- images (PNG, JPEG; Pillow): the size the header declares is checked against a bound of
  our own before a pixel is decoded (a 50,000 x 50,000 PNG is a few MB compressed and 2.5
  GB decoded); a JPEG is decoded at the smallest scale that still covers the model's input;
- JSON: a nested array of numbers (NaN, Infinity and non-numbers refused);
- CSV: one flattened input per row, at most a batch's rows;
- NPY: its header read without pickles, the data's size checked against it before use.
Bodies themselves are read with a limit first (`body_limit`), by the route.

Images become what the data set's images are: the model's channels and size, values in
[0, 1]. For data sets of strokes on a plain background (digits) a picture drawn the other
way round (a dark digit on white paper) is inverted, and the drawing is cropped to its
strokes and centred, as the data set's digits are.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fedgate.core.inference import InputSpec
from fedgate.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType


class Kind(enum.StrEnum):
    IMAGE = "image"
    JSON = "json"
    CSV = "csv"
    NPY = "npy"

    @property
    def batch(self) -> bool:
        """Whether predictions for it are a CSV by default (a batch file in, a file out)."""
        return self in (Kind.CSV, Kind.NPY)


MEDIA_TYPES: dict[str, Kind] = {
    "image/png": Kind.IMAGE,
    "image/jpeg": Kind.IMAGE,
    "application/json": Kind.JSON,
    "text/csv": Kind.CSV,
    "application/x-npy": Kind.NPY,
}
MULTIPART = "multipart/form-data"
IMAGE_FORMATS = ["PNG", "JPEG"]  # the only decoders Pillow may try

MAX_IMAGE_BYTES = 20 << 20  # a phone photo as a JPEG or PNG
MAX_IMAGE_PIXELS = 4096 * 4096  # decoded: 16 M pixels (64 MB as RGBA) at most
MAX_NUMBER_CHARS = 32  # "-1.2345678901234567e-308," with room to spare
MIN_TEXT_BYTES = 64 << 10
MAX_TEXT_BYTES = 32 << 20
NPY_HEADER_BYTES = 64 << 10
# Images are shrunk to at most this side (or 8 times the input's, if larger) before they
# are cropped and resized: enough detail for a digit drawn small on a large sheet.
WORK_SIDE = 512
# A pixel this far from the background is part of the drawing. The drawing is cropped to
# its square with no margin: digits fill their 8 x 8 frame. (Measured on the digits test
# split rendered as pictures: 97-98% of them are classed as their tensors are, 95% when
# drawn dark on a large white canvas; a 10% margin falls to 73%.)
INK = 0.15


@dataclass(frozen=True)
class Body:
    """A request body and what it claims to be: its media type without parameters, and
    (for a multipart upload's file part) its file name."""

    data: bytes
    media_type: str
    filename: str = ""


def media_type_of(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def kind_of(media_type: str) -> Kind:
    """The input kind of ``media_type``; an unknown one is 415, listing those taken."""
    kind = MEDIA_TYPES.get(media_type)
    if kind is None:
        raise UnsupportedMediaType(
            f"cannot predict from {media_type or 'a body without a Content-Type'}; send one "
            f"of {', '.join([*MEDIA_TYPES, MULTIPART])} (a multipart form's 'file' field)"
        )
    return kind


def body_limit(media_type: str, spec: InputSpec) -> int:
    """The most bytes a body of ``media_type`` may hold for the model's largest batch."""
    if media_type == MULTIPART:
        return max(MAX_IMAGE_BYTES, _text_limit(spec)) + MIN_TEXT_BYTES
    kind = kind_of(media_type)
    if kind is Kind.IMAGE:
        return MAX_IMAGE_BYTES
    if kind is Kind.NPY:
        return NPY_HEADER_BYTES + spec.max_batch * spec.numel * 8  # float64 at most
    return _text_limit(spec)


def _text_limit(spec: InputSpec) -> int:
    wanted = spec.max_batch * spec.numel * MAX_NUMBER_CHARS
    return min(MAX_TEXT_BYTES, max(MIN_TEXT_BYTES, wanted))


def sniff(body: Body) -> Kind:
    """A multipart file's kind: its declared type if taken, else its first bytes, else its
    file name's extension."""
    if body.media_type in MEDIA_TYPES:
        return MEDIA_TYPES[body.media_type]
    head = body.data[:8]
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff")):
        return Kind.IMAGE
    if head.startswith(b"\x93NUMPY"):
        return Kind.NPY
    extension = body.filename.rpartition(".")[2].lower()
    by_extension = {"png": Kind.IMAGE, "jpg": Kind.IMAGE, "jpeg": Kind.IMAGE, "csv": Kind.CSV}
    by_extension |= {"json": Kind.JSON, "npy": Kind.NPY}
    if extension in by_extension:
        return by_extension[extension]
    if body.data.lstrip()[:1] in (b"[", b"{"):
        return Kind.JSON
    return kind_of(body.media_type)  # refused, naming what is taken


def decode(data: bytes, kind: Kind, spec: InputSpec) -> np.ndarray:
    """The input(s) in ``data`` as a float32 array for `fedgate.core.inference.as_batch`."""
    decoders = {Kind.IMAGE: image_input, Kind.JSON: json_input, Kind.CSV: csv_input}
    decoders[Kind.NPY] = npy_input
    return decoders[kind](data, spec)


# ---- images --------------------------------------------------------------------------------


def image_input(data: bytes, spec: InputSpec) -> np.ndarray:
    """A PNG or JPEG as one input (1, C, H, W), values in [0, 1]."""
    if spec.channels not in (1, 3):
        raise UnsupportedMediaType(f"this model takes {spec.channels} channels, not an image")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            width, height = image.size  # from the header: nothing is decoded yet
            if width * height > max_image_pixels(spec):
                raise PayloadTooLarge(
                    f"a {width} x {height} image has more than the "
                    f"{max_image_pixels(spec):,} pixels taken; send a smaller one"
                )
            work = (max(WORK_SIDE, 8 * spec.width), max(WORK_SIDE, 8 * spec.height))
            image.draft("L" if spec.channels == 1 else "RGB", work)  # JPEG: decode scaled
            image.load()
            pixels = _pixels(image, work, spec.channels)
    except Image.DecompressionBombError as error:
        raise PayloadTooLarge(f"the image is too large to decode: {error}") from None
    except UnidentifiedImageError:
        raise InvalidInput("the body is not a PNG or JPEG image") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        raise InvalidInput(f"the image cannot be decoded: {error}") from None
    if spec.background is not None:
        pixels = _like_the_data_set(pixels, spec.background)
    return _resized(pixels, spec)[np.newaxis]


def max_image_pixels(spec: InputSpec) -> int:
    """The largest image taken: 16 M pixels, more only for a model with large inputs."""
    return max(MAX_IMAGE_PIXELS, 64 * spec.height * spec.width)


def _pixels(image: Image.Image, work: tuple[int, int], channels: int) -> np.ndarray:
    """The decoded image at about the work size, transparency flattened onto white (a
    drawing on a transparent canvas), as (H, W, C) float32 in [0, 1]."""
    image.thumbnail(work)  # shrinks only; keeps the aspect ratio
    image = ImageOps.exif_transpose(image)  # a photo taken sideways, upright
    if image.mode.startswith("I"):  # 16-bit grey: Pillow's conversion to 8 bits would clip
        wide = np.asarray(image, dtype=np.float32) / 65535.0
        return np.clip(np.repeat(wide[:, :, np.newaxis], channels, axis=2), 0.0, 1.0)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    converted = image.convert("L" if channels == 1 else "RGB")
    array = np.asarray(converted, dtype=np.float32) / 255.0
    return array.reshape(array.shape[0], array.shape[1], channels)


def _like_the_data_set(pixels: np.ndarray, background: float) -> np.ndarray:
    """Strokes on the data set's background: inverted if the picture's border is the other
    brightness, then cropped to the strokes and centred on a square."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if abs(float(border.mean()) - background) > 0.5:
        pixels = 1.0 - pixels
    ink = np.abs(pixels - background).max(axis=2) > INK
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return pixels  # nothing drawn: the model sees the blank picture
    drawing = pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width, channels = drawing.shape
    side = max(height, width)
    square = np.full((side, side, channels), background, dtype=np.float32)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = drawing
    return square


def _resized(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(H, W, C) in [0, 1] to the model's (C, H, W), averaging areas when shrinking."""
    size = (spec.width, spec.height)
    planes = []
    for channel in range(pixels.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(pixels[:, :, channel]), mode="F")
        shrinking = plane.width >= spec.width and plane.height >= spec.height
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
        planes.append(np.asarray(plane.resize(size, resample), dtype=np.float32))
    return np.clip(np.stack(planes), 0.0, 1.0)


# ---- numbers -------------------------------------------------------------------------------


def json_input(data: bytes, spec: InputSpec) -> np.ndarray:
    """A nested array of numbers (or ``{"inputs": array}``)."""
    try:
        value = json.loads(data, parse_constant=_not_a_number)
    except RecursionError:
        raise InvalidInput("the JSON is nested too deeply for an input") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise InvalidInput(f"the body is not valid JSON: {error}") from None
    if isinstance(value, dict) and set(value) == {"inputs"}:
        value = value["inputs"]
    if not isinstance(value, list):
        raise InvalidInput("send a JSON array of numbers (an input, or a batch of them)")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InvalidInput("the JSON array is ragged: its rows differ in length") from None
    if array.dtype.kind not in "iuf":
        raise InvalidInput("the JSON array must hold numbers only, in rows of equal length")
    return _float32(array)


def _not_a_number(constant: str) -> float:
    raise InvalidInput(f"{constant} is not a number an input may hold")


def csv_input(data: bytes, spec: InputSpec) -> np.ndarray:
    """One flattened input per row (C*H*W numbers); a first row of names is skipped."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("the CSV is not UTF-8 text") from None
    rows: list[list[float]] = []
    for number, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not cells or all(not cell.strip() for cell in cells):
            continue
        if len(rows) == spec.max_batch:
            raise InvalidInput(f"a CSV holds at most {spec.max_batch} rows")
        try:
            values = [float(cell) for cell in cells]
        except ValueError:
            if number == 1:
                continue  # a header
            raise InvalidInput(f"CSV row {number} holds something that is not a number") from None
        if len(values) != spec.numel:
            raise InvalidInput(
                f"CSV row {number} has {len(values)} values; an input is {spec.numel} "
                f"({' x '.join(map(str, spec.shape))}, flattened)"
            )
        rows.append(values)
    if not rows:
        raise InvalidInput("the CSV holds no rows of numbers")
    return np.asarray(rows, dtype=np.float32)


def npy_input(data: bytes, spec: InputSpec) -> np.ndarray:
    """An NPY file of shape (N, C, H, W) (or one input, or rows of flattened inputs)."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }[version]
        shape, fortran_order, dtype = read_header(stream)  # literal_eval: no code runs
    except Exception:  # numpy's header parser raises a dozen kinds (tokenize, ast...)
        raise InvalidInput("the body is not an NPY file of version 1.0 or 2.0") from None
    if dtype.hasobject or dtype.kind not in "iuf":
        raise InvalidInput(f"an NPY input must hold numbers, not {dtype}")
    count = math.prod(shape)
    offset = stream.tell()
    if count * dtype.itemsize != len(data) - offset:
        raise InvalidInput(
            f"the NPY header declares {list(shape)} {dtype} ({count * dtype.itemsize} bytes) "
            f"but the file holds {len(data) - offset}"
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return _float32(flat.reshape(shape, order="F" if fortran_order else "C"))


def _float32(array: np.ndarray) -> np.ndarray:
    """A native float32 copy (torch takes no other byte order); too large values become
    infinite, which the shape checks refuse."""
    with np.errstate(over="ignore"):
        return array.astype(np.float32)
