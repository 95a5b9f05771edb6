"""The Ray actors of ``--engine ray``: client hosts, and the federation of ``inproc``.

`ClientActor` is a `ClientHost` (`fedgate.run.engines.virtual`) as a Ray actor: its virtual
clients reach the gateway over gRPC or REST, or, with ``--transport inproc``, the
`FederationHost` actor.

``--transport inproc`` with Ray: an in-process federation cannot be shared with clients in
other processes, and clients on a cluster are in other processes. So with Ray, "in
process" means no gRPC, no REST and no `fedgate serve`: the `Federation` lives in one
async actor (`FederationHost`), built as `sim --transport inproc` builds it (open
enrolment, the in-memory store), and the virtual clients on the hosts call it through
Ray, one actor call per `Transport` call (`ActorTransport`). What they exchange is what
the in-process transport exchanges: the core's messages, with payloads encoded by the
client's codec, counted as ``inproc`` traffic.

Ray pickles those messages between its processes: a Ray cluster trusts its own members
(Ray's security model), and these are all this simulation's. The payloads are still only
ever decoded by the federation's codecs, as the gateway decodes them.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import ray
from ray.exceptions import RayError, RayTaskError

from fedgate.core.config import RunConfig
from fedgate.core.data import load_dataset
from fedgate.core.factory import build_federation
from fedgate.core.federation import Federation
from fedgate.core.messages import (
    EncodedModel,
    FederationStatus,
    HeartbeatAck,
    JoinAck,
    JoinRequest,
    ModelWant,
    RoundRecord,
    Task,
    Update,
    UpdateReceipt,
)
from fedgate.core.transport import Session, Transport
from fedgate.errors import FedgateError, TransportError
from fedgate.run.engines.virtual import ClientHost, Gateway, HostReport, HostSpec
from fedgate.transport.connect import connect
from fedgate.transport.inproc import InProcTransport

T = TypeVar("T")
TRANSPORT_CALLS = frozenset(
    {
        "join",
        "next_task",
        "next_task_with_model",
        "fetch_model",
        "submit_update",
        "heartbeat",
        "leave",
    }
)
WAIT_S = 1.0  # `rounds_after` answers at least this often, new rounds or not


class FederationHost:
    """The federation of a simulation, served to its clients' `ActorTransport`s (a Ray
    async actor: every call is a coroutine of the actor's event loop)."""

    def __init__(self, dataset: str, model: str, data_dir: str, config: RunConfig) -> None:
        self.spec = (dataset, model, data_dir, config)
        self._federation: Federation | None = None
        self._run: asyncio.Task[FederationStatus] | None = None

    async def start(self) -> None:
        """Build the federation and start its run (in the actor's event loop)."""
        dataset, model, data_dir, config = self.spec
        data = load_dataset(dataset, config.seed, data_dir or None)
        self._federation = build_federation(data, model, config)
        self._run = self._federation.start()

    async def call(self, method: str, *args: Any) -> Any:
        """A `Transport` call of a client, made in process."""
        if method not in TRANSPORT_CALLS:
            raise TransportError(f"no transport call {method!r}")
        return await getattr(InProcTransport(self.federation), method)(*args)

    async def rounds_after(self, seen: int) -> tuple[tuple[RoundRecord, ...], bool]:
        """Round records past the first ``seen``, once there are some, the run has ended,
        or `WAIT_S` passed; and whether the run has ended."""
        history = self.federation.history
        if len(history) <= seen and not self.run.done():
            await self.federation.wait_for_change(WAIT_S)
            history = self.federation.history
        return tuple(history[seen:]), self.run.done()

    async def outcome(self) -> FederationStatus:
        """The run's final status, once it has ended; the federation is closed."""
        try:
            return await self.run
        finally:
            await self.federation.close()

    async def stop(self) -> None:
        self.federation.stop()

    @property
    def federation(self) -> Federation:
        if self._federation is None:
            raise TransportError("the federation has not started")
        return self._federation

    @property
    def run(self) -> asyncio.Task[FederationStatus]:
        if self._run is None:
            raise TransportError("the federation has not started")
        return self._run


class ActorTransport:
    """A client's `Transport` to the `FederationHost` actor ``handle``."""

    name = InProcTransport.name

    def __init__(self, handle: Any) -> None:
        self.handle = handle  # a ray.actor.ActorHandle: its methods are untyped

    async def join(self, request: JoinRequest) -> JoinAck:
        return expect(JoinAck, await self._call("join", request))

    async def next_task(self, session: Session, wait_s: float) -> Task:
        return expect(Task, await self._call("next_task", session, wait_s))

    async def next_task_with_model(self, session: Session, wait_s: float, want: ModelWant) -> Task:
        """The task with its model (`fedgate.core.transport.ModelOnTask`): one actor call."""
        return expect(Task, await self._call("next_task_with_model", session, wait_s, want))

    async def fetch_model(
        self, session: Session, version: int, codec: str, have_ref: str = ""
    ) -> EncodedModel:
        return expect(
            EncodedModel, await self._call("fetch_model", session, version, codec, have_ref)
        )

    async def submit_update(self, session: Session, update: Update) -> UpdateReceipt:
        return expect(UpdateReceipt, await self._call("submit_update", session, update))

    async def heartbeat(self, session: Session) -> HeartbeatAck:
        return expect(HeartbeatAck, await self._call("heartbeat", session))

    async def leave(self, session: Session) -> None:
        await self._call("leave", session)

    async def close(self) -> None:
        return None

    async def _call(self, method: str, *args: Any) -> object:
        """The actor's answer; the federation's own error as itself, Ray's as a
        TransportError (the actor, or its node, is gone: a lost connection)."""
        try:
            answer: object = await self.handle.call.remote(method, *args)
        except RayTaskError as error:
            if isinstance(error.cause, FedgateError):
                raise error.cause from None
            raise TransportError(f"the federation's actor failed: {error}") from None
        except RayError as error:
            raise TransportError(f"cannot reach the federation's actor: {error}") from None
        return answer


def answer(ref: Any) -> object:
    """`ray.get`, with the error an actor method raised as itself when it is fedgate's."""
    try:
        value: object = ray.get(ref)
    except RayTaskError as error:
        if isinstance(error.cause, FedgateError):
            raise error.cause from None
        raise
    return value


def node_address() -> str:
    """This node's address, as the Ray cluster knows it."""
    return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]


def expect(kind: type[T], value: object) -> T:
    if not isinstance(value, kind):
        raise TransportError(f"the federation answered {type(value).__name__}, not {kind.__name__}")
    return value


class ClientActor(ClientHost):
    """A `ClientHost` in a Ray actor: ``federation`` is the `FederationHost` actor its
    ``inproc`` clients call (None without one)."""

    def __init__(self, spec: HostSpec, federation: Any = None) -> None:
        super().__init__(spec, self._connect, node=node_address())
        self.federation = federation

    def _connect(self, transport: str, address: str) -> Transport:
        if transport == ActorTransport.name:
            return ActorTransport(self.federation)
        return connect(transport, address)

    # async methods: Ray makes this an async actor, `stop` runs while `run` does
    async def ready(self) -> None:
        """Answers once the actor exists (its process started, torch and fedgate imported)."""

    async def run(self, gateway: Gateway) -> HostReport:
        return await super().run(gateway)

    async def stop(self) -> None:
        await super().stop()


# ActorClasses: .options(...).remote(...) and their methods' .remote() are untyped
FEDERATION_ACTOR: Any = ray.remote(FederationHost)
CLIENT_ACTOR: Any = ray.remote(ClientActor)
