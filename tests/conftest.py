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

    async def task(self, wait_s: float = 2.0) -> Task:
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
    federation: Federation, name: str, codec: str = "raw", num_examples: int = 100
) -> Player:
    ack = await federation.join(JoinRequest(name=name, codec=codec, num_examples=num_examples))
    return Player(federation, ack.client_id, ack.token, codec)


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
