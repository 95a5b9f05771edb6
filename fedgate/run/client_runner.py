"""`fedgate client`: one client process on its share of the data, over gRPC or REST.

The process ends with the run (exit 0), on SIGINT/SIGTERM (it leaves first, exit 0), or
when the server refuses what the client cannot change (its enrolment key, its settings, an
untrusted certificate) or ``give_up_after_s`` passes without an answer: then
`run_client` raises, and `fedgate client` prints why and exits 2. A server that restarts,
or forgets the client, does not end it (`fedgate.core.client`).

Its first request does not wait for torch. Importing torch takes a client one to two
seconds here; a client on a data set that ships with fedgate sizes its share of it with
numpy (`fedgate.core.bundled`), joins, and beats while a worker thread imports torch and
builds its trainer (`fedgate.run.client_side`): the server knows the client, and refuses
a wrong key or codec, within a few hundred milliseconds of its start. A data set read
from files is decoded with torch, so there the trainer comes first, as it did before.
This module imports no torch itself (tests/test_client_imports.py).
"""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Any

from fedgate.core.bundled import BUNDLED
from fedgate.core.membership import ClientReport, Membership, run_over
from fedgate.core.partition import client_rows
from fedgate.core.retry import Backoff
from fedgate.errors import Forbidden, RunNotActive, Unauthorized, error_from_code
from fedgate.run.client_options import KEY_ENV, ClientOptions
from fedgate.run.process_memory import keep_freed_memory
from fedgate.transport.connect import connect

if TYPE_CHECKING:
    from fedgate.core.client import FederatedClient
    from fedgate.core.training import LocalTrainer


async def run_client(options: ClientOptions) -> ClientReport:
    """Join, train until the run ends, leave. SIGINT/SIGTERM make the client leave cleanly."""
    keep_freed_memory()  # the next round's model comes into pages this process has
    count = examples_without_torch(options)
    trainer = None
    if count is None:  # read from files, with torch: the trainer first, then the join
        trainer = await asyncio.to_thread(_trainer, options)
        count = trainer.num_examples
    transport = connect(options.transport, options.server, options.tls)
    membership = Membership(
        transport,
        options.name or f"client-{options.index}",
        options.codec,
        count,
        key=options.key,
        backoff=Backoff(give_up_after_s=options.give_up_after_s),
    )
    task = asyncio.create_task(_take_part(options, membership, trainer))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return membership.report  # the membership left the federation on its way out
    except (Unauthorized, Forbidden) as error:
        hint = f"check the enrolment key (--key, or ${KEY_ENV})"
        raise error_from_code(error.code, f"{error.message}; {hint}") from None
    finally:
        await transport.close()


def examples_without_torch(options: ClientOptions) -> int | None:
    """How many examples the client holds, where numpy can tell (the bundled data sets);
    None where its data set is read from files (decoded with torch)."""
    split = BUNDLED.get(options.dataset)
    if split is None:
        return None
    labels = split(options.seed).y_train
    return len(client_rows(labels, options.partition, options.index, options.of, options.seed))


async def _take_part(
    options: ClientOptions, membership: Membership, trainer: LocalTrainer | None
) -> ClientReport:
    """Join while the client is built on a worker thread, then take tasks until the end."""
    async with membership.kept():
        building = asyncio.ensure_future(
            asyncio.to_thread(_federated_client, options, membership, trainer)
        )
        try:
            await _both(asyncio.ensure_future(membership.session()), building)
        except RunNotActive as exc:
            membership.report.ended = run_over(exc)
            return membership.report
        return await building.result().run()


async def _both(joining: asyncio.Future[Any], building: asyncio.Future[Any]) -> None:
    """Wait for both; the first to fail ends the wait (a refused join need not wait for
    torch, an unknown codec or model not for a server that does not answer)."""
    try:
        done, _ = await asyncio.wait((joining, building), return_when=asyncio.FIRST_EXCEPTION)
        for future in done:
            future.result()  # the failure, if one failed
    finally:
        for future in (joining, building):
            future.cancel()  # no-op for the done; a worker thread runs on, unheeded


def _trainer(options: ClientOptions) -> LocalTrainer:
    from fedgate.run.client_side import client_trainer  # noqa: PLC0415 - torch loads here

    return client_trainer(options)


def _federated_client(
    options: ClientOptions, membership: Membership, trainer: LocalTrainer | None
) -> FederatedClient:
    from fedgate.run.client_side import federated_client  # noqa: PLC0415 - torch loads here

    return federated_client(options, membership, trainer)
