"""``GET /metrics`` on a real gateway (gRPC and REST on loopback) with real clients of
both transports: what it counts equals what the run's status and results document say."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import grpc.aio
import httpx
import pytest
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client.parser import text_string_to_metric_families

from fedgate.core.client import FederatedClient
from fedgate.core.config import RunConfig
from fedgate.core.data import load_dataset
from fedgate.core.factory import build_federation
from fedgate.core.federation import Federation
from fedgate.core.messages import (
    ClientState,
    FederationStatus,
    RoundOutcome,
    RoundRecord,
    Traffic,
)
from fedgate.core.trainers import build_trainer
from fedgate.core.transport import Transport
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.run.launch import start_client, start_server, stop_process
from fedgate.run.results import results_document
from fedgate.transport.connect import connect
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.proto import fedgate_pb2_grpc as pb_grpc
from fedgate.web.app import web_extensions
from fedgate.web.context import WebContext
from fedgate.web.metrics import GatewayMetrics, exported_names, metrics_for
from tests.conftest import tiny_model

TOKEN = "metrics-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# two clients on each transport, each in its own codec
PLAN = [("grpc", "raw"), ("grpc", "bf16-zstd"), ("rest", "msgpack"), ("rest", "json")]
CONFIG = RunConfig(rounds=3, min_clients=4, local_epochs=1, round_deadline_s=60.0)
FEDERATION_RPC = "/fedgate.v1.Federation/"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(have)[label] for (n, have) in samples if n == name and label in dict(have)}


def bytes_by(samples: Samples, label: str) -> dict[str, Traffic]:
    """The byte counters summed over every label but ``label`` (transport or codec)."""
    return {
        value: Traffic(
            int(total(samples, "fedgate_bytes_total", **{label: value}, direction="up")),
            int(total(samples, "fedgate_bytes_total", **{label: value}, direction="down")),
        )
        for value in label_values(samples, "fedgate_bytes_total", label)
    }


def nonzero(table: dict[str, Traffic]) -> dict[str, Traffic]:
    return {name: t for name, t in table.items() if t.up or t.down}


@asynccontextmanager
async def metered_gateway(
    federation: Federation, public: bool = False
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    """A gateway serving ``federation`` with the metrics extension, as `fedgate serve`
    composes it (`fedgate.web.app.web_extensions`), and an HTTP client for it."""
    context = WebContext(federation, admin_token=TOKEN, public_dashboard=public)
    extensions = web_extensions(context, ("fedgate.web.metrics",))
    settings = GatewaySettings(grpc_port=0, http_port=0, admin_token=TOKEN, extensions=extensions)
    async with (
        Gateway(federation, settings) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=30.0) as http,
    ):
        yield gateway, http


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def check_between(before: FederationStatus, seen: Samples, after: FederationStatus) -> None:
    """A scrape taken between two status reads counts no fewer bytes than the first and
    no more than the second, per transport and per codec."""
    for label, low, high in (
        ("transport", before.bytes_by_transport, after.bytes_by_transport),
        ("codec", before.bytes_by_codec, after.bytes_by_codec),
    ):
        for name, counted in bytes_by(seen, label).items():
            floor, ceiling = low.get(name, Traffic()), high.get(name, Traffic())
            assert floor.up <= counted.up <= ceiling.up, (label, name)
            assert floor.down <= counted.down <= ceiling.down, (label, name)


async def wait_until_a_round_closed(federation: Federation) -> None:
    deadline = time.monotonic() + 120.0
    while not federation.history:
        assert time.monotonic() < deadline, "no round closed in time"
        await federation.wait_for_change(1.0)


async def run_clients(gateway: Gateway, federation: Federation) -> list[asyncio.Task[object]]:
    dataset = load_dataset("digits", 0)
    tasks: list[asyncio.Task[object]] = []
    for index, (transport, codec) in enumerate(PLAN):
        trainer = build_trainer(dataset, "cnn", spec="iid", index=index, of=len(PLAN), seed=0)
        wire = connect(transport, gateway.addresses[transport])
        client = FederatedClient(wire, trainer, f"{transport}-{codec}", codec, poll_s=2.0)
        tasks.append(asyncio.create_task(take_part(client, wire)))
    return tasks


async def take_part(client: FederatedClient, wire: Transport) -> object:
    """The client's run, then its transport closed (as `fedgate client` does: a gRPC
    client's Work call ends there)."""
    try:
        return await client.run()
    finally:
        await wire.close()


async def misbehave(gateway: Gateway, http: httpx.AsyncClient, junk: str) -> None:
    """Calls that fail: a gRPC operator call without a token, a gRPC method that does
    not exist, a REST path that does not exist, a scrape without a token."""
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.OperatorStub(channel).GetStatus(pb.StatusRequest())
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            made_up = channel.unary_unary(
                f"/{junk}.Service/{junk}",
                request_serializer=bytes,
                response_deserializer=bytes,
            )
            await made_up(b"")
        assert missing.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert (await http.get(f"/api/v1/{junk}/{junk}")).status_code == 404
    assert (await http.get("/metrics")).status_code == 401


async def test_metrics_count_what_the_run_reports() -> None:
    federation = build_federation(load_dataset("digits", 0), "cnn", CONFIG)
    junk = "x" + secrets.token_hex(8)  # a made-up name that must not become a label
    async with metered_gateway(federation) as (gateway, http):
        started = time.perf_counter()
        run = federation.start()
        clients = await run_clients(gateway, federation)
        await misbehave(gateway, http, junk)

        # during the run: between two reads of status
        await wait_until_a_round_closed(federation)
        before = federation.status()
        during = await scrape(http)
        check_between(before, during, federation.status())
        assert total(during, "fedgate_clients") == len(PLAN)

        await asyncio.wait_for(run, 240.0)
        await asyncio.wait_for(asyncio.gather(*clients), 60.0)
        status = federation.status()
        document = results_document(
            dataclasses.asdict(CONFIG), status, time.perf_counter() - started
        )
        text = (await http.get("/metrics", headers=AUTH)).text

    after = parse(text)
    assert junk not in text
    check_bytes(after, document, status)
    check_rounds(after, status)
    check_work(after, status)
    check_requests(after)
    check_grpc_calls(after, status)


def check_bytes(after: Samples, document: dict[str, object], status: FederationStatus) -> None:
    """Bytes by transport and by codec equal the results document's, to the byte, and
    by transport x codec equal the clients' own counts (each has one of each)."""
    for label in ("transport", "codec"):
        table = {
            name: Traffic(row["up"], row["down"])
            for name, row in document[f"bytes_by_{label}"].items()  # type: ignore[attr-defined]
        }
        assert nonzero(bytes_by(after, label)) == nonzero(table), label
    assert set(bytes_by(after, "transport")) == {"grpc", "rest"}
    per_client: Counter[tuple[str, str, str]] = Counter()
    for client in status.clients:
        per_client[client.transport, client.codec, "up"] += client.bytes_up
        per_client[client.transport, client.codec, "down"] += client.bytes_down
    for (transport, codec, direction), count in per_client.items():
        labels = {"transport": transport, "codec": codec, "direction": direction}
        assert total(after, "fedgate_bytes_total", **labels) == count, labels


def check_rounds(after: Samples, status: FederationStatus) -> None:
    history = Counter(record.outcome for record in status.history)
    assert history[RoundOutcome.COMPLETED] == CONFIG.rounds
    for outcome in RoundOutcome:
        assert total(after, "fedgate_rounds_total", outcome=outcome.value) == history[outcome]
    assert total(after, "fedgate_round_duration_seconds_count") == len(status.history)
    assert total(after, "fedgate_round_duration_seconds_sum") == pytest.approx(
        sum(record.duration_s for record in status.history)
    )
    # scraped after the run: every client gone (left at the STOP), the run finished
    assert total(after, "fedgate_clients", state=ClientState.LEFT.value) == len(PLAN)
    assert total(after, "fedgate_run_state", state="finished") == 1
    assert total(after, "fedgate_model_version") == status.model_version == CONFIG.rounds
    assert total(after, "fedgate_accuracy") == pytest.approx(status.accuracy)


def check_work(after: Samples, status: FederationStatus) -> None:
    """One decode per update taken, by codec; one aggregation and one evaluation per
    completed round."""
    codec_of = {c.client_id: c.codec for c in status.clients}
    updates = Counter(codec_of[p] for record in status.history for p in record.participants)
    for codec, count in updates.items():
        assert total(after, "fedgate_decode_seconds_count", codec=codec) == count, codec
    completed = sum(1 for r in status.history if r.outcome is RoundOutcome.COMPLETED)
    assert total(after, "fedgate_aggregation_seconds_count", strategy="fedavg") == completed
    assert total(after, "fedgate_encode_seconds_count") >= completed  # at least once a version
    # every published model evaluated; a close after a completed one waited (or not) for it
    assert total(after, "fedgate_evaluation_seconds_count") == completed
    followed = sum(1 for r in status.history[:-1] if r.outcome is RoundOutcome.COMPLETED)
    assert total(after, "fedgate_evaluation_wait_seconds_count") == followed


def check_requests(after: Samples) -> None:
    """Latency by route template (never a raw path) for the routes the REST clients and
    this test used."""
    routes = label_values(after, "fedgate_http_request_duration_seconds_count", "route")
    used = {
        "/api/v1/clients",
        "/api/v1/clients/{client_id}/task-with-model",  # the model comes with the task
        "/api/v1/rounds/{round_id}/updates",
        "/metrics",
        "unmatched",
    }
    assert used <= routes, routes
    assert all(r.startswith("/") or r == "unmatched" for r in routes)
    name = "fedgate_http_request_duration_seconds_count"
    assert total(after, name, route="unmatched", method="GET", status="404") == 1
    assert total(after, name, route="/metrics", status="401") == 1
    assert total(after, name, route="/metrics", status="200") >= 1
    assert total(after, name, route="/api/v1/clients", method="POST", status="201") == 2


def check_grpc_calls(after: Samples, status: FederationStatus) -> None:
    """Calls by method and code: the gRPC clients' tasks and uploads on one Work call
    each (ended by the client as it leaves), no single calls for them; the refused and
    the unknown calls under their codes."""
    calls = "fedgate_grpc_calls_total"
    grpc_clients = sum(1 for c in status.clients if c.transport == "grpc")
    assert grpc_clients >= 1
    for method in ("Join", "Leave"):
        assert total(after, calls, method=FEDERATION_RPC + method, code="OK") == 2, method
    assert total(after, calls, method=FEDERATION_RPC + "Work", code="OK") == grpc_clients
    for method in ("NextTaskWithModel", "SubmitUpdate"):
        assert total(after, calls, method=FEDERATION_RPC + method) == 0, method
    status_rpc = "/fedgate.v1.Operator/GetStatus"
    assert total(after, calls, method=status_rpc, code="UNAUTHENTICATED") == 1
    assert total(after, calls, method="unknown", code="UNIMPLEMENTED") == 1
    assert total(after, "fedgate_grpc_call_duration_seconds_count") >= total(
        after, calls, code="OK"
    )


async def test_public_dashboard_opens_metrics_and_gateways_keep_apart() -> None:
    """With --public-dashboard a scrape needs no token (a wrong one is still refused);
    two gateways in one process count into registries of their own."""
    first, second = Federation(tiny_model()), Federation(tiny_model())
    async with (
        metered_gateway(first, public=True) as (_, open_http),
        metered_gateway(second) as (_, closed_http),
    ):
        assert (await open_http.get("/metrics")).status_code == 200
        wrong = {"Authorization": "Bearer not-the-token"}
        assert (await open_http.get("/metrics", headers=wrong)).status_code == 401
        assert (await closed_http.get("/metrics")).status_code == 401
        seen = parse((await open_http.get("/metrics")).text)
        # the first gateway's scrapes are not the second's
        name = "fedgate_http_request_duration_seconds_count"
        assert total(seen, name, route="/metrics", status="401") == 1
        closed = await scrape(closed_http)
        assert total(closed, name, route="/metrics", status="401") == 1
        assert metrics_for(WebContext(first)) is not metrics_for(WebContext(second))


async def test_every_exported_name_is_declared() -> None:
    """`exported_names` (what the Grafana board may query) is exactly what a registry
    with every series present shows."""
    federation = Federation(tiny_model())
    metrics = GatewayMetrics(federation.status)
    metrics.round_closed(RoundRecord(1, 1, RoundOutcome.COMPLETED, (), (), 0, 1, 0.5, 0.5, 0, 0, 1))
    metrics.traffic("grpc", "raw", 1, 1)
    for observe in (metrics.decoded, metrics.encoded, metrics.aggregated):
        observe("raw", 0.1)
    metrics.evaluated(0.1)
    metrics.evaluation_waited(0.0)
    metrics.request("/metrics", "GET", 200, 0.1)
    metrics.grpc_call("/fedgate.v1.Federation/Join", "OK", 0.1)
    shown = {name for name, _ in parse(metrics.exposition().decode())}
    assert {n for n in shown if not n.endswith("_created")} == exported_names()
    await federation.close()


async def test_route_labels_are_templates(tmp_path: Path) -> None:
    """Static mounts, mounted apps, path parameters and invented methods all label as
    their templates: nothing a caller puts in a request line becomes a label."""
    (tmp_path / "page.html").write_text("<p>hi</p>")
    app, sub = FastAPI(), FastAPI()

    @sub.get("/items/{item}")
    async def item(item: str) -> dict[str, str]:
        return {"item": item}

    app.mount("/static", StaticFiles(directory=tmp_path))
    app.mount("/sub", sub)
    federation = Federation(tiny_model())
    context = WebContext(federation, admin_token=TOKEN)
    for extend in web_extensions(context, ("fedgate.web.metrics",)).rest:
        extend(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/static/page.html")).status_code == 200
        assert (await http.get("/sub/items/abc123")).status_code == 200
        assert (await http.request("BREW", "/sub/items/abc123")).status_code == 405
        assert (await http.get("/static/nothing-here")).status_code == 404
        text = (await http.get("/metrics", headers=AUTH)).text
    await federation.close()
    assert "abc123" not in text and "nothing-here" not in text
    seen = parse(text)
    name = "fedgate_http_request_duration_seconds_count"
    assert total(seen, name, route="/static/{path}", status="200") == 1
    assert total(seen, name, route="/static/{path}", status="404") == 1
    assert total(seen, name, route="/sub/items/{item}", method="GET") == 1
    assert total(seen, name, route="/sub/items/{item}", method="OTHER", status="405") == 1


def traffic_of(table: dict[str, dict[str, int]]) -> dict[str, Traffic]:
    return {name: Traffic(row["up"], row["down"]) for name, row in table.items()}


def test_fedgate_serve_exports_what_its_results_document_says(tmp_path: Path) -> None:
    """A real `fedgate serve` with a gRPC and a REST client process: scraped during the
    run within the status read around it, and after it equal to its results document."""
    results = tmp_path / "results.json"
    options = ["--rounds", "2", "--min-clients", "2", "--exit-when-done", "--keep-serving", "60"]
    server = start_server([*options, "--results", str(results)], tmp_path)
    clients = []
    try:
        for index, (transport, codec) in enumerate([("grpc", "raw"), ("rest", "msgpack")]):
            args = ["--codec", codec, "--index", str(index), "--of", "2", "--threads", "1"]
            log = tmp_path / f"client-{index}.log"
            clients.append(start_client(server, transport, args, log))
        url, headers = (
            f"{server.http_url}/metrics",
            {"Authorization": f"Bearer {server.admin_token}"},
        )
        deadline = time.monotonic() + 120.0
        while server.status()["rounds_completed"] < 1:
            assert time.monotonic() < deadline, "no round completed"
            time.sleep(0.05)
        before = server.status()
        during = parse(httpx.get(url, headers=headers, timeout=10.0).text)
        after_status = server.status()
        for label in ("transport", "codec"):
            low = traffic_of(before[f"bytes_by_{label}"])
            high = traffic_of(after_status[f"bytes_by_{label}"])
            for name, counted in bytes_by(during, label).items():
                assert low.get(name, Traffic()).up <= counted.up <= high[name].up
                assert low.get(name, Traffic()).down <= counted.down <= high[name].down
        while not results.exists():
            assert time.monotonic() < deadline, "no results document"
            time.sleep(0.05)
        document = json.loads(results.read_text())
        after = parse(httpx.get(url, headers=headers, timeout=10.0).text)
    finally:
        for process in clients:
            stop_process(process)
        server.stop()
    for label in ("transport", "codec"):
        expected = nonzero(traffic_of(document[f"bytes_by_{label}"]))
        assert nonzero(bytes_by(after, label)) == expected, label
    assert set(bytes_by(after, "transport")) == {"grpc", "rest"}
    outcomes = Counter(entry["outcome"] for entry in document["rounds"] + document["attempts"])
    for outcome in RoundOutcome:
        assert total(after, "fedgate_rounds_total", outcome=outcome.value) == outcomes[outcome]
    assert outcomes[RoundOutcome.COMPLETED] == 2
    calls = "fedgate_grpc_calls_total"
    assert total(after, calls, method=FEDERATION_RPC + "Work", code="OK") == 1  # gRPC's client
    name = "fedgate_http_request_duration_seconds_count"
    assert total(after, name, route="/api/v1/rounds/{round_id}/updates", status="201") == 2
