"""Uploads are admitted from their header before any body byte is read, bounded in size by
the model and codec, capped in number, and a silent participant leaves its round early."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
import time
from collections.abc import AsyncIterator

import pytest
import torch

from fedgate.codecs import get_codec
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import ClientState, Update, UpdateHeader
from fedgate.core.registry import ClientRegistry
from fedgate.core.rounds import Round
from fedgate.errors import (
    DuplicateUpdate,
    InvalidUpdate,
    NonFiniteUpdate,
    Overloaded,
    PayloadTooLarge,
    RoundClosed,
    Unauthorized,
    UnknownClient,
)
from tests.conftest import join, tiny_model, until
from tests.core.clock import ManualClock


def header(round_id: str, num_examples: int = 10, codec: str = "raw") -> UpdateHeader:
    return UpdateHeader(round_id=round_id, model_version=0, num_examples=num_examples, codec=codec)


async def test_a_header_is_judged_before_any_body(federation: Federation) -> None:
    federation.start()
    a, _b = await join(federation, "a"), await join(federation, "b")
    task = await a.train_task()
    with pytest.raises(Unauthorized):
        await federation.begin_update(a.client_id, "forged", header(task.round_id))
    with pytest.raises(InvalidUpdate, match="num_examples 2147483649 exceeds"):
        await federation.begin_update(a.client_id, a.token, header(task.round_id, 2**31 + 1))
    with pytest.raises(PayloadTooLarge, match="raw"):
        await federation.begin_update(a.client_id, a.token, header(task.round_id), 1 << 30)
    # none of that left the client uploading: it may still send its update
    assert federation.clients.get(a.client_id).state is ClientState.TRAINING
    permit = await federation.begin_update(a.client_id, a.token, header(task.round_id))
    assert federation.clients.get(a.client_id).state is ClientState.UPLOADING
    with pytest.raises(DuplicateUpdate):  # one upload at a time per client
        await federation.begin_update(a.client_id, a.token, header(task.round_id))
    federation.abandon_update(permit)  # the body never came
    assert federation.clients.get(a.client_id).state is ClientState.TRAINING
    await a.send(task, tiny_model(1.0))
    assert federation.clients.get(a.client_id).state is ClientState.FINISHED


async def test_the_body_limit_is_a_small_multiple_of_the_model_in_its_codec(
    federation: Federation,
) -> None:
    federation.start()
    a, _b = await join(federation, "a"), await join(federation, "b")
    task = await a.train_task()
    for codec in ("raw", "json", "bf16-zstd"):
        permit = await federation.begin_update(
            a.client_id, a.token, header(task.round_id, codec=codec)
        )
        encoded = len(get_codec(codec).encode(tiny_model()))
        assert encoded < permit.max_bytes < 4 * encoded + (128 << 10)
        with pytest.raises(PayloadTooLarge):
            await federation.finish_update(permit, b"\0" * (permit.max_bytes + 1))
        assert federation.clients.get(a.client_id).state is ClientState.TRAINING


async def test_concurrent_uploads_are_capped() -> None:
    config = RunConfig(rounds=1, min_clients=3, round_deadline_s=30.0)
    federation = Federation(tiny_model(), config, max_concurrent_uploads=2)
    federation.start()
    try:
        players = [await join(federation, name) for name in "abc"]
        tasks = [await p.train_task() for p in players]
        permits = [
            await federation.begin_update(p.client_id, p.token, header(t.round_id))
            for p, t in zip(players[:2], tasks[:2], strict=True)
        ]
        with pytest.raises(Overloaded):
            await federation.begin_update(players[2].client_id, players[2].token, header("1.1"))
        federation.abandon_update(permits[0])
        third = await federation.begin_update(
            players[2].client_id, players[2].token, header(tasks[2].round_id)
        )
        federation.abandon_update(third)
        federation.abandon_update(permits[1])
    finally:
        await federation.close()


async def test_a_silent_participant_leaves_its_round_long_before_the_deadline() -> None:
    config = RunConfig(
        rounds=2,
        min_clients=2,
        round_deadline_s=60.0,
        heartbeat_interval_s=0.2,
        heartbeat_timeout_s=30.0,
    )
    clock = ManualClock()
    federation = clock.federation(tiny_model(), config)
    federation.start()
    try:
        a, b, quiet = [await join(federation, n) for n in ("a", "b", "quiet")]
        tasks = [await p.train_task() for p in (a, b)]
        round_ = federation.round
        assert round_ is not None and quiet.client_id in round_.selected
        # "quiet" joined and never asks for its task, never beats: out once silent for
        # max(2.5 beats, 1 s) = 1 s, while the others, beating, stay in
        await clock.advance_beating(0.75, [a, b], every=0.25)
        assert not round_.dropped
        await clock.advance_beating(0.5, [a, b], every=0.25)
        await until(lambda: quiet.client_id in round_.dropped)
        assert round_.dropped == {quiet.client_id}
        with pytest.raises(RoundClosed, match="dropped"):
            await federation.begin_update(quiet.client_id, quiet.token, header(tasks[0].round_id))
        for player, task in zip((a, b), tasks, strict=True):
            await player.send(task, tiny_model(1.0))
        await until(lambda: federation.models.version == 1, within_s=5.0)
        record = federation.history[-1]
        assert record.outcome == "completed" and quiet.client_id not in record.participants
        assert record.duration_s == 1.25  # not the 60 s deadline
        # still a member, only taken out of that round: the next one selects it again
        assert not federation.clients.get(quiet.client_id).gone
        assert (await quiet.train_task()).round == 2
    finally:
        await federation.close()


async def test_a_client_kicked_during_its_upload_stays_out_and_is_not_counted() -> None:
    # The body is on the wire when the operator kicks the client: the upload ends refused,
    # the client stays left (its finished upload brought it back to "ready" once), and the
    # round publishes what the others sent.
    config = RunConfig(rounds=1, min_clients=2, round_deadline_s=30.0)
    federation = Federation(tiny_model(), config)
    players = [await join(federation, n) for n in ("a", "b", "kicked")]
    federation.start()
    try:
        tasks = [await p.train_task() for p in players]
        a, b, kicked = players
        permit = await federation.begin_update(
            kicked.client_id, kicked.token, header(tasks[2].round_id)
        )
        federation.kick(kicked.client_id, "kicked mid-upload")
        with pytest.raises(RoundClosed, match=f"{kicked.client_id} was dropped from round 1.1"):
            await federation.finish_update(permit, get_codec("raw").encode(tiny_model(100.0)))
        record = federation.clients.get(kicked.client_id)
        assert (record.state, record.reason) == (ClientState.LEFT, "kicked mid-upload")
        with pytest.raises(UnknownClient, match="is left \\(kicked mid-upload\\)"):
            await federation.next_task(kicked.client_id, kicked.token, 0.0)
        for player, task in zip((a, b), tasks[:2], strict=True):
            await player.send(task, tiny_model(1.0))
        await until(lambda: federation.models.version == 1)
        assert federation.history[-1].participants == tuple(sorted((a.client_id, b.client_id)))
        published = federation.models.current
        assert all(torch.equal(published[k], v) for k, v in tiny_model(1.0).items())
        assert federation.clients.get(kicked.client_id).state is ClientState.LEFT
    finally:
        await federation.close()


@pytest.fixture
async def open_round() -> AsyncIterator[tuple[Round, list[str]]]:
    """The open round of a federation whose two clients took their tasks, and their ids."""
    federation = Federation(tiny_model(), RunConfig(rounds=1, min_clients=2))
    players = [await join(federation, n) for n in ("a", "b")]
    federation.start()
    try:
        for player in players:
            await player.train_task()
        round_ = federation.round
        assert isinstance(round_, Round)
        yield round_, [p.client_id for p in players]
    finally:
        await federation.close()


def test_an_update_folded_before_its_client_leaves_stays_in_and_no_later(
    open_round: tuple[Round, list[str]],
) -> None:
    # A fold (a worker thread) and a drop (the loop) are ordered by the round's membership
    # lock: an update going into the aggregate stays there and the round stops waiting for
    # no one; an update that arrives after the drop is refused, not added.
    round_, (first, second) = open_round
    round_.fold(tiny_model(1.0), 10, first)
    assert not round_.drop(first)  # its update is in: nothing to stop waiting for
    assert round_.drop(second)
    with pytest.raises(RoundClosed, match=f"{second} was dropped from round"):
        round_.fold(tiny_model(100.0), 10, second)
    assert round_.dropped == {second}
    assert all(torch.equal(round_.result()[k], v) for k, v in tiny_model(1.0).items())


@pytest.mark.parametrize("gone", [ClientState.LEFT, ClientState.FAILED])
def test_left_and_failed_are_final_whatever_request_was_in_flight(gone: ClientState) -> None:
    # An upload folded just before the kick finishes after it, a long-poll wakes after it:
    # neither may move the record out of its final state (nor tell the store it did).
    told: list[ClientState] = []
    registry = ClientRegistry(journal=lambda _record, event: told.append(event.state))
    record = registry.add("a", "raw", "inproc", 10).record
    record.take_task()
    record.start_upload()
    record.leave("kicked") if gone is ClientState.LEFT else record.fail("silent")
    for late in (record.finish_upload, record.wait_for_task, record.take_task):
        late()
    record.abandon_upload()
    record.explain("dropped from round 1.1")
    assert record.state is gone and record.reason in ("kicked", "silent")
    assert told == [ClientState.JOINED, ClientState.TRAINING, ClientState.UPLOADING, gone]


class StallingAggregator:
    """Holds a fold inside the aggregate's lock until told, then refuses it."""

    def __init__(self, inner: object) -> None:
        self.inner, self.entered, self.go = inner, threading.Event(), threading.Event()

    def add(self, *args: object, **kwargs: object) -> None:
        self.entered.set()
        self.go.wait(10.0)
        raise InvalidUpdate("refused by the aggregator")

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_a_drop_never_waits_for_a_fold_and_stands_if_the_fold_fails(
    open_round: tuple[Round, list[str]],
) -> None:
    round_, (client_id, _other) = open_round
    stalling = StallingAggregator(round_.aggregator)
    round_.aggregator = stalling  # type: ignore[assignment]
    folding = asyncio.create_task(asyncio.to_thread(round_.fold, tiny_model(1.0), 10, client_id))
    assert await asyncio.to_thread(stalling.entered.wait, 5.0)
    started = time.perf_counter()
    assert not round_.drop(client_id)  # its update is going in: not dropped yet
    assert time.perf_counter() - started < 0.5  # and the drop did not wait for the fold
    stalling.go.set()
    with pytest.raises(InvalidUpdate, match="refused by the aggregator"):
        await folding
    assert client_id in round_.dropped  # the fold failed: the drop stands
    assert client_id not in round_.pending()


@pytest.mark.parametrize(
    ("change", "counted"),
    [
        ({"w": torch.tensor([[0.0, math.nan, 0.0], [0.0, 0.0, 0.0]])}, "tensor 'w' holds 1"),
        # finite, but 3e38 + 3e38 is past float32's range: the sum is what must be finite
        ({"b": torch.full((3,), 3e38)}, "tensor 'b' holds 3 NaN or infinite"),
    ],
)
async def test_a_delta_whose_sum_is_not_finite_is_refused_and_the_client_may_send_again(
    change: dict[str, torch.Tensor], counted: str
) -> None:
    federation = Federation(tiny_model(3e38), RunConfig(rounds=1, min_clients=2))
    a, b = await join(federation, "a"), await join(federation, "b")
    federation.start()
    try:
        tasks = [await p.train_task() for p in (a, b)]
        base = await federation.fetch_model(a.client_id, a.token, tasks[0].model_version)
        zero = {k: torch.zeros_like(v) for k, v in tiny_model().items()}
        bad = Update(tasks[0].round_id, 0, 10, "raw", encode({**zero, **change}), base_ref=base.ref)
        with pytest.raises(NonFiniteUpdate, match=counted):
            await federation.submit_update(a.client_id, a.token, bad)
        assert federation.clients.get(a.client_id).state is ClientState.TRAINING
        good = dataclasses.replace(bad, payload=encode(zero))
        for player in (a, b):
            await federation.submit_update(player.client_id, player.token, good)
        await until(lambda: federation.models.version == 1)
        published = federation.models.current
        assert all(torch.equal(published[k], v) for k, v in tiny_model(3e38).items())
    finally:
        await federation.close()


def encode(tensors: dict[str, torch.Tensor]) -> bytes:
    return get_codec("raw").encode(tensors)
