"""One process, one event loop, one Federation: the REST app and the gRPC server together."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
import uvicorn

from fedgate.core.federation import Federation
from fedgate.gateway.app import create_app
from fedgate.gateway.http_protocol import protocol_with_head_timeout
from fedgate.transport.connection_limits import ConnectionLimits
from fedgate.transport.grpc.server import start_grpc_server
from fedgate.transport.limits import DEFAULT_UPLOAD_TIMEOUTS, UploadTimeouts
from fedgate.transport.tls import ServerTls, TlsSettings, load_server_tls

log = logging.getLogger("fedgate.gateway")


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    grpc_port: int = 50051  # 0: any free port
    http_port: int = 8000  # 0: any free port
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    max_update_bytes: int = 1 << 30
    tls: TlsSettings | None = None  # None: plain text (fine on loopback only)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    upload_timeouts: UploadTimeouts = DEFAULT_UPLOAD_TIMEOUTS

    @property
    def exposed_in_plain_text(self) -> bool:
        """Serving beyond this machine without TLS: tokens and models cross the network bare."""
        return self.tls is None and not is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway stops both servers itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Gateway:
    """Serves a Federation over gRPC and REST until `stop` (or the `async with` block ends)."""

    def __init__(self, federation: Federation, settings: GatewaySettings | None = None) -> None:
        self.federation = federation
        self.settings = settings or GatewaySettings()
        self.grpc_port = 0
        self.http_port = 0
        self._grpc: grpc.aio.Server | None = None
        self._http: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None

    @property
    def http_url(self) -> str:
        scheme = "https" if self.settings.tls else "http"
        return f"{scheme}://{self.settings.host}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.settings.host}:{self.grpc_port}"

    async def start(self) -> None:
        s = self.settings
        # certificate files are read and checked before either port binds
        tls = load_server_tls(s.tls) if s.tls is not None else None
        self._grpc, self.grpc_port = await start_grpc_server(
            self.federation,
            s.host,
            s.grpc_port,
            admin_token=s.admin_token,
            max_update_bytes=s.max_update_bytes,
            tls=tls,
            limits=s.limits,
            upload_timeouts=s.upload_timeouts,
        )
        app = create_app(
            self.federation,
            admin_token=s.admin_token,
            max_update_bytes=s.max_update_bytes,
            upload_timeouts=s.upload_timeouts,
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted sockets inherit it: without, small responses wait ~40 ms on delayed ACKs
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((s.host, s.http_port))
        self.http_port = sock.getsockname()[1]
        self._http = _EmbeddedUvicorn(uvicorn_config(app, s.limits, tls))
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]))
        while not self._http.started:
            if self._http_task.done():
                await self._http_task  # surfaces the startup error
                raise OSError(f"HTTP server on {s.host}:{s.http_port} did not start")
            await asyncio.sleep(0.01)
        log.info("gateway: gRPC %s, HTTP %s", self.grpc_target, self.http_url)

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop both servers (open calls get ``grace_s``), then the federation's tasks."""
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._http_task
        if self._grpc is not None:
            await self._grpc.stop(grace_s)
        await self.federation.close()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.stop()


def uvicorn_config(app: Any, limits: ConnectionLimits, tls: ServerTls | None) -> uvicorn.Config:
    """uvicorn on h11 with the connection limits (and TLS) applied."""
    tls_options: dict[str, Any] = {}
    if tls is not None:
        # the same files load_server_tls has just checked
        tls_options = {
            "ssl_certfile": str(tls.settings.cert),
            "ssl_keyfile": str(tls.settings.key),
        }
        if tls.settings.client_ca is not None:
            tls_options["ssl_ca_certs"] = str(tls.settings.client_ca)
            tls_options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return uvicorn.Config(
        app,
        http=protocol_with_head_timeout(limits.http_head_timeout_s),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=limits.http_keep_alive_s,
        h11_max_incomplete_event_size=limits.http_max_head_bytes,
        limit_concurrency=limits.http_max_concurrency,
        **tls_options,
    )
