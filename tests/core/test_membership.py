"""A client's membership made apart from its `FederatedClient`: joined first (as a client
process joins while it imports torch), then taken over by the client, in process against
a real `Federation`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fedgate.core.client import FederatedClient
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.membership import Membership
from fedgate.core.messages import ClientState, HeartbeatAck
from fedgate.core.transport import Session
from fedgate.transport.inproc import InProcTransport
from tests.conftest import tiny_model, until
from tests.core.test_client import QUICK, StepTrainer


@pytest.fixture
async def federation() -> AsyncIterator[Federation]:
    running = Federation(
        tiny_model(),
        RunConfig(rounds=2, min_clients=1, heartbeat_interval_s=0.05, heartbeat_timeout_s=0.5),
    )
    yield running
    await running.close()


def states(federation: Federation) -> list[ClientState]:
    return [c.state for c in federation.status().clients]


async def test_a_membership_joined_first_is_the_clients_one_session(
    federation: Federation,
) -> None:
    transport = InProcTransport(federation)
    membership = Membership(transport, "early", "raw", StepTrainer.num_examples, backoff=QUICK)
    federation.start()
    async with membership.kept():
        session = await membership.session()  # before any trainer exists
        await asyncio.sleep(1.0)  # twice the heartbeat timeout: heartbeats alone keep it
        assert states(federation) == [ClientState.JOINED]  # not failed
        client = FederatedClient(
            transport, StepTrainer(), "early", "raw", poll_s=0.2, membership=membership
        )
        report = await asyncio.wait_for(client.run(), 10)
        # the client's run did not leave: the outer block still keeps the membership
        assert await membership.session() is session
    assert report.rounds == [1, 2] and report.rejoins == 0
    (record,) = federation.status().clients  # one join, for both
    assert record.client_id == report.client_id == session.client_id
    assert record.state is ClientState.LEFT  # left as the outermost block ended


async def test_a_membership_that_is_not_the_clients_is_refused(
    federation: Federation,
) -> None:
    transport = InProcTransport(federation)
    for name, codec, examples in (("other", "raw", 10), ("early", "json", 10), ("early", "raw", 9)):
        membership = Membership(transport, name, codec, examples)
        with pytest.raises(ValueError, match="is not this client's"):
            FederatedClient(transport, StepTrainer(), "early", "raw", membership=membership)
    elsewhere = Membership(InProcTransport(federation), "early", "raw", 10)
    with pytest.raises(ValueError, match="is not this client's"):
        FederatedClient(transport, StepTrainer(), "early", "raw", membership=elsewhere)


async def test_heartbeats_count_from_the_join_not_from_the_start(
    federation: Federation,
) -> None:
    """Kept long before it joins (a client waiting out an unreachable server), the first
    heartbeat still comes one interval after the join."""
    beats: list[float] = []

    class Counted(InProcTransport):
        async def heartbeat(self, session: Session) -> HeartbeatAck:
            beats.append(asyncio.get_running_loop().time())
            return await super().heartbeat(session)

    membership = Membership(Counted(federation), "late", "raw", 10)
    async with membership.kept():
        await asyncio.sleep(0.3)  # kept, not joined: no heartbeats
        assert beats == []
        await membership.session()
        joined = asyncio.get_running_loop().time()
        await until(lambda: len(beats) >= 3)
    assert beats[0] - joined < 0.25  # the server's interval is 0.05 s
    await until(lambda: states(federation) == [ClientState.LEFT])


async def test_a_membership_joined_with_another_spelling_of_the_codec_fits(
    federation: Federation,
) -> None:
    """`fedgate client --codec topk-int8:0.010` joins with that spelling (the codecs are not
    loaded yet); the client it builds names the codec canonically, and takes it over."""
    transport = InProcTransport(federation)
    membership = Membership(transport, "early", "topk-int8:0.010", StepTrainer.num_examples)
    client = FederatedClient(
        transport, StepTrainer(), "early", "topk-int8:0.01", membership=membership
    )
    assert client.membership is membership
