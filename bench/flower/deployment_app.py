"""The flower bench suite's Flower App: the same federation as ``flower_app.py``'s legacy
server and clients, run the way Flower 1.x deploys, by ``flwr run`` of this directory
(``pyproject.toml`` names the two components below) on a ``flower-superlink`` with one
``flower-supernode`` per client (``flower_side.FlowerDeployment`` starts them all).

- `server_app`: the `ServerApp`, run by the SuperLink's SuperExec in a process of its
  own. It runs Flower's `Server` over the SuperLink with the strategy the legacy server
  runs (`flower_app.bench_strategy`: FedAvg, the held-out evaluation after each round, the
  round log, timed in the same places), and writes the log to the run config's ``out``.
- `client_app`: the `ClientApp`, run by each SuperNode's SuperExec for each message it
  pulls. Its client is the legacy client (`flower_app.bench_client`), training the part
  of the data the SuperNode's ``--node-config partition-id=<i>`` names.

The run config (``[tool.flwr.app.config]``; ``flwr run --run-config`` sets them) says
where the inputs are (``inputs``: the directory `flower_side.write_inputs` wrote) and
where the round log goes (``out``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flower_app import bench_client, bench_strategy
from flwr.app import Context  # type: ignore[import-not-found,unused-ignore]
from flwr.clientapp import ClientApp  # type: ignore[import-not-found,unused-ignore]
from flwr.server import ServerAppComponents, ServerConfig  # type: ignore[import-not-found,unused-ignore]
from flwr.serverapp import ServerApp  # type: ignore[import-not-found,unused-ignore]

INPUTS, OUT, PARTITION = "inputs", "out", "partition-id"


def server_fn(context: Context) -> Any:
    strategy, setup = bench_strategy(
        Path(context.run_config[INPUTS]), Path(context.run_config[OUT])
    )
    return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=setup.rounds))


def client_fn(context: Context) -> Any:
    return bench_client(Path(context.run_config[INPUTS]), int(context.node_config[PARTITION]))


server_app = ServerApp(server_fn=server_fn)
client_app = ClientApp(client_fn=client_fn)
