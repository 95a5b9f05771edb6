"""One round attempt: who was chosen, who reported, who dropped, and the running aggregate.

Bookkeeping (selected, reported, dropped) changes only on the event loop, and only through
the methods below. The aggregate
is folded from worker threads, so `fold` and `close` share a lock: an update that finishes
decoding after the round closed is refused and never touches the result. The aggregate
goes through the guard (`fedgate.core.guard`): clipped on the way in, checked on the way out.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from fedgate.codecs import TensorDict
from fedgate.core.config import RunConfig
from fedgate.core.guard import GuardedAggregator, Refusal
from fedgate.core.messages import OpenRound, RoundOutcome, RoundRecord, Traffic
from fedgate.core.strategy import UpdateMeta
from fedgate.errors import RoundClosed


@dataclass
class Round:
    number: int
    attempt: int
    config: RunConfig
    base_version: int
    selected: set[str]
    aggregator: GuardedAggregator
    opened_at: float
    deadline: float
    reported: dict[str, int] = field(default_factory=dict)  # client id -> num_examples
    dropped: set[str] = field(default_factory=set)
    uploading: set[str] = field(default_factory=set)
    folded: set[str] = field(default_factory=set)  # going into the aggregate, or in it
    dropped_while_folding: set[str] = field(default_factory=set)  # stands if the fold fails
    train_losses: list[float] = field(default_factory=list)
    traffic: Traffic = field(default_factory=Traffic)
    traffic_by_codec: dict[str, Traffic] = field(default_factory=dict)
    traffic_by_transport: dict[str, Traffic] = field(default_factory=dict)
    closed: bool = False
    excluded: tuple[str, ...] = ()  # clients whose updates made the result unpublishable
    reason: str = ""  # why the attempt ended as it did, when not simply completed
    _lock: threading.Lock = field(default_factory=threading.Lock)  # the aggregate
    _members: threading.Lock = field(default_factory=threading.Lock)  # folded / dropped

    @property
    def round_id(self) -> str:
        return f"{self.number}.{self.attempt}"

    @property
    def target(self) -> int:
        """How many clients the round may hold: clients_per_round, or with 0 ("every
        available client") as many as join while it is open; within the aggregator's
        memory bound either way."""
        wanted = self.config.clients_per_round or self.aggregator.capacity
        return min(wanted, self.aggregator.capacity)

    def pending(self) -> set[str]:
        """Selected clients that have neither reported nor dropped out."""
        return self.selected - set(self.reported) - self.dropped

    def accounted_for(self) -> bool:
        return not self.pending()

    def reached_minimum(self) -> bool:
        return len(self.reported) >= self.config.min_clients

    def cannot_reach_minimum(self) -> bool:
        return len(self.reported) + len(self.pending()) < self.config.min_clients

    def has_room(self) -> bool:
        return len(self.selected) < self.target

    # ---- changes, on the event loop -------------------------------------------------------

    def select_late(self, client_id: str) -> None:
        self.selected.add(client_id)

    def start_upload(self, client_id: str) -> None:
        self.uploading.add(client_id)

    def end_upload(self, client_id: str) -> bool:
        """Forget ``client_id``'s upload in progress; False if there was none."""
        if client_id not in self.uploading:
            return False
        self.uploading.discard(client_id)
        return True

    def report(self, client_id: str, num_examples: int, train_loss: float) -> None:
        """``client_id``'s update is in the aggregate."""
        self.reported[client_id] = num_examples
        if math.isfinite(train_loss):
            self.train_losses.append(train_loss)

    def drop(self, client_id: str) -> bool:
        """Stop waiting for ``client_id``; False if the round was not waiting for it.

        Ordered with `fold` by a lock held only for these checks (never while an update is
        added: the event loop must not wait for that): an update whose fold has begun
        stays (the drop stands only if the fold fails); one not begun is refused."""
        with self._members:
            if client_id not in self.pending():
                return False
            if client_id in self.folded:
                self.dropped_while_folding.add(client_id)
                return False
            self.dropped.add(client_id)
            return True

    def refuse(self, offenders: tuple[str, ...], reason: str) -> None:
        """The aggregate may not be published because of ``offenders``' updates."""
        self.excluded, self.reason = offenders, reason

    def count(self, client_id: str, codec: str, transport: str, up: int = 0, down: int = 0) -> None:
        """Payload bytes of a selected client in this round (others' do not count)."""
        if client_id not in self.selected:
            return
        self.traffic = self.traffic.add(up, down)
        for split, key in ((self.traffic_by_codec, codec), (self.traffic_by_transport, transport)):
            split[key] = split.get(key, Traffic()).add(up, down)

    def fold(
        self,
        tensors: Mapping[str, torch.Tensor],
        num_examples: int,
        client_id: str,
        *,
        train_loss: float = math.nan,
        key_id: str = "",
        distance: float | None = None,
    ) -> None:
        """Add a validated update from ``client_id`` to the aggregate (worker thread);
        ``distance``: its `measure`, when the caller took it."""
        meta = UpdateMeta(client_id, num_examples, train_loss, self.round_id, key_id)
        with self._members:
            if client_id in self.dropped:  # kicked, failed or left during its upload
                raise RoundClosed(
                    f"client {client_id} was dropped from round {self.round_id} while its "
                    "update was decoded; it is not counted"
                )
            self.folded.add(client_id)
        try:
            with self._lock:
                if self.closed:
                    raise RoundClosed(f"round {self.round_id} closed while the update was decoded")
                self.aggregator.add(
                    tensors, num_examples, client_id=client_id, meta=meta, distance=distance
                )
        except BaseException:
            with self._members:  # not in the aggregate: a drop that came meanwhile stands
                self.folded.discard(client_id)
                if client_id in self.dropped_while_folding:
                    self.dropped.add(client_id)
            raise

    def measure(self, tensors: Mapping[str, torch.Tensor]) -> float:
        """The distance of an update to the model this round trains (worker thread; no lock:
        the global model does not change while the round is open)."""
        return self.aggregator.measure(tensors)

    def close(self) -> None:
        with self._lock:
            self.closed = True

    def result(self) -> TensorDict:
        with self._lock:
            return self.aggregator.result()

    def checked_result(self) -> tuple[TensorDict, Refusal | None]:
        """The aggregate, and why it may not be published if it may not (worker thread)."""
        with self._lock:
            result = self.aggregator.result()
            return result, self.aggregator.check(result, f"round {self.round_id}")

    def view(self, now: float) -> OpenRound:
        return OpenRound(
            round=self.number,
            attempt=self.attempt,
            selected=tuple(sorted(self.selected)),
            reported=tuple(sorted(self.reported)),
            dropped=tuple(sorted(self.dropped)),
            open_for_s=round(max(0.0, now - self.opened_at), 3),
            deadline_in_s=round(self.deadline - now, 3),
        )

    def default_reason(self, outcome: RoundOutcome) -> str:
        if outcome is RoundOutcome.RETRIED:
            needed = self.config.min_clients
            return f"only {len(self.reported)} of the {needed} updates needed arrived"
        return "the run was stopped" if outcome is RoundOutcome.ABANDONED else ""

    def record(
        self,
        outcome: RoundOutcome,
        model_version: int,
        closed_at: float,
        accuracy: float = math.nan,
        loss: float = math.nan,
    ) -> RoundRecord:
        losses = self.train_losses
        return RoundRecord(
            round=self.number,
            attempt=self.attempt,
            outcome=outcome,
            participants=tuple(sorted(self.reported)),
            selected=tuple(sorted(self.selected)),
            num_examples=sum(self.reported.values()),
            model_version=model_version,
            accuracy=accuracy,
            loss=loss,
            bytes_up=self.traffic.up,
            bytes_down=self.traffic.down,
            duration_s=round(closed_at - self.opened_at, 4),
            train_loss=sum(losses) / len(losses) if losses else math.nan,
            excluded=self.excluded,
            reason=self.reason or self.default_reason(outcome),
            bytes_by_codec=dict(self.traffic_by_codec),
            bytes_by_transport=dict(self.traffic_by_transport),
        )
