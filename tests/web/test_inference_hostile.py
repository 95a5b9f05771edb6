"""Hostile inference inputs against a real `fedgate serve`, over REST and gRPC: a
decompression-bomb PNG, a truncated JPEG, a 100 MB body, arrays of the wrong shape, NaN,
pickles in NPY files, unknown media types, a server with no model deployed. Each gets its
documented 4xx (gRPC: its status) within a second, never a 5xx, while the server's peak
RSS (read from /proc, as tests/test_hostile_clients.py does) grows by at most the largest
body the route reads (20 MB for an image) plus allocator slack; and it goes on answering."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedgate.core.data import load_dataset
from fedgate.run.launch import ServerProcess
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from tests.hostile_wire import Outcome, reset_peak_rss, server_rss
from tests.web.images import bomb_png, digit_png, pickled_npy, truncated_jpeg
from tests.web.inference_wire import Wires, predictions, send_until_answered, serving

DIGITS = load_dataset("digits")
SERVE_ARGS = ["--min-clients", "1", "--rounds", "1", "--deadline", "3600"]
RSS_BUDGET = 32 << 20
ANSWER_S = 1.0
HUNDRED_MB = 100 << 20


@dataclass
class Target:
    server: ServerProcess
    wires: Wires
    marker: Path
    no_model: dict[str, Outcome]

    def measured(self, attack: Callable[[], Outcome]) -> tuple[Outcome, float, int]:
        """The attack's outcome, how long it took, and how far the server's peak RSS rose."""
        pid = self.server.process.pid
        reset_peak_rss(pid)
        before, _ = server_rss(pid)
        started = time.monotonic()
        outcome = attack()
        elapsed = time.monotonic() - started
        _, peak = server_rss(pid)
        return outcome, elapsed, peak - before


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    workdir = tmp_path_factory.mktemp("inference-hostile")
    with serving(SERVE_ARGS, workdir) as server:
        wires = Wires(server, server.admin_token)
        try:
            one = json.dumps(DIGITS.x_test[0].tolist()).encode()
            no_model = {
                "rest": wires.predict(one, "application/json"),
                "grpc": wires.grpc_tensor(DIGITS.x_test[0]),
            }
            assert wires.post("/api/v1/models/0/deploy").ok  # the initial model, by hand
            yield Target(server, wires, workdir / "pwned", no_model)
        finally:
            wires.close()


def raw_post(target: Target, media_type: str, head_only: bool) -> Outcome:
    """A 100 MB body: announced and never sent, or sent chunked until the server answers."""
    host = target.server.http_url.split("//")[1]
    length = f"Content-Length: {HUNDRED_MB}" if head_only else "Transfer-Encoding: chunked"
    head = (
        f"POST /api/v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: {media_type}\r\n"
        f"Authorization: Bearer {target.server.admin_token}\r\n{length}\r\n\r\n"
    )
    return send_until_answered(target.server.http_url, head, 0 if head_only else HUNDRED_MB)


def rest_attacks(target: Target) -> dict[str, tuple[Callable[[], Outcome], str, str]]:
    wires, shape_8x8 = target.wires, json.dumps(DIGITS.x_test[0][0].tolist()).encode()
    nan = json.dumps(DIGITS.x_test[0].tolist()).replace("0.0", "NaN", 1).encode()
    return {
        "50,000 x 50,000 PNG": (
            lambda: wires.predict(bomb_png(), "image/png"),
            "413",
            "payload_too_large",
        ),
        "bomb PNG in a form": (
            lambda: wires.predict_file(bomb_png(), "image/png", "bomb.png"),
            "413",
            "payload_too_large",
        ),
        "truncated JPEG": (
            lambda: wires.predict(truncated_jpeg(), "image/jpeg"),
            "400",
            "invalid_input",
        ),
        "100 MB announced": (
            lambda: raw_post(target, "image/png", True),
            "413",
            "payload_too_large",
        ),
        "100 MB sent": (lambda: raw_post(target, "image/png", False), "413", "payload_too_large"),
        "100 MB of JSON sent": (
            lambda: raw_post(target, "application/json", False),
            "413",
            "payload_too_large",
        ),
        "JSON of the wrong shape": (
            lambda: wires.predict(shape_8x8, "application/json"),
            "400",
            "invalid_input",
        ),
        "NaN in JSON": (lambda: wires.predict(nan, "application/json"), "400", "invalid_input"),
        "JSON nested 100,000 deep": (
            lambda: wires.predict(b"[" * 100_000 + b"]" * 100_000, "application/json"),
            "400",
            "invalid_input",
        ),
        "pickle in an NPY file": (
            lambda: wires.predict(pickled_npy(target.marker), "application/x-npy"),
            "400",
            "invalid_input",
        ),
        "unknown media type": (
            lambda: wires.predict(b"hello", "text/plain"),
            "415",
            "unsupported_media_type",
        ),
        "a form without a file": (
            lambda: wires.predict(b"--x\r\n\r\n--x--\r\n", "multipart/form-data; boundary=x"),
            "400",
            "invalid_input",
        ),
    }


def grpc_attacks(target: Target) -> dict[str, tuple[Callable[[], Outcome], str, str]]:
    wires = target.wires
    lying = pb.InputTensor(shape=[1, 1, 8, 8], values=[0.0] * 10)
    huge = pb.PredictRequest(image=bytes(HUNDRED_MB)).SerializeToString()
    return {
        "50,000 x 50,000 PNG": (
            lambda: wires.grpc_image(bomb_png()),
            "RESOURCE_EXHAUSTED",
            "payload_too_large",
        ),
        "truncated JPEG": (
            lambda: wires.grpc_image(truncated_jpeg()),
            "INVALID_ARGUMENT",
            "invalid_input",
        ),
        "100 MB image": (  # built before the clock starts: the client's work, not the server's
            functools.partial(wires.grpc_serialized, huge),
            "RESOURCE_EXHAUSTED",
            "",
        ),
        "tensor of the wrong shape": (
            lambda: wires.grpc_tensor(DIGITS.x_test[0][0]),
            "INVALID_ARGUMENT",
            "invalid_input",
        ),
        "NaN in a tensor": (
            lambda: wires.grpc_tensor(DIGITS.x_test[0] * float("nan")),
            "INVALID_ARGUMENT",
            "invalid_input",
        ),
        "a shape that lies": (
            lambda: wires.grpc_predict(pb.PredictRequest(tensor=lying)),
            "INVALID_ARGUMENT",
            "invalid_input",
        ),
        "no input": (
            lambda: wires.grpc_predict(pb.PredictRequest()),
            "INVALID_ARGUMENT",
            "invalid_input",
        ),
    }


def test_with_no_model_deployed_predictions_are_refused(target: Target) -> None:
    rest, grpc = target.no_model["rest"], target.no_model["grpc"]
    assert (rest.status, rest.code) == ("409", "no_model_deployed") and rest.documented()
    assert (grpc.status, grpc.code) == ("FAILED_PRECONDITION", "no_model_deployed")


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_hostile_inputs_are_refused_at_once_and_cost_no_memory(
    target: Target, transport: str
) -> None:
    attacks = rest_attacks(target) if transport == "rest" else grpc_attacks(target)
    for name, (attack, status, code) in attacks.items():
        outcome, elapsed, growth = target.measured(attack)
        assert (outcome.status, outcome.code) == (status, code), (name, outcome)
        assert outcome.documented() or not code, (name, outcome)
        if transport == "rest":
            assert isinstance(outcome.body, dict) and outcome.body["status"] == int(status), name
        assert elapsed < ANSWER_S, (name, elapsed)
        assert growth <= RSS_BUDGET, (name, growth >> 20)
    assert not target.marker.exists(), "a pickle in an NPY file ran code on the server"
    # and the server goes on answering
    picture = digit_png(DIGITS.x_test[0])
    assert predictions(target.wires.predict(picture, "image/png"))[0] == 0
    assert predictions(target.wires.grpc_image(picture))[0] == 0
    assert target.server.process.poll() is None


def test_predictions_are_rate_limited_per_peer(target: Target) -> None:
    """The last test here: it spends this peer's calls (30 at once, 10 a second after)."""
    outcomes = [target.wires.predict(b"x", "text/plain") for _ in range(40)]
    limited = [o for o in outcomes if o.code == "rate_limited"]
    assert limited and all(o.status == "429" for o in limited)
    assert {o.code for o in outcomes} == {"unsupported_media_type", "rate_limited"}
    grpc = target.wires.grpc_tensor(DIGITS.x_test[0])
    assert (grpc.status, grpc.code) == ("RESOURCE_EXHAUSTED", "rate_limited")
