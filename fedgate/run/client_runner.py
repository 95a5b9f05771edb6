"""`fedgate client`: one client process on its share of the data, over gRPC or REST.

The process ends with the run (exit 0), on SIGINT/SIGTERM (it leaves first, exit 0), or
when the server refuses what the client cannot change (its enrolment key, its settings, an
untrusted certificate) or ``give_up_after_s`` passes without an answer: then
`run_client` raises, and `fedgate client` prints why and exits 2. A server that restarts,
or forgets the client, does not end it (`fedgate.core.client`).
"""

from __future__ import annotations

import asyncio
import signal

import torch

from fedgate.core.client import ClientReport, FederatedClient
from fedgate.core.data import load_dataset
from fedgate.core.retry import Backoff
from fedgate.core.trainers import build_trainer
from fedgate.errors import Forbidden, Unauthorized, error_from_code
from fedgate.run.client_options import KEY_ENV, ClientOptions
from fedgate.run.process_memory import keep_freed_memory
from fedgate.transport.connect import connect


async def run_client(options: ClientOptions) -> ClientReport:
    """Join, train until the run ends, leave. SIGINT/SIGTERM make the client leave cleanly."""
    keep_freed_memory()  # the next round's model comes into pages this process has
    if options.threads:
        torch.set_num_threads(options.threads)
    trainer = build_trainer(
        # not kept: the client holds its own part of the data only (a copy), not all of it
        load_dataset(options.dataset, options.seed, options.data_dir),
        options.model,
        spec=options.partition,
        index=options.index,
        of=options.of,
        seed=options.seed,
    )
    transport = connect(options.transport, options.server, options.tls)
    name = options.name or f"client-{options.index}"
    client = FederatedClient(
        transport,
        trainer,
        name,
        options.codec,
        deltas=options.deltas,
        key=options.key,
        backoff=Backoff(give_up_after_s=options.give_up_after_s),
    )
    task = asyncio.create_task(client.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return client.report  # run() left the federation on its way out
    except (Unauthorized, Forbidden) as error:
        hint = f"check the enrolment key (--key, or ${KEY_ENV})"
        raise error_from_code(error.code, f"{error.message}; {hint}") from None
    finally:
        await transport.close()
