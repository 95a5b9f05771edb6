"""One process, one event loop, one Federation: the REST app and the gRPC server together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType

import grpc
import uvicorn

from fedgate.core.federation import Federation
from fedgate.gateway.app import create_app
from fedgate.transport.grpc.server import start_grpc_server

log = logging.getLogger("fedgate.gateway")


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    grpc_port: int = 50051  # 0: any free port
    http_port: int = 8000  # 0: any free port
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    max_update_bytes: int = 1 << 30


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
        return f"http://{self.settings.host}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.settings.host}:{self.grpc_port}"

    async def start(self) -> None:
        s = self.settings
        self._grpc, self.grpc_port = await start_grpc_server(
            self.federation,
            s.host,
            s.grpc_port,
            admin_token=s.admin_token,
            max_update_bytes=s.max_update_bytes,
        )
        app = create_app(
            self.federation, admin_token=s.admin_token, max_update_bytes=s.max_update_bytes
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted sockets inherit it: without, small responses wait ~40 ms on delayed ACKs
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((s.host, s.http_port))
        self.http_port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._http = _EmbeddedUvicorn(config)
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
