"""A REST client that disconnects mid-upload, against a real server on loopback.

Clients are killed, and networks cut, in the middle of uploads every day: the server
abandons the upload (the client may send a good one later) and says so in one log line,
without a traceback, on its own loggers or uvicorn's.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
from collections.abc import Iterator

import httpx
import pytest

from fedgate.codecs import get_codec
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import ClientState
from fedgate.gateway.server import Gateway, GatewaySettings
from tests.conftest import tiny_model, until
from tests.transport.conftest import ADMIN_TOKEN
from tests.transport.rest.test_wire import joined, post_update

RAW = get_codec("raw")


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at INFO. uvicorn's loggers do not reach it (uvicorn configures them, with
    their own handler on stderr, each time a server starts): tests read stderr for those."""
    with caplog.at_level(logging.INFO):
        yield caplog


def state(federation: Federation) -> ClientState:
    return federation.status().clients[0].state


@pytest.mark.parametrize("cut", ["close", "reset"])
async def test_a_client_gone_mid_upload_is_one_log_line_and_its_upload_abandoned(
    cut: str, every_log: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    federation = Federation(tiny_model(), RunConfig(rounds=1, min_clients=1))
    settings = GatewaySettings(grpc_port=0, http_port=0, admin_token=ADMIN_TOKEN)
    payload = RAW.encode(tiny_model(1.0))
    async with Gateway(federation, settings) as gateway:
        federation.start()
        async with httpx.AsyncClient(base_url=gateway.http_url, timeout=30) as http:
            headers, task = await joined(http)
            _, writer = await asyncio.open_connection("127.0.0.1", gateway.http_port)
            head = (
                f"POST /api/v1/rounds/{task['round_id']}/updates?model_version="
                f"{task['model_version']}&num_examples=10 HTTP/1.1\r\nHost: fedgate\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                + f"Content-Type: {RAW.media_type}\r\nContent-Length: {len(payload)}\r\n\r\n"
            )
            writer.write(head.encode() + payload[: len(payload) // 2])
            await writer.drain()
            await until(lambda: state(federation) is ClientState.UPLOADING)
            if cut == "reset":  # as a killed process's kernel may: RST, not FIN
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
            await until(lambda: state(federation) is ClientState.TRAINING)
            # abandoned, not held against the client: its whole update is taken after
            reply = await post_update(http, headers, task, payload, RAW.media_type)
            assert reply.status_code == 201, reply.text
    said = [r for r in every_log.records if "disconnected" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    # after a reset, bytes still unread by the server may be lost with the connection
    assert re.fullmatch(
        f"POST /api/v1/rounds/{task['round_id']}/updates from 127.0.0.1: the client "
        f"disconnected after \\d+ of {len(payload)} body bytes; abandoned",
        said[0].getMessage(),
    )
    assert [r for r in every_log.records if r.exc_info] == []
    assert "Traceback" not in capfd.readouterr().err
