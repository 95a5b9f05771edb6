"""The data sets that ship with fedgate (digits, synthetic), as numpy arrays.

Loaded without torch: a client process sizes its share of them, and joins, before it
imports torch (`fedgate.run.client_runner`); `fedgate.core.data` makes tensors of them.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TEST_FRACTION = 0.2
DIGITS_FILE = Path("datasets") / "data" / "digits.csv.gz"  # inside the sklearn package


@dataclass(frozen=True)
class Split:
    """Train and held-out test arrays; images (N, C, H, W) float32 in [0, 1], labels int64."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def digits(seed: int = 0) -> Split:
    """The 1,797 8x8 handwritten digits that ship inside scikit-learn."""
    pixels, labels = _digits_arrays()
    images = pixels.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0
    return stratified("digits", images, labels.astype(np.int64), 10, seed)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 64) and labels, read from scikit-learn's bundled file without importing
    scikit-learn: its import costs about a second, paid by every client process."""
    spec = importlib.util.find_spec("sklearn")  # locates the package, runs none of it
    folders = list(spec.submodule_search_locations or []) if spec else []
    bundled = Path(folders[0]) / DIGITS_FILE if folders else None
    if bundled is None or not bundled.is_file():
        from sklearn.datasets import load_digits  # noqa: PLC0415 - another sklearn layout

        bunch = load_digits()
        return np.asarray(bunch.data), np.asarray(bunch.target)
    with gzip.open(bundled, "rt") as text:
        table = np.loadtxt(text, delimiter=",")
    return table[:, :-1], table[:, -1]


def synthetic(seed: int = 0, samples: int = 2000, num_classes: int = 10, size: int = 8) -> Split:
    """Separable Gaussian blobs shaped like digits, for fast tests and scale runs."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.5, 0.25, size=(num_classes, 1, size, size)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=samples)
    noise = rng.normal(0.0, 0.15, size=(samples, 1, size, size)).astype(np.float32)
    images = np.clip(centres[labels] + noise, 0.0, 1.0)
    return stratified("synthetic", images, labels.astype(np.int64), num_classes, seed)


def stratified(
    name: str, images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int
) -> Split:
    """Stratified, seeded train/test split: the test split is the server's held-out data."""
    rng = np.random.default_rng(seed)
    test_idx: list[int] = []
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        test_idx.extend(members[: round(len(members) * TEST_FRACTION)].tolist())
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    return Split(
        name=name,
        x_train=images[~is_test],
        y_train=labels[~is_test],
        x_test=images[is_test],
        y_test=labels[is_test],
        num_classes=num_classes,
    )


BUNDLED: dict[str, Callable[[int], Split]] = {"digits": digits, "synthetic": synthetic}
