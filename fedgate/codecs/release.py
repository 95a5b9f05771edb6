"""Refusals that let go of what the refused payload cost, at once.

An exception keeps alive every frame it passed through, and each frame its locals:
the decompressed buffers and half-built tensors of the payload it refuses. Where a frame
also refers back to the exception (a worker pool's future holding it, a handler's
``except ... as exc``, a chained ``__context__``), the lot is a reference cycle that only
the garbage collector frees, so a few refused bombs in a row stay resident. `refusing`
cuts a refusal loose before it leaves the codec: it clears the locals of every frame it
passed through and drops its traceback and chained exceptions. The message and type,
all a caller acts on, stay.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

from fedgate.codecs.base import Buffer, DecodeLimits, TensorDict
from fedgate.errors import CodecError, InvalidUpdate

Decoder = Callable[[Buffer, DecodeLimits], TensorDict]


def refusing(decode: Decoder, data: Buffer, limits: DecodeLimits) -> TensorDict:
    """``decode(data, limits)``; a refusal is re-raised holding no frame or buffer.

    Only refusals (`CodecError`, `InvalidUpdate`) are cut loose: any other exception is a
    bug, and its traceback is what the server logs to find it.
    """
    try:
        return decode(data, limits)
    except (CodecError, InvalidUpdate):
        # No `as` name: a local bound to the exception would make this very frame,
        # which the re-raise puts in its traceback, part of a new cycle.
        raise released(sys.exc_info()[1]) from None


def released(error: BaseException | None) -> BaseException:
    """``error`` with the frames it passed through cleared and its chain dropped."""
    assert error is not None  # only called while an exception is being handled
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        link = pending.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        traceback.clear_frames(link.__traceback__)  # skips frames still running
        pending += [link.__cause__, link.__context__]
        link.__traceback__ = link.__cause__ = link.__context__ = None
    return error
