"""A hostile client for poisoning tests, and an in-process federation to run it in.

`ScaledUpdateTrainer` trains honestly on its own data, then sends the global model plus
its change scaled by ``scale`` and claims ``claim`` examples: the model-replacement attack
(Bagdasaryan et al. 2020) with the largest weight its key allows. It is a `Trainer`, so
`FederatedClient` runs it over any transport: in process here, over the wire elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import torch

from fedgate.core.client import FederatedClient
from fedgate.core.data import load_dataset
from fedgate.core.factory import build_federation
from fedgate.core.messages import FederationStatus, TrainConfig
from fedgate.core.trainers import build_trainer
from fedgate.core.training import Trainer, TrainResult
from fedgate.run.sim_config import SimConfig
from fedgate.transport.inproc import InProcTransport

SCALE = 100.0
CLAIM = 10_000  # every client's key limit in the poisoning tests: the hostile claims all of it


class ScaledUpdateTrainer:
    """Trains like ``inner``, then sends ``global + scale * (trained - global)``, claiming
    ``claim`` examples (at join and with every update)."""

    def __init__(self, inner: Trainer, scale: float = SCALE, claim: int = CLAIM) -> None:
        self.inner, self.scale, self.claim = inner, scale, claim

    @property
    def num_examples(self) -> int:
        return self.claim

    def train(self, weights: Mapping[str, torch.Tensor], config: TrainConfig) -> TrainResult:
        honest = self.inner.train(weights, config)
        scaled = {
            name: (w + self.scale * (honest.weights[name] - w))
            if w.is_floating_point()
            else honest.weights[name]
            for name, w in weights.items()
        }
        return TrainResult(scaled, self.claim, honest.loss, honest.accuracy)


Corrupt = Callable[[Trainer], Trainer]


async def run_in_process(
    config: SimConfig, hostile: Mapping[int, Corrupt] | None = None
) -> FederationStatus:
    """``config``'s federation in this process; client i trains with ``hostile[i](trainer)``
    where given. Every client joins with one enrolment key whose weight limit is `CLAIM`
    (the hostile one claims all of it). Returns the final status (history, accuracy)."""
    dataset = load_dataset(config.dataset, config.seed)
    federation = build_federation(dataset, config.model, config.run_config(), enrolment="key")
    key = federation.enrolment.create("poisoning", config.clients, CLAIM).secret
    run = federation.start()
    clients = []
    for i in range(config.clients):
        trainer: Trainer = build_trainer(
            dataset,
            config.model,
            spec=config.partition,
            index=i,
            of=config.clients,
            seed=config.seed,
        )
        if hostile and i in hostile:
            trainer = hostile[i](trainer)
        transport = InProcTransport(federation)
        clients.append(
            FederatedClient(transport, trainer, f"client-{i}", config.codec_for(i), key=key)
        )
    tasks = [asyncio.create_task(c.run()) for c in clients]
    try:
        status = await run
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await federation.close()
    return status
