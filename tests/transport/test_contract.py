"""Contract tests: every transport x every codec behaves like the in-process federation.

Parametrized from the registries, so a new codec or transport is covered automatically.
"""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

from fedgate.codecs import CODECS, get_codec
from fedgate.core.client import FederatedClient
from fedgate.core.config import RunConfig
from fedgate.core.data import load_dataset
from fedgate.core.factory import build_federation, build_trainer
from fedgate.core.federation import Federation
from fedgate.core.messages import JoinRequest, Task, TaskKind, Update
from fedgate.core.transport import Session, Transport
from fedgate.errors import (
    CodecError,
    FedgateError,
    InvalidUpdate,
    NonFiniteUpdate,
    PayloadTooLarge,
    RoundClosed,
    Unauthorized,
    UnknownClient,
    UnknownCodec,
)
from tests.conftest import tiny_model, until
from tests.transport.conftest import TRANSPORTS, serving

CODEC_NAMES = sorted(CODECS)
ROUNDS, CLIENTS = 4, 3
_inproc_accuracy: dict[str, float] = {}


async def federate(transport: str, codec: str) -> float:
    """A whole 3-client, 4-round federation on digits; returns the final accuracy."""
    dataset = load_dataset("digits", seed=0)
    config = RunConfig(rounds=ROUNDS, min_clients=CLIENTS, seed=0)
    federation = build_federation(dataset, "cnn", config)
    async with serving(federation, transport) as make_transport:
        run = federation.start()
        clients = [
            FederatedClient(
                make_transport(),
                build_trainer(dataset, "cnn", spec="iid", index=i, of=CLIENTS, seed=0),
                name=f"client-{i}",
                codec=codec,
            )
            for i in range(CLIENTS)
        ]
        reports = await asyncio.gather(*(c.run() for c in clients))
        status = await run
    assert [len(r.rounds) for r in reports] == [ROUNDS] * CLIENTS
    assert status.rounds_completed == ROUNDS
    traffic = status.bytes_by_transport[transport]
    assert traffic.up > 0 and traffic.down > 0
    assert status.bytes_by_codec[codec] == traffic
    return status.accuracy


@pytest.mark.parametrize("codec", CODEC_NAMES)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_whole_federation_gives_the_same_result_on_every_transport(
    transport: str, codec: str
) -> None:
    if codec not in _inproc_accuracy:
        _inproc_accuracy[codec] = await federate("inproc", codec)
    accuracy = (
        await federate(transport, codec) if transport != "inproc" else (_inproc_accuracy[codec])
    )
    assert accuracy > 0.3  # it learned: chance is 0.1
    # same seed, same data, same codec: only the order updates are summed in may differ
    assert math.isclose(accuracy, _inproc_accuracy[codec], abs_tol=0.02)


async def open_round(transport: Transport, federation: Federation) -> tuple[Session, Task]:
    federation.start()
    ack = await transport.join(JoinRequest(name="probe", codec="raw", num_examples=100))
    session = Session.from_ack(ack)
    task = await transport.next_task(session, 5.0)
    assert task.kind is TaskKind.TRAIN
    return session, task


def update_for(task: Task, codec: str, payload: bytes, num_examples: int = 10) -> Update:
    return Update(task.round_id, task.model_version, num_examples, codec, payload)


def bad_updates(task: Task, codec: str) -> list[tuple[str, Update, type[FedgateError]]]:
    encode = get_codec(codec).encode
    wrong_shape = {**tiny_model(), "w": torch.zeros(3, 2)}
    with_nan = {**tiny_model(), "b": torch.tensor([0.0, math.nan, 0.0])}
    return [
        ("malformed", update_for(task, codec, b"\x00not a payload"), CodecError),
        ("wrong shape", update_for(task, codec, encode(wrong_shape)), InvalidUpdate),
        ("NaN", update_for(task, codec, encode(with_nan)), NonFiniteUpdate),
        ("closed round", Update("99.1", 0, 10, codec, encode(tiny_model())), RoundClosed),
        ("unknown codec", update_for(task, "pickle", b"\x80\x04"), UnknownCodec),
        ("oversized", update_for(task, "raw", bytes(70_000)), PayloadTooLarge),
    ]


@pytest.mark.parametrize("codec", CODEC_NAMES)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bad_updates_get_the_same_error_everywhere_and_change_nothing(
    transport: str, codec: str
) -> None:
    federation = Federation(
        tiny_model(), RunConfig(rounds=1, min_clients=1), max_update_bytes=64_000
    )
    async with serving(federation, transport, max_update_bytes=64_000) as make_transport:
        client = make_transport()
        session, task = await open_round(client, federation)
        before = {k: v.clone() for k, v in federation.models.current.items()}
        for label, update, error in bad_updates(task, codec):
            with pytest.raises(error):
                await client.submit_update(session, update)
            assert all(torch.equal(before[k], v) for k, v in federation.models.current.items())
            assert federation.round is not None and federation.round.aggregator.count == 0, label
        good = get_codec(codec).encode(tiny_model(1.0))
        receipt = await client.submit_update(session, update_for(task, codec, good))
        assert receipt.accepted == 1
        await until(lambda: federation.models.version == 1)
        assert torch.allclose(federation.models.current["w"], torch.ones(2, 3), atol=1e-2)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unknown_clients_and_wrong_tokens_are_refused_everywhere(transport: str) -> None:
    federation = Federation(tiny_model(), RunConfig(rounds=1, min_clients=1))
    async with serving(federation, transport) as make_transport:
        client = make_transport()
        session, _ = await open_round(client, federation)
        with pytest.raises(UnknownClient):
            await client.heartbeat(Session("c404-nobody", session.token))
        with pytest.raises(Unauthorized):
            await client.next_task(Session(session.client_id, "forged"), 0.1)
        with pytest.raises(UnknownCodec):
            await client.fetch_model(session, 0, "gzip")
        with pytest.raises(UnknownCodec):
            await client.join(JoinRequest(name="x", codec="gzip"))
        await client.leave(session)
        with pytest.raises(UnknownClient, match="left"):
            await client.heartbeat(session)
