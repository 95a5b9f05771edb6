"""Flower's side of the flower suite, as the benchmark process (fedgate's ``.venv``) sees it.

Flower runs in processes of its own under ``.venv-flower``'s Python (``make flower-env``;
``flower/flower_app.py`` says why, and what its server measures). From here:

- `flower_venv` / `flower_unavailable`: which virtualenv (``$FEDGATE_FLOWER_VENV``, else
  ``.venv-flower`` in the checkout), and why it cannot run Flower, if it cannot;
- `write_inputs`: the federation fedgate runs, as files for Flower's processes: the same
  initial weights, the same clients' parts of the same split (taken with fedgate's
  `build_trainer`, as ``fedgate client --index i`` takes them), the same held-out split,
  hyper-parameters and batch-order seeds;
- `FlowerFederation` (legacy: ``start_server`` / ``start_client``) and `FlowerDeployment`
  (``flower-superlink``, ``flower-supernode`` per client, ``flwr run`` of the Flower App in
  ``flower/``): ``start`` runs the long-lived part and returns once it is ready
  (untimed), ``run`` runs the federation and returns the strategy's round log once the
  run is over (the call pytest-benchmark times).

`Processes` (spawn, wait, kill, log tails) serves fedgate's side of the suite as well.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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
STOP_GRACE_S = 10.0
# A whole federation, 10 clients x 10 rounds, on a loaded machine: Flower's deployment
# starts a ClientApp process (torch imported anew) per client and round. Below the suite's
# pytest timeout, so that a hang fails here, with the processes' logs.
RUN_LIMIT_S = 3000.0
LEGACY, DEPLOYMENT = "legacy", "deployment"  # the two ways the suite runs Flower
SUPERLINK = "fedgate-bench"  # flwr run's name for the SuperLink connection
NO_INSTALL = "--disable-runtime-dependency-installation"
NODE_ID = "SuperNode ID:"  # a SuperNode logs it once registered with the SuperLink
RUN_FINISHED = "Finished task"  # the SuperLink logs it once the ServerApp's process is done


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

    def wait_all(self, limit_s: float = RUN_LIMIT_S, names: Sequence[str] = ()) -> None:
        """Until every process (or those ``names``) has exited; one failing, or outliving
        the limit, fails it."""
        give_up = time.monotonic() + limit_s
        while True:
            late = [n for n in names or self.running if not self.check(n, exited_ok=True)]
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
        # SIGTERM first: Flower's SuperLink and SuperNodes stop the SuperExec they started;
        # SIGKILL if that hangs. Their grandchildren (SuperExec, ServerApp, ClientApps;
        # some in sessions of their own) outlive them when cut off mid-run, so they are
        # noted first and stopped after, by process id.
        spawned = descendants([p.pid for p in self.running.values() if p.poll() is None])
        for process in self.running.values():
            if process.poll() is None:
                process.terminate()
        for process in self.running.values():
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        stop_processes(spawned)

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def tail(self, name: str, lines: int = 30) -> str:
        text = self.log(name).read_text(errors="replace") if self.log(name).exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class FlowerFederation:
    """Flower's legacy server and one process per client, on loopback with Flower's gRPC."""

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
        ready = flower_app.ready_file(self.out)
        wait_until(
            ready.exists, "Flower's server never got ready", self.processes, ["flower-server"]
        )

    def run(self) -> dict[str, Any]:
        """The clients, until the server has let them go; the server's round log."""
        for index in range(self.clients):
            argv = self._argv("client", "--index", str(index))
            self.processes.spawn(f"flower-client-{index}", argv, flower_env())
        self.processes.wait_all()
        if not self.out.exists():
            raise RuntimeError(f"Flower's server left no round log:\n{self._server_log()}")
        return read_log(self.out)

    def abort(self) -> None:
        self.processes.kill_all()

    def _server_log(self) -> str:
        return self.processes.tail("flower-server")


class FlowerDeployment:
    """Flower as its users deploy it: ``flower-superlink``, one ``flower-supernode`` per
    client (``--node-config partition-id=<i>``) and ``flwr run`` of the Flower App in
    ``flower/`` (``deployment_app.py``, ``pyproject.toml``), all insecure on loopback.

    ``start`` (untimed) starts the SuperLink and the SuperNodes and returns once every
    SuperNode has registered (its log names its node id); ``run`` submits the run with
    ``flwr run`` and returns the ServerApp's round log once written (after its last round)
    and the SuperLink has logged the ServerApp's task finished: as a legacy run ends when
    the server's process has exited.
    Every process runs with ``FLWR_HOME`` in the work directory: ``flwr run`` finds the
    SuperLink there (``config.toml``), the SuperLink and SuperNodes install the app there.
    """

    def __init__(self, venv: Path, inputs: Path, workdir: Path, clients: int) -> None:
        self.bin, self.inputs, self.clients = venv / "bin", inputs, clients
        self.processes = Processes(workdir)
        self.out = workdir / "flower-rounds.json"
        self.home = workdir / "flwr-home"
        self.port = 0

    def env(self) -> dict[str, str]:
        # The SuperLink and SuperNodes start ``flower-superexec`` and the app processes by
        # name, from PATH: the virtualenv's.
        path = os.pathsep.join([str(self.bin), os.environ.get("PATH", "")])
        return {**flower_env(), "FLWR_HOME": str(self.home), "PATH": path}

    def superlink_argv(self) -> list[str]:
        # The SuperLink would `uv sync` the app's dependencies: nothing downloads here,
        # and .venv-flower holds them already.
        where = ["--host", "127.0.0.1", "--port", str(self.port)]
        return [str(self.bin / "flower-superlink"), "--insecure", *where, NO_INSTALL]

    def supernode_argv(self, index: int, port: int) -> list[str]:
        node = ["--node-config", f"partition-id={index} num-partitions={self.clients}"]
        link = ["--superlink", f"127.0.0.1:{self.port}"]
        own = ["--host", "127.0.0.1", "--port", str(port)]  # its ClientApps' runtime API
        return [str(self.bin / "flower-supernode"), "--insecure", *link, *own, *node]

    def run_argv(self) -> list[str]:
        config = f"inputs={json.dumps(str(self.inputs))} out={json.dumps(str(self.out))}"
        return [str(self.bin / "flwr"), "run", str(APP.parent), SUPERLINK, "--run-config", config]

    def connection(self) -> str:
        """``flwr run``'s SuperLink connection, as ``$FLWR_HOME/config.toml`` holds it."""
        address = f"127.0.0.1:{self.port}"
        return (
            f'[superlink]\ndefault = "{SUPERLINK}"\n\n'
            f'[superlink.{SUPERLINK}]\naddress = "{address}"\ninsecure = true\n'
        )

    def start(self) -> None:
        self.port, *node_ports = free_ports(1 + self.clients)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text(self.connection())
        self.processes.spawn("flower-superlink", self.superlink_argv(), self.env())
        nodes = [f"flower-supernode-{index}" for index in range(self.clients)]
        for index, name in enumerate(nodes):
            self.processes.spawn(name, self.supernode_argv(index, node_ports[index]), self.env())

        def registered() -> bool:
            return all(NODE_ID in self.processes.log(name).read_text() for name in nodes)

        wait_until(registered, "SuperNodes not registered", self.processes, self.daemons)

    @property
    def daemons(self) -> list[str]:
        return [name for name in self.processes.running if name != "flwr-run"]

    def run(self) -> dict[str, Any]:
        self.processes.spawn("flwr-run", self.run_argv(), self.env())
        self.processes.wait_all(names=["flwr-run"])  # returns once the run is submitted
        link_log = self.processes.log("flower-superlink")

        def finished() -> bool:  # the log written, and the ServerApp's task over
            return self.out.exists() and RUN_FINISHED in link_log.read_text(errors="replace")

        failure = "the ServerApp did not finish"
        wait_until(finished, failure, self.processes, self.daemons, RUN_LIMIT_S)
        return read_log(self.out)

    def abort(self) -> None:
        self.processes.kill_all()


def read_log(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def wait_until(
    done: Callable[[], bool],
    failure: str,
    processes: Processes,
    alive: Sequence[str],
    limit_s: float = WAIT_LIMIT_S,
) -> None:
    """Poll ``done`` while the processes ``alive`` must keep running."""
    give_up = time.monotonic() + limit_s
    while not done():
        for name in alive:
            processes.check(name)
        if time.monotonic() > give_up:
            tails = "\n".join(f"{name}:\n{processes.tail(name)}" for name in alive[:2])
            raise RuntimeError(f"{failure} within {limit_s:.0f} s; logs end:\n{tails}")
        time.sleep(POLL_S)


def descendants(roots: Sequence[int]) -> dict[int, str]:
    """Every process below ``roots`` (Linux ``/proc``; none elsewhere), by process id,
    with its start time (to know it again: ids are reused)."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        pid = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)  # fields[1]: the parent's id
        started[pid] = fields[19]  # field 22 of stat: start time since boot
    found: dict[int, str] = {}
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = started[child]
                todo.append(child)
    return found


def stop_processes(spawned: Mapping[int, str]) -> None:
    """SIGTERM, then after a grace SIGKILL, to each of ``spawned`` still running as noted."""
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid in spawned if still_running(pid, spawned[pid])]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal_number)
        give_up = time.monotonic() + STOP_GRACE_S
        while alive and time.monotonic() < give_up:
            time.sleep(POLL_S * 5)
            alive = [pid for pid in alive if still_running(pid, spawned[pid])]
        if not alive:
            return


def still_running(pid: int, started: str) -> bool:
    """Whether ``pid`` still runs, as the process started at ``started`` (not a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[19] == started and fields[0] != "Z"


def free_port() -> int:
    [port] = free_ports(1)
    return port


def free_ports(count: int) -> list[int]:
    # Flower's servers take an address and do not report the port they bound, so ask the
    # OS for free ones first, all held open at once so that they differ (another process
    # could take one before Flower binds it: then the run fails).
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
