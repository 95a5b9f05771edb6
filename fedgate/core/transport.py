"""The client side's Transport seam: the six calls a client makes to a federation, and
the optional seventh (`ModelOnTask`) that hands a task out with its model.

The client loop (`fedgate.core.client`) drives any implementation: in-process, gRPC or
REST (`fedgate.transport`). Implementations raise only fedgate's own errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fedgate.core.messages import (
    EncodedModel,
    HeartbeatAck,
    JoinAck,
    JoinRequest,
    ModelWant,
    Task,
    Update,
    UpdateReceipt,
)

# the in-process transport's name (`fedgate.transport.inproc`), as sim and results spell it
INPROC = "inproc"


@dataclass(frozen=True)
class Session:
    """Who is calling: the id and secret token a join handed out."""

    client_id: str
    token: str

    @classmethod
    def from_ack(cls, ack: JoinAck) -> Session:
        return cls(ack.client_id, ack.token)


class Transport(Protocol):
    @property
    def name(self) -> str: ...

    async def join(self, request: JoinRequest) -> JoinAck: ...

    async def next_task(self, session: Session, wait_s: float) -> Task: ...

    async def fetch_model(
        self, session: Session, version: int, codec: str, have_ref: str = ""
    ) -> EncodedModel:
        """A model version; a delta to the model held as ``have_ref`` if the server can."""
        ...

    async def submit_update(self, session: Session, update: Update) -> UpdateReceipt: ...

    async def heartbeat(self, session: Session) -> HeartbeatAck: ...

    async def leave(self, session: Session) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class ModelOnTask(Protocol):
    """A `Transport` that can carry a TRAIN task's model with the task: a round then
    costs one request down (task and model) and one up (the update).

    The task's `Task.model` is what `Transport.fetch_model` would have sent for ``want``;
    a TRAIN task without one (the server could not attach it, or is older) is completed
    with `fetch_model`. Transports without this method (wrappers, older ones) keep the
    two-request round: the client loop checks with ``isinstance``."""

    async def next_task_with_model(
        self, session: Session, wait_s: float, want: ModelWant
    ) -> Task: ...
