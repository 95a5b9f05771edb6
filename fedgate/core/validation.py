"""Checks every update passes before it may touch the aggregate."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedgate.core.enrolment import MAX_NUM_EXAMPLES
from fedgate.errors import InvalidUpdate, NonFiniteUpdate


def check_layout(update: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> None:
    """Same tensor names, shapes and dtypes as the global model (values are not read)."""
    missing = [name for name in reference if name not in update]
    extra = [name for name in update if name not in reference]
    if missing or extra:
        raise InvalidUpdate(
            f"update tensors do not match the model: missing {_names(missing)}, "
            f"unexpected {_names(extra)}"
        )
    for name, expected in reference.items():
        got = update[name]
        if got.shape != expected.shape:
            raise InvalidUpdate(
                f"tensor {name!r} has shape {tuple(got.shape)}, model has {tuple(expected.shape)}"
            )
        if got.dtype != expected.dtype:
            raise InvalidUpdate(
                f"tensor {name!r} has dtype {got.dtype}, model has {expected.dtype}"
            )


def check_finite(update: Mapping[str, torch.Tensor]) -> None:
    """Only finite values in the floating-point tensors; else name the first that is not."""
    for name, got in update.items():
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            bad = int((~torch.isfinite(got)).sum())
            raise NonFiniteUpdate(f"tensor {name!r} holds {bad} NaN or infinite values")


def check_num_examples(num_examples: int, declared: int, limit: int = MAX_NUM_EXAMPLES) -> None:
    """The aggregation weight is an integer in [1, limit], and within what the client
    declared at join when it declared anything.

    ``limit`` is the client's enrolment key's limit (never above `MAX_NUM_EXAMPLES`): one
    client's weight, and so its share of the average, is bounded by what the operator
    granted, not by what the client claims.
    """
    if not isinstance(num_examples, int) or isinstance(num_examples, bool) or num_examples <= 0:
        raise InvalidUpdate(f"num_examples must be a positive integer, got {num_examples!r}")
    if declared and num_examples > declared:
        raise InvalidUpdate(
            f"num_examples {num_examples} exceeds the {declared} the client declared at join"
        )
    bound = min(limit, MAX_NUM_EXAMPLES)
    if num_examples > bound:
        raise InvalidUpdate(f"num_examples {num_examples} exceeds this client's limit of {bound}")


def _names(names: list[str], limit: int = 5) -> str:
    if not names:
        return "none"
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
