"""The client registry: who has joined, with which key, their states and last signs of life.

Client tokens are kept only as their SHA-256: a token is 192 random bits, handed to the
client once in its join reply, and a leaked registry (a status dump, a future store row)
must not let anyone act as a client.

The registry is bounded: at most ``max_clients`` records, gone clients (left, failed)
pruned oldest first to make room. Clients that joined without a key (open enrolment) may
hold at most ``max_open_clients`` of the places, so that a flood of key-less joins cannot
lock out the clients an operator gave keys to.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from fedgate.core.enrolment import MAX_NUM_EXAMPLES
from fedgate.core.messages import GONE_STATES, ClientState, ClientView, Traffic
from fedgate.core.ports import ClientEvent, StoredClient
from fedgate.core.retry import Backoff
from fedgate.errors import ConfigError, Conflict, Unauthorized, UnknownClient

MAX_NAME_LENGTH = 128
MAX_TOKEN_LENGTH = 256  # longer presented tokens are refused before hashing

Journal = Callable[["ClientRecord", ClientEvent], None]

# Clients of a restarted server retry with waits of up to `Backoff.max_s`: the restored ones
# get that long on top of the heartbeat timeout before they count as silent.
RECONNECT_GRACE_S = Backoff.max_s


def _no_journal(record: ClientRecord, event: ClientEvent) -> None:
    pass


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class ClientRecord:
    """The registry's mutable record of one client (never handed out; see `view`)."""

    client_id: str
    name: str
    token_hash: str  # SHA-256 of the client's token; the token itself is not kept
    codec: str
    transport: str
    num_examples: int  # what the client declared at join (0: nothing)
    last_seen: float
    key_id: str = ""  # the enrolment key it joined with ("": none, open enrolment)
    # The largest num_examples an update of this client may claim: its key's limit.
    max_num_examples: int = MAX_NUM_EXAMPLES
    state: ClientState = ClientState.JOINED
    reason: str = ""
    rounds_completed: int = 0  # rounds whose published model holds one of its updates
    traffic: Traffic = field(default_factory=Traffic)
    # Told of every change of state (or reason), with its wall-clock time: the session's
    # history for status watchers and the store. Set by the registry.
    journal: Journal = field(default=_no_journal, repr=False, compare=False)

    @property
    def gone(self) -> bool:
        return self.state in GONE_STATES

    # ---- the client's state machine: every change goes through `_move` ------------------

    def take_task(self) -> None:
        self._move(ClientState.TRAINING)

    def wait_for_task(self) -> None:
        if self.state is not ClientState.READY:
            self._move(ClientState.READY)

    def start_upload(self) -> None:
        self._move(ClientState.UPLOADING)

    def abandon_upload(self) -> None:
        """An upload that brought no update: the client may still send a good one."""
        self._move(ClientState.TRAINING)

    def finish_upload(self) -> None:
        self._move(ClientState.FINISHED)

    def leave(self, reason: str) -> None:
        self._move(ClientState.LEFT, reason)

    def fail(self, reason: str) -> None:
        self._move(ClientState.FAILED, reason)

    def explain(self, reason: str) -> None:
        """A reason without a change of state (dropped from a round, still a member)."""
        self._move(self.state, reason)

    def _move(self, state: ClientState, reason: str | None = None) -> None:
        # Left and failed are final: a request that was in flight when the client was
        # kicked (an upload finishing, a long-poll) must not bring it back; it joins again.
        if self.gone:
            return
        reason = self.reason if reason is None else reason
        if state is self.state and reason == self.reason:
            return
        self.state, self.reason = state, reason
        self.journal(self, ClientEvent(self.client_id, state, reason, time.time()))

    def stored(self) -> StoredClient:
        return StoredClient(
            client_id=self.client_id,
            name=self.name,
            token_hash=self.token_hash,
            codec=self.codec,
            transport=self.transport,
            num_examples=self.num_examples,
            key_id=self.key_id,
            max_num_examples=self.max_num_examples,
            state=self.state,
            reason=self.reason,
            rounds_completed=self.rounds_completed,
            bytes_up=self.traffic.up,
            bytes_down=self.traffic.down,
        )

    def view(self, now: float) -> ClientView:
        return ClientView(
            client_id=self.client_id,
            name=self.name,
            state=self.state,
            codec=self.codec,
            transport=self.transport,
            num_examples=self.num_examples,
            rounds_completed=self.rounds_completed,
            bytes_up=self.traffic.up,
            bytes_down=self.traffic.down,
            last_seen_s=round(max(0.0, now - self.last_seen), 3),
            reason=self.reason,
            key_id=self.key_id,
        )


@dataclass(frozen=True)
class Joined:
    """A new client's record, and its token: the one time the token exists in clear."""

    record: ClientRecord
    token: str


class ClientRegistry:
    """Clients by id. Gone clients stay listed (for history) up to ``max_clients`` in all."""

    def __init__(
        self,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_open_clients: int | None = None,
        journal: Journal = _no_journal,
    ) -> None:
        self.max_clients = max_clients
        # a tenth of the places is kept for clients with a key
        self.max_open_clients = (
            max_clients - max_clients // 10 if max_open_clients is None else max_open_clients
        )
        self.clock = clock
        self.journal = journal
        self._clients: dict[str, ClientRecord] = {}
        self._ids = itertools.count(1)

    def restore(self, clients: Iterable[StoredClient], reason: str) -> None:
        """Take back the records of a resumed run: tokens stay valid, and members that were
        active count as seen `RECONNECT_GRACE_S` from now (a heartbeat timeout to reconnect
        after their longest retry wait) and wait for a task, with ``reason`` saying why."""
        now, numbers = self.clock(), [0]
        seen = now + RECONNECT_GRACE_S
        for kept in clients:
            record = ClientRecord(
                client_id=kept.client_id,
                name=kept.name,
                token_hash=kept.token_hash,
                codec=kept.codec,
                transport=kept.transport,
                num_examples=kept.num_examples,
                last_seen=seen,
                key_id=kept.key_id,
                max_num_examples=kept.max_num_examples,
                state=kept.state if kept.state in GONE_STATES else ClientState.JOINED,
                reason=kept.reason if kept.state in GONE_STATES else reason,
                rounds_completed=kept.rounds_completed,
                traffic=Traffic(kept.bytes_up, kept.bytes_down),
                journal=self.journal,
            )
            self._clients[record.client_id] = record
            numbers.append(_id_number(record.client_id))
            if not record.gone:  # the store and watchers learn why its state changed
                event = ClientEvent(record.client_id, record.state, reason, time.time())
                self.journal(record, event)
        self._ids = itertools.count(max(numbers) + 1)

    def __iter__(self) -> Iterator[ClientRecord]:
        return iter(list(self._clients.values()))

    def add(
        self,
        name: str,
        codec: str,
        transport: str,
        num_examples: int,
        *,
        key_id: str = "",
        max_num_examples: int = MAX_NUM_EXAMPLES,
    ) -> Joined:
        _check_name(name)
        if not 0 <= num_examples <= MAX_NUM_EXAMPLES:
            raise ConfigError(
                f"num_examples must be in [0, {MAX_NUM_EXAMPLES}], got {num_examples}"
            )
        self._check_room(key_id)
        self._prune_gone()
        token = secrets.token_urlsafe(24)
        record = ClientRecord(
            client_id=f"c{next(self._ids)}-{secrets.token_hex(3)}",
            name=name,
            token_hash=token_hash(token),
            codec=codec,
            transport=transport,
            num_examples=num_examples,
            last_seen=self.clock(),
            key_id=key_id,
            max_num_examples=min(max_num_examples, MAX_NUM_EXAMPLES),
            journal=self.journal,
        )
        self._clients[record.client_id] = record
        self.journal(record, ClientEvent(record.client_id, record.state, "", time.time()))
        return Joined(record, token)

    def authenticate(self, client_id: str, token: str) -> ClientRecord:
        """The caller's record, refreshed as seen; gone clients must join again."""
        record = self._clients.get(client_id)
        if record is None:
            raise UnknownClient(f"unknown client {client_id!r}")
        presented = token_hash(token) if len(token) <= MAX_TOKEN_LENGTH else ""
        if not hmac.compare_digest(record.token_hash, presented):
            raise Unauthorized(f"wrong token for client {client_id!r}")
        if record.gone:
            raise UnknownClient(
                f"client {client_id!r} is {record.state.value} ({record.reason}); join again"
            )
        record.last_seen = self.clock()
        return record

    def get(self, client_id: str) -> ClientRecord:
        record = self._clients.get(client_id)
        if record is None:
            raise UnknownClient(f"unknown client {client_id!r}")
        return record

    def active(self) -> list[ClientRecord]:
        return [c for c in self._clients.values() if not c.gone]

    def available(self) -> list[ClientRecord]:
        """Active clients that have asked for work since they joined: a round counts and
        selects only these, so one still starting up (a process importing torch after an
        early join) cannot hold a round it was selected for; it takes part late, if the
        round admits it, once it asks."""
        return [c for c in self.active() if c.state is not ClientState.JOINED]

    def active_by_key(self) -> Counter[str]:
        """Active clients per enrolment key id ("" counts those without one)."""
        return Counter(c.key_id for c in self._clients.values() if not c.gone)

    def active_under(self, key_id: str) -> list[ClientRecord]:
        return [c for c in self._clients.values() if not c.gone and c.key_id == key_id]

    def expired(self, timeout_s: float) -> list[ClientRecord]:
        """Active clients not heard from within ``timeout_s``."""
        limit = self.clock() - timeout_s
        return [c for c in self.active() if c.last_seen < limit]

    def views(self) -> tuple[ClientView, ...]:
        now = self.clock()
        return tuple(c.view(now) for c in self._clients.values())

    def _check_room(self, key_id: str) -> None:
        counts = self.active_by_key()
        if sum(counts.values()) >= self.max_clients:
            raise Conflict(f"the federation is full ({self.max_clients} clients)")
        if not key_id and counts[""] >= self.max_open_clients:
            raise Conflict(
                f"the federation is full for clients without an enrolment key "
                f"({self.max_open_clients}); join with a key"
            )

    def _prune_gone(self) -> None:
        excess = len(self._clients) - self.max_clients + 1
        if excess <= 0:
            return
        for record in [c for c in self._clients.values() if c.gone][:excess]:
            del self._clients[record.client_id]


def _id_number(client_id: str) -> int:
    """The counter in an id like ``c12-a1b2c3`` (0 for an id of another shape)."""
    head = client_id.split("-", 1)[0][1:]
    return int(head) if head.isascii() and head.isdecimal() else 0


def _check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ConfigError(
            f"client name must be 1-{MAX_NAME_LENGTH} printable characters, got {name!r}"
        )
