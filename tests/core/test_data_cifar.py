"""CIFAR-10 and CIFAR-100 read from directories in the distributed python-batch format."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fedgate.core.data import CROP_AND_FLIP, DATA_DIR_ENV, load_dataset
from fedgate.core.trainers import build_trainer
from fedgate.errors import ConfigError, DataError
from tests.core.cifar_files import CIFAR10_NAMES, pickled, write_cifar10, write_cifar100


def as_images(rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rows.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)


@pytest.mark.parametrize("py2", [True, False], ids=["python2-batches", "python3-batches"])
def test_cifar10_reads_every_pixel_and_label_as_written(tmp_path: Path, py2: bool) -> None:
    written = write_cifar10(tmp_path, per_batch=6, test=10, py2=py2)
    data = load_dataset("cifar10", 0, tmp_path)
    assert torch.equal(data.x_train, as_images(written["train"]))  # batches 1..5 in order
    assert torch.equal(data.x_test, as_images(written["test"]))
    assert data.y_train.tolist() == written["train_labels"].tolist()
    assert data.y_test.tolist() == written["test_labels"].tolist()
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert (data.name, data.num_classes, list(data.classes)) == ("cifar10", 10, CIFAR10_NAMES)
    assert data.augmentation == CROP_AND_FLIP
    spec = data.model_spec
    assert (spec.in_channels, spec.image_size, spec.num_classes) == (3, 32, 10)
    assert spec.mean == (0.4914, 0.4822, 0.4465) and spec.std == (0.2470, 0.2435, 0.2616)


def test_the_extracted_folder_itself_and_the_environment_serve_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cifar10(tmp_path)
    by_parent = load_dataset("cifar10", 0, tmp_path)
    by_folder = load_dataset("cifar10", 0, str(tmp_path / "cifar-10-batches-py"))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    by_env = load_dataset("cifar10", 0)
    for other in (by_folder, by_env):
        assert torch.equal(other.x_train, by_parent.x_train)
        assert torch.equal(other.y_test, by_parent.y_test)


def test_cifar100_has_its_100_fine_labels(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path, train=120, test=20)
    data = load_dataset("cifar100", 0, tmp_path)
    assert torch.equal(data.x_train, as_images(written["train"]))
    assert data.y_train.tolist() == written["train_labels"].tolist()
    assert data.y_test.tolist() == written["test_labels"].tolist()
    assert data.num_classes == 100 and data.classes[:2] == ("fine0", "fine1")
    assert data.model_spec.num_classes == 100 and data.augmentation == CROP_AND_FLIP


def test_no_directory_at_all_names_the_flag_and_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(DataError, match=f"--data-dir DIR or set {DATA_DIR_ENV}"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar100", 0, "/nonexistent/data")
    with pytest.raises(ConfigError, match="cifar10, cifar100, imagefolder"):
        load_dataset("cifar1000")


def test_missing_files_are_named_with_the_expected_ones(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    (folder / "batches.meta").unlink()
    with pytest.raises(DataError) as caught:
        load_dataset("cifar10", 0, tmp_path)
    message = str(caught.value)
    expected = "data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, "
    assert expected + "test_batch, batches.meta" in message
    assert f"missing in {folder}: data_batch_3, batches.meta" in message
    assert "cifar-10-python.tar.gz" in message and "never downloads" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=re.escape(f"missing in {empty}: train, test, meta")):
        load_dataset("cifar100", 0, empty)


def rewrite(path: Path, batch: dict[bytes, object]) -> None:
    path.write_bytes(pickled(batch))


@pytest.mark.parametrize(
    ("batch", "reason"),
    [
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "one label per image"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "from 0 to 9"),
        ({b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]}, "rows of 3072"),
        ({b"data": np.zeros(3072, np.uint8), b"labels": [0]}, "rows of 3072"),
        ({b"labels": [0]}, "rows of 3072"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [b"cat"]}, "from 0 to 9"),
    ],
    ids=["short-labels", "label-range", "row-size", "one-dimension", "no-data", "text-label"],
)
def test_malformed_batches_are_refused_naming_the_file(
    tmp_path: Path, batch: dict[bytes, object], reason: str
) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    rewrite(path, batch)
    with pytest.raises(DataError, match=f"{re.escape(str(path))}: .*{reason}"):
        load_dataset("cifar10", 0, tmp_path)


def test_class_names_must_match_the_data_set(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    rewrite(meta, {b"label_names": [b"cat", b"dog"]})
    with pytest.raises(DataError, match="must name 10 classes"):
        load_dataset("cifar10", 0, tmp_path)


def test_clients_get_the_augmentation_and_disjoint_parts(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=8)
    data = load_dataset("cifar10", 0, tmp_path)
    trainers = [build_trainer(data, "cnn", spec="iid", index=i, of=2, seed=0) for i in range(2)]
    assert all(t.augmentation == CROP_AND_FLIP for t in trainers)
    assert sum(t.num_examples for t in trainers) == len(data.x_train) == 40
    digits = build_trainer(load_dataset("digits"), "cnn", spec="iid", index=0, of=2, seed=0)
    assert digits.augmentation is None
