"""The REST `ServerAdapter`: the FastAPI app on an embedded uvicorn, in the caller's loop.

uvicorn runs as a task of the running event loop, next to the gRPC server and the
federation, without its own signal handling: whoever started the adapter stops it. The
app comes from an app factory (default: `create_app`, the REST API), so a process that
wants more routes on the same port (a dashboard, inference) passes its own factory.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from fedgate.core.service import FederationService
from fedgate.transport.connection_limits import ConnectionLimits
from fedgate.transport.rest.app import create_app
from fedgate.transport.rest.http_protocol import protocol_with_head_limits
from fedgate.transport.rest.router import TRANSPORT
from fedgate.transport.servers import ServerSettings, host_port
from fedgate.transport.tls import ServerTls

STARTUP_POLL_S = 0.01

AppFactory = Callable[[FederationService, ServerSettings], ASGIApp]


def rest_api(service: FederationService, settings: ServerSettings) -> ASGIApp:
    """The REST API app over ``service`` with the settings' token and limits, and the
    extensions the gateway adds (dashboard, inference, metrics)."""
    app = create_app(
        service,
        admin_token=settings.admin_token,
        max_update_bytes=settings.max_update_bytes,
        upload_timeouts=settings.upload_timeouts,
    )
    for extend in settings.extensions.rest:
        extend(app)
    return app


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the adapter's owner stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RestServerAdapter:
    """Serves the app on ``settings.host``:``settings.port``; the address is its base URL
    (``http://host:port``, ``https://`` with TLS)."""

    name = TRANSPORT

    def __init__(self, app_factory: AppFactory = rest_api) -> None:
        self.app_factory = app_factory
        self._server: _EmbeddedUvicorn | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, service: FederationService, settings: ServerSettings) -> str:
        app = self.app_factory(service, settings)
        sock = listening_socket(settings.host, settings.port)
        port: int = sock.getsockname()[1]
        server = _EmbeddedUvicorn(uvicorn_config(app, settings.limits, settings.tls))
        self._server = server
        self._task = task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    await task  # surfaces the startup error
                    raise OSError(f"HTTP server on {settings.host}:{port} did not start")
                await asyncio.sleep(STARTUP_POLL_S)
        except BaseException:
            self._server = self._task = None
            server.should_exit = True
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            sock.close()
            raise
        scheme = "https" if settings.tls is not None else "http"
        return f"{scheme}://{host_port(settings.host, port)}"

    async def stop(self, grace_s: float) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        # uvicorn reads it when it shuts down: open requests get this long, then are cancelled
        server.config.timeout_graceful_shutdown = math.ceil(max(0.0, grace_s))
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (0: any free port), for uvicorn to listen on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted sockets inherit it: without, small responses wait ~40 ms on delayed ACKs
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def uvicorn_config(app: Any, limits: ConnectionLimits, tls: ServerTls | None) -> uvicorn.Config:
    """uvicorn on httptools with the connection limits (and TLS) applied."""
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
        http=protocol_with_head_limits(limits.http_head_timeout_s, limits.http_max_head_bytes),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=limits.http_keep_alive_s,
        limit_concurrency=limits.http_max_concurrency,
        **tls_options,
    )
