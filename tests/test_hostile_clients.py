"""Hostile clients against a real `fedgate serve` process, over both transports.

A client with a valid enrolment key joins and is selected for round 1; then it (and
key-less strangers) send what an attacker would: pickles, decompression bombs with and
without a declared size, shapes no int64 holds, tensors of 2**29 elements in a valid
container, oversized, endless and forged uploads, absurd weights, ten-million-element JSON,
sybil joins. Each must get its documented status while the server's peak RSS grows by at
most max(64 MB, 4 x the model) (read from /proc), the global model stays as it was and the
run goes on: at the end an honest update from the same client is published bit for bit.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

from fedgate.codecs import CODECS, TensorDict, get_codec
from fedgate.run.launch import ServerProcess, start_server
from fedgate.transport.servers import SERVER_ADAPTERS
from tests.hostile_payloads import attacks, json_of_numel
from tests.hostile_wire import (
    GrpcWire,
    GrpcWorkWire,
    Header,
    Outcome,
    RestWire,
    reset_peak_rss,
    server_rss,
)

# a raw wire per way in to a server transport: a new one must be attacked here too
WIRES: dict[str, tuple[str, Callable[[str], RestWire | GrpcWire]]] = {
    RestWire.name: ("rest", RestWire),
    GrpcWire.name: ("grpc", GrpcWire),
    GrpcWorkWire.name: ("grpc", GrpcWorkWire),  # uploads on the Work call
}
KEY_LIMIT = 1000  # the largest num_examples the key grants
CLIENT_EXAMPLES = 500
IDLE_S = 1.0  # the server's upload idle timeout here (20 s by default)
SERVE_ARGS = [
    "--min-clients", "1", "--rounds", "1000", "--deadline", "3600",
    "--heartbeat-interval", "30", "--heartbeat-timeout", "3600",
    "--upload-idle-timeout", str(IDLE_S),
]  # fmt: skip

Wire = RestWire | GrpcWire


@dataclass
class Arena:
    server: ServerProcess
    wire: Wire
    key: str
    client_id: str
    token: str
    round_id: str
    model: TensorDict
    marker: Path

    @property
    def rss_budget(self) -> int:
        model_bytes = sum(t.numel() * t.element_size() for t in self.model.values())
        return max(64 << 20, 4 * model_bytes)

    def header(self, codec: str = "raw", num_examples: int = CLIENT_EXAMPLES) -> Header:
        return Header(self.round_id, 0, num_examples, codec)

    def measured(self, attack: Callable[[], Outcome]) -> tuple[Outcome, int]:
        """The attack's outcome, and how far it pushed the server's peak RSS up."""
        pid = self.server.process.pid
        reset_peak_rss(pid)
        before, _ = server_rss(pid)
        outcome = attack()
        _, peak = server_rss(pid)
        return outcome, peak - before

    def status(self) -> dict[str, object]:
        return self.server.status()

    def assert_unharmed(self) -> None:
        """Round 1 still open on version 0, our client still in it, nothing ran."""
        status = self.status()
        assert status["model_version"] == 0
        assert status["round"] == 1 and status["state"] == "running"
        assert status["history"] == []
        listed: list[dict[str, object]] = status["clients"]  # type: ignore[assignment]
        clients = {c["client_id"]: c for c in listed}
        assert clients[self.client_id]["state"] == "training"
        assert not self.marker.exists(), "a pickle in an update ran code on the server"
        assert self.server.process.poll() is None


def create_key(server: ServerProcess) -> str:
    response = httpx.post(
        f"{server.http_url}/api/v1/keys",
        json={"name": "hostile-test", "max_clients": 4, "max_num_examples": KEY_LIMIT},
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    response.raise_for_status()
    secret: str = response.json()["secret"]
    return secret


def test_every_server_transport_is_attacked() -> None:
    assert {transport for transport, _ in WIRES.values()} == set(SERVER_ADAPTERS)


@pytest.fixture(scope="module", params=sorted(WIRES))
def arena(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Arena]:
    workdir = tmp_path_factory.mktemp(f"hostile-{request.param}")
    server = start_server(SERVE_ARGS, workdir)
    transport, kind = WIRES[request.param]
    wire: Wire = kind(server.address(transport))
    try:
        key = create_key(server)
        joined = wire.join("hostile", "raw", CLIENT_EXAMPLES, key)
        assert joined.ok, joined
        client_id, token = _session(joined)
        task = wire.next_task(client_id, token)
        round_id = _round_id(task)
        model = get_codec("raw").decode(wire.fetch(client_id, token, 0, "raw"))
        yield Arena(server, wire, key, client_id, token, round_id, model, workdir / "pwned")
    finally:
        wire.close()
        server.stop()


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_hostile_payloads_are_refused_cheaply_and_harm_nothing(arena: Arena, codec: str) -> None:
    for name, (payload, allowed) in attacks(codec, arena.model, arena.marker).items():
        outcome, growth = arena.measured(
            functools.partial(
                arena.wire.submit, arena.client_id, arena.token, arena.header(codec), payload
            )
        )
        assert outcome.code in allowed, (name, outcome)
        assert outcome.documented(), (name, outcome)
        assert growth <= arena.rss_budget, (name, growth)
    arena.assert_unharmed()


def test_ten_million_element_json_is_refused_by_size(arena: Arena) -> None:
    payload = json_of_numel(10**7)
    outcome, growth = arena.measured(
        lambda: arena.wire.submit(arena.client_id, arena.token, arena.header("json"), payload)
    )
    assert outcome.code == "payload_too_large" and outcome.documented(), outcome
    assert growth <= arena.rss_budget
    arena.assert_unharmed()


def test_an_oversized_upload_is_refused_before_its_body(arena: Arena) -> None:
    if isinstance(arena.wire, RestWire):
        outcome, seconds = arena.wire.submit_head_only(
            arena.client_id, arena.token, arena.header(), 1 << 30
        )
        assert seconds < 5
        assert outcome.status == "413" and outcome.code == "payload_too_large", outcome
    else:
        outcome, sent = arena.wire.submit_stream(
            arena.client_id, arena.token, arena.header(), _endless(), total_size=1 << 30
        )
        assert outcome.code == "payload_too_large" and outcome.documented(), outcome
        assert sent < 16 << 20
    arena.assert_unharmed()


def test_an_endless_upload_is_cut_off_at_its_limit(arena: Arena) -> None:
    honest = len(get_codec("raw").encode(arena.model))
    sent = 0

    def upload() -> Outcome:
        nonlocal sent
        outcome, sent = _endless_upload(arena, honest)
        return outcome

    outcome, growth = arena.measured(upload)
    assert growth <= arena.rss_budget, growth
    assert outcome.code == "payload_too_large" and outcome.documented(), outcome
    assert sent < 64 << 20, f"the server read {sent} bytes of an endless upload"
    arena.assert_unharmed()


def test_a_forged_token_is_refused_before_the_body(arena: Arena) -> None:
    forged = "x" * len(arena.token)
    if isinstance(arena.wire, RestWire):
        outcome, seconds = arena.wire.submit_head_only(
            arena.client_id, forged, arena.header(), 100 << 20
        )
        assert seconds < 5
    else:
        outcome, sent = arena.wire.submit_stream(
            arena.client_id, forged, arena.header(), _endless(), total_size=100 << 20
        )
        assert sent < 16 << 20
    assert outcome.code == "unauthorized" and outcome.documented(), outcome
    arena.assert_unharmed()


def test_a_stalled_upload_is_refused_after_the_idle_timeout(arena: Arena) -> None:
    started = time.monotonic()
    if isinstance(arena.wire, RestWire):
        outcome, _ = arena.wire.submit_head_only(arena.client_id, arena.token, arena.header(), 1000)
    else:
        outcome, _ = arena.wire.submit_stream(
            arena.client_id, arena.token, arena.header(), _stalled(), total_size=1000
        )
    took = time.monotonic() - started
    assert outcome.code in {"bad_request", "invalid_update"} and outcome.documented(), outcome
    assert "too slow" in str(outcome.body)
    assert IDLE_S <= took < IDLE_S + 5
    arena.assert_unharmed()


@pytest.mark.parametrize("num_examples", [-5, 0, KEY_LIMIT + 1, 2**31 + 1, 10**18, 2**63 - 1])
def test_weights_outside_the_keys_limit_are_refused(arena: Arena, num_examples: int) -> None:
    payload = get_codec("raw").encode(arena.model)
    outcome = arena.wire.submit(
        arena.client_id, arena.token, arena.header(num_examples=num_examples), payload
    )
    assert outcome.code in {"invalid_update", "bad_request"} and outcome.documented(), outcome
    arena.assert_unharmed()


def test_num_examples_beyond_any_integer_type_over_rest(arena: Arena) -> None:
    if not isinstance(arena.wire, RestWire):
        pytest.skip("protobuf cannot even carry 10**400: the gRPC client refuses to send it")
    payload = get_codec("raw").encode(arena.model)
    outcome = arena.wire.submit(
        arena.client_id, arena.token, arena.header(num_examples=10**400), payload
    )
    assert outcome.status == "400" and outcome.code == "bad_request", outcome
    arena.assert_unharmed()


def test_sybil_joins_without_a_valid_key_are_refused(arena: Arena) -> None:
    before = len(arena.status()["clients"])  # type: ignore[arg-type]
    for index in range(60):
        key = None if index % 2 else f"fgk_forged_{index}"
        outcome = arena.wire.join(f"sybil-{index}", "raw", 10, key)
        assert outcome.code in {"unauthorized", "rate_limited"}, outcome
        assert outcome.documented(), outcome
    assert len(arena.status()["clients"]) == before  # type: ignore[arg-type]
    arena.assert_unharmed()


def test_the_run_goes_on_and_publishes_only_the_honest_update(arena: Arena) -> None:
    honest = {name: t + 1 if t.is_floating_point() else t for name, t in arena.model.items()}
    outcome = arena.wire.submit(
        arena.client_id, arena.token, arena.header(), get_codec("raw").encode(honest)
    )
    assert outcome.ok, outcome
    deadline = time.monotonic() + 30
    while arena.status()["model_version"] != 1:
        assert time.monotonic() < deadline, "round 1 did not complete"
        time.sleep(0.05)
    published = get_codec("raw").decode(arena.wire.fetch(arena.client_id, arena.token, 1, "raw"))
    assert published.keys() == honest.keys()
    for name, tensor in honest.items():
        assert torch.equal(published[name], tensor), name


def _endless(part: int = 1 << 20, limit: int = 256 << 20) -> Iterator[bytes]:
    """Junk in 1 MB pieces, up to ``limit`` (the test's own bound, far past any server's)."""
    block = b"\x00" * part
    for _ in range(limit // part):
        yield block


def _stalled() -> Iterator[bytes]:
    """Ten bytes, then silence far past the server's idle timeout."""
    yield b"\0" * 10
    time.sleep(IDLE_S + 3)
    yield b"\0" * 10


def _endless_upload(arena: Arena, honest: int) -> tuple[Outcome, int]:
    if isinstance(arena.wire, RestWire):
        return arena.wire.submit_stream(arena.client_id, arena.token, arena.header(), _endless())
    return arena.wire.submit_stream(
        arena.client_id, arena.token, arena.header(), _endless(), total_size=honest
    )


def _session(joined: Outcome) -> tuple[str, str]:
    body = joined.body
    if isinstance(body, dict):
        return str(body["client_id"]), str(body["token"])
    return str(body.client_id), str(body.token)


def _round_id(task: Outcome) -> str:
    assert task.ok, task
    body = task.body
    kind = body["kind"] if isinstance(body, dict) else body.kind
    assert kind in ("train", 1), f"the hostile client was not selected: {body}"
    return str(body["round_id"] if isinstance(body, dict) else body.round_id)
