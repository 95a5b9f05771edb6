"""Enrolment keys: who may join a federation, how many at once, and with how much weight.

An operator creates a key and hands its secret to the owners of the clients it is for;
a client joins with it. The secret, ``fgk_<key id>_<random>``, is shown once, when the key
is created, and kept only as its SHA-256. It holds 256 random bits, so a fast hash is as
safe as a slow one (slow hashes protect guessable passwords), and checking a join costs
microseconds rather than an argon2 run that an anonymous flood could make the server pay.

A key carries the limits of the clients that join with it: how many may be active at
once, and the largest ``num_examples`` (the aggregation weight) any of them may claim.
Joins are rate-limited per peer address and per key. Keys live behind `KeyStore`, a port
a SQL store implements; `InMemoryKeyStore` serves until then.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import secrets
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from fedgate.core.ratelimit import Rate, RateLimiter
from fedgate.errors import ConfigError, Conflict, Forbidden, NotFound, Unauthorized

KEY_PREFIX = "fgk_"
KEY_ID_CHARS = 12  # hex digits of the public key id
MAX_KEYS = 10_000  # revoked keys included: the store must not grow without a budget
MAX_KEY_CLIENTS = 1_000_000
MAX_KEY_NAME = 128
MAX_EXPIRY_S = 100 * 365 * 86_400.0
MAX_SECRET_LENGTH = 256  # longer presented secrets are refused before hashing

MAX_NUM_EXAMPLES = 2**31  # no key may grant more weight than this to one update


class EnrolmentMode(enum.StrEnum):
    KEY = "key"  # every join needs a valid key
    OPEN = "open"  # anyone may join; a key, when given, still applies its limits


class KeyState(enum.StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class EnrolmentKey:
    """A key as the store keeps it: its limits and the hash of its secret."""

    key_id: str
    name: str
    secret_hash: str
    max_clients: int
    max_num_examples: int
    created_at: float  # Unix time, as every time here: keys outlive a process
    expires_at: float | None = None
    revoked_at: float | None = None

    def state(self, now: float) -> KeyState:
        if self.revoked_at is not None:
            return KeyState.REVOKED
        if self.expires_at is not None and now >= self.expires_at:
            return KeyState.EXPIRED
        return KeyState.ACTIVE


@dataclass(frozen=True)
class KeyView:
    """What operators see of a key: never its secret, nor the secret's hash."""

    key_id: str
    name: str
    max_clients: int
    max_num_examples: int
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    state: KeyState
    clients: int  # clients active under the key now


@dataclass(frozen=True)
class IssuedKey:
    """A new key and its secret, which is shown this once."""

    key: KeyView
    secret: str


@dataclass(frozen=True)
class Grant:
    """What a join was granted: the key it came in with ("" for none) and the client's
    weight limit, the largest ``num_examples`` an update of it may claim."""

    key_id: str
    max_num_examples: int


# A real client joins once a run (again only after it was dropped); a burst covers a
# machine or a key starting many clients at once.
PEER_JOINS = Rate(burst=30, per_s=1.0)
KEY_JOINS = Rate(burst=100, per_s=5.0)


@dataclass(frozen=True)
class JoinLimits:
    """Joins allowed per peer address and per key."""

    per_peer: Rate = PEER_JOINS
    per_key: Rate = KEY_JOINS


class KeyStore(Protocol):
    """Where keys live (a port: the run store implements it in SQL)."""

    def add(self, key: EnrolmentKey) -> None: ...

    def get(self, key_id: str) -> EnrolmentKey | None: ...

    def replace(self, key: EnrolmentKey) -> None: ...

    def all(self) -> list[EnrolmentKey]: ...


class InMemoryKeyStore:
    def __init__(self) -> None:
        self._keys: dict[str, EnrolmentKey] = {}

    def add(self, key: EnrolmentKey) -> None:
        self._keys[key.key_id] = key

    def get(self, key_id: str) -> EnrolmentKey | None:
        return self._keys.get(key_id)

    def replace(self, key: EnrolmentKey) -> None:
        self._keys[key.key_id] = key

    def all(self) -> list[EnrolmentKey]:
        return list(self._keys.values())


ActiveCounts = Callable[[], Mapping[str, int]]


class Enrolment:
    """Issues, lists and revokes keys, and decides whether a join may go ahead."""

    def __init__(
        self,
        mode: EnrolmentMode | str = EnrolmentMode.OPEN,
        store: KeyStore | None = None,
        *,
        active_clients: ActiveCounts = dict,
        limits: JoinLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.mode = _mode(mode)
        self.store: KeyStore = store if store is not None else InMemoryKeyStore()
        self.active_clients = active_clients  # active clients by key id, from the registry
        self.limits = limits or JoinLimits()
        self.wall_clock = wall_clock
        self._per_peer = RateLimiter(self.limits.per_peer, "joins from peer", clock=clock)
        self._per_key = RateLimiter(self.limits.per_key, "joins with enrolment key", clock=clock)

    # ---- operators ----------------------------------------------------------------------

    def create(
        self,
        name: str,
        max_clients: int,
        max_num_examples: int,
        expires_in_s: float | None = None,
    ) -> IssuedKey:
        _check_key_limits(name, max_clients, max_num_examples, expires_in_s)
        if len(self.store.all()) >= MAX_KEYS:
            raise Conflict(f"there are {MAX_KEYS} enrolment keys (the limit)")
        key_id = secrets.token_hex(KEY_ID_CHARS // 2)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        now = self.wall_clock()
        key = EnrolmentKey(
            key_id=key_id,
            name=name,
            secret_hash=_hash(secret),
            max_clients=max_clients,
            max_num_examples=max_num_examples,
            created_at=now,
            expires_at=None if expires_in_s is None else now + expires_in_s,
        )
        self.store.add(key)
        return IssuedKey(self._view(key, {}), secret)

    def list(self) -> list[KeyView]:
        counts = self.active_clients()
        return [self._view(key, counts) for key in self.store.all()]

    def get(self, key_id: str) -> KeyView:
        return self._view(self._stored(key_id), self.active_clients())

    def revoke(self, key_id: str) -> KeyView:
        """Revoke a key (again is harmless); its clients must be dropped by the caller."""
        key = self._stored(key_id)
        if key.revoked_at is None:
            key = replace(key, revoked_at=self.wall_clock())
            self.store.replace(key)
        return self._view(key, self.active_clients())

    # ---- joins --------------------------------------------------------------------------

    def verify(self, secret: str) -> EnrolmentKey:
        """The active key ``secret`` stands for, or `Unauthorized`.

        Malformed, unknown and wrong secrets get the same answer; only the holder of a
        key's real secret learns that it was revoked or has expired.
        """
        key_id = _key_id_of(secret)
        key = self.store.get(key_id) if key_id else None
        if key is None or not hmac.compare_digest(key.secret_hash, _hash(secret)):
            raise Unauthorized("invalid enrolment key")
        state = key.state(self.wall_clock())
        if state is not KeyState.ACTIVE:
            raise Unauthorized(f"enrolment key {key.key_id} ({key.name}) is {state.value}")
        return key

    def check(self, secret: str) -> EnrolmentKey | None:
        """The key a join comes in with, if any: what an adapter checks from a join's
        headers before it reads the body, and the first step of `admit`."""
        if secret:
            return self.verify(secret)
        if self.mode is EnrolmentMode.KEY:
            raise Unauthorized(
                "this federation admits clients with an enrolment key only: send it as "
                "'Authorization: Bearer fgk_...' with the join (fedgate client --key)"
            )
        return None

    def admit(self, secret: str, peer: str, num_examples: int) -> Grant:
        """May a client join with ``secret`` from ``peer``, declaring ``num_examples``?

        The key is checked before any rate limit is spent, so that joins without a valid
        key cannot use up the allowance of real clients behind the same address. An empty
        ``peer`` (an in-process caller) is not rate-limited.
        """
        key = self.check(secret)
        if peer:
            self._per_peer.take(peer)
        if key is None:  # open enrolment: the client's own declaration is its limit
            declared = num_examples if 0 < num_examples < MAX_NUM_EXAMPLES else 0
            return Grant("", declared or MAX_NUM_EXAMPLES)
        self._per_key.take(key.key_id)
        if num_examples > key.max_num_examples:
            raise Forbidden(
                f"enrolment key {key.key_id} allows at most {key.max_num_examples} examples "
                f"per client; the join declared {num_examples}"
            )
        active = self.active_clients().get(key.key_id, 0)
        if active >= key.max_clients:
            raise Conflict(
                f"enrolment key {key.key_id} ({key.name}) admits {key.max_clients} clients "
                f"at once and {active} are active"
            )
        return Grant(key.key_id, key.max_num_examples)

    # ---- helpers ------------------------------------------------------------------------

    def _stored(self, key_id: str) -> EnrolmentKey:
        key = self.store.get(key_id)
        if key is None:
            raise NotFound(f"no enrolment key {key_id!r}")
        return key

    def _view(self, key: EnrolmentKey, counts: Mapping[str, int]) -> KeyView:
        return KeyView(
            key_id=key.key_id,
            name=key.name,
            max_clients=key.max_clients,
            max_num_examples=key.max_num_examples,
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            state=key.state(self.wall_clock()),
            clients=counts.get(key.key_id, 0),
        )


def _mode(mode: EnrolmentMode | str) -> EnrolmentMode:
    try:
        return EnrolmentMode(mode)
    except ValueError:
        choices = ", ".join(m.value for m in EnrolmentMode)
        raise ConfigError(f"enrolment must be one of {choices}, got {mode!r}") from None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _key_id_of(secret: str) -> str:
    """The key id inside a well-formed secret, else ""."""
    if len(secret) > MAX_SECRET_LENGTH or not secret.startswith(KEY_PREFIX):
        return ""
    key_id, sep, rest = secret.removeprefix(KEY_PREFIX).partition("_")
    hex_id = len(key_id) == KEY_ID_CHARS and all(c in string.hexdigits for c in key_id)
    return key_id if sep and rest and hex_id else ""


def _check_key_limits(
    name: str, max_clients: int, max_num_examples: int, expires_in_s: float | None
) -> None:
    if not name or len(name) > MAX_KEY_NAME or not name.isprintable():
        raise ConfigError(f"a key name is 1-{MAX_KEY_NAME} printable characters, got {name!r}")
    if not _int_in(max_clients, 1, MAX_KEY_CLIENTS):
        raise ConfigError(f"max_clients must be in [1, {MAX_KEY_CLIENTS}], got {max_clients!r}")
    if not _int_in(max_num_examples, 1, MAX_NUM_EXAMPLES):
        raise ConfigError(
            f"max_num_examples must be in [1, {MAX_NUM_EXAMPLES}], got {max_num_examples!r}"
        )
    if expires_in_s is not None and not (
        isinstance(expires_in_s, int | float)
        and math.isfinite(expires_in_s)
        and 0 < expires_in_s <= MAX_EXPIRY_S
    ):
        raise ConfigError(
            f"expires_in_s must be in (0, {MAX_EXPIRY_S:g}] seconds, got {expires_in_s!r}"
        )


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
