"""Hand-written clients for hostile tests: raw HTTP (httpx and bare sockets) and raw gRPC
stubs, never fedgate's own client, so nothing on the client side cleans up what is sent.

Each call returns an `Outcome`: the wire status and the fedgate error code, whatever the
transport, so one table of expectations serves both.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx

from fedgate.codecs import get_codec
from fedgate.errors import error_from_code
from fedgate.transport.grpc import status as grpc_status
from fedgate.transport.grpc.channel import CHANNEL_OPTIONS
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.proto import fedgate_pb2_grpc as pb_grpc
from fedgate.transport.rest import problems

CHUNK = 64 * 1024


@dataclass(frozen=True)
class Outcome:
    status: str  # "201" / "OK" on success, else the HTTP status or gRPC status name
    code: str  # the fedgate error code ("" on success)
    body: Any = None

    @property
    def ok(self) -> bool:
        return self.code == "" and self.status in ("200", "201", "204", "OK")

    def documented(self) -> bool:
        """The status is the one the adapter's error table gives the code."""
        if not self.code:
            return self.ok
        error = error_from_code(self.code, "")
        if self.status.isdigit():
            return int(self.status) == problems.status_for(error)
        return self.status == grpc_status.status_for(error).name


@dataclass(frozen=True)
class Header:
    round_id: str
    model_version: int
    num_examples: int
    codec: str
    base_ref: str = ""


def server_rss(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of process ``pid`` in bytes, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def reset_peak_rss(pid: int) -> None:
    """Make the peak RSS (VmHWM) start again from the current RSS (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


class RestWire:
    name = "rest"

    def __init__(self, url: str) -> None:
        self.url = url if "://" in url else f"http://{url}"  # host:port, as clients take it too
        self.http = httpx.Client(base_url=self.url, timeout=60.0)

    def close(self) -> None:
        self.http.close()

    def join(self, name: str, codec: str, num_examples: int, key: str | None) -> Outcome:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        body = {"name": name, "codec": codec, "num_examples": num_examples}
        return _outcome(self.http.post("/api/v1/clients", json=body, headers=headers))

    def next_task(self, client_id: str, token: str) -> Outcome:
        response = self.http.get(
            f"/api/v1/clients/{client_id}/task",
            params={"wait_s": 10},
            headers={"Authorization": f"Bearer {token}"},
        )
        return _outcome(response)

    def submit(self, client_id: str, token: str, header: Header, payload: bytes) -> Outcome:
        return _outcome(
            self.http.post(
                f"/api/v1/rounds/{header.round_id}/updates",
                params=_update_params(header),
                content=payload,
                headers={**_client_headers(client_id, token, header.codec)},
            )
        )

    def submit_stream(
        self, client_id: str, token: str, header: Header, parts: Iterator[bytes]
    ) -> tuple[Outcome, int]:
        """Send a chunked body from ``parts`` over a bare socket until the server answers;
        the outcome and how many body bytes went out before it did."""
        query = "&".join(f"{k}={v}" for k, v in _update_params(header).items())
        head = [
            f"POST /api/v1/rounds/{header.round_id}/updates?{query} HTTP/1.1",
            f"Host: {self.url.split('//')[1]}",
            "Transfer-Encoding: chunked",
            *(f"{k}: {v}" for k, v in _client_headers(client_id, token, header.codec).items()),
        ]
        return raw_http(self.url, "\r\n".join(head) + "\r\n\r\n", parts)

    def submit_head_only(
        self, client_id: str, token: str, header: Header, content_length: int
    ) -> tuple[Outcome, float]:
        """Send only the request head announcing ``content_length`` body bytes; the answer
        and how long it took (a server that waits for the body never answers)."""
        query = "&".join(f"{k}={v}" for k, v in _update_params(header).items())
        head = [
            f"POST /api/v1/rounds/{header.round_id}/updates?{query} HTTP/1.1",
            f"Host: {self.url.split('//')[1]}",
            f"Content-Length: {content_length}",
            *(f"{k}: {v}" for k, v in _client_headers(client_id, token, header.codec).items()),
        ]
        started = time.monotonic()
        outcome, _ = raw_http(self.url, "\r\n".join(head) + "\r\n\r\n", iter(()))
        return outcome, time.monotonic() - started

    def fetch(self, client_id: str, token: str, version: int, codec: str) -> bytes:
        response = self.http.get(
            f"/api/v1/models/{version}",
            params={"codec": codec},
            headers={"Authorization": f"Bearer {token}", "X-Fedgate-Client-Id": client_id},
        )
        response.raise_for_status()
        return response.content


class GrpcWire:
    name = "grpc"

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.FederationStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def join(self, name: str, codec: str, num_examples: int, key: str | None) -> Outcome:
        request = pb.JoinRequest(name=name, codec=codec, num_examples=num_examples)
        meta = (("authorization", f"Bearer {key}"),) if key is not None else ()
        return _rpc(lambda: self.stub.Join(request, metadata=meta, timeout=30))

    def next_task(self, client_id: str, token: str) -> Outcome:
        meta = _metadata(client_id, token)
        return _rpc(lambda: self.stub.NextTask(pb.NextTaskRequest(wait_s=10), metadata=meta))

    def submit(self, client_id: str, token: str, header: Header, payload: bytes) -> Outcome:
        parts = (payload[i : i + CHUNK] for i in range(0, len(payload), CHUNK))
        outcome, _ = self.submit_stream(client_id, token, header, parts, len(payload))
        return outcome

    def submit_stream(
        self,
        client_id: str,
        token: str,
        header: Header,
        parts: Iterator[bytes],
        total_size: int = 0,
    ) -> tuple[Outcome, int]:
        sent = [0]

        def counted() -> Iterator[bytes]:
            for part in parts:
                sent[0] += len(part)
                yield part

        meta = _metadata(client_id, token)
        first = _proto_header(header, total_size)
        return _rpc(lambda: self._upload(first, counted(), meta)), sent[0]

    def _upload(
        self, header: pb.UpdateHeader, parts: Iterator[bytes], meta: tuple[tuple[str, str], ...]
    ) -> Any:
        """SubmitUpdate: the header, then the parts; its receipt."""
        messages = (pb.UpdateChunk(data=part) for part in parts)
        return self.stub.SubmitUpdate(
            itertools.chain([pb.UpdateChunk(header=header)], messages), metadata=meta, timeout=60
        )

    def fetch(self, client_id: str, token: str, version: int, codec: str) -> bytes:
        meta = _metadata(client_id, token)
        request = pb.FetchModelRequest(version=version, codec=codec)
        return b"".join(c.data for c in self.stub.FetchModel(request, metadata=meta))


class GrpcWorkWire(GrpcWire):
    """gRPC with uploads on a Work call (the long-lived call fedgate's client uses), the
    rest as `GrpcWire`: the update's messages, then the first answer (its receipt, or
    the error that ended the call)."""

    name = "grpc-work"

    def _upload(
        self, header: pb.UpdateHeader, parts: Iterator[bytes], meta: tuple[tuple[str, str], ...]
    ) -> Any:
        """A Work call: the update's messages, then its first answer (the receipt, or the
        error that ended the call)."""
        messages = (pb.WorkUp(update=pb.UpdateChunk(data=part)) for part in parts)
        first = pb.WorkUp(update=pb.UpdateChunk(header=header))
        replies = self.stub.Work(itertools.chain([first], messages), metadata=meta, timeout=60)
        return next(replies)


def raw_http(url: str, head: str, parts: Iterator[bytes]) -> tuple[Outcome, int]:
    """Write ``head`` then ``parts`` as chunks until the server answers or closes."""
    host, port = url.split("//")[1].split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        for part in parts:
            if _readable(sock):
                break
            try:
                sock.sendall(b"%x\r\n%b\r\n" % (len(part), part))
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
            sent += len(part)
        sock.settimeout(30)
        answer = _read_response(sock)
    return answer, sent


def _readable(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    except OSError:
        return True


def _read_response(sock: socket.socket) -> Outcome:
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    if not data:
        return Outcome("closed", "")
    head, _, rest = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode()
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    while len(rest) < length:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        rest += chunk
    try:
        body = json.loads(rest[:length]) if length else None
    except ValueError:
        body = None
    code = body.get("code", "") if isinstance(body, dict) else ""
    return Outcome(status, str(code), body)


def _outcome(response: httpx.Response) -> Outcome:
    try:
        body = response.json()
    except ValueError:
        body = None
    code = body.get("code", "") if isinstance(body, dict) and response.is_error else ""
    return Outcome(str(response.status_code), str(code), body)


def _rpc(call: Any) -> Outcome:
    try:
        reply = call()
    except grpc.RpcError as error:
        call_error: Any = error  # a grpc.Call as well: code(), details(), trailers
        trailers: Any = call_error.trailing_metadata() or ()
        codes = [value for key, value in trailers if key == grpc_status.ERROR_CODE_KEY]
        return Outcome(call_error.code().name, str(codes[0]) if codes else "", call_error.details())
    return Outcome("OK", "", reply)


def _metadata(client_id: str, token: str) -> tuple[tuple[str, str], ...]:
    return (("fedgate-client-id", client_id), ("authorization", f"Bearer {token}"))


def _client_headers(client_id: str, token: str, codec: str) -> dict[str, str]:
    media_type = get_codec(codec).media_type if _known(codec) else "application/octet-stream"
    return {
        "Authorization": f"Bearer {token}",
        "X-Fedgate-Client-Id": client_id,
        "Content-Type": media_type,
    }


def _known(codec: str) -> bool:
    try:
        get_codec(codec)
    except Exception:
        return False
    return True


def _update_params(header: Header) -> dict[str, str]:
    params = {
        "model_version": str(header.model_version),
        "num_examples": str(header.num_examples),
        "codec": header.codec,
    }
    if header.base_ref:
        params["base_ref"] = header.base_ref
    return params


def _proto_header(header: Header, total_size: int) -> pb.UpdateHeader:
    return pb.UpdateHeader(
        round_id=header.round_id,
        model_version=header.model_version,
        num_examples=header.num_examples,
        codec=header.codec,
        total_size=total_size,
        base_ref=header.base_ref,
    )
