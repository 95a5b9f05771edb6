"""The REST adapter on the wire: statuses, problem bodies, media types, OpenAPI."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import torch

from fedgate.codecs import CODECS, get_codec
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.modelstore import dense_codec
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.transport.rest.headers import TASK_HEADER
from fedgate.transport.rest.schemas import TaskJson
from fedgate.transport.slicing import SLICE_BYTES as BODY_SLICE_BYTES
from tests.conftest import tiny_model
from tests.transport.conftest import ADMIN_TOKEN

LIMIT = 50_000


@pytest.fixture
async def api() -> AsyncIterator[tuple[httpx.AsyncClient, Federation]]:
    federation = Federation(tiny_model(), RunConfig(rounds=2, min_clients=1))
    settings = GatewaySettings(
        grpc_port=0, http_port=0, admin_token=ADMIN_TOKEN, max_update_bytes=LIMIT
    )
    async with Gateway(federation, settings) as gateway:
        federation.start()
        async with httpx.AsyncClient(base_url=gateway.http_url, timeout=30) as http:
            yield http, federation


async def joined(http: httpx.AsyncClient) -> tuple[dict[str, str], dict[str, Any]]:
    reply = await http.post("/api/v1/clients", json={"name": "w", "codec": "raw"})
    assert reply.status_code == 201
    ack = reply.json()
    headers = {"Authorization": f"Bearer {ack['token']}", "X-Fedgate-Client-Id": ack["client_id"]}
    task = (
        await http.get(
            f"/api/v1/clients/{ack['client_id']}/task", headers=headers, params={"wait_s": 5}
        )
    ).json()
    assert task["kind"] == "train"
    return headers, task


async def post_update(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    task: dict[str, Any],
    body: bytes,
    media_type: str,
    round_id: str | None = None,
) -> httpx.Response:
    return await http.post(
        f"/api/v1/rounds/{round_id or task['round_id']}/updates",
        content=body,
        headers={**headers, "Content-Type": media_type},
        params={"model_version": task["model_version"], "num_examples": 10},
    )


async def test_models_come_in_the_media_type_asked_for(
    api: tuple[httpx.AsyncClient, Federation],
) -> None:
    http, _ = api
    headers, _ = await joined(http)
    for codec in CODECS.values():
        by_accept = await http.get(
            "/api/v1/models/0", headers={**headers, "Accept": codec.media_type}
        )
        by_query = await http.get("/api/v1/models/0", headers=headers, params={"codec": codec.name})
        sent_in = dense_codec(codec)  # a whole model travels in a dense codec
        for reply in (by_accept, by_query):
            assert reply.status_code == 200
            assert reply.headers["content-type"] == sent_in.media_type
            assert reply.headers["x-fedgate-codec"] == sent_in.name
            assert torch.equal(sent_in.decode(reply.content)["steps"], torch.tensor(0))
    default = await http.get("/api/v1/models/0", headers=headers)
    assert default.headers["x-fedgate-codec"] == "raw"


async def test_each_bad_call_gets_its_status_and_a_problem_body(
    api: tuple[httpx.AsyncClient, Federation],
) -> None:
    http, federation = api
    headers, task = await joined(http)
    raw = get_codec("raw")
    nan_model = {**tiny_model(), "w": torch.full((2, 3), math.nan)}
    cases = [
        (await post_update(http, headers, task, b"junk", raw.media_type), 400, "codec_error"),
        (
            await post_update(
                http, headers, task, raw.encode({"w": torch.zeros(1)}), raw.media_type
            ),
            422,
            "update_layout_mismatch",  # refused from the header, before the tensors are built
        ),
        (
            await post_update(http, headers, task, raw.encode(nan_model), raw.media_type),
            422,
            "non_finite_update",
        ),
        (
            await post_update(
                http, headers, task, raw.encode(tiny_model()), raw.media_type, round_id="42.1"
            ),
            409,
            "round_closed",
        ),
        (
            await post_update(http, headers, task, b"\x80\x04", "application/python-pickle"),
            415,
            "unknown_codec",
        ),
        (
            await post_update(http, headers, task, bytes(LIMIT + 1), raw.media_type),
            413,
            "payload_too_large",
        ),
        (
            await http.post("/api/v1/clients/nobody/heartbeat", headers=headers),
            404,
            "unknown_client",
        ),
        (
            await http.post(f"/api/v1/clients/{headers['X-Fedgate-Client-Id']}/heartbeat"),
            401,
            "unauthorized",
        ),
        (
            await http.get("/api/v1/models/0", headers={**headers, "Accept": "image/png"}),
            415,
            "unknown_codec",
        ),
        (await http.get("/api/v1/models/7", headers=headers), 409, "conflict"),
        (await http.post("/api/v1/clients", json={"name": "", "codec": "raw"}), 400, "bad_request"),
        (
            await http.post(
                "/api/v1/clients",
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            ),
            400,
            "bad_request",
        ),
        (await http.get("/api/v1/status"), 401, "unauthorized"),
    ]
    for reply, status, code in cases:
        assert (reply.status_code, reply.json()["code"]) == (status, code), reply.text
        assert reply.headers["content-type"] == "application/problem+json"
        assert reply.json()["detail"]
    assert federation.models.version == 0 and federation.round is not None
    assert federation.round.aggregator.count == 0


async def test_a_body_over_the_limit_is_refused_while_streaming(
    api: tuple[httpx.AsyncClient, Federation],
) -> None:
    http, _ = api
    headers, task = await joined(http)

    async def endless() -> AsyncIterator[bytes]:  # no Content-Length: chunked upload
        for _ in range(100):
            yield bytes(10_000)

    reply = await http.post(
        f"/api/v1/rounds/{task['round_id']}/updates",
        content=endless(),
        headers={**headers, "Content-Type": get_codec("raw").media_type},
        params={"model_version": 0, "num_examples": 10},
    )
    assert reply.status_code == 413


async def test_an_older_clients_train_accuracy_is_ignored(
    api: tuple[httpx.AsyncClient, Federation],
) -> None:
    # clients sent ?train_accuracy= until it was dropped as never read: still taken
    http, _ = api
    headers, task = await joined(http)
    raw = get_codec("raw")
    reply = await http.post(
        f"/api/v1/rounds/{task['round_id']}/updates",
        content=raw.encode(tiny_model(1.0)),
        headers={**headers, "Content-Type": raw.media_type},
        params={"model_version": 0, "num_examples": 10, "train_accuracy": 0.5},
    )
    assert reply.status_code == 201, reply.text


async def test_openapi_documents_every_route(api: tuple[httpx.AsyncClient, Federation]) -> None:
    http, _ = api
    spec = (await http.get("/openapi.json")).json()
    operations = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert {
        ("POST", "/api/v1/clients"),
        ("GET", "/api/v1/clients/{client_id}/task"),
        ("GET", "/api/v1/clients/{client_id}/task-with-model"),
        ("GET", "/api/v1/models/{version}"),
        ("POST", "/api/v1/rounds/{round_id}/updates"),
        ("POST", "/api/v1/clients/{client_id}/heartbeat"),
        ("DELETE", "/api/v1/clients/{client_id}"),
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/status/watch"),
        ("POST", "/api/v1/run/pause"),
        ("POST", "/api/v1/run/resume"),
        ("POST", "/api/v1/run/stop"),
        ("PATCH", "/api/v1/run/config"),
        ("POST", "/api/v1/clients/{client_id}/kick"),
    } <= operations
    upload = spec["paths"]["/api/v1/rounds/{round_id}/updates"]["post"]["requestBody"]
    assert set(upload["content"]) == {c.media_type for c in CODECS.values()}
    assert (await http.get("/docs")).status_code == 200


async def test_a_task_comes_with_its_model_as_the_models_route_sends_it(
    api: tuple[httpx.AsyncClient, Federation],
) -> None:
    """The task in its header, the model as the body with the model route's headers; the
    same bytes /models/{version} sends for the same codec."""
    http, _ = api
    ack = (await http.post("/api/v1/clients", json={"name": "w", "codec": "raw"})).json()
    headers = {"Authorization": f"Bearer {ack['token']}", "X-Fedgate-Client-Id": ack["client_id"]}
    path = f"/api/v1/clients/{ack['client_id']}/task-with-model"
    reply = await http.get(path, headers=headers, params={"wait_s": 5, "codec": "bf16-zstd"})
    assert reply.status_code == 200, reply.text
    task = TaskJson.model_validate_json(reply.headers[TASK_HEADER])
    assert task.kind == "train" and task.model_version == 0
    fetched = await http.get("/api/v1/models/0", headers=headers, params={"codec": "bf16-zstd"})
    assert reply.content == fetched.content
    same = ("content-type", "x-fedgate-codec", "x-fedgate-model-version", "x-fedgate-model-ref")
    for name in same:
        assert reply.headers[name] == fetched.headers[name], name


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"codec": "gzip"}, 415, "unknown_codec"),
        ({"have": "x" * 65}, 400, "bad_request"),
        ({"wait_s": 31}, 400, "bad_request"),
        ({"wait_s": -1}, 400, "bad_request"),
    ],
)
async def test_a_task_with_model_request_past_the_limits_is_refused_before_a_task(
    api: tuple[httpx.AsyncClient, Federation], params: dict[str, Any], status: int, code: str
) -> None:
    http, federation = api
    ack = (await http.post("/api/v1/clients", json={"name": "w", "codec": "raw"})).json()
    headers = {"Authorization": f"Bearer {ack['token']}"}
    path = f"/api/v1/clients/{ack['client_id']}/task-with-model"
    reply = await http.get(path, headers=headers, params=params)
    assert (reply.status_code, reply.json()["code"]) == (status, code)
    assert federation.clients.get(ack["client_id"]).state.value == "joined"  # no task taken
    forged = await http.get(path, headers={"Authorization": "Bearer forged"})
    assert (forged.status_code, forged.json()["code"]) == (401, "unauthorized")


async def test_a_large_model_goes_down_in_slices_byte_for_byte(
    api: tuple[httpx.AsyncClient, Federation],
) -> None:
    """A model over `BODY_SLICE_BYTES` is streamed in slices with its Content-Length (not
    chunked): the body is the cached payload exactly, by either route."""
    http, federation = api
    federation.models.publish({"w": torch.randn(3, BODY_SLICE_BYTES // 4 + 1)})
    headers, _ = await joined(http)
    payload = (await federation.models.encoded(1, "raw")).payload
    assert len(payload) > 3 * BODY_SLICE_BYTES
    async with http.stream("GET", "/api/v1/models/1", headers=headers) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-length"] == str(len(payload))
        assert "transfer-encoding" not in reply.headers
        body = b"".join([piece async for piece in reply.aiter_raw()])
    assert body == payload


async def test_an_upload_in_odd_pieces_of_its_declared_size_is_read_whole(
    api: tuple[httpx.AsyncClient, Federation],
) -> None:
    http, _ = api
    headers, task = await joined(http)
    body = get_codec("raw").encode(tiny_model(1.0))

    async def odd_pieces() -> AsyncIterator[bytes]:
        start = 0
        for size in [1, 0, 7, 4097, 3, len(body)]:
            yield body[start : start + size]
            start += size

    reply = await http.post(
        f"/api/v1/rounds/{task['round_id']}/updates",
        content=odd_pieces(),
        headers={
            **headers,
            "Content-Type": get_codec("raw").media_type,
            "Content-Length": str(len(body)),
        },
        params={"model_version": 0, "num_examples": 10},
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["accepted"] == 1
