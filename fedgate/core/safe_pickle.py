"""Reading the pickles data sets ship in (CIFAR's python batches) without running them.

A pickle is a program: `pickle.load` calls whatever globals the stream names, with whatever
arguments it builds, so a crafted "data batch" (``os.system`` behind a REDUCE) runs code the
moment it is loaded. `load_pickle` reads what the CIFAR batches hold and nothing else:
dicts, lists, strings, bytes, integers and C-ordered uint8 numpy arrays.

Why this is safe:
- A stream reaches a callable only through `Unpickler.find_class` (the GLOBAL,
  STACK_GLOBAL, INST and OBJ opcodes ask it; REDUCE, NEWOBJ and BUILD only act on what is
  already on the stack), or through the EXT opcodes (copyreg's extension registry, whose
  cache of earlier lookups bypasses find_class): a stream holding EXT, persistent-id or
  out-of-band buffer opcodes is refused by a scan (`pickletools.genops`, which only
  parses) before anything is loaded. `_ArrayUnpickler.find_class` refuses every name but the
  three a numpy array's pickle names, and for those it returns stand-ins of our own, never
  numpy's: numpy's ``_reconstruct``, ``ndarray`` and ``dtype`` take arbitrary types,
  shapes and object dtypes (whose pickles call further globals), ours take one exact form.
- The stand-ins check every argument: the dtype must be ``u1`` with uint8's exact state,
  the array version 1, C order, a shape of at most `MAX_DIMS` non-negative dimensions
  whose product is the raw data's length. The array is then `numpy.frombuffer` over bytes
  the file held (no allocation chosen by the stream), and every other pickle opcode only
  builds plain containers and literals, each bounded by the bytes that encode it.
- BUILD calls ``__setstate__`` on our stand-ins (which check their state) and fails on
  anything else: built-in containers, and the stand-ins the stream can reach by name
  (instances with empty ``__slots__``, not functions), have no ``__setstate__``, no
  ``__dict__`` and no attributes to set.
- Error messages never repr what the stream built (a repr can be far larger than the
  bytes that made it); they name types and sizes.
- The file's size is checked before it is read (`max_bytes`).
- What the stream built is then checked to be exactly the shape a batch has
  (`_clean`): a dict whose values are integers, strings, bytes, lists of those, or arrays.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from pathlib import Path
from typing import NoReturn

import numpy as np

from fedgate.errors import DataError

MAX_DIMS = 4
MAX_DIM = 1 << 31
# the names a numpy array's pickle uses: numpy < 2 wrote numpy.core, numpy 2 numpy._core
RECONSTRUCT = frozenset(
    {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
)
NDARRAY = ("numpy", "ndarray")
DTYPE = ("numpy", "dtype")
UINT8_STATE = (3, "|", None, None, None, -1, -1, 0)  # what numpy pickles as uint8's state
REFUSED_OPCODES = frozenset(
    {"EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID", "NEXT_BUFFER", "READONLY_BUFFER"}
)

PickleValue = int | str | bytes | list[int | str | bytes] | np.ndarray


class UnsafePickle(pickle.UnpicklingError):
    """The stream asks for something a data batch never holds."""


def _refuse(what: str) -> NoReturn:
    raise UnsafePickle(what)


def _text(value: object) -> object:
    """A Python 2 ``str`` arrives as bytes (``encoding="bytes"``): compare it as text."""
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _NdarrayMarker:
    """Stands for ``numpy.ndarray`` in ``_reconstruct``'s arguments; builds nothing."""

    __slots__ = ()


class _Uint8:
    """Stands for ``numpy.dtype("u1")``; only uint8's exact pickled state is accepted."""

    __slots__ = ("checked",)

    def __init__(self) -> None:
        self.checked = False

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or tuple(_text(v) for v in state) != UINT8_STATE:
            _refuse(f"a dtype state other than uint8's ({_brief(state)})")
        self.checked = True


class _Dtype:
    """Stands for ``numpy.dtype``: ``dtype("u1", False, True)`` and nothing else."""

    __slots__ = ()

    def __call__(self, code: object, align: object = False, copy: object = True) -> _Uint8:
        if _text(code) != "u1" or align not in (False, 0) or copy not in (True, 1):
            _refuse(f"a dtype other than uint8 ({_brief(code)})")
        return _Uint8()


class _ArrayStub:
    """Stands for the array ``_reconstruct`` makes; ``__setstate__`` builds the real one."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            _refuse("an array state of another form than numpy's version 1")
        _, shape, dtype, fortran, raw = state
        if not (isinstance(dtype, _Uint8) and dtype.checked):
            _refuse("an array whose dtype is not uint8")
        if fortran is not False or not isinstance(raw, bytes) or self.array is not None:
            _refuse("an array that is not C-ordered raw bytes, or one built twice")
        dims = _shape(shape)
        if math.prod(dims) != len(raw):  # what the shape declares is what the file holds
            _refuse(f"an array of shape {dims} over {len(raw)} bytes")
        self.array = np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def _shape(shape: object) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or not 1 <= len(shape) <= MAX_DIMS:
        _refuse(f"an array shape that is not 1 to {MAX_DIMS} dimensions")
    if not all(type(d) is int and 0 <= d < MAX_DIM for d in shape):
        _refuse("an array shape with a bad dimension")
    return tuple(shape)


class _Reconstruct:
    """Stands for ``_reconstruct``: ``_reconstruct(ndarray, (0,), b"b")`` and nothing else."""

    __slots__ = ()

    def __call__(self, cls: object, shape: object, typecode: object) -> _ArrayStub:
        if not isinstance(cls, _NdarrayMarker) or shape != (0,) or _text(typecode) != "b":
            _refuse("a _reconstruct call other than the one numpy's arrays make")
        return _ArrayStub()


def _brief(value: object) -> str:
    """What ``value`` is, in a few words, whatever its size."""
    if isinstance(value, str | bytes):
        return repr(value[:16]) + ("..." if len(value) > 16 else "")
    return type(value).__name__


_NDARRAY, _DTYPE, _RECONSTRUCT = _NdarrayMarker(), _Dtype(), _Reconstruct()


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) in RECONSTRUCT:
            return _RECONSTRUCT
        if (module, name) == NDARRAY:
            return _NDARRAY
        if (module, name) == DTYPE:
            return _DTYPE
        _refuse(f"refused global {_printable(module)}.{_printable(name)}")


def load_pickle(path: Path, max_bytes: int) -> dict[str, PickleValue]:
    """The dict pickled in ``path``, read safely (see the module's docstring); a
    `DataError` naming the file when it is larger than ``max_bytes``, unreadable, or holds
    anything but a data batch's plain values."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > max_bytes:
        raise DataError(f"{path} is larger than {max_bytes:,} bytes: not a data batch")
    try:
        _scan(data)
        # encoding="bytes": the CIFAR batches were pickled by Python 2, whose str is bytes
        loaded = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
        return _clean(loaded)
    except UnsafePickle as error:
        raise DataError(f"{path}: not a plain data batch ({error}); refusing to load it") from None
    except Exception as error:  # any fault of a broken stream is the file's
        raise DataError(f"{path} is not a readable pickle: {type(error).__name__}") from None


def _printable(name: str) -> str:
    return name[:80].encode("ascii", "backslashreplace").decode("ascii")


def _scan(data: bytes) -> None:
    """Refuse the opcodes that reach objects other than through `find_class`."""
    for opcode, _, position in pickletools.genops(data):
        if opcode.name in REFUSED_OPCODES:
            _refuse(f"refused opcode {opcode.name} at byte {position}")


def _clean(loaded: object) -> dict[str, PickleValue]:
    """``loaded`` with its stand-ins replaced by arrays, if it is a batch's plain dict."""
    if not isinstance(loaded, dict):
        _refuse(f"a {type(loaded).__name__} at the top, not a dict")
    cleaned: dict[str, PickleValue] = {}
    for key, value in loaded.items():
        name = _text(key)
        if not isinstance(name, str):
            _refuse(f"a {type(key).__name__} key")
        cleaned[name] = _value(name, value)
    return cleaned


def _value(name: str, value: object) -> PickleValue:
    if isinstance(value, _ArrayStub):
        if value.array is None:
            _refuse(f"{name!r}: an array without its data")
        return value.array
    if isinstance(value, str | bytes) or type(value) is int:
        return value
    if isinstance(value, list) and all(
        isinstance(item, str | bytes) or type(item) is int for item in value
    ):
        return value
    _refuse(f"{name!r} holds a {type(value).__name__}")
