"""What the server side's adapters may call on a federation: the `FederationService` seam.

The gRPC servicers, the REST routes and the gateway type against this Protocol, never
against the concrete `fedgate.core.federation.Federation`; only the code that builds and
serves a run (`core/factory.py`, `gateway/serve.py`, simulations, tests) holds the
concrete class. It lists exactly what the adapters use, so a change to any other part of
the federation cannot reach the wire, and an adapter can be driven by another
implementation. Attributes are read-only properties: a plain attribute and a property
both satisfy them. ``tests/core/test_service.py`` has mypy check that `Federation`
satisfies it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from fedgate.codecs import Buffer
from fedgate.core.accounts import Accounts
from fedgate.core.admission import Permit
from fedgate.core.config import RunConfig
from fedgate.core.enrolment import Enrolment, KeyView
from fedgate.core.messages import (
    EncodedModel,
    FederationStatus,
    HeartbeatAck,
    JoinAck,
    JoinRequest,
    ModelWant,
    RunState,
    Task,
    UpdateHeader,
    UpdateReceipt,
)


class FederationService(Protocol):
    """One run as the wire adapters see it: client calls, operator calls, shutdown."""

    # ---- what it is ---------------------------------------------------------------------

    @property
    def run_id(self) -> str: ...

    @property
    def state(self) -> RunState: ...

    @property
    def enrolment(self) -> Enrolment:
        """Enrolment keys: checked on joins, managed by admins."""
        ...

    @property
    def accounts(self) -> Accounts:
        """Operator accounts and sessions: every operator call is authorised here."""
        ...

    # ---- client calls ---------------------------------------------------------------------

    async def join(self, request: JoinRequest) -> JoinAck: ...

    async def next_task(
        self, client_id: str, token: str, wait_s: float = ..., want: ModelWant | None = None
    ) -> Task:
        """The client's next task, waiting up to ``wait_s`` for one (long-poll); with
        ``want``, a TRAIN task carries its model (`Task.model`)."""
        ...

    async def fetch_model(
        self,
        client_id: str,
        token: str,
        version: int,
        codec: str | None = None,
        have_ref: str = "",
    ) -> EncodedModel: ...

    def authenticate(self, client_id: str, token: str) -> None:
        """Raise unless ``token`` is this live client's; adapters call it before reading
        an upload's body."""
        ...

    async def begin_update(
        self, client_id: str, token: str, header: UpdateHeader, size: int | None = None
    ) -> Permit:
        """Admit an upload from its header; the adapter then reads at most
        ``permit.max_bytes`` and calls `finish_update`, or `abandon_update`."""
        ...

    async def finish_update(self, permit: Permit, payload: Buffer) -> UpdateReceipt: ...

    def abandon_update(self, permit: Permit) -> None: ...

    async def heartbeat(self, client_id: str, token: str) -> HeartbeatAck: ...

    async def leave(self, client_id: str, token: str) -> None: ...

    # ---- operator calls -------------------------------------------------------------------

    def status(self) -> FederationStatus: ...

    def watch(self) -> AsyncIterator[FederationStatus]:
        """Status now, then after every change, until the run ends."""
        ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def stop(self) -> None: ...

    def update_config(self, changes: Mapping[str, Any]) -> RunConfig: ...

    def kick(self, client_id: str, reason: str = ...) -> None: ...

    def revoke_key(self, key_id: str) -> KeyView: ...

    # ---- the server process ---------------------------------------------------------------

    async def close(self) -> None:
        """Stop the run's background work; the gateway calls it after its adapters stop."""
        ...
