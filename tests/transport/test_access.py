"""Who gets in, over the wire: enrolment keys on joins, roles on operator calls, logins.

Every test runs on each transport of the registry against a real Gateway on loopback,
through raw HTTP (httpx) and raw gRPC stubs as a hostile client would, and asserts the
documented status: REST status codes, gRPC status codes, and the fedgate error code both
carry (problem body / trailing metadata).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from argon2 import PasswordHasher
from google.protobuf.json_format import MessageToDict

from fedgate.core.accounts import Accounts, LoginLimits, Role
from fedgate.core.config import RunConfig
from fedgate.core.enrolment import JoinLimits
from fedgate.core.federation import Federation
from fedgate.core.messages import ClientState, JoinRequest
from fedgate.core.ratelimit import Rate
from fedgate.errors import Forbidden, RateLimited, Unauthorized
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.transport.connect import connect
from fedgate.transport.grpc.channel import CHANNEL_OPTIONS
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.proto import fedgate_pb2_grpc as pb_grpc
from fedgate.transport.grpc.status import ERROR_CODE_KEY
from fedgate.transport.servers import SERVER_ADAPTERS
from tests.conftest import tiny_model
from tests.transport.conftest import ADMIN_TOKEN

WIRES = sorted(SERVER_ADAPTERS)
OK = "ok"
# The documented statuses (README, proto comments, route docstrings), per transport.
STATUS: dict[str, dict[str, int | grpc.StatusCode]] = {
    "ok": {"rest": 200, "grpc": grpc.StatusCode.OK},
    "unauthorized": {"rest": 401, "grpc": grpc.StatusCode.UNAUTHENTICATED},
    "forbidden": {"rest": 403, "grpc": grpc.StatusCode.PERMISSION_DENIED},
    "conflict": {"rest": 409, "grpc": grpc.StatusCode.FAILED_PRECONDITION},
    "rate_limited": {"rest": 429, "grpc": grpc.StatusCode.RESOURCE_EXHAUSTED},
    "not_found": {"rest": 404, "grpc": grpc.StatusCode.NOT_FOUND},
}
PASSWORD = "a long enough password"
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
MANY = Rate(burst=1000, per_s=1000.0)


@dataclass(frozen=True)
class Reply:
    outcome: str  # "ok", or the fedgate error code
    status: int | grpc.StatusCode
    body: dict[str, Any]


class RestWire:
    """Calls as raw HTTP requests."""

    name = "rest"

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def join(self, key: str, name: str = "c", num_examples: int = 10) -> Reply:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body = {"name": name, "codec": "raw", "num_examples": num_examples}
        return _rest(await self.http.post("/api/v1/clients", json=body, headers=headers))

    async def join_anew(self, key: str, name: str) -> Reply:
        """A join on a connection of its own (another source port)."""
        async with httpx.AsyncClient(base_url=self.http.base_url) as http:
            return await RestWire(http).join(key, name)

    async def call(self, op: str, token: str = "", **args: Any) -> Reply:
        method, path, body = REST_OPS[op](args)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http.cookies.clear()  # a login's cookie must not speak for later calls
        return _rest(await self.http.request(method, path, json=body, headers=headers))


class GrpcWire:
    """Calls through raw generated stubs."""

    name = "grpc"

    def __init__(self, channel: grpc.aio.Channel, target: str) -> None:
        self.target = target
        self.federation = pb_grpc.FederationStub(channel)
        self.operator = pb_grpc.OperatorStub(channel)

    async def join(self, key: str, name: str = "c", num_examples: int = 10) -> Reply:
        metadata = (("authorization", f"Bearer {key}"),) if key else ()
        request = pb.JoinRequest(name=name, codec="raw", num_examples=num_examples)
        return await _grpc(self.federation.Join(request, metadata=metadata))

    async def join_anew(self, key: str, name: str) -> Reply:
        """A join on a channel of its own (another source port)."""
        async with grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS) as channel:
            return await GrpcWire(channel, self.target).join(key, name)

    async def call(self, op: str, token: str = "", **args: Any) -> Reply:
        method, request = GRPC_OPS[op](args)
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        return await _grpc(getattr(self.operator, method)(request, metadata=metadata))


Wire = RestWire | GrpcWire

REST_OPS: dict[str, Callable[[dict[str, Any]], tuple[str, str, Any]]] = {
    "status": lambda a: ("GET", "/api/v1/status", None),
    "pause": lambda a: ("POST", "/api/v1/run/pause", None),
    "create_key": lambda a: ("POST", "/api/v1/keys", a),
    "list_keys": lambda a: ("GET", "/api/v1/keys", None),
    "revoke_key": lambda a: ("DELETE", f"/api/v1/keys/{a['key_id']}", None),
    "login": lambda a: ("POST", "/api/v1/login", a),
    "logout": lambda a: ("POST", "/api/v1/logout", None),
    "add_user": lambda a: ("POST", "/api/v1/users", a),
    "list_users": lambda a: ("GET", "/api/v1/users", None),
    "remove_user": lambda a: ("DELETE", f"/api/v1/users/{a['name']}", None),
}
GRPC_OPS: dict[str, Callable[[dict[str, Any]], tuple[str, Any]]] = {
    "status": lambda a: ("GetStatus", pb.StatusRequest()),
    "pause": lambda a: ("Pause", pb.ControlRequest()),
    "create_key": lambda a: ("CreateKey", pb.CreateKeyRequest(**a)),
    "list_keys": lambda a: ("ListKeys", pb.ListKeysRequest()),
    "revoke_key": lambda a: ("RevokeKey", pb.RevokeKeyRequest(**a)),
    "login": lambda a: ("Login", pb.LoginRequest(**a)),
    "logout": lambda a: ("Logout", pb.LogoutRequest()),
    "add_user": lambda a: ("AddUser", pb.AddUserRequest(**a)),
    "list_users": lambda a: ("ListUsers", pb.ListUsersRequest()),
    "remove_user": lambda a: ("RemoveUser", pb.RemoveUserRequest(**a)),
}


def _rest(response: httpx.Response) -> Reply:
    body = response.json() if response.content else {}
    if response.status_code < 400:
        return Reply(OK, 200, body)  # 201 and 204 are success as well
    return Reply(body["code"], response.status_code, body)


async def _grpc(call: Any) -> Reply:
    try:
        message = await call
    except grpc.aio.AioRpcError as error:
        codes = [v for k, v in error.trailing_metadata() or () if k == ERROR_CODE_KEY]
        return Reply(str(codes[0]) if codes else "", error.code(), {})
    return Reply(OK, grpc.StatusCode.OK, MessageToDict(message, preserving_proto_field_name=True))


def expect(reply: Reply, wire: Wire, outcome: str) -> Reply:
    assert (reply.outcome, reply.status) == (outcome, STATUS[outcome][wire.name]), reply
    return reply


@asynccontextmanager
async def serving(
    transport: str, join_limits: JoinLimits | None = None, login_limits: LoginLimits | None = None
) -> AsyncIterator[tuple[Federation, Wire, Gateway]]:
    federation = Federation(
        tiny_model(),
        RunConfig(rounds=3, min_clients=2, round_deadline_s=30.0),
        enrolment="key",
        join_limits=join_limits or JoinLimits(per_peer=MANY, per_key=MANY),
        accounts=Accounts(hasher=CHEAP, limits=login_limits),
    )
    settings = GatewaySettings(grpc_port=0, http_port=0, admin_token=ADMIN_TOKEN)
    async with (
        Gateway(federation, settings) as gateway,
        raw_wire(transport, gateway.addresses[transport]) as wire,
    ):
        yield federation, wire, gateway


@asynccontextmanager
async def raw_wire(transport: str, address: str) -> AsyncIterator[Wire]:
    """Raw calls to a server transport at ``address``; each of the registry needs one."""
    if transport == RestWire.name:
        async with httpx.AsyncClient(base_url=address, timeout=30) as http:
            yield RestWire(http)
    elif transport == GrpcWire.name:
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            yield GrpcWire(channel, address)
    else:
        raise AssertionError(f"no raw wire for server transport {transport!r}: write one here")


async def new_key(wire: Wire, max_clients: int = 5, max_num_examples: int = 1000) -> str:
    args = {"name": "site", "max_clients": max_clients, "max_num_examples": max_num_examples}
    reply = expect(await wire.call("create_key", ADMIN_TOKEN, **args), wire, OK)
    return str(reply.body["secret"])


async def token_for(federation: Federation, wire: Wire, role: Role) -> str:
    await federation.accounts.add_user(role.value, PASSWORD, role)
    reply = await wire.call("login", name=role.value, password=PASSWORD)
    return str(expect(reply, wire, OK).body["token"])


# ---- enrolment keys ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", WIRES)
async def test_joins_without_a_valid_key_are_refused(transport: str) -> None:
    async with serving(transport) as (federation, wire, _):
        secret = await new_key(wire)
        key_id = secret.split("_")[1]
        expect(await wire.join(""), wire, "unauthorized")
        unknown = "fgk_000000000000_" + secret.rpartition("_")[2]
        expect(await wire.join(unknown), wire, "unauthorized")
        expect(await wire.join(secret[:-2] + "zz"), wire, "unauthorized")
        expect(await wire.join(secret), wire, OK)
        revoked = expect(await wire.call("revoke_key", ADMIN_TOKEN, key_id=key_id), wire, OK)
        assert revoked.body["state"] == "revoked"
        expect(await wire.join(secret), wire, "unauthorized")
        assert len(federation.clients.active()) == 0  # the one that joined left with its key


@pytest.mark.parametrize("transport", WIRES)
async def test_sybil_joins_without_a_key_fill_nothing(transport: str) -> None:
    async with serving(transport) as (federation, wire, _):
        flood: list[Reply] = []
        for batch in range(4):  # 50 at once: within one connection's stream limit
            flood += await asyncio.gather(*(wire.join("", f"s{batch}-{i}") for i in range(50)))
        assert {(r.outcome, r.status) for r in flood} == {
            ("unauthorized", STATUS["unauthorized"][transport])
        }
        assert list(federation.clients) == []
        expect(await wire.join(await new_key(wire), "real"), wire, OK)


@pytest.mark.parametrize("transport", WIRES)
async def test_a_key_limits_its_clients_and_their_weight(transport: str) -> None:
    async with serving(transport) as (federation, wire, _):
        secret = await new_key(wire, max_clients=2, max_num_examples=100)
        expect(await wire.join(secret, "heavy", num_examples=101), wire, "forbidden")
        first = expect(await wire.join(secret, "a", num_examples=100), wire, OK)
        expect(await wire.join(secret, "b"), wire, OK)
        expect(await wire.join(secret, "c"), wire, "conflict")
        record = federation.clients.get(str(first.body["client_id"]))
        assert record.max_num_examples == 100 and record.transport == transport
        listed = expect(await wire.call("list_keys", ADMIN_TOKEN), wire, OK).body["keys"]
        assert [(k["clients"], "secret" in k) for k in listed] == [(2, False)]


@pytest.mark.parametrize("transport", WIRES)
async def test_revoking_a_key_drops_its_clients(transport: str) -> None:
    async with serving(transport) as (federation, wire, _):
        secret = await new_key(wire)
        joined = [expect(await wire.join(secret, f"c{i}"), wire, OK) for i in range(2)]
        key_id = secret.split("_")[1]
        expect(await wire.call("revoke_key", ADMIN_TOKEN, key_id=key_id), wire, OK)
        for reply in joined:
            record = federation.clients.get(str(reply.body["client_id"]))
            assert (record.state, record.reason) == (ClientState.LEFT, "enrolment key revoked")
        expect(await wire.call("revoke_key", ADMIN_TOKEN, key_id="0" * 12), wire, "not_found")


@pytest.mark.parametrize("transport", WIRES)
async def test_joins_are_rate_limited_per_peer(transport: str) -> None:
    limits = JoinLimits(per_peer=Rate(3, 0.001), per_key=MANY)
    async with serving(transport, join_limits=limits) as (_, wire, _gateway):
        secret = await new_key(wire, max_clients=10)
        # one address, a connection each: the limit counts addresses, not source ports
        for i in range(3):
            expect(await wire.join_anew(secret, f"c{i}"), wire, OK)
        expect(await wire.join_anew(secret, "c3"), wire, "rate_limited")


@pytest.mark.parametrize("transport", WIRES)
async def test_joins_are_rate_limited_per_key(transport: str) -> None:
    limits = JoinLimits(per_peer=MANY, per_key=Rate(2, 0.001))
    async with serving(transport, join_limits=limits) as (_, wire, _gateway):
        first, second = await new_key(wire, max_clients=10), await new_key(wire, max_clients=10)
        expect(await wire.join(first, "a"), wire, OK)
        expect(await wire.join(first, "b"), wire, OK)
        expect(await wire.join(first, "c"), wire, "rate_limited")
        expect(await wire.join(second, "d"), wire, OK)


@pytest.mark.parametrize("transport", WIRES)
async def test_fedgate_clients_join_with_a_key_and_see_refusals_as_fedgate_errors(
    transport: str,
) -> None:
    limits = JoinLimits(per_peer=Rate(2, 0.001), per_key=MANY)
    async with serving(transport, join_limits=limits) as (federation, wire, gateway):
        secret = await new_key(wire, max_num_examples=50)
        client = connect(transport, gateway.addresses[transport])
        try:
            request = JoinRequest(name="mine", codec="raw", num_examples=50, key=secret)
            ack = await client.join(request)
            record = federation.clients.get(ack.client_id)
            assert record.key_id == secret.split("_")[1] and record.max_num_examples == 50
            with pytest.raises(Unauthorized):  # refused before it spends the peer's allowance
                await client.join(JoinRequest(name="keyless", codec="raw"))
            with pytest.raises(Forbidden):
                await client.join(JoinRequest(name="big", codec="raw", num_examples=51, key=secret))
            with pytest.raises(RateLimited):
                await client.join(request)
        finally:
            await client.close()


# ---- accounts and roles -----------------------------------------------------------------


@pytest.mark.parametrize("transport", WIRES)
async def test_each_role_may_do_what_it_should(transport: str) -> None:
    async with serving(transport) as (federation, wire, _):
        federation.start()
        viewer = await token_for(federation, wire, Role.VIEWER)
        operator = await token_for(federation, wire, Role.OPERATOR)
        expect(await wire.call("status"), wire, "unauthorized")
        expect(await wire.call("pause"), wire, "unauthorized")
        expect(await wire.call("pause", "fgs_forged"), wire, "unauthorized")
        expect(await wire.call("status", viewer), wire, OK)
        expect(await wire.call("pause", viewer), wire, "forbidden")
        expect(await wire.call("list_keys", operator), wire, "forbidden")
        expect(await wire.call("list_users", operator), wire, "forbidden")
        args = {"name": "k", "max_clients": 1, "max_num_examples": 10}
        expect(await wire.call("create_key", operator, **args), wire, "forbidden")
        assert federation.enrolment.list() == []
        paused = expect(await wire.call("pause", operator), wire, OK)
        assert paused.body["state"] == "paused"
        expect(await wire.call("create_key", ADMIN_TOKEN, **args), wire, OK)


@pytest.mark.parametrize("transport", WIRES)
async def test_admins_manage_users_and_sessions_end_with_them(transport: str) -> None:
    async with serving(transport) as (federation, wire, _):
        admin = await token_for(federation, wire, Role.ADMIN)
        user = {"name": "olga", "password": PASSWORD, "role": "operator"}
        expect(await wire.call("add_user", admin, **user), wire, OK)
        expect(await wire.call("add_user", admin, **user), wire, "conflict")
        weak = {**user, "name": "weak", "password": "short"}
        refused = await wire.call("add_user", admin, **weak)
        assert refused.outcome in ("bad_request", "invalid_config")  # pydantic / the core
        listed = expect(await wire.call("list_users", admin), wire, OK).body["users"]
        assert sorted((u["name"], u["role"]) for u in listed) == [
            ("admin", "admin"),
            ("olga", "operator"),
        ]
        stored = federation.accounts.users.get("olga")
        assert stored is not None and stored.password_hash.startswith("$argon2id$")
        login = expect(await wire.call("login", name="olga", password=PASSWORD), wire, OK)
        olga = str(login.body["token"])
        assert login.body["role"] == "operator"
        expect(await wire.call("login", name="olga", password="wrong one"), wire, "unauthorized")
        expect(await wire.call("pause", olga), wire, OK)
        expect(await wire.call("remove_user", admin, name="olga"), wire, OK)
        expect(await wire.call("status", olga), wire, "unauthorized")
        expect(await wire.call("logout", admin), wire, OK)
        expect(await wire.call("status", admin), wire, "unauthorized")


async def test_rest_login_sets_a_strict_http_only_cookie_that_authorises() -> None:
    async with serving("rest") as (federation, wire, _):
        assert isinstance(wire, RestWire)
        await federation.accounts.add_user("vic", PASSWORD, Role.VIEWER)
        reply = await wire.http.post("/api/v1/login", json={"name": "vic", "password": PASSWORD})
        assert reply.status_code == 200
        cookie = reply.headers["set-cookie"]
        assert cookie.startswith(f"fedgate_session={reply.json()['token']};")
        assert {"HttpOnly", "SameSite=strict", "Path=/"} <= {
            part.strip() for part in cookie.split(";")
        }
        assert (await wire.http.get("/api/v1/status")).status_code == 200  # the cookie alone
        assert (await wire.http.post("/api/v1/run/pause")).status_code == 403  # still a viewer
        assert (await wire.http.post("/api/v1/logout")).status_code == 204
        assert "fedgate_session" not in wire.http.cookies
        assert (await wire.http.get("/api/v1/status")).status_code == 401


@pytest.mark.parametrize("path", ["/api/v1/run/config", "/api/v1/clients"])
async def test_rest_refuses_the_anonymous_before_reading_the_body(path: str) -> None:
    """Headers announcing a 50 MB body and no body at all: the answer comes at once."""
    async with serving("rest") as (_, _wire, gateway):
        method = "PATCH" if path.endswith("config") else "POST"
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.http_port)
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {50 * 1024**2}\r\n\r\n{{".encode()
        )
        await writer.drain()
        async with asyncio.timeout(5):
            status_line = await reader.readline()
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 401"), status_line


async def test_every_operator_rpc_has_its_rest_route() -> None:
    routes = {
        "GetStatus": ("get", "/api/v1/status"),
        "WatchStatus": ("get", "/api/v1/status/watch"),
        "Pause": ("post", "/api/v1/run/pause"),
        "Resume": ("post", "/api/v1/run/resume"),
        "Stop": ("post", "/api/v1/run/stop"),
        "UpdateConfig": ("patch", "/api/v1/run/config"),
        "Kick": ("post", "/api/v1/clients/{client_id}/kick"),
        "CreateKey": ("post", "/api/v1/keys"),
        "ListKeys": ("get", "/api/v1/keys"),
        "RevokeKey": ("delete", "/api/v1/keys/{key_id}"),
        "Login": ("post", "/api/v1/login"),
        "Logout": ("post", "/api/v1/logout"),
        "AddUser": ("post", "/api/v1/users"),
        "ListUsers": ("get", "/api/v1/users"),
        "RemoveUser": ("delete", "/api/v1/users/{name}"),
    }
    rpcs = {m.name for m in pb.DESCRIPTOR.services_by_name["Operator"].methods}
    assert rpcs == set(routes)
    async with serving("rest") as (_, wire, _gateway):
        assert isinstance(wire, RestWire)
        paths = (await wire.http.get("/openapi.json")).json()["paths"]
    assert all(method in paths[path] for method, path in routes.values())
