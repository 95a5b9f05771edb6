"""Virtual clients (`fedgate.run.engines.virtual`), without Ray: a `ClientHost` in this event
loop, its clients calling an in-process federation. Only the clients selected for a round
build a model, one at a time per host, and none keeps one after its task."""

from __future__ import annotations

import asyncio

import torch

from fedgate.core.config import RunConfig
from fedgate.core.data import load_dataset
from fedgate.core.factory import build_federation
from fedgate.core.messages import TrainConfig
from fedgate.core.models import build_model
from fedgate.core.trainers import build_trainer
from fedgate.core.training import state_dict_copy
from fedgate.core.transport import Transport
from fedgate.run.engines.virtual import ClientHost, Gateway, HostSpec, ModelCount, VirtualTrainer
from fedgate.transport.inproc import InProcTransport

CLIENTS, PER_ROUND, ROUNDS = 12, 3, 2


def host_spec(codecs: tuple[str, ...]) -> HostSpec:
    return HostSpec(
        host=0,
        indices=tuple(range(CLIENTS)),
        of=CLIENTS,
        dataset="digits",
        model="cnn",
        partition="iid",
        seed=0,
        data_dir="",
        codecs=codecs,
        transports=(InProcTransport.name,) * CLIENTS,
        deltas=None,  # the lossy codec's clients send deltas
    )


async def test_only_selected_clients_build_a_model_and_none_keeps_it() -> None:
    config = RunConfig(rounds=ROUNDS, clients_per_round=PER_ROUND, min_clients=PER_ROUND)
    federation = build_federation(load_dataset("digits"), "cnn", config)
    run = federation.start()

    def connect(transport: str, address: str) -> Transport:
        return InProcTransport(federation)

    # half raw, half a lossy codec whose clients would keep a residual between rounds
    host = ClientHost(host_spec(("raw", "int8-zstd") * (CLIENTS // 2)), connect)
    hosting = asyncio.create_task(host.run(Gateway({InProcTransport.name: ""})))
    holding = alive = 0  # the most clients holding a model, and models alive, at once
    while not run.done():
        holding = max(holding, sum(client.holding for client in host.clients))
        alive = max(alive, host.models.alive)
        await asyncio.sleep(0.002)
    status = await run
    report = await asyncio.wait_for(hosting, 30)
    await federation.close()

    assert status.rounds_completed == ROUNDS
    assert (report.clients, report.joined, report.finished) == (CLIENTS, CLIENTS, CLIENTS)
    assert report.failures == ()
    assert report.trainings == report.models_built == PER_ROUND * ROUNDS
    assert report.peak_models == 1 and alive <= 1 and holding <= 1  # one train slot
    assert (report.models_alive, report.clients_holding) == (0, 0)


def test_a_virtual_trainer_trains_as_a_clients_own_trainer() -> None:
    dataset = load_dataset("digits")
    own = build_trainer(dataset, "cnn", spec="iid", index=3, of=CLIENTS, seed=7)
    weights = state_dict_copy(build_model("cnn", dataset.model_spec, seed=1))
    config = TrainConfig(learning_rate=0.1, local_epochs=2, batch_size=16, round=4)
    models = ModelCount()
    trainer = VirtualTrainer(
        "cnn",
        dataset.model_spec,
        own.x,
        own.y,
        seed=own.seed,
        augmentation=dataset.augmentation,
        models=models,
    )
    expected, got = own.train(weights, config), trainer.train(weights, config)
    assert got.loss == expected.loss and got.num_examples == expected.num_examples
    assert all(torch.equal(got.weights[name], t) for name, t in expected.weights.items())
    assert (models.built, models.alive) == (1, 0)  # built for the task, gone after it
