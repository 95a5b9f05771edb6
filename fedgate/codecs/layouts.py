"""Checks of what a payload declares against the layout the decoder was handed.

The server knows every tensor of its model, so an update may declare exactly those
tensors: these checks run on a payload's header (or document) before any body is
decompressed or any tensor allocated, and refuse the rest as `UpdateLayoutMismatch`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fedgate.codecs.base import NAMED_EXTRAS, DecodeLimits, TensorLayout, itemsize
from fedgate.errors import DecodedSizeExceeded, UpdateLayoutMismatch

if TYPE_CHECKING:  # the container checks its specs here: a runtime import would be circular
    from fedgate.codecs.container import TensorSpec

ALIGN = 8
_SHOWN = 5  # names listed in a message; the rest are counted


def check_count(codec: str, count: int, limits: DecodeLimits) -> None:
    """Refuse far more tensor entries than the limits allow, before any is parsed.

    Against a layout, a few extra entries are let through to `check_layout`, which names
    them; beyond that, the count alone is refused.
    """
    if limits.layout is not None:
        if count > len(limits.layout) + NAMED_EXTRAS:
            raise UpdateLayoutMismatch(
                f"codec {codec!r}: update has {count} tensors, the model has {len(limits.layout)}"
            )
    elif count > limits.max_tensors:
        raise DecodedSizeExceeded(
            codec, f"{count} tensors exceed the limit of {limits.max_tensors}"
        )


def check_layout(codec: str, specs: Sequence[TensorSpec], limits: DecodeLimits) -> None:
    """Refuse ``specs`` (names unique) unless they are exactly the layout, if there is one."""
    expected = limits.layout_by_name
    if expected is None:
        return
    declared = {spec.name for spec in specs}
    missing = [name for name in expected if name not in declared]
    extra = [spec.name for spec in specs if spec.name not in expected]
    if missing or extra:
        raise UpdateLayoutMismatch(
            f"codec {codec!r}: update tensors do not match the model: missing "
            f"{_names(missing)}, unexpected {_names(extra)}"
        )
    for spec in specs:
        model = expected[spec.name]
        if spec.shape != model.shape:
            raise UpdateLayoutMismatch(
                f"codec {codec!r}: tensor {spec.name!r} has shape {spec.shape}, "
                f"model has {model.shape}"
            )
        if spec.dtype != model.dtype:
            raise UpdateLayoutMismatch(
                f"codec {codec!r}: tensor {spec.name!r} has dtype {spec.dtype}, "
                f"model has {model.dtype}"
            )


def body_bytes(layout: Sequence[TensorLayout], wire_for: Callable[[str], str]) -> int:
    """The buffer bytes of a container holding exactly ``layout``, each buffer padded."""
    return sum(_aligned(entry.numel * itemsize(wire_for(entry.dtype))) for entry in layout)


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def _names(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(repr(name[:64]) for name in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
