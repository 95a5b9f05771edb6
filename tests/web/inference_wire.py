"""Inference calls over both transports, as any client would make them (httpx, a raw gRPC
stub), each returning a `tests.hostile_wire.Outcome` so one table of expectations serves
REST and gRPC."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import torch

from fedgate.run.launch import ServerProcess, start_server
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.proto import fedgate_pb2_grpc as pb_grpc
from tests.hostile_wire import Outcome, _outcome, _read_response, _rpc

BIG_MESSAGES = [  # a test channel that can send what the server refuses
    ("grpc.max_send_message_length", 256 << 20),
    ("grpc.max_receive_message_length", 256 << 20),
]
WAIT_S = 180.0


class Wires:
    """REST and gRPC clients for one server, with or without the admin token."""

    def __init__(self, server: ServerProcess, token: str | None) -> None:
        self.server = server
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=server.http_url, timeout=30.0, headers=self.headers)
        self.channel = grpc.insecure_channel(server.address("grpc"), options=BIG_MESSAGES)
        self.stub = pb_grpc.InferenceStub(self.channel)
        self.metadata = tuple((k.lower(), v) for k, v in self.headers.items())

    def close(self) -> None:
        self.http.close()
        self.channel.close()

    # ---- REST --------------------------------------------------------------------------

    def predict(self, content: bytes, media_type: str, **headers: str) -> Outcome:
        response = self.http.post(
            "/api/v1/predict", content=content, headers={"Content-Type": media_type, **headers}
        )
        return rest_outcome(response)

    def predict_file(self, content: bytes, media_type: str, filename: str = "input") -> Outcome:
        files = {"file": (filename, content, media_type)}
        return rest_outcome(self.http.post("/api/v1/predict", files=files))

    def get(self, path: str, **params: str) -> Outcome:
        return rest_outcome(self.http.get(path, params=params))

    def post(self, path: str) -> Outcome:
        return rest_outcome(self.http.post(path))

    # ---- gRPC --------------------------------------------------------------------------

    def grpc_predict(self, request: pb.PredictRequest) -> Outcome:
        return _rpc(lambda: self.stub.Predict(request, metadata=self.metadata, timeout=30))

    def grpc_tensor(self, values: np.ndarray | torch.Tensor) -> Outcome:
        array = np.asarray(values, dtype=np.float32)
        tensor = pb.InputTensor(shape=list(array.shape), values=array.reshape(-1).tolist())
        return self.grpc_predict(pb.PredictRequest(tensor=tensor))

    def grpc_image(self, image: bytes) -> Outcome:
        return self.grpc_predict(pb.PredictRequest(image=image))

    def grpc_serialized(self, request: bytes) -> Outcome:
        """Predict with a request serialized already (so that a huge one's serializing, the
        client's work, is not timed with the server's answer)."""
        call: grpc.UnaryUnaryMultiCallable[bytes, pb.PredictReply] = self.channel.unary_unary(
            "/fedgate.v1.Inference/Predict", response_deserializer=pb.PredictReply.FromString
        )
        return _rpc(lambda: call(request, metadata=self.metadata, timeout=30))

    def grpc_deployed(self) -> Outcome:
        request = pb.GetDeployedRequest()
        return _rpc(lambda: self.stub.GetDeployed(request, metadata=self.metadata, timeout=30))


def rest_outcome(response: httpx.Response) -> Outcome:
    outcome = _outcome(response)
    if response.headers.get("content-type", "").startswith("text/csv"):
        return Outcome(outcome.status, outcome.code, response.text)
    return outcome


def predictions(outcome: Outcome) -> tuple[int, list[int], np.ndarray]:
    """(model version, classes, probabilities) of a successful JSON or gRPC answer."""
    assert outcome.ok, outcome
    body: Any = outcome.body
    if isinstance(body, dict):
        rows = body["predictions"]
        classes = [row["class"] for row in rows]
        return body["model_version"], classes, np.array([row["probabilities"] for row in rows])
    classes = [p.label for p in body.predictions]
    probabilities = np.array([list(p.probabilities) for p in body.predictions])
    return body.model_version, classes, probabilities


def send_until_answered(url: str, head: str, size: int, chunk: int = 1 << 20) -> Outcome:
    """Write ``head`` then up to ``size`` bytes of chunked body (none: ``size`` 0), as
    fast as the server reads them, until it answers; its answer."""
    host, port = url.split("//")[1].split(":")
    piece = b"%x\r\n%b\r\n" % (chunk, b"\x00" * chunk)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        pending, sent = memoryview(b""), 0
        while size:
            readable, writable, _ = select.select([sock], [sock], [], 10.0)
            if readable or not writable:
                break
            if not pending:
                if sent >= size:
                    sock.sendall(b"0\r\n\r\n")
                    break
                pending, sent = memoryview(piece), sent + chunk
            try:
                pending = pending[sock.send(pending) :]
            except (BrokenPipeError, ConnectionResetError):
                break
        return _read_response(sock)


@contextmanager
def serving(args: list[str], workdir: Path) -> Iterator[ServerProcess]:
    server = start_server(args, workdir)
    try:
        yield server
    finally:
        server.stop()


def wait_until(check: Any, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
