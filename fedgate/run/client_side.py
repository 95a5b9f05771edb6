"""What a `fedgate client` process builds once torch is imported: its trainer on its share
of the data, and the `FederatedClient` on the membership it joined with.

`fedgate.run.client_runner` imports this module on a worker thread, while the client's
first request (its join) is on the wire and its heartbeats run.
"""

from __future__ import annotations

import torch

from fedgate.codecs import get_codec
from fedgate.core.client import FederatedClient
from fedgate.core.data import load_dataset
from fedgate.core.membership import Membership
from fedgate.core.trainers import build_trainer
from fedgate.core.training import LocalTrainer
from fedgate.run.client_options import ClientOptions


def client_trainer(options: ClientOptions) -> LocalTrainer:
    """Worker thread: the trainer on the client's share of its data set."""
    get_codec(options.codec)  # an unknown codec is refused before the data is read
    if options.threads:
        torch.set_num_threads(options.threads)  # torch's setting is the process's
    return build_trainer(
        # not kept: the client holds its own part of the data only (a copy), not all of it
        load_dataset(options.dataset, options.seed, options.data_dir),
        options.model,
        spec=options.partition,
        index=options.index,
        of=options.of,
        seed=options.seed,
    )


def federated_client(
    options: ClientOptions, membership: Membership, trainer: LocalTrainer | None = None
) -> FederatedClient:
    """Worker thread: the client that takes tasks on ``membership`` (a trainer is built
    unless one is given)."""
    return FederatedClient(
        membership.transport,
        trainer or client_trainer(options),
        membership.name,
        options.codec,
        deltas=options.deltas,
        membership=membership,
    )
