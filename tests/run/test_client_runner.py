"""A `fedgate client` process's start: its first request does not wait for torch.

Against a real `fedgate serve`, with a client process whose ``import torch`` never ends (a
package of that name first on its path that sleeps): the client still joins, its
heartbeats keep it alive past the server's heartbeat timeout while the import hangs, and
on SIGTERM it leaves. In process (`fedgate.cli.main`): an unknown codec ends a client
whose server never answers (the trainer's side fails while the join is still retried).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedgate.cli import main
from fedgate.core.bundled import BUNDLED
from fedgate.core.data import load_dataset
from fedgate.core.trainers import build_trainer
from fedgate.run.client_options import ClientOptions
from fedgate.run.client_runner import examples_without_torch
from fedgate.run.launch import ServerProcess, start_client, start_server, stop_process
from tests.test_client_resilience import ids_of, state_of, wait_for

HEARTBEAT_TIMEOUT_S = 2.0
HANGING_TORCH = "import time\ntime.sleep(600)  # an import of torch that never ends\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    options = [
        *("--rounds", "5", "--min-clients", "2"),  # never opens: one client joins
        *("--heartbeat-interval", "0.5", "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT_S)),
    ]
    process = start_server(options, tmp_path)
    yield process
    process.stop()


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_a_client_joins_and_beats_while_torch_is_still_importing(
    server: ServerProcess, transport: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hanging = tmp_path / "hanging" / "torch"
    hanging.mkdir(parents=True)
    (hanging / "__init__.py").write_text(HANGING_TORCH)
    monkeypatch.setenv("PYTHONPATH", str(hanging.parent))  # the client's, not the server's
    log = tmp_path / "client.log"
    client = start_client(server, transport, ["--name", "early", "--threads", "1"], log)
    try:
        joined = wait_for(server, lambda s: bool(ids_of(s, "early")), within_s=60.0)
        (client_id,) = ids_of(joined, "early")
        time.sleep(HEARTBEAT_TIMEOUT_S * 1.5)  # the import still hangs: only heartbeats
        assert client.poll() is None, log.read_text()
        assert state_of(server.status(), client_id) == "joined"  # not failed
        client.send_signal(signal.SIGTERM)
        wait_for(server, lambda s: state_of(s, client_id) == "left", within_s=30.0)
    finally:
        stop_process(client, timeout_s=1.0)  # its import thread would sleep on: killed


def test_an_unknown_codec_ends_a_client_whose_server_never_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        args = ["client", "--server", address, "--transport", "grpc", "--codec", "nope"]
        assert main(args) == 2
    said = capsys.readouterr().err
    assert "fedgate: error: unknown codec 'nope'" in said and "raw" in said


@pytest.mark.parametrize("dataset", sorted(BUNDLED))
@pytest.mark.parametrize("split", ["iid", "dirichlet:0.5", "shards:2"])
def test_the_examples_counted_without_torch_are_the_trainers(dataset: str, split: str) -> None:
    data = load_dataset(dataset, 3)
    for index in range(4):
        options = ClientOptions("", "grpc", "raw", index, 4, dataset, partition=split, seed=3)
        trainer = build_trainer(data, "cnn", spec=split, index=index, of=4, seed=3)
        assert examples_without_torch(options) == trainer.num_examples


def test_data_read_from_files_is_counted_by_its_trainer() -> None:
    options = ClientOptions("", "grpc", "raw", 0, 2, "cifar10")
    assert examples_without_torch(options) is None


def test_the_client_runner_imports_no_torch() -> None:
    probe = "import sys, fedgate.run.client_runner; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0
