"""A ResNet-50 in fp32 (~94 MB) moves down and up over every transport."""

from __future__ import annotations

import pytest
import torch

from fedgate.codecs import get_codec
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import JoinRequest, TaskKind, Update
from fedgate.core.models import ModelSpec, build_model
from fedgate.core.training import state_dict_copy
from fedgate.core.transport import Session
from tests.conftest import until
from tests.transport.conftest import TRANSPORTS, serving


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resnet50_goes_down_and_an_update_comes_back(transport: str) -> None:
    weights = state_dict_copy(build_model("resnet50", ModelSpec(in_channels=3), seed=0))
    size = sum(t.numel() * t.element_size() for t in weights.values())
    assert size > 90e6
    federation = Federation(weights, RunConfig(rounds=1, min_clients=1))
    async with serving(federation, transport) as make_transport:
        client = make_transport()
        federation.start()
        session = Session.from_ack(await client.join(JoinRequest("big", "raw", 10)))
        task = await client.next_task(session, 10.0)
        assert task.kind is TaskKind.TRAIN
        model = await client.fetch_model(session, task.model_version, "raw")
        assert len(model.payload) > size
        received = get_codec("raw").decode(model.payload)
        assert all(torch.equal(received[k], weights[k]) for k in weights)
        trained = {k: v + 1 if v.is_floating_point() else v for k, v in received.items()}
        payload = get_codec("raw").encode(trained)
        update = Update(task.round_id, task.model_version, 10, "raw", payload)
        assert (await client.submit_update(session, update)).accepted == 1
        await until(lambda: federation.models.version == 1, within_s=60.0)
        key = "fc.weight"
        assert torch.allclose(federation.models.current[key], weights[key] + 1)
        assert federation.status().bytes_by_transport[transport].up == len(payload)
