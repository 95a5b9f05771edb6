"""The in-process transport: the client loop calls a Federation in the same event loop."""

from __future__ import annotations

import dataclasses

from fedgate.core.federation import Federation
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
from fedgate.core.transport import INPROC, Session


class InProcTransport:
    name = INPROC

    def __init__(self, federation: Federation) -> None:
        self.federation = federation

    async def join(self, request: JoinRequest) -> JoinAck:
        return await self.federation.join(dataclasses.replace(request, transport=self.name))

    async def next_task(self, session: Session, wait_s: float) -> Task:
        return await self.federation.next_task(session.client_id, session.token, wait_s)

    async def next_task_with_model(self, session: Session, wait_s: float, want: ModelWant) -> Task:
        return await self.federation.next_task(session.client_id, session.token, wait_s, want)

    async def fetch_model(
        self, session: Session, version: int, codec: str, have_ref: str = ""
    ) -> EncodedModel:
        return await self.federation.fetch_model(
            session.client_id, session.token, version, codec, have_ref
        )

    async def submit_update(self, session: Session, update: Update) -> UpdateReceipt:
        return await self.federation.submit_update(session.client_id, session.token, update)

    async def heartbeat(self, session: Session) -> HeartbeatAck:
        return await self.federation.heartbeat(session.client_id, session.token)

    async def leave(self, session: Session) -> None:
        await self.federation.leave(session.client_id, session.token)

    async def close(self) -> None:
        return None
