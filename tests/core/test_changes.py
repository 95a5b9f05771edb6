"""Change notification: task long-polls wake at run-level changes only; the round loop and
watchers at every change, client transitions included."""

from __future__ import annotations

import asyncio
import time

from fedgate.core.changes import Changes
from fedgate.core.federation import Federation
from fedgate.core.messages import ClientEvent, ClientState, TaskKind
from tests.conftest import join


def transition(client_id: str = "c1") -> ClientEvent:
    return ClientEvent(client_id, ClientState.UPLOADING, "", time.time())


async def test_a_client_transition_wakes_watchers_but_not_task_waiters() -> None:
    changes = Changes()
    any_change = asyncio.create_task(changes.wait(5.0))
    run_change = asyncio.create_task(changes.wait_for_run(5.0))
    await asyncio.sleep(0)
    changes.client_event(transition())
    await asyncio.wait_for(any_change, 1.0)
    await asyncio.sleep(0.05)
    assert not run_change.done()
    changes.notify()  # a round opened, the run paused...: every waiter wakes
    await asyncio.wait_for(run_change, 1.0)
    assert [e.state for e in changes.events_since(0)] == [ClientState.UPLOADING]


async def test_a_watcher_that_was_busy_misses_no_transition() -> None:
    changes = Changes()
    mark = changes.notified
    changes.client_event(transition())
    await asyncio.wait_for(changes.wait(5.0, since=mark), 0.5)  # at once: one came meanwhile


async def test_a_long_poll_is_answered_when_the_round_opens(
    federation: Federation,
) -> None:
    a = await join(federation, "a")
    polls = asyncio.create_task(federation.next_task(a.client_id, a.token, 5.0))
    await asyncio.sleep(0.05)
    await join(federation, "b")  # a client transition: no task yet
    assert not polls.done()
    federation.start()  # two clients, the minimum: the round opens and the poll answers
    task = await asyncio.wait_for(polls, 2.0)
    assert task.kind is TaskKind.TRAIN and task.round == 1


async def test_a_kicked_client_s_long_poll_ends_at_once(federation: Federation) -> None:
    a = await join(federation, "a")
    polls = asyncio.create_task(federation.next_task(a.client_id, a.token, 5.0))
    await asyncio.sleep(0.05)
    federation.kick(a.client_id, "removed")
    results = await asyncio.wait_for(asyncio.gather(polls, return_exceptions=True), 1.0)
    assert "is left (removed)" in str(results[0])


async def test_run_waiters_resume_largest_first_then_in_the_order_they_came() -> None:
    changes = Changes()
    resumed: list[str] = []

    async def wait(name: str, first: float) -> None:
        await changes.wait_for_run(5.0, first=first)
        resumed.append(name)

    waits = [("small", 55), ("large", 500), ("mid-1", 240), ("mid-2", 240), ("none", 0)]
    tasks = [asyncio.create_task(wait(name, first)) for name, first in waits]
    await asyncio.sleep(0)
    changes.notify()
    await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert resumed == ["large", "mid-1", "mid-2", "small", "none"]


async def test_a_run_waiter_that_timed_out_is_forgotten() -> None:
    changes = Changes()
    await changes.wait_for_run(0.01, first=3)
    later = asyncio.create_task(changes.wait_for_run(5.0))
    await asyncio.sleep(0)
    assert len(changes._run_waiters) == 1  # the first waiter's entry is gone
    changes.notify()
    await asyncio.wait_for(later, 1.0)
    assert changes._run_waiters == {}


async def test_the_largest_client_gets_the_round_s_task_first(federation: Federation) -> None:
    """Task long-polls waiting when a round opens are answered largest client first: its
    training, the round's longest, starts first."""
    answered: list[str] = []
    clients = [await join(federation, name, num_examples=n) for name, n in [("a", 50), ("b", 900)]]

    async def poll(client_id: str, token: str) -> None:
        await federation.next_task(client_id, token, 5.0)
        answered.append(client_id)

    polls = [asyncio.create_task(poll(c.client_id, c.token)) for c in clients]
    await asyncio.sleep(0.05)
    federation.start()
    await asyncio.wait_for(asyncio.gather(*polls), 2.0)
    assert answered == [clients[1].client_id, clients[0].client_id]
