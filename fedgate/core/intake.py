"""How an update comes in: admitted from its header before any of its body is read, then
decoded, checked and folded into its round, or abandoned.

The `Federation` owns one `UpdateIntake` and answers `begin_update`, `finish_update` and
`abandon_update` through it; the round and the model store are read through the
federation's run at the moment of each call (a round may close while a body is read).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from fedgate.codecs import Buffer, get_codec
from fedgate.core.admission import Permit, admit, check_and_fold, decode_and_fold, update_limits
from fedgate.core.budget import UploadBudget
from fedgate.core.messages import UpdateHeader, UpdateReceipt
from fedgate.core.modelstore import ModelStore
from fedgate.core.observer import Observers
from fedgate.core.offload import CodecOffload
from fedgate.core.registry import ClientRegistry
from fedgate.core.rounds import Round
from fedgate.core.traffic import TrafficLedger
from fedgate.errors import Overloaded


@dataclass(frozen=True)
class IntakeLimits:
    max_update_bytes: int = 1 << 31  # no body above this, whatever the codec
    max_concurrent_uploads: int = 32  # bodies being read or decoded at once


class UpdateIntake:
    """Uploads in progress: at most ``limits.max_concurrent_uploads`` at once, each body
    bounded before it is read (see `begin`)."""

    def __init__(
        self,
        clients: ClientRegistry,
        models: ModelStore,
        traffic: TrafficLedger,
        open_round: Callable[[], Round | None],
        *,
        offload: CodecOffload,
        observers: Observers,
        limits: IntakeLimits = IntakeLimits(),
    ) -> None:
        self.clients = clients
        self.models = models
        self.traffic = traffic
        self.open_round = open_round
        self.offload = offload
        self.observers = observers
        self.limits = limits
        self.budget = UploadBudget(models)
        self.in_progress = 0  # uploads admitted whose body is not yet folded or refused

    async def begin(
        self, client_id: str, token: str, header: UpdateHeader, size: int | None = None
    ) -> Permit:
        """Check an upload from its header alone, before any of its body is read.

        Adapters call this first, read at most ``permit.max_bytes`` body bytes, then call
        `finish` (or `abandon` if the body never arrives). ``size`` is the body size the
        client declared, when it declared one.
        """
        record = self.clients.authenticate(client_id, token)
        if self.in_progress >= self.limits.max_concurrent_uploads:
            raise Overloaded(
                f"{self.in_progress} uploads are in progress (the limit); retry shortly"
            )
        max_bytes = self.limits.max_update_bytes
        permit = admit(self.open_round(), record, header, self.models, max_bytes)
        self._hold(permit)
        try:
            limit = await self.budget.body_limit(header.codec, permit.round.base_version)
            permit = dataclasses.replace(permit, max_bytes=min(limit, max_bytes))
            if size is not None:
                permit.check_size(size)
        except BaseException:
            self.abandon(permit)
            raise
        return permit

    async def finish(self, permit: Permit, payload: Buffer) -> UpdateReceipt:
        """Decode, check and fold the body of an upload `begin` admitted."""
        round_, record, header = permit.round, permit.record, permit.header
        try:
            permit.check_size(len(payload))
            self.traffic.count(record, header.codec, round_, up=len(payload))
            decode_s = await self._decode_and_fold(permit, payload)
        except BaseException:
            self.abandon(permit)
            raise
        self.observers.decoded(header.codec, decode_s)
        self._release(permit)
        round_.report(record.client_id, header.num_examples, header.train_loss)
        record.finish_upload()
        return UpdateReceipt(
            round=round_.number, accepted=len(round_.reported), expected=len(round_.selected)
        )

    def abandon(self, permit: Permit) -> None:
        """An upload that ended without an update: the client may still send a good one."""
        if self._release(permit):
            permit.record.abandon_upload()

    async def _decode_and_fold(self, permit: Permit, payload: Buffer) -> float:
        """Decode in a thread, or in a worker process for a GIL-bound codec (which would
        hold the event loop from a thread); check and fold in a thread. Returns decode
        seconds."""
        codec = get_codec(permit.header.codec)
        if not self.offload.offloads(codec, len(payload)):
            return await asyncio.to_thread(decode_and_fold, permit, payload)
        started = time.perf_counter()
        tensors = await self.offload.decode(codec, payload, update_limits(permit))
        return await asyncio.to_thread(check_and_fold, permit, tensors, started)

    def _hold(self, permit: Permit) -> None:
        permit.round.start_upload(permit.record.client_id)
        permit.record.start_upload()
        self.in_progress += 1

    def _release(self, permit: Permit) -> bool:
        """Forget an upload in progress; False if it was already forgotten."""
        if not permit.round.end_upload(permit.record.client_id):
            return False
        self.in_progress -= 1
        return True
