"""The client registry: who has joined, their tokens, states and last signs of life."""

from __future__ import annotations

import hmac
import itertools
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from fedgate.core.messages import GONE_STATES, ClientState, ClientView, Traffic
from fedgate.errors import ConfigError, Conflict, Unauthorized, UnknownClient

MAX_NAME_LENGTH = 128


@dataclass
class ClientRecord:
    """The registry's mutable record of one client (never handed out; see `view`)."""

    client_id: str
    name: str
    token: str
    codec: str
    transport: str
    num_examples: int
    last_seen: float
    state: ClientState = ClientState.JOINED
    reason: str = ""
    rounds_completed: int = 0
    traffic: Traffic = field(default_factory=Traffic)

    @property
    def gone(self) -> bool:
        return self.state in GONE_STATES

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
            last_seen_s=round(now - self.last_seen, 3),
            reason=self.reason,
        )


class ClientRegistry:
    """Clients by id. Gone clients stay listed (for history) up to ``max_clients`` in all."""

    def __init__(self, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.max_clients = max_clients
        self.clock = clock
        self._clients: dict[str, ClientRecord] = {}
        self._ids = itertools.count(1)

    def __iter__(self) -> Iterator[ClientRecord]:
        return iter(list(self._clients.values()))

    def add(self, name: str, codec: str, transport: str, num_examples: int) -> ClientRecord:
        _check_name(name)
        if num_examples < 0:
            raise ConfigError(f"num_examples must be >= 0, got {num_examples}")
        if len(self.active()) >= self.max_clients:
            raise Conflict(f"the federation is full ({self.max_clients} clients)")
        self._prune_gone()
        record = ClientRecord(
            client_id=f"c{next(self._ids)}-{secrets.token_hex(3)}",
            name=name,
            token=secrets.token_urlsafe(24),
            codec=codec,
            transport=transport,
            num_examples=num_examples,
            last_seen=self.clock(),
        )
        self._clients[record.client_id] = record
        return record

    def authenticate(self, client_id: str, token: str) -> ClientRecord:
        """The caller's record, refreshed as seen; gone clients must join again."""
        record = self._clients.get(client_id)
        if record is None:
            raise UnknownClient(f"unknown client {client_id!r}")
        if not hmac.compare_digest(record.token.encode(), token.encode()):
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

    def expired(self, timeout_s: float) -> list[ClientRecord]:
        """Active clients not heard from within ``timeout_s``."""
        limit = self.clock() - timeout_s
        return [c for c in self.active() if c.last_seen < limit]

    def views(self) -> tuple[ClientView, ...]:
        now = self.clock()
        return tuple(c.view(now) for c in self._clients.values())

    def _prune_gone(self) -> None:
        excess = len(self._clients) - self.max_clients + 1
        if excess <= 0:
            return
        for record in [c for c in self._clients.values() if c.gone][:excess]:
            del self._clients[record.client_id]


def _check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ConfigError(
            f"client name must be 1-{MAX_NAME_LENGTH} printable characters, got {name!r}"
        )
