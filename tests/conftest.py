"""Shared fixtures: a tiny model and a driver that plays clients against a Federation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import pytest
import torch

from fedgate.codecs import get_codec
from fedgate.core.config import RunConfig
from fedgate.core.evaluation_process import without_grpc_fork_handlers
from fedgate.core.federation import Federation
from fedgate.core.messages import JoinRequest, Task, TaskKind, Update, UpdateReceipt

# as in `fedgate serve`: tests fork evaluation workers from this process, which may
# have used gRPC by then (`fedgate.core.evaluation_process`)
without_grpc_fork_handlers()


def tiny_model(value: float = 0.0) -> dict[str, torch.Tensor]:
    return {
        "w": torch.full((2, 3), value),
        "b": torch.full((3,), value),
        "steps": torch.tensor(0, dtype=torch.int64),
    }


@dataclass
class Player:
    """A hand-driven client: every call is explicit, so tests control the timing."""

    federation: Federation
    client_id: str
    token: str
    codec: str = "raw"

    # a task the join's first ask was given (a late joiner admitted to an open round)
    given: Task | None = None

    async def task(self, wait_s: float = 2.0) -> Task:
        if self.given is not None:
            given, self.given = self.given, None
            return given
        return await self.federation.next_task(self.client_id, self.token, wait_s)

    async def train_task(self, wait_s: float = 5.0) -> Task:
        task = await self.task(wait_s)
        assert task.kind is TaskKind.TRAIN, task
        return task

    async def send(
        self,
        task: Task,
        weights: Mapping[str, torch.Tensor],
        num_examples: int = 10,
        codec: str | None = None,
    ) -> UpdateReceipt:
        name = codec or self.codec
        update = Update(
            round_id=task.round_id,
            model_version=task.model_version,
            num_examples=num_examples,
            codec=name,
            payload=get_codec(name).encode(weights),
        )
        return await self.federation.submit_update(self.client_id, self.token, update)

    async def heartbeat(self) -> None:
        await self.federation.heartbeat(self.client_id, self.token)

    async def leave(self) -> None:
        await self.federation.leave(self.client_id, self.token)


async def join(
    federation: Federation,
    name: str,
    codec: str = "raw",
    num_examples: int = 100,
    ask: bool = True,
) -> Player:
    """A joined player that has asked once for work without waiting, as every client does
    right after its join: a round counts only clients that have asked (``ask=False``: one
    still starting up). A task that ask was given is kept for the player's next `task`."""
    ack = await federation.join(JoinRequest(name=name, codec=codec, num_examples=num_examples))
    player = Player(federation, ack.client_id, ack.token, codec)
    if ask:
        first = await federation.next_task(ack.client_id, ack.token, 0.0)
        player.given = None if first.kind is TaskKind.WAIT else first
    return player


async def play_round(federation: Federation, *players: Player, value: float = 1.0) -> None:
    """One round: every player asks at once (as clients do: a round opens only on clients
    that have asked), sends ``value`` everywhere, and the model moves on one version."""
    version = federation.models.version
    tasks = await asyncio.gather(*(player.train_task() for player in players))
    for player, task in zip(players, tasks, strict=True):
        await player.send(task, tiny_model(value), num_examples=10)
    await until(lambda: federation.models.version == version + 1)


async def until(predicate: object, within_s: float = 5.0) -> None:
    """Wait until ``predicate()`` holds (the federation runs in the background)."""
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + within_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def federation() -> AsyncIterator[Federation]:
    fed = Federation(
        tiny_model(),
        RunConfig(
            rounds=3,
            min_clients=2,
            round_deadline_s=5.0,
            heartbeat_interval_s=0.2,
            heartbeat_timeout_s=2.0,
        ),
    )
    yield fed
    await fed.close()
