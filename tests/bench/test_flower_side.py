"""Both halves of the flower suite, without Flower: what the benchmark process writes for
Flower's processes, and that a Flower client trains and Flower's server evaluates exactly
as fedgate's do, to the bit.

``flower_app`` runs under ``.venv-flower`` with fedgate's own `LocalTrainer` and `evaluate`,
fed from files. Here, in fedgate's ``.venv`` and on the same torch, what it builds from
those files (data part, batch-order seed, recipe, held-out split) must give exactly
fedgate's weights, losses and accuracies, so the suite compares frameworks, not recipes.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import tomllib
from pathlib import Path

import flower_app
import pytest
import torch
from federations import FederationSpec
from flower_side import (
    APP,
    MAKE_TARGET,
    SUPERLINK,
    VENV_ENV,
    FlowerDeployment,
    Processes,
    descendants,
    flower_unavailable,
    flower_venv,
    free_ports,
    skip_message,
    still_running,
    write_inputs,
)

from fedgate.core.data import Dataset, load_dataset
from fedgate.core.messages import TrainConfig
from fedgate.core.models import build_model
from fedgate.core.trainers import build_trainer
from fedgate.core.training import evaluate, state_dict_copy

SPEC = FederationSpec("grpc", "raw", clients=3, rounds=2, partition="dirichlet:0.5", seed=7)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", SPEC.seed)


@pytest.fixture(scope="module")
def inputs(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flower-inputs")
    write_inputs(SPEC, digits, path)
    return path


def test_inputs_hold_fedgates_federation(inputs: Path, digits: Dataset) -> None:
    setup = flower_app.Setup.load(inputs)
    assert (setup.rounds, setup.clients, setup.batch_size) == (2, 3, SPEC.batch_size)
    assert (setup.learning_rate, setup.local_epochs) == (SPEC.learning_rate, SPEC.local_epochs)
    initial = state_dict_copy(build_model("cnn", digits.model_spec, seed=SPEC.seed))
    stored = flower_app.load_arrays(inputs / flower_app.INITIAL_FILE)
    assert setup.names == list(initial) == list(setup.build().state_dict())
    for name, tensor in initial.items():
        assert torch.equal(torch.from_numpy(stored[name]), tensor), name
    x_test, y_test = flower_app.load_xy(inputs / flower_app.TEST_FILE)
    assert torch.equal(x_test, digits.x_test) and torch.equal(y_test, digits.y_test)
    sizes = []
    for index in range(SPEC.clients):
        part = build_trainer(
            digits, "cnn", spec=SPEC.partition, index=index, of=SPEC.clients, seed=SPEC.seed
        )
        x, y = flower_app.load_xy(inputs / flower_app.client_file(index))
        assert torch.equal(x, part.x) and torch.equal(y, part.y), index
        sizes.append(len(y))
    assert sum(sizes) == len(digits.y_train) and len(set(sizes)) > 1  # label skew: unequal


def test_flower_trainer_and_evaluation_are_fedgates(inputs: Path, digits: Dataset) -> None:
    setup = flower_app.Setup.load(inputs)
    weights = state_dict_copy(build_model("cnn", digits.model_spec, seed=SPEC.seed))
    config = TrainConfig(SPEC.learning_rate, SPEC.local_epochs, SPEC.batch_size)
    assert setup.train_config() == config
    index = 1
    theirs = build_trainer(
        digits, "cnn", spec=SPEC.partition, index=index, of=SPEC.clients, seed=SPEC.seed
    )
    ours = flower_app.client_trainer(inputs, index)
    for number in (1, 2):  # each round's batch order comes from the seed and the round
        this_round = dataclasses.replace(config, round=number)
        flowers = dataclasses.replace(setup.train_config(), round=number)
        expected, got = theirs.train(weights, this_round), ours.train(weights, flowers)
        assert (got.loss, got.accuracy) == (expected.loss, expected.accuracy)
        for name, tensor in expected.weights.items():
            assert torch.equal(got.weights[name], tensor), name
        weights = expected.weights
    x_test, y_test = flower_app.load_xy(inputs / flower_app.TEST_FILE)
    result = evaluate(build_model("cnn", digits.model_spec), weights, digits.x_test, digits.y_test)
    assert evaluate(setup.build(), weights, x_test, y_test) == result


def test_arrays_round_trip_in_flowers_order(inputs: Path) -> None:
    setup = flower_app.Setup.load(inputs)
    state = flower_app.to_state(
        setup.names, [flower_app.load_arrays(inputs / "initial.npz")[n] for n in setup.names]
    )
    arrays = flower_app.to_arrays(state)
    assert [a.shape for a in arrays] == [tuple(t.shape) for t in state.values()]
    with pytest.raises(ValueError):  # a list of the wrong length is refused, not truncated
        flower_app.to_state(setup.names, arrays[:-1])


def test_a_missing_venv_is_reported_with_the_make_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VENV_ENV, str(tmp_path / "no-venv"))
    assert flower_venv() == tmp_path / "no-venv"
    reason = flower_unavailable(flower_venv())
    assert reason is not None and str(tmp_path / "no-venv" / "bin" / "python") in reason
    assert MAKE_TARGET in skip_message(reason)


def test_a_venv_without_flwr_is_reported(tmp_path: Path) -> None:
    venv = tmp_path / "bare"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)  # a Python, and no flwr beside it
    reason = flower_unavailable(venv)
    assert reason is not None and "flwr is not importable" in reason
    assert "No module named 'flwr'" in reason


# ---- the deployment: flower-superlink, flower-supernodes, flwr run of the Flower App ----


def test_the_flower_app_names_its_components_and_run_config(tmp_path: Path) -> None:
    project = tomllib.loads((APP.parent / "pyproject.toml").read_text())
    app = project["tool"]["flwr"]["app"]
    assert app["components"] == {
        "serverapp": "deployment_app:server_app",
        "clientapp": "deployment_app:client_app",
    }
    assert (APP.parent / "deployment_app.py").exists()
    # flwr run overrides only keys the app declares: the two the suite sets, and no more.
    deployment = FlowerDeployment(flower_venv(), tmp_path / "in puts", tmp_path, clients=3)
    argv = deployment.run_argv()
    assert argv[1:4] == ["run", str(APP.parent), SUPERLINK] and argv[4] == "--run-config"
    overrides = tomllib.loads(argv[5].replace('" ', '"\n'))
    assert set(overrides) == set(app["config"]) == {"inputs", "out"}
    assert overrides == {"inputs": str(tmp_path / "in puts"), "out": str(deployment.out)}


def test_the_deployment_runs_insecure_on_loopback_one_supernode_per_part(tmp_path: Path) -> None:
    deployment = FlowerDeployment(tmp_path / "venv", tmp_path / "inputs", tmp_path, clients=3)
    deployment.port = 40_000
    link = deployment.superlink_argv()
    assert link[0] == str(tmp_path / "venv" / "bin" / "flower-superlink")
    assert link[1:] == [
        "--insecure",
        *("--host", "127.0.0.1", "--port", "40000"),
        "--disable-runtime-dependency-installation",  # nothing downloads at run time
    ]
    nodes = [deployment.supernode_argv(index, 40_001 + index) for index in range(3)]
    for index, node in enumerate(nodes):
        assert node[1:] == [
            "--insecure",
            *("--superlink", "127.0.0.1:40000"),
            *("--host", "127.0.0.1", "--port", str(40_001 + index)),
            *("--node-config", f"partition-id={index} num-partitions=3"),
        ]
    # flwr run finds the SuperLink by name in $FLWR_HOME/config.toml.
    config = tomllib.loads(deployment.connection())
    assert config["superlink"]["default"] == SUPERLINK
    assert config["superlink"][SUPERLINK] == {"address": "127.0.0.1:40000", "insecure": True}
    env = deployment.env()
    assert env["FLWR_HOME"] == str(tmp_path / "flwr-home")
    assert env["PATH"].split(os.pathsep)[0] == str(tmp_path / "venv" / "bin")
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"


def test_free_ports_differ() -> None:
    ports = free_ports(12)
    assert len(set(ports)) == 12 and all(port > 0 for port in ports)


# A process that starts a grandchild in a session of its own (as Flower's SuperLink starts
# its SuperExec), prints the grandchild's id, and waits.
TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(600)
"""


def test_kill_all_stops_the_processes_children_too(tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    processes.spawn("tree", [sys.executable, "-c", TREE])
    log = processes.log("tree")
    give_up = time.monotonic() + 60
    while not log.read_text().strip() and time.monotonic() < give_up:
        time.sleep(0.05)
    grandchild = int(log.read_text())
    started = descendants([processes.running["tree"].pid])[grandchild]
    assert still_running(grandchild, started)
    processes.kill_all()
    assert processes.running["tree"].poll() is not None
    assert not still_running(grandchild, started)  # stopped, though in a session of its own
