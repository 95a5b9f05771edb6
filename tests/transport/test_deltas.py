"""Deltas over every transport: references travel, updates as deltas, bad references refused."""

from __future__ import annotations

import pytest
import torch

from fedgate.codecs import get_codec
from fedgate.core import delta
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import JoinRequest, Update
from fedgate.core.transport import Session
from fedgate.errors import Conflict, RoundClosed
from tests.conftest import tiny_model, until
from tests.transport.conftest import TRANSPORTS, serving

CODEC = "bf16-zstd"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_models_and_updates_travel_as_deltas(transport: str) -> None:
    codec = get_codec(CODEC)
    federation = Federation(tiny_model(1.0), RunConfig(rounds=3, min_clients=1))
    async with serving(federation, transport) as make_transport:
        client = make_transport()
        federation.start()
        session = Session.from_ack(await client.join(JoinRequest("d", CODEC, 10)))
        task = await client.next_task(session, 5.0)
        first = await client.fetch_model(session, task.model_version, CODEC)
        held = codec.decode(first.payload)
        assert first.ref and not first.base_ref
        trained = {**held, "w": held["w"] + 0.5}
        change = codec.encode(delta.difference(trained, held))
        update = Update(task.round_id, task.model_version, 10, CODEC, change, base_ref=first.ref)
        await client.submit_update(session, update)
        await until(lambda: federation.models.version == 1)
        assert torch.allclose(federation.models.current["w"], torch.full((2, 3), 1.5))

        task = await client.next_task(session, 5.0)
        second = await client.fetch_model(session, task.model_version, CODEC, first.ref)
        assert second.base_ref == first.ref and second.ref != first.ref
        held = delta.apply(held, codec.decode(second.payload))
        assert torch.equal(held["w"], federation.models.reference(second.ref).weights["w"])

        stale = Update(task.round_id, task.model_version, 10, CODEC, change, base_ref=first.ref)
        with pytest.raises(RoundClosed, match="trained from version 0"):
            await client.submit_update(session, stale)
        unknown = Update(task.round_id, task.model_version, 10, CODEC, change, base_ref="9.9")
        with pytest.raises(Conflict, match="unknown or has expired"):
            await client.submit_update(session, unknown)
        assert federation.round is not None and federation.round.aggregator.count == 0
