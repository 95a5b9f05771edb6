"""Data sets by name: scikit-learn's digits (bundled, no download), a synthetic one, and,
from a local directory (``--data-dir`` or ``FEDGATE_DATA_DIR``; never downloaded), CIFAR-10,
CIFAR-100 and an ImageFolder-style directory of people's own PNG and JPEG images."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fedgate.core import bundled
from fedgate.core.augment import Augmentation
from fedgate.core.bundled import Split
from fedgate.core.cifar import CIFAR10, CIFAR100, CifarLayout, as_float, read_cifar
from fedgate.core.imagefolder import MEAN, STD, read_image_folder
from fedgate.core.models import ModelSpec
from fedgate.errors import ConfigError, DataError


@dataclass(frozen=True)
class Dataset:
    """Train and held-out test tensors; images are (N, C, H, W) float32 in [0, 1].

    ``augmentation``: what training does to each batch (photographs: random crop and flip;
    None, the bundled data sets: nothing). ``mean`` and ``std``: the per-channel
    normalisation the model applies to its inputs (`ModelSpec`); empty: none."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    classes: tuple[str, ...] = ()  # class names, by label; empty: the labels are the names
    augmentation: Augmentation | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def model_spec(self) -> ModelSpec:
        channels, height, _ = self.x_train.shape[1:]
        return ModelSpec(
            in_channels=channels,
            num_classes=self.num_classes,
            image_size=height,
            mean=self.mean,
            std=self.std,
        )


def digits(seed: int = 0) -> Dataset:
    """The 1,797 8x8 handwritten digits that ship inside scikit-learn."""
    return from_split(bundled.digits(seed))


def synthetic(seed: int = 0, samples: int = 2000, num_classes: int = 10, size: int = 8) -> Dataset:
    """Separable Gaussian blobs shaped like digits, for fast tests and scale runs."""
    return from_split(bundled.synthetic(seed, samples, num_classes, size))


def from_split(split: Split) -> Dataset:
    """``split``'s arrays as tensors (sharing their memory)."""
    return Dataset(
        name=split.name,
        x_train=torch.from_numpy(split.x_train),
        y_train=torch.from_numpy(split.y_train),
        x_test=torch.from_numpy(split.x_test),
        y_test=torch.from_numpy(split.y_test),
        num_classes=split.num_classes,
    )


DATA_DIR_ENV = "FEDGATE_DATA_DIR"
CROP_AND_FLIP = Augmentation(padding=4, flip=True)  # the standard CIFAR training recipe


def cifar10(seed: int = 0, data_dir: Path | None = None) -> Dataset:
    """CIFAR-10's 50,000 training and 10,000 test images (the data set's own split)."""
    return _cifar(CIFAR10, require_dir(CIFAR10.name, data_dir))


def cifar100(seed: int = 0, data_dir: Path | None = None) -> Dataset:
    """CIFAR-100 with its 100 fine labels."""
    return _cifar(CIFAR100, require_dir(CIFAR100.name, data_dir))


def _cifar(layout: CifarLayout, data_dir: Path) -> Dataset:
    arrays = read_cifar(layout, data_dir)
    return Dataset(
        name=layout.name,
        x_train=as_float(arrays.train_images),
        y_train=torch.from_numpy(arrays.train_labels),
        x_test=as_float(arrays.test_images),
        y_test=torch.from_numpy(arrays.test_labels),
        num_classes=layout.num_classes,
        classes=arrays.classes,
        augmentation=CROP_AND_FLIP,
        mean=layout.mean,
        std=layout.std,
    )


def imagefolder(seed: int = 0, data_dir: Path | None = None) -> Dataset:
    """PNG and JPEG images, a folder per class (`fedgate.core.imagefolder`); without
    train/test folders, a seeded stratified share is held out as the test split."""
    folder = read_image_folder(require_dir("imagefolder", data_dir))
    if folder.test is None:
        images, labels = folder.train.images.numpy(), folder.train.labels
        dataset = from_split(
            bundled.stratified("imagefolder", images, labels, len(folder.classes), seed)
        )
    else:
        dataset = Dataset(
            name="imagefolder",
            x_train=folder.train.images,
            y_train=torch.from_numpy(folder.train.labels),
            x_test=folder.test.images,
            y_test=torch.from_numpy(folder.test.labels),
            num_classes=len(folder.classes),
        )
    return dataclasses.replace(
        dataset, classes=folder.classes, augmentation=CROP_AND_FLIP, mean=MEAN, std=STD
    )


DatasetLoader = Callable[[int, Path | None], Dataset]  # (seed, data directory) -> Dataset


def _bundled(build: Callable[[int], Dataset]) -> DatasetLoader:
    """A data set that ships with fedgate: it needs no data directory."""

    def load(seed: int, data_dir: Path | None) -> Dataset:
        return build(seed)

    return load


DATASETS: dict[str, DatasetLoader] = {
    "digits": _bundled(digits),
    "synthetic": _bundled(synthetic),
    "cifar10": cifar10,
    "cifar100": cifar100,
    "imagefolder": imagefolder,
}


def load_dataset(
    name: str, seed: int = 0, data_dir: str | os.PathLike[str] | None = None
) -> Dataset:
    """The data set ``name``; those read from files are read from ``data_dir``, or when it
    is None (or empty) from ``$FEDGATE_DATA_DIR``. ``seed`` picks the test split of the
    data sets that have none of their own."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}") from None
    return loader(seed, resolve_data_dir(data_dir))


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """``data_dir``, else ``$FEDGATE_DATA_DIR``, else None."""
    chosen = os.fspath(data_dir) if data_dir is not None else ""
    chosen = chosen or os.environ.get(DATA_DIR_ENV, "")
    return Path(chosen).expanduser() if chosen else None


def require_dir(name: str, data_dir: Path | None) -> Path:
    if data_dir is None:
        raise DataError(
            f"dataset {name!r} is read from a local directory: pass --data-dir DIR or set "
            f"{DATA_DIR_ENV} (fedgate never downloads data)"
        )
    if not data_dir.is_dir():
        raise DataError(f"dataset {name!r}: the data directory {data_dir} does not exist")
    return data_dir
