"""People's own images: an ImageFolder-style directory of PNG and JPEG files.

Layout: ``DIR/<class>/<image>`` (one folder per class; a seeded, stratified share is held
out for testing; ``DIR/train/<class>/...`` alone is read so too), or
``DIR/train/<class>/...`` and ``DIR/test/<class>/...`` (the split as given). Classes are
the folder names in sorted order, so every client and the server that see the same folder
names agree on the labels. Files with other suffixes, and hidden ones, are ignored. Images
are decoded to RGB and resized to `SIZE` x `SIZE`, values in [0, 1].

Decoding is torchvision's (libpng, libjpeg): the core imports no PIL (fedgate's layering).
torchvision 0.29 deprecates its image decoders in favour of TorchCodec; torchvision is
pinned (constraints.txt), and `decode_image` is the one function to change when it moves
on. Every file is bounded before it is decoded: its size on disk (`MAX_IMAGE_BYTES`), and
the width and height its header declares (`MAX_IMAGE_PIXELS`: a PNG of a few kB may
declare 50,000 x 50,000 pixels, 7.5 GB decoded), read here from the PNG IHDR chunk or the
JPEG frame header. The number of images and classes is bounded too.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention

from fedgate.errors import DataError

SIZE = 32  # the side images are resized to: the CIFAR models' input
SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
MAX_IMAGE_BYTES = 20 << 20
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGES = 100_000  # per split: 1.2 GB as float32 at 32 x 32
MAX_CLASSES = 1000
# A fixed normalisation (ImageNet's statistics), not one computed from the images: clients
# with their own folders must all give the model the same inputs for the same pixels.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LAYOUT = "DIR/<class>/*.png|*.jpg, or DIR/train/<class>/... and DIR/test/<class>/..."
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_START = b"\xff\xd8"
JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOFn: the frame header
JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length


@dataclass(frozen=True)
class FolderImages:
    """One split: float32 images (N, 3, SIZE, SIZE) in [0, 1] and int64 labels."""

    images: torch.Tensor
    labels: np.ndarray


@dataclass(frozen=True)
class ImageFolder:
    train: FolderImages
    test: FolderImages | None  # None: no train/test folders, the caller splits
    classes: tuple[str, ...]


def read_image_folder(root: Path, size: int = SIZE) -> ImageFolder:
    if not root.is_dir():
        raise DataError(f"imagefolder: {root} is not a directory; expected {LAYOUT}")
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() and test_dir.is_dir():
        classes = class_names(train_dir)
        unknown = sorted(set(class_names(test_dir, empty_ok=True)) - set(classes))
        if unknown:
            raise DataError(f"imagefolder: {test_dir} has classes not in train: {unknown}")
        train = read_split(train_dir, classes, size)
        return ImageFolder(train, read_split(test_dir, classes, size, test=True), classes)
    folder = train_dir if train_dir.is_dir() else root  # DIR/train alone: split it here
    classes = class_names(folder)
    return ImageFolder(read_split(folder, classes, size), None, classes)


def class_names(folder: Path, *, empty_ok: bool = False) -> tuple[str, ...]:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names and not empty_ok:
        raise DataError(f"imagefolder: {folder} has no class folders; expected {LAYOUT}")
    if len(names) > MAX_CLASSES:
        raise DataError(f"imagefolder: {folder} has {len(names)} classes, over {MAX_CLASSES}")
    return tuple(names)


def read_split(
    folder: Path, classes: tuple[str, ...], size: int, test: bool = False
) -> FolderImages:
    """Every image of ``classes`` under ``folder``; in a training split each class needs one."""
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        found = image_files(folder / name)
        if not found and not test:
            raise DataError(f"imagefolder: class folder {folder / name} holds no PNG or JPEG")
        files += [(path, label) for path in found]
        if len(files) > MAX_IMAGES:
            raise DataError(f"imagefolder: {folder} holds over {MAX_IMAGES:,} images")
    images = torch.empty((len(files), 3, size, size), dtype=torch.float32)
    for row, (path, _) in enumerate(files):
        images[row] = decode_image(path, size)
    labels = np.asarray([label for _, label in files], dtype=np.int64)
    return FolderImages(images, labels)


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() in SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def decode_image(path: Path, size: int) -> torch.Tensor:
    """``path`` as a float32 RGB image (3, size, size) in [0, 1], bounded before decoding."""
    # imported here: torchvision costs seconds to import, and most runs read no images
    from torchvision.io import ImageReadMode  # noqa: PLC0415
    from torchvision.io import decode_image as decode  # noqa: PLC0415

    data = read_bounded(path)
    width, height = declared_size(data, path)
    if min(width, height) <= 0 or width * height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"imagefolder: {path} declares {width} x {height} pixels (at most {MAX_IMAGE_PIXELS:,})"
        )
    try:
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        with warnings.catch_warnings():  # the deprecation, once per image (see above)
            warnings.simplefilter("ignore", DeprecationWarning)
            image: torch.Tensor = decode(raw, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as error:
        raise DataError(f"imagefolder: cannot decode {path}: {error}") from None
    if tuple(image.shape) != (3, height, width):
        raise DataError(f"imagefolder: {path} decodes to another size than its header says")
    scale = 65535.0 if image.dtype == torch.uint16 else 255.0
    pixels = image.to(torch.float32).div_(scale)
    if (height, width) == (size, size):
        return pixels
    resized = F.interpolate(pixels[None], size=(size, size), mode="bilinear", antialias=True)
    return resized[0].clamp_(0.0, 1.0)


def read_bounded(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_IMAGE_BYTES + 1)
    except OSError as error:
        raise DataError(f"imagefolder: cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise DataError(f"imagefolder: {path} is over {MAX_IMAGE_BYTES:,} bytes")
    return data


def declared_size(data: bytes, path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's or a JPEG's header; a `DataError` for anything else."""
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(JPEG_START):
        size = jpeg_size(data)
        if size is not None:
            return size
    raise DataError(f"imagefolder: {path} is not a PNG or JPEG image (or its header is broken)")


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first frame header (SOFn), walking the marker segments."""
    i = len(JPEG_START)
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF or marker in JPEG_STANDALONE:  # a fill byte, or no length
            i += 1 if marker == 0xFF else 2
            continue
        if marker in JPEG_FRAMES:  # length (2), precision (1), height (2), width (2)
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(
                data[i + 5 : i + 7], "big"
            )
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xD9, 0xDA) or length < 2:  # the image or its scan before any frame
            return None
        i += 2 + length
    return None
