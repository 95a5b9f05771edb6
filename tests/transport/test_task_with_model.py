"""A round costs one request down (the task with its model) and one up, on every wire.

Counted on the server's side: the servers here serve a `Counted` federation, which notes
each task and model request its adapter makes (one per request on the wire). Older
shapes keep working: a client whose transport cannot take a model with its task (here a
wrapper with only the six calls) fetches it, and a client of a server without the call
(an older fedgate: the call hidden on the server) falls back to fetching.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

import grpc
import pytest
import torch
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fedgate.codecs import CODECS
from fedgate.core.client import FederatedClient
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import (
    EncodedModel,
    HeartbeatAck,
    JoinAck,
    JoinRequest,
    ModelWant,
    Task,
    TrainConfig,
    Update,
    UpdateReceipt,
)
from fedgate.core.ports import weights_hash
from fedgate.core.service import FederationService
from fedgate.core.training import TrainResult
from fedgate.core.transport import ModelOnTask, Session, Transport
from fedgate.transport.connect import connect
from fedgate.transport.servers import SERVER_ADAPTERS, Extensions, ServerSettings
from tests.conftest import tiny_model

WIRES = sorted(SERVER_ADAPTERS)
ROUNDS = 3


class StepTrainer:
    """Training reduced to its contract: every float weight moves by 0.1."""

    num_examples = 10

    def train(self, weights: Mapping[str, torch.Tensor], config: TrainConfig) -> TrainResult:
        moved = {n: t + 0.1 if t.is_floating_point() else t.clone() for n, t in weights.items()}
        return TrainResult(moved, self.num_examples, loss=1.0, accuracy=0.5)


class Counted:
    """The federation as the server adapters call it, counting task and model requests."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.federation, name)

    async def next_task(
        self, client_id: str, token: str, wait_s: float = 30.0, want: ModelWant | None = None
    ) -> Task:
        self.calls["task"] += 1
        task = await self.federation.next_task(client_id, token, wait_s, want)
        self.calls["task with model"] += task.model is not None
        return task

    async def fetch_model(self, *args: Any) -> EncodedModel:
        self.calls["fetch"] += 1
        return await self.federation.fetch_model(*args)


@dataclasses.dataclass
class SixCalls:
    """A transport with only the six calls (as a wrapper or an older transport has)."""

    inner: Transport

    @property
    def name(self) -> str:
        return self.inner.name

    async def join(self, request: JoinRequest) -> JoinAck:
        return await self.inner.join(request)

    async def next_task(self, session: Session, wait_s: float) -> Task:
        return await self.inner.next_task(session, wait_s)

    async def fetch_model(
        self, session: Session, version: int, codec: str, have_ref: str = ""
    ) -> EncodedModel:
        return await self.inner.fetch_model(session, version, codec, have_ref)

    async def submit_update(self, session: Session, update: Update) -> UpdateReceipt:
        return await self.inner.submit_update(session, update)

    async def heartbeat(self, session: Session) -> HeartbeatAck:
        return await self.inner.heartbeat(session)

    async def leave(self, session: Session) -> None:
        await self.inner.leave(session)

    async def close(self) -> None:
        await self.inner.close()


class HideNextTaskWithModel(grpc.aio.ServerInterceptor):
    """A gRPC server as an older fedgate is: without NextTaskWithModel (nor Work, which
    came after it)."""

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        if details.method.endswith(("/NextTaskWithModel", "/Work")):
            return None  # grpc answers UNIMPLEMENTED, as for a call it does not know
        return await continuation(details)


class HideTaskWithModelRoute:
    """A REST server as an older fedgate is: without the task-with-model route (its
    requests get the framework's own 404, not a fedgate problem)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/task-with-model"):
            await JSONResponse({"detail": "Not Found"}, 404)(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def hide_task_with_model_route(app: Any) -> None:
    app.add_middleware(HideTaskWithModelRoute)


OLD_SERVER = {
    "grpc": Extensions(grpc_interceptors=(HideNextTaskWithModel(),)),
    "rest": Extensions(rest=(hide_task_with_model_route,)),
}


@asynccontextmanager
async def served(wire: str, extensions: Extensions) -> AsyncIterator[tuple[Counted, str]]:
    config = RunConfig(rounds=ROUNDS, min_clients=1, round_deadline_s=10.0, seed=0)
    counted = Counted(Federation(tiny_model(), config))
    adapter = SERVER_ADAPTERS[wire]()
    settings = ServerSettings(admin_token="t", extensions=extensions)
    address = await adapter.start(cast(FederationService, counted), settings)
    try:
        yield counted, address
    finally:
        await adapter.stop(1.0)
        await counted.federation.close()


@dataclasses.dataclass(frozen=True)
class Ran:
    weights: str  # the final model's hash
    down: int  # the ledger's bytes down
    up: int
    client_down: int  # what the client counted
    calls: Mapping[str, int]


async def federate(
    wire: str, codec: str, deltas: bool, *, six_calls: bool = False, old_server: bool = False
) -> Ran:
    async with served(wire, OLD_SERVER[wire] if old_server else Extensions()) as (counted, at):
        federation = counted.federation
        run = federation.start()
        transport = connect(wire, at)
        assert isinstance(transport, ModelOnTask)
        member = FederatedClient(
            SixCalls(transport) if six_calls else transport,
            StepTrainer(),
            "a",
            codec,
            poll_s=5.0,
            deltas=deltas,
        )
        try:
            report = await asyncio.wait_for(member.run(), 60)
        finally:
            await transport.close()
        status = await run
    assert report.rounds == list(range(1, ROUNDS + 1)) and report.dropped == []
    traffic = status.bytes_by_transport[wire]
    assert status.bytes_by_codec[codec] == traffic
    weights = weights_hash(federation.models.current)
    return Ran(weights, traffic.down, traffic.up, report.bytes_down, dict(counted.calls))


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("deltas", [False, True])
async def test_a_round_costs_one_request_down_and_sends_what_fetching_sent(
    wire: str, codec: str, deltas: bool
) -> None:
    """Every wire x codec x deltas: the same final model, bytes down and up in the ledger
    and at the client, as with the task and fetch requests of a round before."""
    carried = await federate(wire, codec, deltas)
    assert carried.calls["task with model"] == ROUNDS and carried.calls.get("fetch", 0) == 0
    # every task request but the TRAIN ones got WAIT or STOP: no round asked twice
    assert carried.calls["task"] >= ROUNDS + 1
    assert carried.down == carried.client_down > 0
    fetched = await federate(wire, codec, deltas, six_calls=True)
    assert fetched.calls["fetch"] == ROUNDS and fetched.calls.get("task with model", 0) == 0
    assert dataclasses.replace(carried, calls={}) == dataclasses.replace(fetched, calls={})


@pytest.mark.parametrize("wire", WIRES)
async def test_a_client_of_an_older_server_fetches_its_models(wire: str) -> None:
    """The server has no task-with-model call: asked once, the client goes back to the
    task and fetch requests, and the run ends as it would have."""
    old = await federate(wire, "raw", False, old_server=True)
    assert old.calls["fetch"] == ROUNDS and old.calls.get("task with model", 0) == 0
    new = await federate(wire, "raw", False)
    assert dataclasses.replace(old, calls={}) == dataclasses.replace(new, calls={})
