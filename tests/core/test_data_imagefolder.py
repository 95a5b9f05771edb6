"""People's own images: an ImageFolder directory of PNGs and JPEGs, bounded before decoding."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from fedgate.core import imagefolder
from fedgate.core.data import CROP_AND_FLIP, load_dataset
from fedgate.errors import DataError
from tests.core.cifar_files import write_jpeg, write_png

CLASSES = ("cat", "dog", "eel")


def pixels(seed: int, side: int = 32, gray: bool = False) -> np.ndarray:
    shape = (side, side) if gray else (side, side, 3)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def as_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)


def folder_of_pngs(root: Path, per_class: int = 5) -> dict[str, list[np.ndarray]]:
    written: dict[str, list[np.ndarray]] = {}
    for c, name in enumerate(CLASSES):
        written[name] = [pixels(10 * c + i) for i in range(per_class)]
        for i, image in enumerate(written[name]):
            write_png(root / name / f"{i:03d}.png", image)
    (root / "cat" / "notes.txt").write_text("not an image: ignored")
    (root / "dog" / ".hidden.png").write_bytes(b"ignored too")
    return written


def test_a_folder_per_class_is_read_and_split_stratified(tmp_path: Path) -> None:
    written = folder_of_pngs(tmp_path, per_class=5)
    data = load_dataset("imagefolder", 0, tmp_path)
    assert (data.classes, data.num_classes) == (CLASSES, 3)
    assert len(data.x_train) + len(data.x_test) == 15 and len(data.x_test) == 3  # 1 of 5 each
    assert sorted(data.y_test.tolist()) == [0, 1, 2]
    every = {
        tuple(as_tensor(image).flatten().tolist())
        for images in written.values()
        for image in images
    }
    seen = torch.cat([data.x_train, data.x_test])
    assert {tuple(row.tolist()) for row in seen.flatten(1)} == every  # 32x32: pixels exact
    assert data.augmentation == CROP_AND_FLIP and data.mean == imagefolder.MEAN
    assert torch.equal(load_dataset("imagefolder", 0, tmp_path).x_test, data.x_test)  # seeded


def test_train_and_test_folders_are_kept_as_given_and_jpegs_resized(tmp_path: Path) -> None:
    for c, name in enumerate(CLASSES):
        write_png(tmp_path / "train" / name / "a.png", pixels(c))
        write_jpeg(tmp_path / "train" / name / "b.JPG", pixels(c + 5, side=64, gray=True))
    write_png(tmp_path / "test" / "dog" / "t.png", pixels(9))
    data = load_dataset("imagefolder", 0, tmp_path)
    assert data.y_train.tolist() == [0, 0, 1, 1, 2, 2] and data.y_test.tolist() == [1]
    assert data.x_train.shape == (6, 3, 32, 32) and data.x_test.shape == (1, 3, 32, 32)
    assert torch.equal(data.x_test[0], as_tensor(pixels(9)))
    gray = data.x_train[1]  # a grey JPEG: three equal channels, resized from 64 x 64
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert float(data.x_train.min()) >= 0.0 and float(data.x_train.max()) <= 1.0
    (tmp_path / "test" / "dog" / "t.png").unlink()
    (tmp_path / "test" / "dog").rmdir()
    (tmp_path / "test").rmdir()
    alone = load_dataset("imagefolder", 0, tmp_path)  # train/ alone: split as one folder
    assert alone.classes == CLASSES and len(alone.x_train) + len(alone.x_test) == 6


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR declaring width x height, and no pixels at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def jpeg_header_only(width: int, height: int) -> bytes:
    """SOI, an APP0 segment, and a baseline frame header declaring width x height."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


@pytest.mark.parametrize(
    "bomb",
    [png_header_only(50_000, 50_000), jpeg_header_only(60_000, 40_000)],
    ids=["png", "jpeg"],
)
def test_declared_sizes_are_refused_before_any_pixel_is_decoded(
    tmp_path: Path, bomb: bytes
) -> None:
    folder_of_pngs(tmp_path)
    (tmp_path / "eel" / "bomb.png").write_bytes(bomb)
    with pytest.raises(DataError, match=r"bomb.png declares \d+ x \d+ pixels"):
        load_dataset("imagefolder", 0, tmp_path)


def test_headers_are_read_as_the_decoder_reads_them(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", pixels(1, side=20))
    write_jpeg(tmp_path / "b.jpg", pixels(2, side=24))
    for name, side in (("a.png", 20), ("b.jpg", 24)):
        data = (tmp_path / name).read_bytes()
        assert imagefolder.declared_size(data, tmp_path / name) == (side, side)
    assert imagefolder.jpeg_size(jpeg_header_only(640, 480)) == (640, 480)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"GIF89a not ours", "not a PNG or JPEG"),
        (b"", "not a PNG or JPEG"),
        (png_header_only(32, 32), "cannot decode"),  # a header and no image data
        (b"\xff\xd8\xff\xda\x00\x02", "not a PNG or JPEG"),  # a scan before any frame
    ],
    ids=["gif", "empty", "truncated-png", "no-frame"],
)
def test_broken_images_are_named(tmp_path: Path, content: bytes, reason: str) -> None:
    folder_of_pngs(tmp_path)
    (tmp_path / "dog" / "broken.png").write_bytes(content)
    with pytest.raises(DataError, match=rf"broken\.png.*{reason}|{reason}.*broken\.png"):
        load_dataset("imagefolder", 0, tmp_path)


def test_layout_faults_are_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="has no class folders; expected DIR/<class>"):
        load_dataset("imagefolder", 0, tmp_path)
    folder_of_pngs(tmp_path)
    (tmp_path / "fox").mkdir()
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'fox'} holds no PNG or JPEG")):
        load_dataset("imagefolder", 0, tmp_path)
    (tmp_path / "fox").rmdir()
    monkeypatch.setattr(imagefolder, "MAX_IMAGES", 10)
    with pytest.raises(DataError, match="holds over 10 images"):
        load_dataset("imagefolder", 0, tmp_path)
    monkeypatch.setattr(imagefolder, "MAX_IMAGES", 100)
    monkeypatch.setattr(imagefolder, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(DataError, match="is over 100 bytes"):
        load_dataset("imagefolder", 0, tmp_path)


def test_a_test_class_unknown_to_training_is_refused(tmp_path: Path) -> None:
    write_png(tmp_path / "train" / "cat" / "a.png", pixels(1))
    write_png(tmp_path / "test" / "wolf" / "a.png", pixels(2))
    with pytest.raises(DataError, match=r"classes not in train: \['wolf'\]"):
        load_dataset("imagefolder", 0, tmp_path)
