"""`fedgate serve`: a federation on both transports until its run ends or a signal arrives."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgate.core.config import RunConfig
from fedgate.core.data import load_dataset
from fedgate.core.factory import build_federation
from fedgate.core.federation import Federation
from fedgate.core.messages import FINAL_RUN_STATES, FederationStatus
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.results import results_document, write_json

log = logging.getLogger("fedgate.serve")
LINGER_S = 5.0  # after the run ends, how long to wait for clients to take their STOP


@dataclass(frozen=True)
class ServeOptions:
    gateway: GatewaySettings
    run: RunConfig
    dataset: str = "digits"
    model: str = "cnn"
    ready_file: Path | None = None  # JSON with the bound ports, once both are listening
    results_file: Path | None = None  # the results document, when the run ends
    exit_when_done: bool = False


async def serve(options: ServeOptions) -> FederationStatus:
    dataset = load_dataset(options.dataset, options.run.seed)
    federation = build_federation(
        dataset, options.model, options.run, max_update_bytes=options.gateway.max_update_bytes
    )
    started = time.perf_counter()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Gateway(federation, options.gateway) as gateway:
        announce(gateway, options)
        run = federation.start()
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait())}
        if options.exit_when_done:
            waiters.add(run)
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if federation.state in FINAL_RUN_STATES:
            await _let_clients_leave(federation)
        status = federation.status()
        if options.results_file is not None:
            config = {
                "dataset": options.dataset,
                "model": options.model,
                **dataclasses.asdict(options.run),
            }
            document = results_document(config, status, time.perf_counter() - started)
            write_json(options.results_file, document)
    return status


def announce(gateway: Gateway, options: ServeOptions) -> None:
    print(f"fedgate serving run {gateway.federation.run_id}", flush=True)
    print(f"  gRPC     {gateway.grpc_target}  (fedgate.v1.Federation, fedgate.v1.Operator)")
    print(f"  REST     {gateway.http_url}/api/v1   docs {gateway.http_url}/docs")
    print(
        f"  status   curl -H 'Authorization: Bearer {gateway.settings.admin_token}' "
        f"{gateway.http_url}/api/v1/status",
        flush=True,
    )
    if options.ready_file is not None:
        write_json(
            options.ready_file,
            {
                "grpc_port": gateway.grpc_port,
                "http_port": gateway.http_port,
                "admin_token": gateway.settings.admin_token,
                "run_id": gateway.federation.run_id,
            },
        )


async def _let_clients_leave(federation: Federation) -> None:
    deadline = time.monotonic() + LINGER_S
    while federation.clients.active() and time.monotonic() < deadline:
        await federation.wait_for_change(deadline - time.monotonic())
