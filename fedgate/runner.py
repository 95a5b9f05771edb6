"""`fedgate client`: one client process on its share of the data, over gRPC or REST."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field

import torch

from fedgate.core.client import ClientReport, FederatedClient
from fedgate.core.data import load_dataset
from fedgate.core.factory import build_trainer
from fedgate.transport.connect import connect
from fedgate.transport.tls import ClientTls

KEY_ENV = "FEDGATE_ENROLMENT_KEY"  # where `fedgate client` finds its key by default


@dataclass(frozen=True)
class ClientOptions:
    server: str
    transport: str
    codec: str
    index: int
    of: int
    dataset: str = "digits"
    model: str = "cnn"
    partition: str = "iid"
    seed: int = 0
    name: str = ""
    threads: int = 0  # torch threads; 0 keeps torch's default
    deltas: bool | None = None  # None: deltas when the codec is lossy
    tls: ClientTls | None = None  # None: plain text (REST: unless the server URL is https://)
    key: str = field(default="", repr=False)  # the enrolment key (fgk_...); "": none


async def run_client(options: ClientOptions) -> ClientReport:
    """Join, train until the run ends, leave. SIGINT/SIGTERM make the client leave cleanly."""
    if options.threads:
        torch.set_num_threads(options.threads)
    dataset = load_dataset(options.dataset, options.seed)
    trainer = build_trainer(
        dataset,
        options.model,
        spec=options.partition,
        index=options.index,
        of=options.of,
        seed=options.seed,
    )
    transport = connect(options.transport, options.server, options.tls)
    name = options.name or f"client-{options.index}"
    client = FederatedClient(
        transport, trainer, name, options.codec, deltas=options.deltas, key=options.key
    )
    task = asyncio.create_task(client.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return client.report  # run() left the federation on its way out
    finally:
        await transport.close()
