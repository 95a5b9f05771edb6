"""Aggregation maths: distances measured against a packed anchor equal the element-wise
definition, leave the update untouched and see every non-finite value; accumulation
adds in float64 without a converted copy, bit for bit as the explicit conversion would."""

from __future__ import annotations

import math

import pytest
import torch

from fedgate.core.aggregation import (
    PACK_ELEMENTS,
    Anchor,
    accumulate,
    distance,
    norm,
    zeros_accumulator,
)


def mixed_model(seed: int) -> dict[str, torch.Tensor]:
    """Small tensors (packed), a large one between them (measured alone), an integer
    buffer (never measured), and three float dtypes."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "conv": torch.randn(16, 3, 3, 3, generator=generator),
        "big": torch.randn(PACK_ELEMENTS + 7, generator=generator),
        "half": torch.randn(40, generator=generator).half(),
        "steps": torch.tensor(seed, dtype=torch.int64),
        "wide": torch.randn(PACK_ELEMENTS - 100, generator=generator).double(),
        "bias": torch.randn(5, generator=generator).double(),  # alone in the last pack
    }


def elementwise_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    squares = [
        (x - y) ** 2
        for name, t in b.items()
        if t.is_floating_point()
        for x, y in zip(
            a[name].double().flatten().tolist(), t.double().flatten().tolist(), strict=True
        )
    ]
    return math.sqrt(math.fsum(squares))


def test_the_anchor_measures_as_the_elementwise_definition() -> None:
    base, update = mixed_model(0), mixed_model(1)
    anchor = Anchor(base)
    expected = elementwise_distance(update, base)
    assert anchor.distance(update) == pytest.approx(expected, rel=1e-12)
    assert distance(update, base) == anchor.distance(update)  # one definition
    zeros = {k: torch.zeros_like(v) for k, v in base.items()}
    assert anchor.norm == pytest.approx(elementwise_distance(base, zeros), rel=1e-12)
    assert norm(base) == anchor.norm
    assert anchor.distance(base) == 0.0


def test_measuring_leaves_the_update_and_the_anchor_untouched() -> None:
    base, update = mixed_model(0), mixed_model(1)
    kept_base = {k: v.clone() for k, v in base.items()}
    kept_update = {k: v.clone() for k, v in update.items()}
    anchor = Anchor(base)
    first = anchor.distance(update)
    assert anchor.distance(update) == first  # "bias" is float64: its cast is no copy
    for kept, now in ((kept_base, base), (kept_update, update)):
        assert all(torch.equal(kept[k], now[k]) for k in kept)


@pytest.mark.parametrize("name", ["conv", "big", "half", "wide", "bias"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_value_anywhere_makes_the_distance_non_finite(name: str, value: float) -> None:
    base, update = mixed_model(0), mixed_model(1)
    update[name].view(-1)[3] = value
    assert not math.isfinite(Anchor(base).distance(update))


def test_accumulating_without_a_cast_is_bit_identical_to_casting_first() -> None:
    model = {**mixed_model(0), "bf": torch.randn(33).bfloat16()}
    fast, explicit = zeros_accumulator(model), zeros_accumulator(model)
    for seed in range(1, 20):
        update = {**mixed_model(seed), "bf": torch.randn(33).bfloat16() * 10 ** (seed % 7 - 3)}
        weight = float(seed * 37 % 11 + 1)
        accumulate(fast, update, weight)
        for name, total in explicit.items():
            total.add_(update[name].to(torch.float64), alpha=weight)
    assert all(torch.equal(fast[k], explicit[k]) for k in fast)
