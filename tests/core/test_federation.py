"""The federation's rules: membership at any time, deadlines, retries, validation, control.

Every federation here runs on a `ManualClock`: time passes only where a test says, so a
deadline or a heartbeat timeout is a step of the test, never a sleep, and a busy machine
cannot make one pass by accident.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest
import torch

from fedgate.core import robust
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import ClientState, JoinRequest, RunState, TaskKind, Update
from fedgate.errors import (
    CodecError,
    ConfigError,
    Conflict,
    DuplicateUpdate,
    InvalidUpdate,
    NonFiniteUpdate,
    NotSelected,
    RoundClosed,
    RunNotActive,
    Unauthorized,
    UnknownClient,
    UnknownCodec,
)
from tests.conftest import Player, join, tiny_model, until
from tests.core.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def federation(clock: ManualClock) -> AsyncIterator[Federation]:
    """tests/conftest.py's federation, on the manual clock."""
    config = RunConfig(
        rounds=3,
        min_clients=2,
        round_deadline_s=5.0,
        heartbeat_interval_s=0.2,
        heartbeat_timeout_s=2.0,
    )
    federation = clock.federation(tiny_model(), config)
    yield federation
    await federation.close()


def state_of(federation: Federation, player: Player) -> ClientState:
    return federation.clients.get(player.client_id).state


async def test_a_round_averages_the_updates_weighted_by_examples(federation: Federation) -> None:
    federation.start()
    a, b = await join(federation, "a"), await join(federation, "b", codec="msgpack")
    task_a, task_b = await a.train_task(), await b.train_task()
    assert task_a.round_id == task_b.round_id and task_a.train is not None
    await a.send(task_a, tiny_model(1.0), num_examples=10)
    await b.send(task_b, tiny_model(4.0), num_examples=30)
    await until(lambda: federation.models.version == 1)
    assert torch.allclose(federation.models.current["w"], torch.full((2, 3), 3.25))
    record = federation.history[-1]
    assert record.outcome == "completed" and set(record.participants) == {a.client_id, b.client_id}
    assert record.bytes_up > 0 and record.bytes_down == 0  # these players never fetched


async def test_a_late_joiner_takes_part_from_the_next_round(federation: Federation) -> None:
    federation.start()
    a, b = await join(federation, "a"), await join(federation, "b")
    task_a, task_b = await a.train_task(), await b.train_task()
    late = await join(federation, "late")
    assert (await late.task(wait_s=0)).kind is TaskKind.WAIT
    assert state_of(federation, late) is ClientState.READY
    await a.send(task_a, tiny_model(1.0))
    await b.send(task_b, tiny_model(1.0))
    next_task = await late.train_task()
    assert next_task.round == 2
    assert federation.round is not None and late.client_id in federation.round.selected


async def test_a_round_opens_on_and_selects_only_clients_that_have_asked(
    federation: Federation,
) -> None:
    """A client that joined and has not asked yet (a process still importing torch) is not
    counted toward the minimum nor selected: the round must not wait for its start-up."""
    federation.start()
    a = await join(federation, "a")
    starting = await join(federation, "starting", ask=False)
    await asyncio.sleep(0.1)  # the round loop has seen both joins
    assert federation.round is None and state_of(federation, starting) is ClientState.JOINED
    b = await join(federation, "b")
    task_a, task_b = await a.train_task(), await b.train_task()
    assert federation.round is not None
    assert federation.round.selected == {a.client_id, b.client_id}
    assert (await starting.task(wait_s=0)).kind is TaskKind.WAIT  # late, not admitted
    await a.send(task_a, tiny_model(1.0))
    await b.send(task_b, tiny_model(1.0))
    assert (await starting.train_task()).round == 2


async def test_a_client_that_asks_late_fills_the_open_round_when_allowed(
    clock: ManualClock,
) -> None:
    config = RunConfig(rounds=1, min_clients=2, admit_late=True)
    federation = clock.federation(tiny_model(), config)
    federation.start()
    try:
        starting = await join(federation, "starting", ask=False)
        a, b = await join(federation, "a"), await join(federation, "b")
        task_a = await a.train_task()
        assert federation.round is not None and starting.client_id not in federation.round.selected
        assert (await starting.train_task()).round_id == task_a.round_id
        assert starting.client_id in federation.round.selected
        assert b.client_id in federation.round.selected
    finally:
        await federation.close()


async def test_a_late_joiner_fills_an_open_round_when_allowed(clock: ManualClock) -> None:
    config = RunConfig(rounds=1, min_clients=2, clients_per_round=3, admit_late=True)
    federation = clock.federation(tiny_model(), config)
    federation.start()
    try:
        a, _b = await join(federation, "a"), await join(federation, "b")
        task_a = await a.train_task()
        late = await join(federation, "late")
        task_late = await late.train_task()
        assert task_late.round_id == task_a.round_id
    finally:
        await federation.close()


async def test_a_client_leaving_mid_round_does_not_block_it(clock: ManualClock) -> None:
    config = RunConfig(rounds=2, min_clients=2, round_deadline_s=60.0)
    federation = clock.federation(tiny_model(), config)
    federation.start()
    try:
        players = [await join(federation, name) for name in "abc"]
        tasks = [await p.train_task() for p in players]
        await players[0].send(tasks[0], tiny_model(2.0))
        await players[1].send(tasks[1], tiny_model(4.0))
        await players[2].leave()
        # the clock stands still: the leave closes the round, not its deadline
        await until(lambda: federation.models.version == 1)
        assert torch.allclose(federation.models.current["w"], torch.full((2, 3), 3.0))
        assert state_of(federation, players[2]) is ClientState.LEFT
        with pytest.raises(UnknownClient, match="left"):
            await players[2].task()
    finally:
        await federation.close()


async def test_a_silent_client_is_failed_and_the_round_closes_with_the_rest(
    clock: ManualClock,
) -> None:
    config = RunConfig(
        rounds=1,
        min_clients=2,
        round_deadline_s=30.0,
        heartbeat_interval_s=0.1,
        heartbeat_timeout_s=0.5,
    )
    federation = clock.federation(tiny_model(), config)
    federation.start()
    try:
        players = [await join(federation, name) for name in "abc"]
        tasks = [await p.train_task() for p in players]
        for player, task in zip(players[:2], tasks[:2], strict=True):
            await player.send(task, tiny_model(1.0))
        for _ in range(2):  # a and b keep beating; c has gone quiet
            await clock.advance(0.25)
            await players[0].heartbeat()
            await players[1].heartbeat()
        assert state_of(federation, players[2]) is ClientState.TRAINING  # 0.5 s: not yet
        await clock.advance(0.25)  # c: 0.75 s without a heartbeat; a and b: 0.25 s
        await until(lambda: state_of(federation, players[2]) is ClientState.FAILED)
        await until(lambda: federation.models.version == 1)
        assert federation.history[-1].duration_s == 0.75
        assert state_of(federation, players[0]) is not ClientState.FAILED
    finally:
        await federation.close()


async def test_the_deadline_closes_a_round_once_the_minimum_reported(clock: ManualClock) -> None:
    config = RunConfig(rounds=1, min_clients=2, round_deadline_s=60.0)
    federation = clock.federation(tiny_model(), config)
    federation.start()
    try:
        players = [await join(federation, name) for name in "abc"]
        tasks = [await p.train_task() for p in players]
        await players[0].send(tasks[0], tiny_model(1.0))
        await players[1].send(tasks[1], tiny_model(1.0))
        await clock.advance_beating(59.0, players)  # the straggler may still report
        assert federation.round is not None and federation.models.version == 0
        await clock.advance(1.0)
        await until(lambda: federation.models.version == 1)
        assert federation.history[-1].duration_s == 60.0
        with pytest.raises(RoundClosed):  # the straggler arrives after the deadline
            await players[2].send(tasks[2], tiny_model(100.0))
        assert torch.allclose(federation.models.current["w"], torch.ones(2, 3))
    finally:
        await federation.close()


async def test_a_round_short_of_the_minimum_at_its_deadline_is_retried(
    clock: ManualClock,
) -> None:
    config = RunConfig(rounds=1, min_clients=2, round_deadline_s=60.0)
    federation = clock.federation(tiny_model(), config)
    federation.start()
    try:
        a, b = await join(federation, "a"), await join(federation, "b")
        first = await a.train_task()
        await b.train_task()
        await a.send(first, tiny_model(9.0))
        assert (await a.task(wait_s=0)).kind is TaskKind.WAIT  # b has till the deadline
        await clock.advance_beating(60.0, [a, b])
        await until(lambda: len(federation.history) == 1)
        second = await a.train_task()
        assert (second.round, second.round_id) == (1, "1.2")
        assert federation.history[0].outcome == "retried"
        assert federation.models.version == 0
        assert torch.equal(federation.models.current["w"], torch.zeros(2, 3))
        await a.send(second, tiny_model(1.0))
        await b.send(await b.train_task(), tiny_model(3.0))
        await until(lambda: federation.state is RunState.FINISHED)
        assert torch.allclose(federation.models.current["w"], torch.full((2, 3), 2.0))
    finally:
        await federation.close()


async def test_bad_updates_are_refused_and_leave_the_model_unchanged(
    federation: Federation,
) -> None:
    federation.start()
    a, b = await join(federation, "a"), await join(federation, "b")
    task_a, task_b = await a.train_task(), await b.train_task()
    bad_weights = [
        ({"w": torch.zeros(3, 2), "b": torch.zeros(3), "steps": torch.tensor(0)}, InvalidUpdate),
        ({"w": torch.zeros(2, 3), "b": torch.zeros(3)}, InvalidUpdate),
        ({**tiny_model(), "extra": torch.zeros(1)}, InvalidUpdate),
        ({**tiny_model(), "w": torch.zeros(2, 3, dtype=torch.float64)}, InvalidUpdate),
        ({**tiny_model(), "w": torch.tensor([[1.0, math.nan, 0], [0, 0, 0]])}, NonFiniteUpdate),
        ({**tiny_model(), "b": torch.tensor([math.inf, 0, 0])}, NonFiniteUpdate),
    ]
    for weights, error in bad_weights:
        with pytest.raises(error):
            await a.send(task_a, weights)
        assert state_of(federation, a) is ClientState.TRAINING
    garbage = Update(task_a.round_id, task_a.model_version, 10, "raw", b"\x00garbage")
    with pytest.raises(CodecError):
        await federation.submit_update(a.client_id, a.token, garbage)
    pickled = Update(task_a.round_id, task_a.model_version, 10, "pickle", b"x")
    with pytest.raises(UnknownCodec):
        await federation.submit_update(a.client_id, a.token, pickled)
    with pytest.raises(InvalidUpdate, match="num_examples"):
        await a.send(task_a, tiny_model(), num_examples=0)
    with pytest.raises(InvalidUpdate, match="declared"):
        await a.send(task_a, tiny_model(), num_examples=10**9)
    with pytest.raises(Unauthorized):
        await federation.submit_update(a.client_id, "forged", garbage)
    with pytest.raises(UnknownClient):
        await federation.submit_update("c999-none", a.token, garbage)
    wrong_round = Update("7.1", task_a.model_version, 10, "raw", b"")
    with pytest.raises(RoundClosed):
        await federation.submit_update(a.client_id, a.token, wrong_round)
    assert federation.models.version == 0 and federation.round is not None
    assert federation.round.aggregator.count == 0
    # the round still takes good updates, and only they count
    await a.send(task_a, tiny_model(2.0))
    with pytest.raises(DuplicateUpdate):
        await a.send(task_a, tiny_model(50.0))
    await b.send(task_b, tiny_model(4.0))
    await until(lambda: federation.models.version == 1)
    assert torch.allclose(federation.models.current["w"], torch.full((2, 3), 3.0))


async def test_an_unselected_client_cannot_send_an_update(clock: ManualClock) -> None:
    config = RunConfig(rounds=1, min_clients=2, clients_per_round=2)
    federation = clock.federation(tiny_model(), config)
    federation.start()
    try:
        a, b = await join(federation, "a"), await join(federation, "b")
        task = await a.train_task()
        outsider = await join(federation, "outsider")
        with pytest.raises(NotSelected):
            await outsider.send(task, tiny_model(1.0))
        assert federation.round is not None
        assert federation.round.selected == {a.client_id, b.client_id}
    finally:
        await federation.close()


async def test_config_changed_mid_run_applies_from_the_next_round(
    federation: Federation,
) -> None:
    federation.start()
    a, b = await join(federation, "a"), await join(federation, "b")
    task_a, task_b = await a.train_task(), await b.train_task()
    pending = federation.update_config({"learning_rate": 0.5, "local_epochs": 3})
    assert pending.learning_rate == 0.5
    assert federation.config.learning_rate == 0.1  # the open round is unchanged
    await a.send(task_a, tiny_model(1.0))
    await b.send(task_b, tiny_model(1.0))
    second = await a.train_task()
    assert second.round == 2 and second.train is not None
    assert (second.train.learning_rate, second.train.local_epochs) == (0.5, 3)
    assert task_a.train is not None and task_a.train.learning_rate == 0.1


async def test_bad_config_changes_are_refused(federation: Federation) -> None:
    for changes in (
        {"rounds": 0},
        {"colour": "red"},
        {"seed": 3},
        {"rounds": "ten"},
        {"admit_late": 1},
        {"local_epochs": 1.5},
        {"strategy": "krum"},
        {"strategy": "trimmed-mean:0.5"},
        {"clip_norm": -1.0},
    ):
        with pytest.raises(ConfigError):
            federation.update_config(changes)
    assert federation.pending_config is None


async def test_rounds_can_be_cut_short_mid_run(federation: Federation) -> None:
    federation.start()
    a, b = await join(federation, "a"), await join(federation, "b")
    federation.update_config({"rounds": 1})
    await a.send(await a.train_task(), tiny_model(1.0))
    await b.send(await b.train_task(), tiny_model(1.0))
    assert (await a.task()).kind is TaskKind.STOP
    assert federation.state is RunState.FINISHED


async def test_pause_holds_the_next_round_and_stop_ends_the_run(
    federation: Federation,
) -> None:
    federation.start()
    a, b = await join(federation, "a"), await join(federation, "b")
    task_a, task_b = await a.train_task(), await b.train_task()
    federation.pause()
    await a.send(task_a, tiny_model(1.0))
    await b.send(task_b, tiny_model(1.0))
    await until(lambda: federation.models.version == 1)
    assert (await a.task(wait_s=0)).kind is TaskKind.WAIT
    assert federation.state is RunState.PAUSED
    federation.resume()
    assert (await a.train_task()).round == 2
    federation.stop()
    assert (await b.task()).kind is TaskKind.STOP
    await until(lambda: bool(federation.history) and federation.history[-1].outcome == "abandoned")
    assert federation.models.version == 1
    with pytest.raises(RunNotActive):
        federation.resume()
    with pytest.raises(RunNotActive):
        await federation.join(JoinRequest(name="too-late", codec="raw"))


async def test_each_version_is_encoded_once_per_codec(federation: Federation) -> None:
    a = await join(federation, "a")
    first = await federation.fetch_model(a.client_id, a.token, 0, "bf16-zstd")
    again = await federation.fetch_model(a.client_id, a.token, 0, "bf16-zstd")
    other = await federation.fetch_model(a.client_id, a.token, 0, "json")
    assert first.payload is again.payload and other.payload is not first.payload
    status = federation.status()
    assert status.bytes_by_codec["bf16-zstd"].down == 2 * len(first.payload)
    assert status.bytes_by_transport["inproc"].down == sum(
        len(p.payload) for p in (first, again, other)
    )
    with pytest.raises(Conflict, match="version 5 is not served"):
        await federation.fetch_model(a.client_id, a.token, 5, "raw")
    with pytest.raises(UnknownCodec):
        await federation.fetch_model(a.client_id, a.token, 0, "nope")


async def test_join_is_validated(federation: Federation) -> None:
    with pytest.raises(UnknownCodec):
        await federation.join(JoinRequest(name="a", codec="gzip"))
    for name in ("", "x" * 500, "bad\nname"):
        with pytest.raises(ConfigError):
            await federation.join(JoinRequest(name=name, codec="raw"))


async def test_a_non_finite_aggregate_is_refused_and_the_round_retried_without_its_source(
    clock: ManualClock,
) -> None:
    federation = clock.federation(tiny_model(), RunConfig(rounds=1, min_clients=2))
    federation.start()
    try:
        a, b, c = [await join(federation, name) for name in "abc"]
        tasks = [await p.train_task() for p in (a, b, c)]
        await a.send(tasks[0], tiny_model(1.0))
        await b.send(tasks[1], tiny_model(3.0))
        # c's update slipped past every check before the aggregate (defence in depth)
        round_ = federation.round
        assert round_ is not None
        round_.fold(tiny_model(math.nan), 10, c.client_id)
        round_.reported[c.client_id] = 10
        await until(lambda: len(federation.history) == 1)
        refused = federation.history[0]
        assert (refused.round, refused.attempt, refused.outcome) == (1, 1, "retried")
        assert refused.excluded == (c.client_id,)
        assert refused.reason.startswith("the aggregate holds 9 NaN or infinite values")
        assert f"excluded {c.client_id} (distance nan, weight 10)" in refused.reason
        assert federation.models.version == 0
        assert torch.equal(federation.models.current["w"], torch.zeros(2, 3))
        # the offender is dropped with the reason; the others retry the round at once
        assert state_of(federation, c) is ClientState.FAILED
        assert federation.clients.get(c.client_id).reason.startswith("excluded from round 1.1")
        with pytest.raises(UnknownClient):
            await c.task()
        retry = [await p.train_task() for p in (a, b)]
        assert [t.round_id for t in retry] == ["1.2", "1.2"]
        assert federation.round is not None
        assert federation.round.selected == {a.client_id, b.client_id}
        await a.send(retry[0], tiny_model(1.0))
        await b.send(retry[1], tiny_model(3.0))
        await until(lambda: federation.state is RunState.FINISHED)
        assert torch.equal(federation.models.current["w"], torch.full((2, 3), 2.0))
        completed = federation.history[-1]
        assert (completed.outcome, completed.excluded, completed.reason) == ("completed", (), "")
    finally:
        await federation.close()


async def test_the_strategy_and_clipping_change_from_the_next_round(clock: ManualClock) -> None:
    federation = clock.federation(tiny_model(), RunConfig(rounds=2, min_clients=3))
    federation.start()
    try:
        players = [await join(federation, name) for name in "abc"]
        tasks = [await p.train_task() for p in players]
        pending = federation.update_config({"strategy": "median", "clip_norm": 1000.0})
        assert (pending.strategy, federation.config.strategy) == ("median", "fedavg")
        for player, task, value in zip(players, tasks, (1.0, 2.0, 96.0), strict=True):
            await player.send(task, tiny_model(value))
        await until(lambda: federation.models.version == 1)
        assert torch.equal(federation.models.current["w"], torch.full((2, 3), 33.0))  # mean
        tasks = [await p.train_task() for p in players]
        assert federation.round is not None
        assert isinstance(federation.round.aggregator.inner, robust.CoordinateTrimmedMean)
        assert federation.round.aggregator.clip_norm == 1000.0
        for player, task, value in zip(players, tasks, (1.0, 2.0, 96.0), strict=True):
            await player.send(task, tiny_model(value), num_examples=10 if value < 50 else 100)
        await until(lambda: federation.state is RunState.FINISHED)
        assert torch.equal(federation.models.current["w"], torch.full((2, 3), 2.0))  # median
        with pytest.raises(RunNotActive):
            federation.update_config({"strategy": "fedavg"})
    finally:
        await federation.close()


async def test_a_round_holding_every_update_takes_no_more_than_its_memory_allows(
    monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    monkeypatch.setattr(robust, "HELD_BYTES_BUDGET", 100)  # tiny_model is 44 bytes: 3 fit
    config = RunConfig(rounds=1, min_clients=2, strategy="median", admit_late=True)
    federation = clock.federation(tiny_model(), config)
    players = [await join(federation, name) for name in "abcd"]
    federation.start()
    try:
        await until(lambda: federation.round is not None)
        tasks = [await p.task(wait_s=0) for p in players]
        assert sorted(t.kind for t in tasks).count(TaskKind.TRAIN) == 3
        assert federation.round is not None and len(federation.round.selected) == 3
        assert not federation.round.has_room()  # no late joiner either
    finally:
        await federation.close()
