"""CIFAR-10 and CIFAR-100 from a local directory in their "python version" format.

The files are the ones in ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` from
https://www.cs.toronto.edu/~kriz/cifar.html, extracted; fedgate never downloads them. A
data directory may be the extracted folder itself or the folder holding it (so one
``FEDGATE_DATA_DIR`` serves both data sets). Each batch is a pickled dict, read with
`fedgate.core.safe_pickle` (never `pickle.load`): ``data`` is a (N, 3072) uint8 array,
each row a 32x32 image's red, then green, then blue plane; the labels are a list of ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedgate.core.safe_pickle import PickleValue, load_pickle
from fedgate.errors import DataError

SIDE = 32
PIXELS = 3 * SIDE * SIDE
MAX_FILE_BYTES = 256 << 20  # CIFAR-100's train file, the largest, is 161 MB
SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class CifarLayout:
    """One data set's files and the keys its pickles use."""

    name: str
    title: str
    folder: str  # the folder the archive extracts to
    archive: str
    train: tuple[str, ...]
    test: str
    meta: str
    labels_key: str
    names_key: str
    num_classes: int
    # the training split's per-channel mean and standard deviation (of values in [0, 1])
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test, self.meta)


CIFAR10 = CifarLayout(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test="test_batch",
    meta="batches.meta",
    labels_key="labels",
    names_key="label_names",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)
CIFAR100 = CifarLayout(
    name="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    train=("train",),
    test="test",
    meta="meta",
    labels_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)


@dataclass(frozen=True)
class CifarArrays:
    """A CIFAR data set as read: uint8 images (N, 3, 32, 32), batch by batch (`as_float`
    joins them as it converts), and int64 labels."""

    train_images: tuple[np.ndarray, ...]
    train_labels: np.ndarray
    test_images: tuple[np.ndarray, ...]
    test_labels: np.ndarray
    classes: tuple[str, ...]


def find_folder(layout: CifarLayout, data_dir: Path) -> Path:
    """The folder holding every file of ``layout``: ``data_dir`` or the archive's folder in
    it; otherwise a `DataError` naming the files expected and those missing."""
    for folder in (data_dir, data_dir / layout.folder):
        if all((folder / name).is_file() for name in layout.files):
            return folder
    looked = data_dir / layout.folder if (data_dir / layout.folder).is_dir() else data_dir
    missing = [name for name in layout.files if not (looked / name).is_file()]
    raise DataError(
        f"{layout.name}: no {layout.title} python batches in {data_dir} (nor in "
        f"{data_dir / layout.folder}); expected the files {', '.join(layout.files)}; "
        f"missing in {looked}: {', '.join(missing)}. Download {layout.archive} from "
        f"{SOURCE} and extract it into {data_dir}: fedgate never downloads data"
    )


def read_cifar(layout: CifarLayout, data_dir: Path) -> CifarArrays:
    folder = find_folder(layout, data_dir)
    classes = _class_names(layout, folder / layout.meta)
    train = [_read_batch(layout, folder / name) for name in layout.train]
    test_images, test_labels = _read_batch(layout, folder / layout.test)
    if sum(len(images) for images, _ in train) == 0:
        raise DataError(f"{layout.name}: the training batches in {folder} hold no images")
    return CifarArrays(
        train_images=tuple(images for images, _ in train),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=(test_images,),
        test_labels=test_labels,
        classes=classes,
    )


def _read_batch(layout: CifarLayout, path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = load_pickle(path, MAX_FILE_BYTES)
    data, labels = batch.get("data"), batch.get(layout.labels_key)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != PIXELS:
        raise DataError(f"{path}: 'data' must be an array of rows of {PIXELS} pixels")
    if not isinstance(labels, list) or len(labels) != len(data):
        raise DataError(f"{path}: {layout.labels_key!r} must list one label per image")
    if not all(type(label) is int and 0 <= label < layout.num_classes for label in labels):
        raise DataError(f"{path}: labels must be integers from 0 to {layout.num_classes - 1}")
    return data.reshape(-1, 3, SIDE, SIDE), np.asarray(labels, dtype=np.int64).reshape(-1)


def _class_names(layout: CifarLayout, path: Path) -> tuple[str, ...]:
    names = load_pickle(path, MAX_FILE_BYTES).get(layout.names_key)
    if not isinstance(names, list) or len(names) != layout.num_classes:
        raise DataError(f"{path}: {layout.names_key!r} must name {layout.num_classes} classes")
    return tuple(_decoded(name, path) for name in names)


def _decoded(name: PickleValue, path: Path) -> str:
    if isinstance(name, bytes):
        return name.decode("utf-8", errors="replace")
    if isinstance(name, str):
        return name
    raise DataError(f"{path}: a class name is not text")


def as_float(batches: tuple[np.ndarray, ...]) -> torch.Tensor:
    """uint8 image batches as one float32 tensor (N, 3, 32, 32) in [0, 1], each batch
    converted straight into its place: no joined uint8 copy, no float temporary."""
    out = torch.empty((sum(len(b) for b in batches), 3, SIDE, SIDE), dtype=torch.float32)
    view, start = out.numpy(), 0
    for batch in batches:
        np.divide(batch, np.float32(255.0), out=view[start : start + len(batch)], dtype=np.float32)
        start += len(batch)
    return out
