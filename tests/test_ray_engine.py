"""`fedgate sim --engine ray`: digits federations whose virtual clients run on Ray.

One local Ray cluster (2 CPUs) serves the module. Over gRPC the simulation runs in this
process, on that cluster; over REST it is the `fedgate sim` command, joining the same
cluster with --ray-address: 20 virtual clients, 4 a round, 2 rounds. In process, all 20
train every round and learn exactly what the local engine's clients learn. Each time,
only the selected clients ever built a model (one at a time per host), and none kept one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedgate.run.engines import RAY_MISSING
from fedgate.run.sim_config import SimConfig
from fedgate.run.simulation import run_simulation, simulate

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAS_RAY, reason="Ray is not installed (pip install 'fedgate[ray]'; `make` installs it)"
)
CLIENTS, PER_ROUND, ROUNDS = 20, 4, 2
# 5 epochs of batches of 16 on ~70 examples each: ~0.8 after two rounds (0.5 is safe)
SETTINGS: dict[str, Any] = {
    "clients": CLIENTS,
    "clients_per_round": PER_ROUND,
    "min_clients": PER_ROUND,
    "rounds": ROUNDS,
    "local_epochs": 5,
    "batch_size": 16,
}
EVERY_CLIENT = {**SETTINGS, "clients_per_round": 0, "min_clients": 0}


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray cluster as the engine starts one; its address."""
    import ray  # noqa: PLC0415 - only where Ray is installed

    from fedgate.run.engines.ray_sim import init_options  # noqa: PLC0415

    ray.init(**init_options(""))
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def check_run(document: dict[str, Any], transport: str, per_round: int = PER_ROUND) -> None:
    """The rounds ran, with every virtual client; idle clients held no model."""
    assert document["state"] == "finished"
    assert [entry["round"] for entry in document["rounds"]] == list(range(1, ROUNDS + 1))
    assert document["final_accuracy"] > 0.5
    assert list(document["bytes_by_transport"]) == [transport]
    assert sorted(c["name"] for c in document["clients"]) == sorted(
        f"client-{i}" for i in range(CLIENTS)
    )
    assert document["config"]["engine"] == "ray"
    engine = document["engine"]
    assert (engine["hosts"], engine["virtual_clients"]) == (2, CLIENTS)
    assert engine["joined"] == engine["finished"] == CLIENTS
    assert engine["failures"] == []
    # a model is built for each task and only then (per_round * ROUNDS of them for 20
    # clients); a host holds one at a time, and none is left once the run is over
    assert engine["trainings"] == engine["models_built"] == per_round * ROUNDS
    assert engine["peak_models_per_host"] == 1
    assert (engine["models_alive_after"], engine["clients_holding_after"]) == (0, 0)


@needs_ray
def test_virtual_clients_over_grpc(cluster: str) -> None:
    rounds: list[int] = []
    config = SimConfig(engine="ray", transport="grpc", **SETTINGS)
    document = run_simulation(config, on_round=lambda record: rounds.append(record.round))
    check_run(document, "grpc")
    assert rounds == [1, 2]
    assert document["engine"]["server_peak_rss_bytes"] > 0  # the real `fedgate serve`


@needs_ray
def test_virtual_clients_in_process_learn_exactly_as_local_ones(cluster: str) -> None:
    """The federation in an actor, the clients calling it through Ray: with every client
    in every round, the same rounds as the local engine's, to the last digit."""
    rounds: list[int] = []
    config = SimConfig(engine="ray", transport="inproc", **EVERY_CLIENT)
    document = run_simulation(config, on_round=lambda record: rounds.append(record.round))
    check_run(document, "inproc", per_round=CLIENTS)
    assert rounds == [1, 2]
    local = asyncio.run(simulate(dataclasses.replace(config, engine="local")))
    learnt = [(entry["accuracy"], entry["loss"]) for entry in document["rounds"]]
    assert learnt == [(entry["accuracy"], entry["loss"]) for entry in local["rounds"]]


@needs_ray
def test_the_sim_command_on_an_existing_cluster_over_rest(cluster: str, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in SETTINGS.items()]
    command = ["sim", "--engine", "ray", "--ray-address", cluster, "--transport", "rest"]
    finished = subprocess.run(
        [sys.executable, "-m", "fedgate", *command, *flags, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    document = json.loads(out.read_text())
    check_run(document, "rest")
    assert document["engine"]["address"] == cluster
    assert "round   2/2" in finished.stdout


@needs_ray
def test_a_cluster_of_several_machines_reaches_the_gateway_at_this_nodes_address() -> None:
    from fedgate.run.engines.ray_sim import Cluster  # noqa: PLC0415 - only where Ray is installed

    served = {"grpc": "0.0.0.0:50051", "rest": "http://0.0.0.0:8000"}
    here = Cluster(address="", cpus=2, nodes=1, node_ip="10.1.2.3", spans_machines=False)
    assert (here.serve_arguments(), here.reachable(served)) == ([], served)
    wide = dataclasses.replace(here, nodes=3, spans_machines=True)
    assert wide.serve_arguments() == ["--host", "0.0.0.0"]
    assert wide.reachable(served) == {"grpc": "10.1.2.3:50051", "rest": "http://10.1.2.3:8000"}
    v6 = dataclasses.replace(wide, node_ip="fd00::7")
    assert v6.reachable(served) == {"grpc": "[fd00::7]:50051", "rest": "http://[fd00::7]:8000"}


def test_ray_is_imported_only_by_its_engine_and_its_absence_is_explained() -> None:
    script = (
        "import sys\n"
        "from fedgate.cli import main\n"
        "assert main(['sim', '--clients', '2', '--rounds', '1']) == 0\n"
        "assert 'ray' not in sys.modules, 'the local engine imported Ray'\n"
        "sys.modules['ray'] = None  # from here on, as if it were not installed\n"
        "sys.exit(main(['sim', '--engine', 'ray', '--clients', '2', '--rounds', '1']))\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert finished.returncode == 2, finished.stderr[-3000:]
    assert finished.stderr.strip() == f"fedgate: error: {RAY_MISSING}"
    assert "pip install 'fedgate[ray]'" in RAY_MISSING
