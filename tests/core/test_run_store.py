"""The federation keeps its run through the RunStore port, and can be resumed from it.

In process, on the in-memory store (the SQL store passes the same contract in
tests/store/, and a real server is killed and resumed in tests/test_resume.py).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.memory_store import InMemoryRunStore
from fedgate.core.messages import ClientState, RoundOutcome, RunState, TaskKind
from fedgate.core.ports import RunMeta, weights_hash
from fedgate.errors import RoundClosed
from tests.conftest import join, play_round, tiny_model, until
from tests.core.clock import ManualClock

CONFIG = RunConfig(
    rounds=3, min_clients=2, round_deadline_s=5.0, heartbeat_interval_s=0.2, heartbeat_timeout_s=2.0
)


def without_ready(states: list[ClientState]) -> list[ClientState]:
    """A client asking before the round opens is ready for a moment: timing, not a rule."""
    return [s for s in states if s is not ClientState.READY]


async def test_every_round_and_client_transition_reaches_the_store() -> None:
    store = InMemoryRunStore()
    federation = Federation(tiny_model(), CONFIG, store=store, meta=RunMeta("", "digits", "cnn"))
    federation.start()
    try:
        a, b = await join(federation, "a"), await join(federation, "b")
        await play_round(federation, a, b)
        await federation.recorder.flush()
        run = store.load_run(federation.run_id)
        assert (run.meta.dataset, run.meta.model) == ("digits", "cnn")
        assert [r.outcome for r in run.history] == [RoundOutcome.COMPLETED]
        assert run.model.version == 1
        assert run.model.sha256 == weights_hash(federation.models.current)
        assert run.snapshot.round_number == 2
        assert {c.client_id for c in run.clients} == {a.client_id, b.client_id}
        assert all(c.rounds_completed == 1 for c in run.clients)
        events = store.client_events(federation.run_id)
        states = [e.state for e in events if e.client_id == a.client_id]
        assert without_ready(states)[:4] == [
            ClientState.JOINED,
            ClientState.TRAINING,
            ClientState.UPLOADING,
            ClientState.FINISHED,
        ]
    finally:
        await federation.close()


async def test_a_resumed_round_selects_only_the_clients_that_came_back() -> None:
    """Restored clients count again once they ask: one that never comes back after the
    restart is not selected, and no round waits for it."""
    store = InMemoryRunStore()
    first = Federation(tiny_model(), CONFIG, store=store)
    first.start()
    a, b, gone = [await join(first, name) for name in ("a", "b", "gone")]
    await play_round(first, a, b, gone)
    await first.recorder.flush()
    await first.close()

    stored = store.unfinished_run()
    assert stored is not None
    second = Federation.resumed(stored, store=store)
    second.start()
    try:
        a2 = dataclasses.replace(a, federation=second)
        b2 = dataclasses.replace(b, federation=second)
        await play_round(second, a2, b2, value=2.0)
        last = second.history[-1]
        assert last.outcome is RoundOutcome.COMPLETED
        assert set(last.selected) == {a.client_id, b.client_id}
        assert second.clients.get(gone.client_id).state is ClientState.JOINED
    finally:
        await second.close()


async def test_a_resumed_run_goes_on_from_its_last_completed_round() -> None:
    store = InMemoryRunStore()
    first = Federation(tiny_model(), CONFIG, store=store)
    first.start()
    a, b = await join(first, "a"), await join(first, "b")
    await play_round(first, a, b, value=2.0)
    cut_task = await a.train_task()  # round 2 is open when the process "dies"
    await until(lambda: first.state is RunState.RUNNING)
    await first.recorder.flush()
    await first.close()

    stored = store.unfinished_run()
    assert stored is not None and stored.meta.run_id == first.run_id
    second = Federation.resumed(stored, store=store)
    second.start()
    try:
        assert second.models.version == 1
        assert weights_hash(second.models.current) == weights_hash(first.models.current)
        # the same tokens still work; the update for the cut attempt is refused as late
        a2 = dataclasses.replace(a, federation=second)
        b2 = dataclasses.replace(b, federation=second)
        with pytest.raises(RoundClosed):
            await a2.send(cut_task, tiny_model(3.0))
        await play_round(second, a2, b2, value=3.0)
        await play_round(second, a2, b2, value=3.0)
        await until(lambda: second.state is RunState.FINISHED)
        outcomes = [(r.round, r.attempt, r.outcome) for r in second.history]
        assert outcomes == [
            (1, 1, RoundOutcome.COMPLETED),
            (2, 1, RoundOutcome.ABANDONED),
            (2, 2, RoundOutcome.COMPLETED),
            (3, 1, RoundOutcome.COMPLETED),
        ]
        assert second.clients.get(a.client_id).rounds_completed == 3
        await second.recorder.flush()
        assert store.unfinished_run() is None
    finally:
        await second.close()


async def test_a_watcher_sees_every_transition_however_close_together() -> None:
    federation = Federation(tiny_model(), CONFIG)
    federation.start()
    try:
        watched = federation.watch(min_interval_s=0.05)
        await anext(watched)
        a, b = await join(federation, "a"), await join(federation, "b")
        await play_round(federation, a, b)
        status = await anext(watched)  # one status for the whole round: changes coalesced
        seen = [e.state for e in status.events if e.client_id == a.client_id]
        assert without_ready(seen)[:4] == [
            ClientState.JOINED,
            ClientState.TRAINING,
            ClientState.UPLOADING,
            ClientState.FINISHED,
        ]
        await watched.aclose()
    finally:
        await federation.close()


async def test_late_joiners_fill_a_round_of_every_available_client() -> None:
    # clients_per_round 0 means "every available client": one who joins while the round is
    # open and late joiners are admitted takes part in it
    config = dataclasses.replace(CONFIG, clients_per_round=0, admit_late=True)
    federation = Federation(tiny_model(), config)
    federation.start()
    try:
        a, _b = await join(federation, "a"), await join(federation, "b")
        task_a = await a.train_task()
        late = await join(federation, "late")
        assert (await late.train_task()).round_id == task_a.round_id
    finally:
        await federation.close()


async def test_updates_of_a_retried_round_are_not_counted_as_rounds_taken_part_in() -> None:
    clock = ManualClock()
    federation = clock.federation(tiny_model(), CONFIG)
    federation.start()
    try:
        a, b = await join(federation, "a"), await join(federation, "b")
        task = await a.train_task()
        await b.train_task()
        await a.send(task, tiny_model(1.0))  # b never reports: the round is retried
        await clock.advance_beating(CONFIG.round_deadline_s, [a, b], every=0.25)
        await until(lambda: len(federation.history) == 1)
        assert federation.history[0].outcome is RoundOutcome.RETRIED
        assert federation.clients.get(a.client_id).rounds_completed == 0
        retry = await a.train_task()
        assert retry.kind is TaskKind.TRAIN and retry.round_id == "1.2"
    finally:
        await federation.close()


def test_model_hashes_tell_bit_identical_weights_apart() -> None:
    model = tiny_model(1.0)
    assert weights_hash(model) == weights_hash({k: v.clone() for k, v in model.items()})
    changed = dict(model, w=model["w"].clone())
    changed["w"][0, 0] = torch.nextafter(changed["w"][0, 0], torch.tensor(2.0))
    assert weights_hash(changed) != weights_hash(model)
