"""Enrolment keys, accounts and login sessions outlive the server: what `Enrolment` and
`Accounts` wrote through one store opened on a database holds in the next."""

from __future__ import annotations

from argon2 import PasswordHasher

from fedgate.core.accounts import Accounts, Principal, Role
from fedgate.core.enrolment import Enrolment, KeyState
from fedgate.store import open_store

FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


async def test_keys_users_and_sessions_survive_a_restart(sql_url: str) -> None:
    with open_store(sql_url) as store:
        enrolment = Enrolment("key", store.keys)
        issued = enrolment.create("lab", max_clients=3, max_num_examples=500)
        revoked = enrolment.create("old", max_clients=1, max_num_examples=10)
        enrolment.revoke(revoked.key.key_id)
        accounts = Accounts(store.users, store.sessions, hasher=FAST)
        await accounts.add_user("ada", "correct horse", Role.OPERATOR)
        login = await accounts.login("ada", "correct horse")

    with open_store(sql_url) as store:  # a new process, as far as the database knows
        enrolment = Enrolment("key", store.keys)
        assert enrolment.verify(issued.secret).key_id == issued.key.key_id
        assert [k.state for k in enrolment.list()] == [KeyState.ACTIVE, KeyState.REVOKED]
        accounts = Accounts(store.users, store.sessions, hasher=FAST)
        assert accounts.authenticate(login.token) == Principal("ada", Role.OPERATOR)
        assert (await accounts.login("ada", "correct horse")).principal.name == "ada"
        accounts.logout(login.token)
        accounts.remove_user("ada")
        assert store.sessions.for_user("ada") == []


def test_secrets_are_kept_only_as_hashes(sql_url: str) -> None:
    with open_store(sql_url) as store:
        issued = Enrolment("key", store.keys).create("lab", max_clients=1, max_num_examples=5)
        with store.database.engine.connect() as connection:
            dumped = repr(
                [list(row) for row in connection.exec_driver_sql("SELECT * FROM enrolment_keys")]
            )
    assert issued.secret not in dumped
    assert issued.key.key_id in dumped
