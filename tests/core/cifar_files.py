"""Small data directories in the formats fedgate reads, written by the tests themselves.

CIFAR batches are written as the distributed ones are: pickled by Python 2 (protocol 2,
every string a Python 2 ``str``, numpy arrays reduced through
``numpy.core.multiarray._reconstruct``), or, with ``py2=False``, by today's Python and
numpy (protocol 4, ``numpy._core``). Writing pickles is fine; reading them is what fedgate
must do safely.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def pickled(obj: Any, *, py2: bool = True) -> bytes:
    """``obj`` pickled as Python 2's cPickle did (``py2``), or as Python 3 does today."""
    if not py2:
        return pickle.dumps(obj, protocol=4)
    return b"\x80\x02" + py2_ops(obj) + b"."


def py2_ops(value: Any) -> bytes:
    """The protocol 2 opcodes for a batch's values, every string a Python 2 ``str``."""
    if isinstance(value, dict):
        items = b"".join(py2_ops(k) + py2_ops(v) for k, v in value.items())
        return b"}(" + items + b"u"
    if isinstance(value, list):
        return b"](" + b"".join(py2_ops(item) for item in value) + b"e"
    if isinstance(value, str | bytes):
        data = value.encode("latin-1") if isinstance(value, str) else value
        if len(data) < 256:
            return b"U" + bytes([len(data)]) + data  # SHORT_BINSTRING
        return b"T" + struct.pack("<i", len(data)) + data  # BINSTRING
    if isinstance(value, int):
        return b"J" + struct.pack("<i", value)  # BININT
    if isinstance(value, np.ndarray):
        return array_ops(value.shape, value.tobytes())
    raise TypeError(f"no Python 2 form here for {type(value).__name__}")


def array_ops(shape: tuple[int, ...], raw: bytes, dtype: bytes = b"u1") -> bytes:
    """An array as numpy 1 pickled one: ``_reconstruct(ndarray, (0,), 'b')``, then BUILD
    with (1, shape, dtype, fortran, raw); the dtype ``dtype(code, 0, 1)`` with uint8's
    state."""
    shape_ops = b"(" + b"".join(py2_ops(d) for d in shape) + b"t"
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
        + b"(K\x01"
        + shape_ops
        + b"cnumpy\ndtype\n"
        + py2_ops(dtype)
        + b"K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89"
        + py2_ops(raw)
        + b"tb"
    )


def images(count: int, seed: int) -> np.ndarray:
    """``count`` random CIFAR rows: (count, 3072) uint8, planes R, G, B of 32 x 32."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3072), dtype=np.uint8)


def labels(count: int, classes: int, seed: int) -> list[int]:
    """Every class at least once when count allows, the rest at random."""
    drawn = np.random.default_rng(seed + 1).integers(0, classes, size=count).tolist()
    return [(i + seed) % classes if i < classes else drawn[i] for i in range(count)]


def write_cifar10(
    root: Path, per_batch: int = 6, test: int = 10, *, py2: bool = True
) -> dict[str, np.ndarray]:
    """``root/cifar-10-batches-py`` with 5 training batches of ``per_batch`` images and a
    test batch of ``test``; returns the rows and labels written (train, test)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def key(name: str) -> str | bytes:
        return name.encode() if py2 else name

    rows, tags = [], []
    for i in range(1, 6):
        data, batch_labels = images(per_batch, i), labels(per_batch, 10, i)
        batch = {
            key("batch_label"): key(f"training batch {i} of 5"),
            key("labels"): batch_labels,
            key("data"): data,
            key("filenames"): [key(f"img_{i}_{n}.png") for n in range(per_batch)],
        }
        (folder / f"data_batch_{i}").write_bytes(pickled(batch, py2=py2))
        rows.append(data)
        tags += batch_labels
    test_data, test_labels = images(test, 99), labels(test, 10, 99)
    batch = {key("batch_label"): key("testing batch 1 of 1"), key("labels"): test_labels}
    batch[key("data")] = test_data
    (folder / "test_batch").write_bytes(pickled(batch, py2=py2))
    meta = {
        key("num_cases_per_batch"): per_batch,
        key("label_names"): [key(name) for name in CIFAR10_NAMES],
        key("num_vis"): 3072,
    }
    (folder / "batches.meta").write_bytes(pickled(meta, py2=py2))
    return {
        "train": np.concatenate(rows),
        "train_labels": np.asarray(tags),
        "test": test_data,
        "test_labels": np.asarray(test_labels),
    }


def write_cifar100(root: Path, train: int = 120, test: int = 20) -> dict[str, np.ndarray]:
    """``root/cifar-100-python`` (train, test, meta), Python 2 style."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written: dict[str, np.ndarray] = {}
    for name, count, seed in (("train", train, 1), ("test", test, 2)):
        data, fine = images(count, seed), labels(count, 100, seed)
        batch = {
            b"filenames": [b"x.png"] * count,
            b"batch_label": name.encode(),
            b"fine_labels": fine,
            b"coarse_labels": [label // 5 for label in fine],
            b"data": data,
        }
        (folder / name).write_bytes(pickled(batch))
        written[name], written[f"{name}_labels"] = data, np.asarray(fine)
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    (folder / "meta").write_bytes(pickled(meta))
    return written


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def write_jpeg(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)
