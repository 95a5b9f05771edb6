"""Deltas: exact inverses, what bf16 loses without them, references that never drift."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
import torch

from fedgate.codecs import get_codec
from fedgate.core import delta
from fedgate.core.client import FederatedClient
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import TrainConfig
from fedgate.core.modelstore import ModelStore
from fedgate.core.training import TrainResult
from fedgate.errors import Conflict
from fedgate.transport.inproc import InProcTransport

# bf16 keeps 8 significant bits: near 1.0 its spacing is 2**-7, so +1e-4 rounds away.
NUDGE = 1e-4


class NudgeTrainer:
    """'Training' that moves every weight by NUDGE: a change below bf16's resolution."""

    num_examples = 10

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def train(self, weights: Mapping[str, torch.Tensor], config: TrainConfig) -> TrainResult:
        self.seen.append(weights["w"].clone())
        trained = {k: nudged(v) for k, v in weights.items()}
        return TrainResult(trained, self.num_examples, loss=0.0, accuracy=1.0)


def nudged(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype == torch.bool:
        return tensor
    return tensor + NUDGE if tensor.is_floating_point() else tensor + 1


def model() -> dict[str, torch.Tensor]:
    return {"w": torch.ones(64), "steps": torch.tensor(0), "mask": torch.tensor([True, False])}


def test_apply_inverts_difference_for_every_dtype() -> None:
    base = {**model(), "half": torch.randn(4).half()}
    new = {
        "w": base["w"] * 3,
        "steps": torch.tensor(7),
        "mask": torch.tensor([False, True]),
        "half": base["half"] + 1,
    }
    back = delta.apply(base, delta.difference(new, base))
    assert all(torch.equal(back[k], new[k]) and back[k].dtype == new[k].dtype for k in new)


async def run_rounds(deltas: bool, rounds: int = 6) -> tuple[Federation, list[NudgeTrainer]]:
    federation = Federation(model(), RunConfig(rounds=rounds, min_clients=2))
    trainers = [NudgeTrainer(), NudgeTrainer()]
    clients = [
        FederatedClient(InProcTransport(federation), t, f"c{i}", "bf16-zstd", deltas=deltas)
        for i, t in enumerate(trainers)
    ]
    run = federation.start()
    await asyncio.gather(*(c.run() for c in clients))
    await run
    await federation.close()
    return federation, trainers


async def test_bf16_full_weights_lose_small_updates_and_deltas_keep_them() -> None:
    full, _ = await run_rounds(deltas=False)
    assert torch.equal(full.models.current["w"], torch.ones(64))  # six rounds of progress lost
    kept, trainers = await run_rounds(deltas=True)
    expected = 1 + 6 * NUDGE
    assert torch.allclose(kept.models.current["w"], torch.full((64,), expected), rtol=1e-5)
    # the downlink too: each round the clients trained from the model as it really was
    starts = [float(w[0]) for w in trainers[0].seen]
    assert starts == pytest.approx([1 + r * NUDGE for r in range(6)], rel=1e-5)
    assert int(kept.models.current["steps"]) == 6


async def test_deltas_are_sent_against_what_the_client_holds() -> None:
    store = ModelStore(model())
    first = await store.encoded(0, "bf16-zstd")
    assert first.base_ref == "" and first.ref
    store.publish({**model(), "w": torch.full((64,), 1.0 + NUDGE)})
    second = await store.encoded(1, "bf16-zstd", have_ref=first.ref)
    again = await store.encoded(1, "bf16-zstd", have_ref=first.ref)
    assert second.base_ref == first.ref and again is second  # encoded once, shared
    codec = get_codec("bf16-zstd")
    held = delta.apply(codec.decode(first.payload), codec.decode(second.payload))
    assert torch.equal(held["w"], store.reference(second.ref).weights["w"])
    assert float(held["w"][0]) == pytest.approx(1 + NUDGE, rel=1e-4)


async def test_lossless_fetches_hold_the_version_itself_and_unknown_refs_get_full_models() -> None:
    store = ModelStore(model())
    raw = await store.encoded(0, "raw")
    assert raw.ref == "0" and store.reference("0").weights is store.current
    stranger = await store.encoded(0, "bf16-zstd", have_ref="no-such-ref")
    assert stranger.base_ref == ""


async def test_references_expire_with_their_versions() -> None:
    store = ModelStore(model())
    old = await store.encoded(0, "bf16-zstd")
    for step in range(1, 4):
        store.publish({**model(), "w": torch.full((64,), float(step))})
    with pytest.raises(Conflict, match="expired"):
        store.reference(old.ref)
    fresh = await store.encoded(3, "bf16-zstd", have_ref=old.ref)
    assert fresh.base_ref == ""  # too far behind: the full model


async def test_a_lossy_downlink_does_not_drift() -> None:
    """The server's reference equals the client's reconstruction bit for bit, every round."""
    store = ModelStore(model())
    codec = get_codec("bf16-zstd")
    sent = await store.encoded(0, "bf16-zstd")
    held = codec.decode(sent.payload)
    generator = torch.Generator().manual_seed(0)
    for version in range(1, 30):
        target = {**model(), "w": 1 + torch.randn(64, generator=generator) * 1e-3 * version}
        store.publish(target)
        sent = await store.encoded(version, "bf16-zstd", have_ref=sent.ref)
        change = target["w"] - held["w"]
        held = delta.apply(held, codec.decode(sent.payload))
        assert torch.equal(held["w"], store.reference(sent.ref).weights["w"])
        # the error is bf16's on this round's change alone: nothing accumulates
        error = (held["w"] - target["w"]).abs()
        assert bool((error <= 2**-8 * change.abs() + 2**-23 * target["w"].abs()).all())
