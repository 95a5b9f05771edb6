"""The people who operate a federation: accounts with roles, passwords and login sessions.

Roles nest. A viewer reads (status, watch); an operator also steers the run (pause,
resume, stop, config, kick); an admin also manages enrolment keys and users.

Passwords are hashed with argon2id (argon2-cffi), slow and memory-hard on purpose, since
people choose guessable passwords; hashing runs in worker threads, at most a few at once,
so that logins neither block the event loop nor let a burst of them exhaust memory.
Session tokens are random (256 bits) and kept only as their SHA-256, like client tokens.
The server's bootstrap token (``--admin-token``) acts as an admin: for scripts, and to
create the first account. Users and sessions live behind `UserStore` and `SessionStore`,
ports a SQL store implements; in-memory implementations serve until then.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fedgate.core.ratelimit import Rate, RateLimiter
from fedgate.errors import ConfigError, Conflict, Forbidden, NotFound, Unauthorized

audit_log = logging.getLogger("fedgate.audit")

SESSION_PREFIX = "fgs_"
BOOTSTRAP_NAME = "admin-token"  # the principal the bootstrap token stands for
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
MAX_TOKEN_LENGTH = 256  # longer presented tokens are refused before hashing
MAX_USERS = 1_000
MAX_SESSIONS_PER_USER = 16  # a user's oldest session goes when a new one passes this
SESSION_TTL_S = 12 * 3600.0
HASHING_AT_ONCE = 2  # argon2 runs at once: each takes ~64 MiB for ~50 ms
T = TypeVar("T")


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may (roles nest)."""
        order = list(Role)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True)
class User:
    """A user as the store keeps it: the password only as its argon2 hash."""

    name: str
    role: Role
    password_hash: str
    created_at: float  # Unix time


@dataclass(frozen=True)
class UserView:
    name: str
    role: Role
    created_at: float


@dataclass(frozen=True)
class Principal:
    """Who is calling, as far as access goes."""

    name: str
    role: Role


@dataclass(frozen=True)
class Session:
    token_hash: str
    name: str
    expires_at: float  # Unix time


@dataclass(frozen=True)
class LoginResult:
    token: str  # shown once; the server keeps its hash
    principal: Principal
    expires_in_s: float


PEER_LOGINS = Rate(burst=20, per_s=0.5)
NAME_LOGINS = Rate(burst=10, per_s=0.2)


@dataclass(frozen=True)
class LoginLimits:
    """Login attempts allowed per peer address and per account name."""

    per_peer: Rate = PEER_LOGINS
    per_name: Rate = NAME_LOGINS


class UserStore(Protocol):
    """Where users live (a port: the run store implements it in SQL)."""

    def get(self, name: str) -> User | None: ...

    def add(self, user: User) -> None: ...

    def replace(self, user: User) -> None: ...

    def remove(self, name: str) -> bool: ...

    def all(self) -> list[User]: ...


class SessionStore(Protocol):
    """Where login sessions live, by the SHA-256 of their token."""

    def add(self, session: Session) -> None: ...

    def get(self, token_hash: str) -> Session | None: ...

    def remove(self, token_hash: str) -> None: ...

    def for_user(self, name: str) -> list[Session]: ...

    def remove_user(self, name: str) -> None: ...

    def purge_expired(self, now: float) -> None: ...


class InMemoryUserStore:
    def __init__(self) -> None:
        self._users: dict[str, User] = {}

    def get(self, name: str) -> User | None:
        return self._users.get(name)

    def add(self, user: User) -> None:
        self._users[user.name] = user

    def replace(self, user: User) -> None:
        self._users[user.name] = user

    def remove(self, name: str) -> bool:
        return self._users.pop(name, None) is not None

    def all(self) -> list[User]:
        return list(self._users.values())


class InMemorySessionStore:
    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def add(self, session: Session) -> None:
        self._sessions[session.token_hash] = session

    def get(self, token_hash: str) -> Session | None:
        return self._sessions.get(token_hash)

    def remove(self, token_hash: str) -> None:
        self._sessions.pop(token_hash, None)

    def for_user(self, name: str) -> list[Session]:
        return [s for s in self._sessions.values() if s.name == name]

    def remove_user(self, name: str) -> None:
        for session in self.for_user(name):
            del self._sessions[session.token_hash]

    def purge_expired(self, now: float) -> None:
        for session in [s for s in self._sessions.values() if s.expires_at <= now]:
            del self._sessions[session.token_hash]


class Accounts:
    def __init__(
        self,
        users: UserStore | None = None,
        sessions: SessionStore | None = None,
        *,
        hasher: PasswordHasher | None = None,
        session_ttl_s: float = SESSION_TTL_S,
        limits: LoginLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.users: UserStore = users if users is not None else InMemoryUserStore()
        self.sessions: SessionStore = sessions if sessions is not None else InMemorySessionStore()
        self.hasher = hasher or PasswordHasher()  # argon2id, RFC 9106's low-memory profile
        self.session_ttl_s = session_ttl_s
        self.wall_clock = wall_clock
        limits = limits or LoginLimits()
        self._per_peer = RateLimiter(limits.per_peer, "logins from peer", clock=clock)
        self._per_name = RateLimiter(limits.per_name, "logins as", clock=clock)
        self._hashing = asyncio.Semaphore(HASHING_AT_ONCE)
        self._dummy_hash = ""  # verified against for unknown names: same time as a real one

    # ---- users --------------------------------------------------------------------------

    async def add_user(self, name: str, password: str, role: Role | str) -> UserView:
        role = _role(role)
        _check_name(name)
        _check_password(password)
        self._check_new(name)
        password_hash = await self._hash(password)
        self._check_new(name)  # another call may have added it while this one hashed
        user = User(name, role, password_hash, self.wall_clock())
        self.users.add(user)
        return _view(user)

    def remove_user(self, name: str) -> None:
        """Remove a user; their sessions end at once."""
        if not self.users.remove(name):
            raise NotFound(f"no user {name!r}")
        self.sessions.remove_user(name)

    def list_users(self) -> list[UserView]:
        return [_view(user) for user in self.users.all()]

    def has_users(self) -> bool:
        return bool(self.users.all())

    # ---- sessions -----------------------------------------------------------------------

    async def login(self, name: str, password: str, peer: str = "") -> LoginResult:
        """A session token for ``name``, if ``password`` is theirs.

        Attempts are rate-limited per peer address and per name, and an unknown name
        costs as much time as a wrong password, so that neither guessing nor timing tells
        which accounts exist.
        """
        if peer:
            self._per_peer.take(peer)
        self._per_name.take(name[:64])
        user = self.users.get(name)
        stored = user.password_hash if user is not None else await self._dummy()
        if not await self._verify(stored, password) or user is None:
            raise Unauthorized("wrong name or password")
        if self.hasher.check_needs_rehash(user.password_hash):
            self.users.replace(
                User(user.name, user.role, await self._hash(password), user.created_at)
            )
        return self._open_session(user)

    def logout(self, token: str) -> None:
        """End the session ``token`` stands for (an unknown token is ignored)."""
        if len(token) <= MAX_TOKEN_LENGTH:
            self.sessions.remove(_sha256(token))

    def authenticate(self, token: str, *, bootstrap: str = "") -> Principal:
        """Who ``token`` (the bootstrap token or a session token) stands for."""
        if not token:
            raise Unauthorized(
                "this call needs 'Authorization: Bearer <token>': a session token from "
                "login, or the server's admin token"
            )
        if bootstrap and hmac.compare_digest(token.encode(), bootstrap.encode()):
            return Principal(BOOTSTRAP_NAME, Role.ADMIN)
        session = self.sessions.get(_sha256(token)) if len(token) <= MAX_TOKEN_LENGTH else None
        if session is None or session.expires_at <= self.wall_clock():
            raise Unauthorized("invalid or expired token; log in again")
        user = self.users.get(session.name)
        if user is None:
            raise Unauthorized(f"user {session.name!r} no longer exists")
        return Principal(user.name, user.role)  # the role as it is now, not at login

    def authorise(self, token: str, needed: Role, *, bootstrap: str = "") -> Principal:
        """`authenticate`, then `Forbidden` unless the caller's role allows ``needed``."""
        principal = self.authenticate(token, bootstrap=bootstrap)
        if not principal.role.allows(needed):
            raise Forbidden(
                f"{principal.name} has the {principal.role.value} role; "
                f"this needs {needed.value} or above"
            )
        return principal

    # ---- helpers ------------------------------------------------------------------------

    def _check_new(self, name: str) -> None:
        if self.users.get(name) is not None:
            raise Conflict(f"user {name!r} exists")
        if len(self.users.all()) >= MAX_USERS:
            raise Conflict(f"there are {MAX_USERS} users (the limit)")

    def _open_session(self, user: User) -> LoginResult:
        now = self.wall_clock()
        self.sessions.purge_expired(now)
        held = sorted(self.sessions.for_user(user.name), key=lambda s: s.expires_at)
        for old in held[: max(0, len(held) - MAX_SESSIONS_PER_USER + 1)]:
            self.sessions.remove(old.token_hash)
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        self.sessions.add(Session(_sha256(token), user.name, now + self.session_ttl_s))
        return LoginResult(token, Principal(user.name, user.role), self.session_ttl_s)

    async def _hash(self, password: str) -> str:
        return await self._in_thread(self.hasher.hash, password)

    async def _verify(self, stored: str, password: str) -> bool:
        if len(password) > MAX_PASSWORD:
            return False
        try:
            return await self._in_thread(self.hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _dummy(self) -> str:
        if not self._dummy_hash:
            self._dummy_hash = await self._hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    async def _in_thread(self, work: Callable[..., T], *args: str) -> T:
        async with self._hashing:
            return await asyncio.to_thread(work, *args)


def audit(principal: Principal, action: str) -> None:
    """Record who changed what (the run, keys, users) in the ``fedgate.audit`` log, at
    WARNING so that it shows at the default log level."""
    audit_log.warning("%s (%s) %s", principal.name, principal.role.value, action)


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _view(user: User) -> UserView:
    return UserView(user.name, user.role, user.created_at)


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise ConfigError(f"role must be one of {choices}, got {role!r}") from None


def _check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            "a user name is 1-64 letters, digits and . _ @ - (starting with a letter or "
            f"digit), got {name!r}"
        )


def _check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ConfigError(f"a password is {MIN_PASSWORD}-{MAX_PASSWORD} characters long")
