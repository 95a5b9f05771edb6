"""Enrolment keys, join limits and the client registry, in process (no transport)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from fedgate.core.config import RunConfig
from fedgate.core.enrolment import (
    MAX_NUM_EXAMPLES,
    Enrolment,
    EnrolmentMode,
    InMemoryKeyStore,
    JoinLimits,
    KeyState,
)
from fedgate.core.federation import Federation
from fedgate.core.messages import ClientState, JoinRequest
from fedgate.core.ratelimit import Rate, RateLimiter
from fedgate.core.registry import ClientRegistry
from fedgate.errors import (
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    UnknownClient,
)
from tests.conftest import tiny_model, until

MANY = Rate(burst=1000, per_s=1000.0)  # no rate limit in the way of what a test checks


class Clock:
    """A hand-moved clock, for expiry and token buckets."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def keyed() -> AsyncIterator[Federation]:
    federation = Federation(
        tiny_model(),
        RunConfig(rounds=2, min_clients=2, round_deadline_s=30.0),
        enrolment="key",
        join_limits=JoinLimits(per_peer=MANY, per_key=MANY),
    )
    yield federation
    await federation.close()


def joining(key: str = "", name: str = "c", num_examples: int = 10, peer: str = "") -> JoinRequest:
    return JoinRequest(name=name, codec="raw", num_examples=num_examples, key=key, peer=peer)


# ---- keys -------------------------------------------------------------------------------


def test_a_key_shows_its_secret_once_and_keeps_only_its_hash() -> None:
    store = InMemoryKeyStore()
    enrolment = Enrolment(EnrolmentMode.KEY, store)
    issued = enrolment.create("site-a", max_clients=3, max_num_examples=5000)
    key_id = issued.key.key_id
    assert issued.secret.startswith(f"fgk_{key_id}_") and len(issued.secret) > 40
    stored = store.get(key_id)
    assert stored is not None
    assert stored.secret_hash == hashlib.sha256(issued.secret.encode()).hexdigest()
    assert issued.secret not in repr(stored) and issued.secret not in repr(enrolment.list())
    (view,) = enrolment.list()
    assert (view.name, view.max_clients, view.max_num_examples) == ("site-a", 3, 5000)
    assert (view.state, view.clients, view.expires_at, view.revoked_at) == (
        KeyState.ACTIVE,
        0,
        None,
        None,
    )
    assert enrolment.verify(issued.secret).key_id == key_id


def test_wrong_malformed_and_unknown_secrets_get_the_same_answer() -> None:
    enrolment = Enrolment(EnrolmentMode.KEY)
    secret = enrolment.create("a", 1, 10).secret
    other_id = "0" * 12
    for bad in (
        secret[:-1] + ("A" if secret[-1] != "A" else "B"),  # right id, wrong secret
        f"fgk_{other_id}_{secret.rpartition('_')[2]}",  # unknown id
        "fgk_nothex_abc",
        "not-a-key",
        secret + "x" * 300,
    ):
        with pytest.raises(Unauthorized) as caught:
            enrolment.verify(bad)
        assert caught.value.message == "invalid enrolment key"


def test_expired_and_revoked_keys_say_so_to_their_holder() -> None:
    wall = Clock()
    enrolment = Enrolment(EnrolmentMode.KEY, wall_clock=wall)
    expiring = enrolment.create("short", 1, 10, expires_in_s=60)
    revoked = enrolment.create("gone", 1, 10)
    assert expiring.key.expires_at == wall.now + 60
    enrolment.verify(expiring.secret)
    wall.now += 61
    with pytest.raises(Unauthorized, match="is expired"):
        enrolment.verify(expiring.secret)
    view = enrolment.revoke(revoked.key.key_id)
    assert view.state is KeyState.REVOKED and view.revoked_at == wall.now
    assert enrolment.revoke(revoked.key.key_id) == view  # again: harmless, same record
    with pytest.raises(Unauthorized, match="is revoked"):
        enrolment.verify(revoked.secret)
    states = {k.name: k.state for k in enrolment.list()}
    assert states == {"short": KeyState.EXPIRED, "gone": KeyState.REVOKED}
    with pytest.raises(NotFound):
        enrolment.revoke("0" * 12)


@pytest.mark.parametrize(
    ("name", "max_clients", "max_num_examples", "expires_in_s"),
    [
        ("", 1, 10, None),
        ("x" * 129, 1, 10, None),
        ("bad\nname", 1, 10, None),
        ("a", 0, 10, None),
        ("a", True, 10, None),
        ("a", 1, 0, None),
        ("a", 1, MAX_NUM_EXAMPLES + 1, None),
        ("a", 1, 10, 0.0),
        ("a", 1, 10, float("inf")),
        ("a", 1, 10, float("nan")),
    ],
)
def test_key_limits_are_checked(
    name: str, max_clients: int, max_num_examples: int, expires_in_s: float | None
) -> None:
    with pytest.raises(ConfigError):
        Enrolment().create(name, max_clients, max_num_examples, expires_in_s)


def test_an_unknown_enrolment_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match="key, open"):
        Enrolment("closed")


# ---- joins ------------------------------------------------------------------------------


async def test_key_enrolment_needs_a_valid_key_and_keeps_its_limits(keyed: Federation) -> None:
    with pytest.raises(Unauthorized, match="enrolment key only"):
        await keyed.join(joining())
    with pytest.raises(Unauthorized, match="invalid enrolment key"):
        await keyed.join(joining("fgk_000000000000_nope"))
    issued = keyed.enrolment.create("site", max_clients=5, max_num_examples=500)
    ack = await keyed.join(joining(issued.secret, num_examples=100))
    record = keyed.clients.get(ack.client_id)
    assert (record.key_id, record.max_num_examples) == (issued.key.key_id, 500)
    assert keyed.status().clients[0].key_id == issued.key.key_id
    with pytest.raises(Forbidden, match="at most 500 examples"):
        await keyed.join(joining(issued.secret, num_examples=501))


async def test_open_enrolment_caps_weight_at_the_declared_size_or_2_31() -> None:
    federation = Federation(tiny_model())
    declared = await federation.join(joining(num_examples=700))
    silent = await federation.join(joining(num_examples=0))
    assert federation.clients.get(declared.client_id).max_num_examples == 700
    assert federation.clients.get(silent.client_id).max_num_examples == MAX_NUM_EXAMPLES
    issued = federation.enrolment.create("k", 1, 50)
    keyed = await federation.join(joining(issued.secret, num_examples=20))  # a key still applies
    assert federation.clients.get(keyed.client_id).max_num_examples == 50
    with pytest.raises(Unauthorized):
        await federation.join(joining("fgk_000000000000_wrong"))
    with pytest.raises(ConfigError):
        await federation.join(joining(num_examples=MAX_NUM_EXAMPLES + 1))


async def test_a_key_admits_max_clients_at_once(keyed: Federation) -> None:
    issued = keyed.enrolment.create("pair", max_clients=2, max_num_examples=100)
    first = await keyed.join(joining(issued.secret, "a"))
    await keyed.join(joining(issued.secret, "b"))
    with pytest.raises(Conflict, match="admits 2 clients at once and 2 are active"):
        await keyed.join(joining(issued.secret, "c"))
    assert keyed.enrolment.get(issued.key.key_id).clients == 2
    await keyed.leave(first.client_id, first.token)  # a client that left frees its place
    await keyed.join(joining(issued.secret, "c"))


async def test_revoking_a_key_drops_its_clients_from_the_run_and_the_round(
    keyed: Federation,
) -> None:
    revoked = keyed.enrolment.create("revoked", 5, 100)
    kept = keyed.enrolment.create("kept", 5, 100)
    keyed.start()
    a = await keyed.join(joining(revoked.secret, "a"))
    b = await keyed.join(joining(kept.secret, "b"))
    c = await keyed.join(joining(kept.secret, "c"))
    for ack in (a, b, c):
        await keyed.next_task(ack.client_id, ack.token, wait_s=5)
    await until(lambda: keyed.round is not None and len(keyed.round.selected) == 3)
    view = keyed.revoke_key(revoked.key.key_id)
    assert (view.state, view.clients) == (KeyState.REVOKED, 0)
    record = keyed.clients.get(a.client_id)
    assert (record.state, record.reason) == (ClientState.LEFT, "enrolment key revoked")
    assert keyed.round is not None and a.client_id in keyed.round.dropped
    assert keyed.clients.get(b.client_id).state is not ClientState.LEFT
    with pytest.raises(UnknownClient):
        await keyed.heartbeat(a.client_id, a.token)
    with pytest.raises(Unauthorized, match="revoked"):
        await keyed.join(joining(revoked.secret, "a"))


async def test_joins_are_rate_limited_per_peer_and_per_key() -> None:
    clock = Clock()
    federation = Federation(
        tiny_model(),
        enrolment="key",
        join_limits=JoinLimits(per_peer=Rate(3, 0.5), per_key=Rate(4, 1.0)),
        clock=clock,
    )
    secret = federation.enrolment.create("k", 100, 100).secret
    for i in range(3):
        await federation.join(joining(secret, f"p{i}", peer="10.0.0.1"))
    with pytest.raises(RateLimited, match=r"joins from peer '10.0.0.1'.*retry in 2.0s"):
        await federation.join(joining(secret, "p3", peer="10.0.0.1"))
    await federation.join(joining(secret, "q", peer="10.0.0.2"))  # the fourth with the key
    with pytest.raises(RateLimited, match="joins with enrolment key"):
        await federation.join(joining(secret, "r", peer="10.0.0.3"))
    clock.now += 2.0  # a token each back: one per peer, two for the key
    await federation.join(joining(secret, "p3", peer="10.0.0.1"))
    # key-less and wrong-key joins are refused before they can spend anyone's allowance
    for _ in range(10):
        with pytest.raises(Unauthorized):
            await federation.join(joining("", "flood", peer="10.0.0.2"))
    await federation.join(joining(secret, "q2", peer="10.0.0.2"))


def test_rate_limiter_buckets_are_bounded() -> None:
    limiter = RateLimiter(Rate(1, 1.0), "calls from", max_buckets=3)
    for name in "abcd":
        limiter.take(name)
    assert len(limiter) == 3  # "a", the least recently used, went
    limiter.take("a")  # a fresh bucket again
    with pytest.raises(RateLimited):
        limiter.take("d")
    with pytest.raises(ConfigError):
        Rate(0, 1.0)


# ---- the registry -----------------------------------------------------------------------


async def test_client_tokens_are_kept_only_as_hashes(keyed: Federation) -> None:
    secret = keyed.enrolment.create("k", 5, 100).secret
    ack = await keyed.join(joining(secret))
    record = keyed.clients.get(ack.client_id)
    assert record.token_hash == hashlib.sha256(ack.token.encode()).hexdigest()
    assert all(ack.token not in repr(value) for value in vars(record).values())
    assert not hasattr(record, "token")
    assert keyed.clients.authenticate(ack.client_id, ack.token) is record
    for wrong in ("", ack.token[:-1], ack.token + "x" * 300):
        with pytest.raises(Unauthorized):
            keyed.clients.authenticate(ack.client_id, wrong)


def test_gone_clients_never_lock_the_registry() -> None:
    registry = ClientRegistry(max_clients=5)
    for i in range(50):
        joined = registry.add(f"c{i}", "raw", "rest", 0, key_id="k")
        joined.record.state = ClientState.LEFT
    assert len(list(registry)) <= 5
    registry.add("real", "raw", "rest", 0, key_id="k")


def test_key_less_clients_cannot_take_the_places_kept_for_keys() -> None:
    registry = ClientRegistry(max_clients=10)
    assert registry.max_open_clients == 9
    for i in range(9):
        registry.add(f"open{i}", "raw", "rest", 0)
    with pytest.raises(Conflict, match="without an enrolment key"):
        registry.add("open9", "raw", "rest", 0)
    registry.add("keyed", "raw", "rest", 0, key_id="k")
    with pytest.raises(Conflict, match="is full"):
        registry.add("keyed2", "raw", "rest", 0, key_id="k")
    assert registry.active_by_key() == {"": 9, "k": 1}
