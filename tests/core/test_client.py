"""The client loop in process: stale tasks dropped, lost sessions rejoined, refusals final.

A real `Federation` over the in-process transport; where a test must hold the client at
one step while the federation moves on, a `Gate` in front of that call holds it (the
call itself still reaches the federation). Network outages and server restarts are in
tests/test_client_resilience.py, over real loopback servers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Mapping

import pytest
import torch

from fedgate.core.client import FederatedClient
from fedgate.core.config import RunConfig
from fedgate.core.enrolment import JoinLimits
from fedgate.core.federation import Federation
from fedgate.core.messages import (
    EncodedModel,
    ModelWant,
    RoundOutcome,
    Task,
    TrainConfig,
    Update,
    UpdateReceipt,
)
from fedgate.core.ports import weights_hash
from fedgate.core.ratelimit import Rate
from fedgate.core.retry import Backoff, Link
from fedgate.core.training import TrainResult
from fedgate.core.transport import Session
from fedgate.errors import ConfigError, TransportError, Unauthorized
from fedgate.transport.inproc import InProcTransport
from tests.conftest import join, tiny_model, until

QUICK = Backoff(initial_s=0.01, max_s=0.05)
MANY = Rate(burst=1000, per_s=1000.0)


class StepTrainer:
    """Training reduced to its contract: every float weight moves by 0.1."""

    num_examples = 10

    def train(self, weights: Mapping[str, torch.Tensor], config: TrainConfig) -> TrainResult:
        moved = {n: t + 0.1 if t.is_floating_point() else t.clone() for n, t in weights.items()}
        return TrainResult(moved, self.num_examples, loss=1.0, accuracy=0.5)


class Gate:
    """Holds the first call that reaches it until `open`; later calls pass."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self._open = asyncio.Event()
        self._used = False

    def open(self) -> None:
        self._open.set()

    async def hold(self) -> None:
        if self._used:
            return
        self._used = True
        self.reached.set()
        await self._open.wait()


class GatedTransport(InProcTransport):
    """The in-process transport, with a gate before the first model fetch or upload.

    With ``models_on_tasks`` off, its tasks come without their model, as from a server
    that could not attach it: the client fetches it (and meets ``before_fetch``)."""

    def __init__(self, federation: Federation, *, models_on_tasks: bool = True) -> None:
        super().__init__(federation)
        self.models_on_tasks = models_on_tasks
        self.before_fetch = Gate()
        self.before_upload = Gate()
        self.before_fetch.open()
        self.before_upload.open()
        self.calls: Counter[str] = Counter()

    async def next_task_with_model(self, session: Session, wait_s: float, want: ModelWant) -> Task:
        self.calls["task"] += 1
        if not self.models_on_tasks:
            return await super().next_task(session, wait_s)
        task = await super().next_task_with_model(session, wait_s, want)
        self.calls["task with model"] += task.model is not None
        return task

    async def fetch_model(
        self, session: Session, version: int, codec: str, have_ref: str = ""
    ) -> EncodedModel:
        self.calls["fetch"] += 1
        await self.before_fetch.hold()
        return await super().fetch_model(session, version, codec, have_ref)

    async def submit_update(self, session: Session, update: Update) -> UpdateReceipt:
        await self.before_upload.hold()
        return await super().submit_update(session, update)


@pytest.fixture
async def federation() -> AsyncIterator[Federation]:
    running = Federation(
        tiny_model(), RunConfig(rounds=4, min_clients=1, round_deadline_s=0.5, seed=0)
    )
    yield running
    await running.close()


def client(transport: InProcTransport, name: str = "a", key: str = "") -> FederatedClient:
    return FederatedClient(
        transport, StepTrainer(), name, "raw", poll_s=0.2, backoff=QUICK, key=key
    )


def completed_rounds(federation: Federation) -> list[int]:
    history = federation.status().history
    return [r.round for r in history if r.outcome is RoundOutcome.COMPLETED]


# ---- backoff and the link's log ----------------------------------------------------------


def test_backoff_doubles_to_its_cap_and_jitter_only_shortens() -> None:
    rng = random.Random(0)
    exact = Backoff(initial_s=0.2, max_s=1.0, jitter=0.0)
    assert [exact.delay(n, rng) for n in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    jittered = Backoff(initial_s=0.2, max_s=1.0, jitter=0.5)
    delays = [jittered.delay(n, rng) for n in range(2000)]
    assert all(0.5 <= d <= 1.0 for d in delays[3:])
    assert len({round(d, 6) for d in delays[3:]}) > 100  # spread out, not in lockstep
    assert jittered.delay(10**9, rng) <= 1.0  # no overflow however long the outage


@pytest.mark.parametrize(
    "options",
    [{"initial_s": 0.0}, {"initial_s": 2.0, "max_s": 1.0}, {"jitter": 1.5}, {"give_up_after_s": 0}],
)
def test_backoff_refuses_settings_that_make_no_sense(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Backoff(**options)


def test_the_link_logs_each_change_once_and_gives_up_only_when_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    link = Link("a", Backoff(give_up_after_s=30.0), clock=lambda: now[0], rng=random.Random(0))
    down = TransportError("connection refused")
    with caplog.at_level(logging.DEBUG, logger="fedgate.client"):
        for _ in range(50):
            link.failed("cannot reach the server", down)
            now[0] += 0.5
        link.noticed("cannot reach the server", down)  # a heartbeat: same trouble, no line
        link.succeeded()
        link.succeeded()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "a: cannot reach the server (connection refused); retrying for up to 30s, "
        "waits of up to 10s",
        "a: over after 25.0s: cannot reach the server",
    ]
    link.failed("cannot reach the server", down)
    now[0] += 30.0
    with pytest.raises(TransportError, match="giving up after 30s: cannot reach the server"):
        link.failed("cannot reach the server", down)


# ---- stale tasks and lost sessions -------------------------------------------------------


async def test_a_task_whose_model_version_is_gone_is_dropped_not_fatal(
    federation: Federation,
) -> None:
    """The measured failure: a client held a task while the run moved two versions on;
    the version it asks for is no longer served. It drops the task and takes the next."""
    federation.start()
    transport = GatedTransport(federation, models_on_tasks=False)
    transport.before_fetch = Gate()  # held at its first fetch
    stale = client(transport)
    running = asyncio.create_task(stale.run())
    await transport.before_fetch.reached.wait()
    player = await join(federation, "p")
    for _ in range(3):  # rounds 1 (closed at its deadline without "a"), 2 and 3
        task = await player.train_task()
        await player.send(task, tiny_model(1.0))
        await until(lambda n=task.round: federation.status().rounds_completed >= n)
    transport.before_fetch.open()
    report = await asyncio.wait_for(running, 10)
    assert len(report.dropped) == 1 and "model version 0 is not served" in report.dropped[0]
    assert report.rounds == [4] and report.rejoins == 0
    assert report.ended == "the run is over: stopped by the server"
    assert completed_rounds(federation) == [1, 2, 3, 4]


async def test_a_client_dropped_mid_task_rejoins_and_never_replays_the_task(
    federation: Federation,
) -> None:
    federation.start()
    transport = GatedTransport(federation)
    transport.before_upload = Gate()
    kicked = client(transport)
    running = asyncio.create_task(kicked.run())
    await transport.before_upload.reached.wait()
    first_id = kicked.report.client_id
    federation.kick(first_id, "test: as if its heartbeats had stopped")
    transport.before_upload.open()
    report = await asyncio.wait_for(running, 10)
    assert report.rejoins == 1 and report.client_id != first_id
    assert len(report.dropped) == 1 and first_id in report.dropped[0]
    assert report.rounds == [1, 2, 3, 4]  # round 1 again, from its next task
    assert completed_rounds(federation) == [1, 2, 3, 4]
    completed = [r for r in federation.status().history if r.outcome is RoundOutcome.COMPLETED]
    assert all(r.participants == (report.client_id,) for r in completed)


async def test_a_run_that_has_ended_ends_the_client_without_an_error(
    federation: Federation,
) -> None:
    federation.start()
    federation.stop()
    report = await asyncio.wait_for(client(InProcTransport(federation)).run(), 5)
    assert report.ended.startswith("the run is over:") and report.client_id == ""


async def test_no_room_is_waited_for_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    federation = Federation(tiny_model(), RunConfig(rounds=1, min_clients=1), max_clients=1)
    try:
        occupant = await join(federation, "occupant")
        waiting = asyncio.create_task(client(InProcTransport(federation)).run())
        with caplog.at_level(logging.DEBUG, logger="fedgate.client"):
            await until(lambda: sum("no room" in r.getMessage() for r in caplog.records) >= 5)
            await occupant.leave()
            federation.start()
            report = await asyncio.wait_for(waiting, 10)
        assert report.rounds == [1]
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert sum(line.startswith("a: no room to join (") for line in said) == 1
        assert sum(line.startswith("a: over after") for line in said) == 1
    finally:
        await federation.close()


# ---- what ends a client ------------------------------------------------------------------


@pytest.fixture
async def keyed() -> AsyncIterator[Federation]:
    running = Federation(
        tiny_model(),
        RunConfig(rounds=50, min_clients=1, round_deadline_s=0.5),
        enrolment="key",
        join_limits=JoinLimits(per_peer=MANY, per_key=MANY),
    )
    yield running
    await running.close()


async def test_a_refused_enrolment_key_ends_the_client_with_a_clear_error(
    keyed: Federation,
) -> None:
    with pytest.raises(Unauthorized) as refused:
        await asyncio.wait_for(client(InProcTransport(keyed), key="fgk_nope_nope").run(), 5)
    assert "a: the server refused its enrolment key" in refused.value.message
    assert refused.value.message.endswith("not retrying")


async def test_a_key_revoked_mid_run_ends_the_client_at_its_rejoin(keyed: Federation) -> None:
    issued = keyed.enrolment.create("site", max_clients=2, max_num_examples=100)
    keyed.start()
    member = client(InProcTransport(keyed), key=issued.secret)
    running = asyncio.create_task(member.run())
    await until(lambda: len(member.report.rounds) >= 2)
    keyed.revoke_key(issued.key.key_id)
    with pytest.raises(Unauthorized, match="refused its enrolment key"):
        await asyncio.wait_for(running, 5)
    assert member.report.rejoins == 1


async def test_a_stop_task_ends_the_client(federation: Federation) -> None:
    federation.start()
    report = await asyncio.wait_for(client(InProcTransport(federation)).run(), 10)
    assert report.rounds == [1, 2, 3, 4] and report.dropped == []
    assert report.ended == "the run is over: stopped by the server"


# ---- a round's requests: the model comes with the task -----------------------------------


async def federate(
    codec: str, deltas: bool, models_on_tasks: bool
) -> tuple[tuple[object, ...], Counter[str]]:
    """A 4-round run of one client: what it ended with, and the calls it made."""
    config = RunConfig(rounds=4, min_clients=1, round_deadline_s=5.0, seed=0)
    federation = Federation(tiny_model(), config)
    federation.start()
    transport = GatedTransport(federation, models_on_tasks=models_on_tasks)
    member = FederatedClient(
        transport, StepTrainer(), "a", codec, poll_s=5.0, backoff=QUICK, deltas=deltas
    )
    report = await asyncio.wait_for(member.run(), 20)
    status = federation.status()
    await federation.close()
    assert report.rounds == [1, 2, 3, 4] and report.dropped == []
    assert status.bytes_by_transport["inproc"].down == report.bytes_down > 0
    report = dataclasses.replace(report, client_id="")  # ids are random
    ended_with = (weights_hash(federation.models.current), status.bytes_by_codec, report)
    return ended_with, transport.calls


@pytest.mark.parametrize(("codec", "deltas"), [("raw", False), ("bf16-zstd", True)])
async def test_a_round_costs_one_request_down_and_ends_as_fetching_did(
    codec: str, deltas: bool
) -> None:
    """Each TRAIN task brings its model: no fetches. A task without its model (a server
    that could not attach it) is completed by a fetch: the same model, bytes and ledger."""
    carried, calls = await federate(codec, deltas, models_on_tasks=True)
    fetched, fallback_calls = await federate(codec, deltas, models_on_tasks=False)
    assert carried == fetched
    assert calls["task with model"] == 4 and calls["fetch"] == 0
    assert fallback_calls["task with model"] == 0 and fallback_calls["fetch"] == 4


async def test_a_delta_to_a_model_not_held_is_fetched_in_full(federation: Federation) -> None:
    """A task whose model is a delta to something else than what the client holds (a
    server's mix-up): the client forgets what it holds and fetches the model in full."""

    class Muddled(GatedTransport):
        async def next_task_with_model(
            self, session: Session, wait_s: float, want: ModelWant
        ) -> Task:
            task = await super().next_task_with_model(session, wait_s, want)
            if task.model is None:
                return task
            return dataclasses.replace(
                task, model=dataclasses.replace(task.model, base_ref="not-held")
            )

    federation.start()
    transport = Muddled(federation)
    report = await asyncio.wait_for(client(transport).run(), 10)
    assert report.rounds == [1, 2, 3, 4] and report.dropped == []
    assert transport.calls["task with model"] == 4 and transport.calls["fetch"] == 4
