"""The CIFAR batch reader runs nothing a pickle asks for: only plain data and uint8 arrays."""

from __future__ import annotations

import copyreg
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedgate.core.safe_pickle import load_pickle
from fedgate.errors import DataError
from tests.core.cifar_files import array_ops, pickled

LIMIT = 1 << 20


class RunsCommand:
    """What an attacker pickles: unpickling it calls ``os.system``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


class CallsEval:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (eval, ("__import__('os').system('true')",))


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_batch_reads_back_as_written(tmp_path: Path) -> None:
    rows = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    for py2 in (True, False):
        batch = {"labels": [3, 7], "data": rows, "batch_label": "b", "num": 5}
        loaded = load_pickle(write(tmp_path / "b", pickled(batch, py2=py2)), LIMIT)
        assert np.array_equal(loaded["data"], rows)
        label = b"b" if py2 else "b"
        assert (loaded["labels"], loaded["batch_label"], loaded["num"]) == ([3, 7], label, 5)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_os_system_in_a_batch_is_refused_and_never_run(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "ran"
    payload = {"data": RunsCommand(f"touch {marker}"), "labels": [0]}
    path = write(tmp_path / "data_batch_1", pickle.dumps(payload, protocol=protocol))
    with pytest.raises(DataError, match=r"refused global (posix|os)\.system"):
        load_pickle(path, LIMIT)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the file is a real exploit: plain pickle runs it
    assert marker.exists()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (CallsEval(), "refused global builtins.eval"),
        ({"data": np.zeros(3, dtype=object)}, "a dtype other than uint8"),  # items: pickles
        ({"data": np.zeros(3, dtype=np.float64)}, "a dtype other than uint8"),
        ({"data": np.float32(1.0)}, "refused global numpy._core.multiarray.scalar"),
        ({"data": np.asfortranarray(np.zeros((2, 3), dtype=np.uint8))}, "not C-ordered"),
        ({"data": {1, 2}}, "'data' holds a set"),
        ({"data": (1, 2)}, "'data' holds a tuple"),
        ({"data": {"nested": 1}}, "'data' holds a dict"),
        ({"data": 1.5}, "'data' holds a float"),
        ({"labels": [1, None]}, "'labels' holds a list"),
        ([1, 2, 3], "a list at the top"),
    ],
    ids=str.split("eval object float64 scalar fortran set tuple dict float none list"),
)
def test_anything_but_plain_data_is_refused(tmp_path: Path, payload: object, reason: str) -> None:
    path = write(tmp_path / "b", pickle.dumps(payload, protocol=4))
    with pytest.raises(DataError, match=rf"\(.*{re.escape(reason)}.*\); refusing to load it"):
        load_pickle(path, LIMIT)


def test_the_newest_numpy_protocol_is_refused_by_name(tmp_path: Path) -> None:
    # protocol 5 pickles contiguous arrays through numpy._core.numeric._frombuffer
    data = pickle.dumps({"data": np.zeros(4, dtype=np.uint8)}, protocol=5)
    with pytest.raises(DataError, match="_frombuffer"):
        load_pickle(write(tmp_path / "b", data), LIMIT)


def test_extension_codes_are_refused_even_when_registered(tmp_path: Path) -> None:
    # an EXT opcode names a global by number; copyreg caches what a number resolved to and
    # serves it without find_class, so the opcode itself is refused
    copyreg.add_extension("posix", "system", 0x7AB)
    try:
        data = pickle.dumps({"data": RunsCommand("true")}, protocol=2)
    finally:
        copyreg.remove_extension("posix", "system", 0x7AB)
    assert pickle.EXT2 in data  # the global travels as a number, not as a name
    copyreg.add_extension("posix", "system", 0x7AB)
    try:
        with pytest.raises(DataError, match="refused opcode EXT2"):
            load_pickle(write(tmp_path / "b", data), LIMIT)
    finally:
        copyreg.remove_extension("posix", "system", 0x7AB)


def reconstruct_call(shape: tuple[int, ...], raw: bytes, dtype: bytes = b"u1") -> bytes:
    """A hand-written protocol 2 pickle of {b'data': array} with the given parts."""
    return b"\x80\x02}U\x04data" + array_ops(shape, raw, dtype) + b"s."


def test_the_hand_written_array_form_is_the_one_accepted(tmp_path: Path) -> None:
    loaded = load_pickle(write(tmp_path / "b", reconstruct_call((2, 3), bytes(range(6)))), LIMIT)
    assert loaded["data"].tolist() == [[0, 1, 2], [3, 4, 5]]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("shape", "raw", "dtype", "reason"),
    [
        ((2, 3), bytes(5), b"u1", "over 5 bytes"),  # the shape asks for more than is there
        ((1 << 20, 1 << 20), bytes(6), b"u1", "over 6 bytes"),  # 1 TB declared, 6 bytes held
        ((-1, 6), bytes(6), b"u1", "bad dimension"),
        ((1,) * 5, bytes(1), b"u1", "1 to 4 dimensions"),
        ((2, 3), bytes(6), b"O", "other than uint8"),
        ((2, 3), bytes(6), b"f8", "other than uint8"),
    ],
)
def test_arrays_are_checked_before_they_exist(
    tmp_path: Path, shape: tuple[int, ...], raw: bytes, dtype: bytes, reason: str
) -> None:
    path = write(tmp_path / "b", reconstruct_call(shape, raw, dtype))
    with pytest.raises(DataError, match=reason):
        load_pickle(path, LIMIT)


def test_size_and_garbage_are_refused_with_the_file_named(tmp_path: Path) -> None:
    big = write(tmp_path / "big", pickled({"data": np.zeros(LIMIT, dtype=np.uint8)}))
    with pytest.raises(DataError, match=f"{re.escape(str(big))} is larger than"):
        load_pickle(big, LIMIT)
    for junk in (b"", b"not a pickle at all", b"\x80\x02}q\x00(U\x04data"):
        with pytest.raises(DataError, match="not a readable pickle"):
            load_pickle(write(tmp_path / "junk", junk), LIMIT)
    with pytest.raises(DataError, match="cannot read"):
        load_pickle(tmp_path / "absent", LIMIT)


@pytest.mark.parametrize("name", [b"cnumpy\ndtype\n", b"cnumpy.core.multiarray\n_reconstruct\n"])
def test_the_stand_ins_cannot_be_changed_by_a_stream(tmp_path: Path, name: bytes) -> None:
    # BUILD on what find_class returned, with a dict state and with a slot state
    for state in (b"}U\x08__call__K\x01s", b"N}U\x0b__defaults__K\x01s\x86"):
        path = write(tmp_path / "b", b"\x80\x02}U\x04data" + name + state + b"bs.")
        with pytest.raises(DataError):
            load_pickle(path, LIMIT)
    rows = np.ones((1, 3072), dtype=np.uint8)
    batch = pickled({"data": rows, "labels": [1]})
    assert np.array_equal(load_pickle(write(tmp_path / "ok", batch), LIMIT)["data"], rows)
