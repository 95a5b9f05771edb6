"""A client's place in a federation: its session, its heartbeats, its leaving.

`Membership` joins with backoff, joins again when the server forgets the session, beats
while it is kept (`kept`) and leaves at the end. It knows nothing of models or training
and imports no torch: a `fedgate client` process joins with it first and imports torch
while its heartbeats already run (`fedgate.run.client_runner`); `FederatedClient` takes
tasks on it.

A join refused for what asking again cannot change (the enrolment key, the client's
settings) raises, told as the end of the client (`refused`); no room to join, a proxy's
odd answer or a lost connection is waited out with backoff (`fedgate.core.retry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from fedgate.core.messages import JoinRequest
from fedgate.core.retry import Backoff, Link
from fedgate.core.transport import Session, Transport
from fedgate.errors import (
    BadRequest,
    CodecError,
    ConfigError,
    Conflict,
    FedgateError,
    Forbidden,
    Overloaded,
    RateLimited,
    RunNotActive,
    ServerError,
    StoreError,
    TlsError,
    TransportError,
    Unauthorized,
    UnknownClient,
    error_from_code,
)

log = logging.getLogger("fedgate.client")
T = TypeVar("T")

UNREACHABLE = "cannot reach the server"
# a session the server does not know (any more): joining again mends it
SESSION_LOST = (UnknownClient, Unauthorized)
# what no retry mends: raised out of `run` (transient TransportErrors never get this far)
FATAL = (Forbidden, TransportError)
# a join refused for the client's credentials or settings: asking again gets the same
JOIN_REFUSED = (Unauthorized, Forbidden, ConfigError, BadRequest, CodecError)


@dataclass
class ClientReport:
    """What one client did, for logs and tests."""

    client_id: str = ""  # the id of its latest session
    rounds: list[int] = field(default_factory=list)  # rounds whose update was accepted
    # why tasks were dropped: stale (round closed, model version gone) or update refused
    dropped: list[str] = field(default_factory=list)
    rejoins: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    ended: str = ""  # why `run` returned ("" while it runs, or if it was cancelled)


def transient(error: FedgateError) -> bool:
    """Worth asking again as it is: the connection, or the server's own failure."""
    if isinstance(error, TlsError):
        return False  # an untrusted certificate will not become trusted by asking again
    # the connection, the server's own failure, or its store (which may come back)
    return (
        isinstance(error, TransportError | ServerError | StoreError) or type(error) is FedgateError
    )


def trouble_of(error: FedgateError) -> str:
    """What a transient error says about the server, for the log (one line per change)."""
    if isinstance(error, RateLimited):
        return "the server limits this client's calls"
    if isinstance(error, Overloaded):
        return "the server is busy"
    if isinstance(error, TransportError):
        return UNREACHABLE
    return "the server fails"


def run_over(error: RunNotActive) -> str:
    """Why a client ends when the server says its run is no longer on."""
    return f"the run is over: {error.message}"


class Membership:
    """One client's session with a federation, kept alive (see the module docstring)."""

    def __init__(
        self,
        transport: Transport,
        name: str,
        codec: str,
        num_examples: int,
        *,
        key: str = "",
        backoff: Backoff | None = None,
    ) -> None:
        self.transport = transport
        self.name = name
        self.codec = codec  # the canonical name the client joins with
        self.num_examples = num_examples
        self.key = key  # the enrolment key the client joins (and rejoins) with
        self.link = Link(name, backoff or Backoff())
        self.report = ClientReport()
        self._session: Session | None = None
        self._has_session = asyncio.Event()  # heartbeats wait for it
        self._answered = False  # has the server taken a call on this session yet
        self._heartbeat_s = 2.0
        self._kept = 0  # how many `kept` blocks are open
        self._beating: asyncio.Task[None] | None = None

    def answered(self) -> None:
        """The server has taken a call on the current session (it is not one it forgets
        at once: see `forget`)."""
        self._answered = True

    async def session(self) -> Session:
        """The current session, joining (again) first if there is none."""
        request = JoinRequest(
            name=self.name, codec=self.codec, num_examples=self.num_examples, key=self.key
        )
        while self._session is None:
            try:
                ack = await self.reaching(lambda: self.transport.join(request))
            except JOIN_REFUSED as exc:
                raise refused(self.name, exc) from None
            except (RunNotActive, *FATAL):
                raise
            except Conflict as exc:  # no room (the federation, or the key, is full): wait
                await asyncio.sleep(self.link.failed("no room to join", exc))
                continue
            except FedgateError as exc:  # unexpected of a join (a proxy's 404...): wait
                await asyncio.sleep(self.link.failed("the server refuses joins", exc))
                continue
            self._session, self._answered = Session.from_ack(ack), False
            self._heartbeat_s = ack.heartbeat_interval_s
            self._has_session.set()
            self.report.client_id = ack.client_id
            log.info("%s: joined run %s as %s", self.name, ack.run_id, ack.client_id)
        return self._session

    async def forget(self, session: Session, error: FedgateError) -> None:
        """The server no longer knows ``session`` (and any task it held is stale): join
        again. One it forgot before answering a single call is not rejoined at once,
        so a server that keeps forgetting is not asked in a tight loop."""
        log.warning("%s: the server forgot this client (%s); joining again", self.name, error)
        if self._session is session:
            self._session = None
            self._has_session.clear()
            self.report.rejoins += 1
        if not self._answered:
            await asyncio.sleep(self.link.failed("the server forgets this client", error))

    async def reaching(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` until the server answers it: a lost connection (or a failure of the
        server's own) is waited out with backoff; any other error is the caller's."""
        while True:
            try:
                result = await call()
            except FedgateError as exc:
                if not transient(exc):
                    raise
                await asyncio.sleep(self.link.failed(trouble_of(exc), exc))
                continue
            self.link.succeeded()
            return result

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[Membership]:
        """Heartbeats while inside (from the join on, whenever it comes); the session is
        left when the outermost block ends. Blocks nest: the client runner keeps the
        membership from before its first request, `FederatedClient.run` within it."""
        if self._kept == 0:
            self._beating = asyncio.create_task(self._heartbeats())
        self._kept += 1
        try:
            yield self
        finally:
            self._kept -= 1
            if self._kept == 0 and self._beating is not None:
                self._beating.cancel()
                self._beating = None
                await self._leave()

    async def _heartbeats(self) -> None:
        """A heartbeat every interval the server asked for, counted from the join: a
        client that is not asking for tasks yet (importing torch) is kept by these alone."""
        while True:
            await self._has_session.wait()
            await asyncio.sleep(self._heartbeat_s)
            session = self._session
            if session is None:
                continue
            try:
                await self.transport.heartbeat(session)
            except FedgateError as exc:  # the task loop deals with it on its next call
                if transient(exc):
                    self.link.noticed(trouble_of(exc), exc)
                log.debug("%s: heartbeat failed: %s", self.name, exc)
            else:
                self.link.succeeded()

    async def _leave(self) -> None:
        session, self._session = self._session, None
        self._has_session.clear()
        if session is None:
            return
        with contextlib.suppress(FedgateError, TimeoutError):
            async with asyncio.timeout(5.0):
                await self.transport.leave(session)


def refused(name: str, error: FedgateError) -> FedgateError:
    """``error``, told as the end of this client: what was refused, and that it gives up."""
    what = (
        "its enrolment key"
        if isinstance(error, Unauthorized | Forbidden)
        else "its settings (name, codec or size)"
    )
    return error_from_code(
        error.code,
        f"{name}: the server refused {what}: {error.message}; not retrying",
    )
