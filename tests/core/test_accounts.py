"""Accounts: argon2-hashed passwords, roles that nest, hashed session tokens, limits."""

from __future__ import annotations

import hashlib

import pytest
from argon2 import PasswordHasher

from fedgate.core.accounts import (
    MAX_SESSIONS_PER_USER,
    Accounts,
    InMemorySessionStore,
    InMemoryUserStore,
    LoginLimits,
    Principal,
    Role,
)
from fedgate.core.ratelimit import Rate
from fedgate.errors import ConfigError, Conflict, Forbidden, NotFound, RateLimited, Unauthorized

# argon2id still, at the cheapest parameters: these tests check logic, not cost
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
MANY = LoginLimits(per_peer=Rate(1000, 1000.0), per_name=Rate(1000, 1000.0))
PASSWORD = "correct horse battery"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def accounts(
    sessions: InMemorySessionStore | None = None,
    wall_clock: Clock | None = None,
    session_ttl_s: float = 3600.0,
) -> Accounts:
    return Accounts(
        sessions=sessions,
        hasher=CHEAP,
        limits=MANY,
        wall_clock=wall_clock or Clock(),
        session_ttl_s=session_ttl_s,
    )


async def test_passwords_are_stored_as_argon2id_hashes_only() -> None:
    users = InMemoryUserStore()
    store = Accounts(users)  # the production hasher
    view = await store.add_user("ada", PASSWORD, "admin")
    assert (view.name, view.role) == ("ada", Role.ADMIN)
    stored = users.get("ada")
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PASSWORD not in repr(users.all())
    assert (await store.login("ada", PASSWORD)).principal == Principal("ada", Role.ADMIN)


async def test_login_gives_a_session_token_kept_only_as_its_hash() -> None:
    sessions = InMemorySessionStore()
    wall = Clock()
    store = accounts(sessions=sessions, wall_clock=wall, session_ttl_s=3600)
    await store.add_user("op", PASSWORD, Role.OPERATOR)
    result = await store.login("op", PASSWORD)
    assert result.token.startswith("fgs_") and result.expires_in_s == 3600
    (session,) = sessions.for_user("op")
    assert session.token_hash == hashlib.sha256(result.token.encode()).hexdigest()
    assert result.token not in repr(session)
    assert store.authenticate(result.token) == Principal("op", Role.OPERATOR)
    wall.now += 3601
    with pytest.raises(Unauthorized, match="expired"):
        store.authenticate(result.token)


async def test_wrong_passwords_and_unknown_names_get_the_same_answer() -> None:
    store = accounts()
    await store.add_user("ada", PASSWORD, "viewer")
    for name, password in (("ada", "wrong password"), ("nobody", PASSWORD), ("ada", "x" * 2000)):
        with pytest.raises(Unauthorized) as caught:
            await store.login(name, password)
        assert caught.value.message == "wrong name or password"


async def test_roles_nest_and_the_bootstrap_token_is_an_admin() -> None:
    store = accounts()
    tokens = {}
    for role in Role:
        await store.add_user(role.value, PASSWORD, role)
        tokens[role] = (await store.login(role.value, PASSWORD)).token
    allowed = {
        (who, needed) for who in Role for needed in Role if _allows(store, tokens[who], needed)
    }
    assert allowed == {
        (Role.VIEWER, Role.VIEWER),
        (Role.OPERATOR, Role.VIEWER),
        (Role.OPERATOR, Role.OPERATOR),
        (Role.ADMIN, Role.VIEWER),
        (Role.ADMIN, Role.OPERATOR),
        (Role.ADMIN, Role.ADMIN),
    }
    with pytest.raises(Forbidden, match="viewer has the viewer role; this needs operator"):
        store.authorise(tokens[Role.VIEWER], Role.OPERATOR)
    assert store.authorise("boot", Role.ADMIN, bootstrap="boot").role is Role.ADMIN
    for anonymous in ("", "fgs_made-up", "boot"):
        with pytest.raises(Unauthorized):
            store.authorise(anonymous, Role.VIEWER)


def _allows(store: Accounts, token: str, needed: Role) -> bool:
    try:
        store.authorise(token, needed)
    except Forbidden:
        return False
    return True


async def test_logout_and_removal_end_sessions() -> None:
    store = accounts()
    await store.add_user("ada", PASSWORD, "admin")
    first, second = await store.login("ada", PASSWORD), await store.login("ada", PASSWORD)
    store.logout(first.token)
    store.logout("not-a-token")  # harmless
    with pytest.raises(Unauthorized):
        store.authenticate(first.token)
    assert store.authenticate(second.token).name == "ada"
    store.remove_user("ada")
    with pytest.raises(Unauthorized):
        store.authenticate(second.token)
    with pytest.raises(NotFound):
        store.remove_user("ada")


async def test_a_user_holds_a_bounded_number_of_sessions() -> None:
    sessions = InMemorySessionStore()
    store = accounts(sessions=sessions)
    await store.add_user("ada", PASSWORD, "viewer")
    tokens = [(await store.login("ada", PASSWORD)).token for _ in range(MAX_SESSIONS_PER_USER + 3)]
    assert len(sessions.for_user("ada")) == MAX_SESSIONS_PER_USER
    store.authenticate(tokens[-1])
    with pytest.raises(Unauthorized):
        store.authenticate(tokens[0])  # the oldest went


async def test_logins_are_rate_limited_per_name_and_per_peer() -> None:
    store = Accounts(
        hasher=CHEAP, limits=LoginLimits(per_peer=Rate(5, 0.001), per_name=Rate(2, 0.001))
    )
    await store.add_user("ada", PASSWORD, "viewer")
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await store.login("ada", "guess guess", peer="10.0.0.9")
    with pytest.raises(RateLimited, match="logins as 'ada'"):
        await store.login("ada", PASSWORD, peer="10.0.0.9")  # even the right password, now
    for name in ("bob", "cy"):
        with pytest.raises(Unauthorized):
            await store.login(name, "guess guess", peer="10.0.0.9")
    with pytest.raises(RateLimited, match=r"logins from peer '10\.0\.0\.9'"):
        await store.login("dee", "guess guess", peer="10.0.0.9")


@pytest.mark.parametrize(
    ("name", "password", "role"),
    [
        ("", PASSWORD, "viewer"),
        ("-dash", PASSWORD, "viewer"),
        ("has space", PASSWORD, "viewer"),
        ("x" * 65, PASSWORD, "viewer"),
        ("ada", "short", "viewer"),
        ("ada", "x" * 1025, "viewer"),
        ("ada", PASSWORD, "root"),
    ],
)
async def test_new_users_are_checked(name: str, password: str, role: str) -> None:
    with pytest.raises(ConfigError):
        await accounts().add_user(name, password, role)


async def test_a_name_is_taken_once() -> None:
    store = accounts()
    await store.add_user("ada", PASSWORD, "viewer")
    with pytest.raises(Conflict):
        await store.add_user("ada", PASSWORD, "admin")
    assert [(u.name, u.role) for u in store.list_users()] == [("ada", Role.VIEWER)]
    assert store.has_users()
