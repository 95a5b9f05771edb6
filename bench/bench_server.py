"""The fedgate server of the bench suites: a real Federation behind a real Gateway (gRPC and
REST on loopback), in a process of its own, hosting one federation after another.

Why not ``fedgate serve``: it holds the model built for its data set's inputs (1x8x8 for
digits), while the transport suite needs the resnets at 3x32x32 as the codec suite
measures them; and it serves one run per process, while the rounds suite runs dozens of
federations, each of which would pay ~3 s of interpreter and torch start-up. Everything
else is what ``fedgate serve`` does (`fedgate.core.factory`, `fedgate.gateway.Gateway`).

Protocol (`benchkit.BenchServer` speaks it): one JSON command per stdin line, one reply
per command on stdout, prefixed with ``benchkit.REPLY_PREFIX``:

- ``{"op": "start", "model": M, "dataset": D | null, "run": {RunConfig fields}}`` starts a
  federation and its gateway on free ports and replies with the ports, admin token and
  run id. With a dataset, the model is built for its inputs and every round is evaluated
  on its test split (as ``fedgate serve --dataset D --model M``); without, the model is
  built at its ``MODEL_SPECS`` shape, seed 0, and there is no evaluation.
- ``{"op": "stop"}`` stops the gateway and the federation and replies with the results
  document of the run (`fedgate.results.results_document`).

End of input stops whatever runs and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchkit import MODEL_SPECS, REPLY_PREFIX

from fedgate.core.config import RunConfig
from fedgate.core.data import Dataset, load_dataset
from fedgate.core.factory import build_federation
from fedgate.core.federation import Federation
from fedgate.core.models import build_model
from fedgate.core.training import state_dict_copy
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.results import results_document


@dataclass
class Running:
    gateway: Gateway
    config: dict[str, Any]
    started: float


class Host:
    def __init__(self) -> None:
        self.running: Running | None = None
        self.datasets: dict[tuple[str, int], Dataset] = {}

    async def start(self, command: dict[str, Any]) -> dict[str, Any]:
        if self.running is not None:
            await self.stop()
        run = RunConfig(**command["run"])
        federation = self.federation(str(command["model"]), command.get("dataset"), run)
        gateway = Gateway(federation, GatewaySettings(grpc_port=0, http_port=0))
        await gateway.start()
        federation.start()
        config = {"model": command["model"], "dataset": command.get("dataset"), **command["run"]}
        self.running = Running(gateway, config, time.perf_counter())
        return {
            "grpc_port": gateway.grpc_port,
            "http_port": gateway.http_port,
            "addresses": gateway.addresses,
            "admin_token": gateway.settings.admin_token,
            "run_id": federation.run_id,
        }

    def federation(self, model: str, dataset: str | None, run: RunConfig) -> Federation:
        if dataset is None:
            initial = build_model(model, MODEL_SPECS[model], seed=0)
            return Federation(state_dict_copy(initial), run)
        key = (dataset, run.seed)
        if key not in self.datasets:  # loading digits costs a second; runs share it
            self.datasets[key] = load_dataset(dataset, run.seed)
        return build_federation(self.datasets[key], model, run)

    async def stop(self) -> dict[str, Any]:
        running, self.running = self.running, None
        if running is None:
            return {"results": None}
        status = running.gateway.federation.status()
        await running.gateway.stop(grace_s=1.0)
        duration = time.perf_counter() - running.started
        return {"results": results_document(running.config, status, duration)}


async def serve() -> None:
    host = Host()
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            break
        try:
            command = json.loads(line)
            op = command.get("op")
            if op == "start":
                reply = await host.start(command)
            elif op == "stop":
                reply = await host.stop()
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as error:
            reply = {"error": f"{type(error).__name__}: {error}"}
        print(REPLY_PREFIX + json.dumps(reply), flush=True)
    await host.stop()


if __name__ == "__main__":
    asyncio.run(serve())
