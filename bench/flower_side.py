"""Flower's side of the flower suite, as the benchmark process (fedgate's ``.venv``) sees it.

Flower runs in processes of its own under ``.venv-flower``'s Python (``make flower-env``;
``flower/flower_app.py`` says why, and what its server measures). From here:

- `flower_venv` / `flower_unavailable`: which virtualenv (``$FEDGATE_FLOWER_VENV``, else
  ``.venv-flower`` in the checkout), and why it cannot run Flower, if it cannot;
- `write_inputs`: the federation fedgate runs, as files for Flower's processes: the same
  initial weights, the same clients' parts of the same split (taken with fedgate's
  `build_trainer`, as ``fedgate client --index i`` takes them), the same held-out split,
  hyper-parameters and batch-order seeds;
- `FlowerFederation`: ``start`` runs the server and returns once it listens (untimed),
  ``run`` runs one process per client and returns the server's round log once every
  process has exited (the call pytest-benchmark times).

`Processes` (spawn, wait, kill, log tails) serves fedgate's side of the suite as well.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchrun import repository_root
from federations import WAIT_LIMIT_S, FederationSpec

from fedgate.core.data import Dataset
from fedgate.core.models import build_model
from fedgate.core.trainers import build_trainer, client_seed
from fedgate.core.training import state_dict_copy

# flower_app.py lives beside the venv's requirements, in bench/flower/, outside the bench
# directory pytest puts on sys.path; it defines the file format both sides use.
APP = Path(__file__).resolve().with_name("flower") / "flower_app.py"
sys.path.insert(0, str(APP.parent))
import flower_app  # noqa: E402

VENV_ENV = "FEDGATE_FLOWER_VENV"
MAKE_TARGET = "make flower-env"
PROBE = "import flwr.client, flwr.server, numpy, torch"
PROBE_LIMIT_S = 120.0  # importing flwr and torch on a busy 2-core machine takes seconds
POLL_S = 0.02


def flower_venv() -> Path:
    configured = os.environ.get(VENV_ENV)
    return Path(configured) if configured else repository_root() / ".venv-flower"


def flower_env() -> dict[str, str]:
    """The environment of Flower's processes: fedgate's torch-only modules importable."""
    return {
        **os.environ,
        **flower_app.QUIET_ENV,
        # Only the checkout: flower_app imports fedgate's models and trainer (torch only).
        "PYTHONPATH": str(repository_root()),
        "PYTHONUNBUFFERED": "1",
    }


def flower_unavailable(venv: Path) -> str | None:
    """Why ``venv`` cannot run Flower's side, or None when it can."""
    python = venv / "bin" / "python"
    if not python.exists():
        return f"{python} does not exist"
    try:
        probe = subprocess.run(
            [str(python), "-c", PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_LIMIT_S,
            env=flower_env(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{python} does not run: {error}"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return f"flwr is not importable by {python} ({last})"
    return None


def skip_message(reason: str) -> str:
    return (
        f"Flower not measured: {reason}. Run `{MAKE_TARGET}` (flwr and CPU torch in "
        ".venv-flower) to measure Flower beside fedgate; fedgate's rows ran without it."
    )


def write_inputs(spec: FederationSpec, dataset: Dataset, inputs: Path) -> flower_app.Setup:
    """Write ``spec``'s federation on ``dataset`` for Flower's processes, into ``inputs``."""
    inputs.mkdir(parents=True, exist_ok=True)
    initial = state_dict_copy(build_model(spec.model, dataset.model_spec, seed=spec.seed))
    for index in range(spec.clients):
        part = build_trainer(
            dataset, spec.model, spec=spec.partition, index=index, of=spec.clients, seed=spec.seed
        )
        arrays = {"x": part.x.numpy(), "y": part.y.numpy()}
        flower_app.save_arrays(inputs / flower_app.client_file(index), arrays)
    test = {"x": dataset.x_test.numpy(), "y": dataset.y_test.numpy()}
    flower_app.save_arrays(inputs / flower_app.TEST_FILE, test)
    weights = {name: tensor.numpy() for name, tensor in initial.items()}
    flower_app.save_arrays(inputs / flower_app.INITIAL_FILE, weights)
    setup = flower_app.Setup(
        rounds=spec.rounds,
        clients=spec.clients,
        learning_rate=spec.learning_rate,
        local_epochs=spec.local_epochs,
        batch_size=spec.batch_size,
        model=spec.model,
        model_spec=asdict(dataset.model_spec),
        names=list(initial),
        client_seeds=[client_seed(spec.seed, index) for index in range(spec.clients)],
    )
    setup.save(inputs)
    return setup


class Processes:
    """The child processes of one federation, each logging to ``<workdir>/<name>.log``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with self.log(name).open("wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"} if env is None else dict(env),
            )
        self.running[name] = process
        return process

    def wait_all(self, limit_s: float = WAIT_LIMIT_S) -> None:
        """Until every process has exited; one failing, or outliving the limit, fails it."""
        give_up = time.monotonic() + limit_s
        while True:
            late = [name for name in self.running if not self.check(name, exited_ok=True)]
            if not late:
                return
            if time.monotonic() > give_up:
                raise RuntimeError(f"still running after {limit_s:.0f} s: {', '.join(late)}")
            time.sleep(POLL_S)

    def check(self, name: str, exited_ok: bool = False) -> bool:
        """Whether process ``name`` has exited; fails if it exited badly, or at all unless
        ``exited_ok`` (a server the clients still need)."""
        code = self.running[name].poll()
        if code is not None and (code != 0 or not exited_ok):
            raise RuntimeError(f"{name} exited with {code}; its log ends:\n{self.tail(name)}")
        return code is not None

    def kill_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def tail(self, name: str, lines: int = 30) -> str:
        text = self.log(name).read_text(errors="replace") if self.log(name).exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class FlowerFederation:
    """Flower's server and one process per client, on loopback with Flower's gRPC."""

    def __init__(self, venv: Path, inputs: Path, workdir: Path, clients: int) -> None:
        self.python, self.inputs, self.clients = venv / "bin" / "python", inputs, clients
        self.processes = Processes(workdir)
        self.out = workdir / "flower-rounds.json"
        self.port = 0

    def _argv(self, role: str, *extra: str) -> list[str]:
        where = ["--inputs", str(self.inputs), "--port", str(self.port)]
        return [str(self.python), str(APP), role, *where, *extra]

    def start(self) -> None:
        """Start the server; return once it listens and has evaluated the initial model."""
        self.port = free_port()
        argv = self._argv("server", "--out", str(self.out))
        self.processes.spawn("flower-server", argv, flower_env())
        ready, give_up = flower_app.ready_file(self.out), time.monotonic() + WAIT_LIMIT_S
        while not ready.exists():
            self.processes.check("flower-server")
            if time.monotonic() > give_up:
                raise RuntimeError(f"Flower's server never got ready:\n{self._server_log()}")
            time.sleep(POLL_S)

    def run(self) -> dict[str, Any]:
        """The clients, until the server has let them go; the server's round log."""
        for index in range(self.clients):
            argv = self._argv("client", "--index", str(index))
            self.processes.spawn(f"flower-client-{index}", argv, flower_env())
        self.processes.wait_all()
        if not self.out.exists():
            raise RuntimeError(f"Flower's server left no round log:\n{self._server_log()}")
        document: dict[str, Any] = json.loads(self.out.read_text())
        return document

    def abort(self) -> None:
        self.processes.kill_all()

    def _server_log(self) -> str:
        return self.processes.tail("flower-server")


def free_port() -> int:
    # start_server takes an address and does not report the port it bound, so ask the OS
    # for a free one first (another process could take it in between: then the run fails).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
