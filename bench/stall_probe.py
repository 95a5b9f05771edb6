"""How long a codec can hold the server's event loop: a probe in the bench server process.

Issue 12: a client that sent JSON with ResNet-18 froze the server's event loop for
seconds (JSON parsing and list building hold the GIL, so a worker thread does not help);
healthy clients' heartbeats went unanswered, they were marked failed, rounds were
retried. `fedgate.core.offload` now runs GIL-bound codecs in worker processes. This
module measures the loop, where it matters, in the server process:

- `LoopProbe`: a task on the server's loop that sleeps 5 ms again and again and keeps the
  worst lateness (how much longer than 5 ms a sleep took: the longest the loop was held);
- this file as a script is the bench server (`bench_server.Host`) with a probe running
  beside each federation, and ``"offload": false`` in a start command to put the codecs
  back on threads (``CodecOffload(workers=0)``), as before, for comparison; its stop
  reply's results carry ``"stall"``: the probe's figures and the clients marked failed;
- `ProbedBenchServer` starts that script (the rounds suite's own `BenchServer` is not
  probed), and `EchoJsonClient` is the JSON client: it fetches the model in JSON and sends
  it straight back as its update. The server decodes and encodes exactly what a JSON
  client costs it, while the client itself spends no CPU on JSON: a real one holds its own
  process's GIL for tens of seconds per round (its own heartbeats stall: a client-side
  matter, not this probe's), and in the benchmark process it would stall every client.

``test_codec_stall`` (bench/test_rounds.py, group ``codec stall``) runs `stall_spec`: the
echo JSON client and two raw `FederatedClient`s, ResNet-18 on digits, gRPC, one round,
the default heartbeats, once with the offload (``offload="processes"``) and once without
(``"threads"``), each until the run ends or 20 minutes pass. Row fields: ``worst_stall_ms``
(the probe's worst lateness), ``late_ticks_100ms``, ``probe_ticks``, ``failed_clients``
(client records the server marked failed; ``failed_json_clients``,
``failed_healthy_clients``), ``rounds_completed``, ``round_attempts`` (retries included),
``json_updates`` / ``json_joins`` (the echo client's), ``wall_s`` and ``federation_s``.
Quick runs use the CNN with every JSON payload offloaded, and record no row.

Measured 2026-12-01 on the 2-core machine under a load average of 14 to 30 (other work):

| offload | worst stall | late ticks > 100 ms | failed (healthy / json) | rounds | attempts |
|---|---:|---:|---:|---:|---:|
| processes | 0.84 s | 88 | 0 / 0 | 1 in 165 s | 1 |
| threads | 83.1 s | 230 | 28 / 15 | 0 in 20 min | 28 |

That 0.84 s was the adapters' copies of whole bodies on the loop (an upload's chunks
joined into one ``bytes``: 260 MB of JSON, ~0.5 s of memcpy under the GIL). They now keep
the chunks and join them on a thread, where ``bytes.join`` lets go of the GIL, and send
models in slices; the codec workers run at a lower CPU priority
(`fedgate.core.offload.WORKER_NICENESS`). Measured again 2026-12-01, same machine, load
average 1 to 2.5, with processes, one run each: worst stall 150 ms before these changes;
27, 67 and 72 ms after the adapters' change; 28, 36 and 70 ms with niceness 5 as well
(21 to 28 ms in four runs with 10); with two busy processes beside, 116 ms without the
niceness and 50 ms with 5. No client failed in any run; 1 round in 1 attempt each time.
What the probe caught next was the raw clients' updates: `fedgate.codecs.container.unpack`
copied a 45 MB raw body into a private ``bytearray`` on a worker thread, holding the GIL
(~25 ms unloaded, longer under load). It copies with numpy now, which lets go of the GIL:
the committed report's run (``fedgate bench rounds --select "... or (codec_stall and
processes)"``, bench/reports/2026-12-01-speed) measured 21.7 ms worst, no client failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench_server import Host, serve
from benchkit import BenchServer, EventLoop, Hosted
from federations import FederationSpec, make_trainers

from fedgate.core.client import FederatedClient
from fedgate.core.config import RunConfig
from fedgate.core.data import Dataset
from fedgate.core.federation import Federation
from fedgate.core.membership import SESSION_LOST
from fedgate.core.messages import ClientState, FederationStatus, JoinRequest, TaskKind, Update
from fedgate.core.offload import DEFAULT_WORKERS, MIN_OFFLOAD_BYTES, CodecOffload
from fedgate.core.ports import RunStore
from fedgate.core.transport import Session, Transport
from fedgate.errors import FedgateError
from fedgate.run.sim_config import NETWORK_TRANSPORTS
from fedgate.transport.connect import connect

TICK_S = 0.005
ECHO_NAME = "echo-json"


class LoopProbe:
    """Sleeps `TICK_S` on the running loop again and again; keeps the worst lateness."""

    def __init__(self) -> None:
        self.worst_s = 0.0
        self.ticks = 0
        self.late_100ms = 0  # ticks that came more than 100 ms late
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stall-probe")

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(TICK_S)
            late = time.perf_counter() - started - TICK_S
            self.worst_s = max(self.worst_s, late)
            self.ticks += 1
            self.late_100ms += late > 0.1

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return {
            "worst_stall_ms": self.worst_s * 1000,
            "ticks": self.ticks,
            "late_ticks_100ms": self.late_100ms,
        }


def failed_by_codec(status: FederationStatus) -> dict[str, int]:
    """Client records the server marked failed (a client that came back is a new record)."""
    return dict(Counter(c.codec for c in status.clients if c.state is ClientState.FAILED))


class ProbedHost(Host):
    """The bench server's host with a `LoopProbe` beside each federation."""

    def __init__(self) -> None:
        super().__init__()
        self.offload = True
        self.min_bytes = MIN_OFFLOAD_BYTES
        self.probe: LoopProbe | None = None

    async def start(self, command: dict[str, Any]) -> dict[str, Any]:
        self.offload = bool(command.get("offload", True))
        self.min_bytes = int(command.get("min_bytes", MIN_OFFLOAD_BYTES))
        reply = await super().start(command)
        self.probe = LoopProbe()
        self.probe.start()
        return reply

    def federation(
        self, model: str, dataset: str | None, run: RunConfig, store: RunStore
    ) -> Federation:
        federation = super().federation(model, dataset, run, store)
        # Its own offload in place of the default (not started: pools start on first use);
        # without, every codec is back on threads, as before issue 12.
        workers = DEFAULT_WORKERS if self.offload else 0
        offload = CodecOffload(workers, min_bytes=self.min_bytes)
        federation.offload = federation.models.offload = offload
        return federation

    async def stop(self) -> dict[str, Any]:
        running, probe, self.probe = self.running, self.probe, None
        figures = await probe.stop() if probe is not None else {}
        status = running.gateway.federation.status() if running is not None else None
        reply = await super().stop()
        if status is not None:
            failed = failed_by_codec(status)
            reply["results"]["stall"] = {**figures, "offload": self.offload, "failed": failed}
        return reply


class ProbedBenchServer(BenchServer):
    """This file as the bench server process (`BenchServer`'s protocol, probed)."""

    def __init__(self, log_path: Path) -> None:
        super().__init__(log_path, threads=None, script=Path(__file__))  # torch's default

    def start_probed(self, spec: FederationSpec, offload: bool, min_bytes: int) -> Hosted:
        """Host ``spec``'s federation, its GIL-bound codecs on worker processes for payloads
        of ``min_bytes`` or more (``offload``), or every codec on threads."""
        command = {"op": "start", "model": spec.model, "dataset": spec.dataset}
        options = {"offload": offload, "min_bytes": min_bytes}
        reply = self._call({**command, "run": asdict(spec.run_config()), **options})
        return Hosted(
            reply["grpc_port"],
            reply["http_port"],
            reply["admin_token"],
            reply["run_id"],
            reply["addresses"],
        )


class EchoJsonClient:
    """Joins in JSON and, for every TRAIN task, sends the model it fetched straight back.

    Heartbeats like `FederatedClient`, and joins again when the server has dropped it."""

    def __init__(self, link: Transport, num_examples: int = 100) -> None:
        self.link, self.num_examples = link, num_examples
        self.updates = 0
        self.joins = 0
        self._session: Session | None = None

    async def run(self) -> None:
        beats = asyncio.create_task(self._heartbeats())
        try:
            while not await self._step():
                pass
        finally:
            beats.cancel()
            if self._session is not None:
                with contextlib.suppress(FedgateError):
                    await self.link.leave(self._session)

    async def join(self) -> Session:
        ack = await self.link.join(JoinRequest(ECHO_NAME, "json", self.num_examples))
        self.joins += 1
        self._session = Session.from_ack(ack)
        return self._session

    async def _step(self) -> bool:
        """One task; True when the run is over."""
        session = self._session or await self.join()
        try:
            task = await self.link.next_task(session, 30.0)
            if task.kind is TaskKind.TRAIN:
                model = await self.link.fetch_model(session, task.model_version, "json")
                payload = bytes(model.payload)
                update = Update(
                    task.round_id, task.model_version, self.num_examples, "json", payload
                )
                await self.link.submit_update(session, update)
                self.updates += 1
        except SESSION_LOST:
            self._session = None  # dropped (failed): join again, as a client would
            return False
        except FedgateError:  # a stale round, a refusal: ask for the next task
            return False
        return task.kind is TaskKind.STOP

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            if self._session is not None:
                with contextlib.suppress(FedgateError):
                    await self.link.heartbeat(self._session)


@dataclass(frozen=True)
class StallRun:
    """One probed federation: the server's figures and what the clients saw."""

    stall: dict[str, Any]
    results: dict[str, Any]
    echo_updates: int
    echo_joins: int
    wall_s: float


def run_probed(
    server: ProbedBenchServer,
    loop: EventLoop,
    spec: FederationSpec,
    dataset: Dataset,
    offload: bool,
    limit_s: float,
    min_bytes: int = MIN_OFFLOAD_BYTES,
) -> StallRun:
    """``spec`` with its first client an `EchoJsonClient` and the rest `FederatedClient`s
    in ``spec.codec``, until the run ends or ``limit_s`` passes."""
    assert spec.transport in NETWORK_TRANSPORTS
    started = time.perf_counter()
    address = server.start_probed(spec, offload, min_bytes).address(spec.transport)
    links: list[Transport] = []
    echoes: list[EchoJsonClient] = []

    async def play() -> None:  # connections are made on the loop that uses them
        echoes.append(EchoJsonClient(_linked(links, spec.transport, address)))
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(echoes[0].run())]
        for index, trainer in enumerate(make_trainers(dataset, spec)[1:], start=1):
            link = _linked(links, spec.transport, address)
            client = FederatedClient(link, trainer, f"bench-{index}", spec.codec)
            tasks.append(asyncio.create_task(client.run()))
        try:
            async with asyncio.timeout(limit_s):
                await asyncio.gather(*tasks)
        except TimeoutError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for link in links:
                await link.close()

    try:
        loop.run(play())
    finally:
        results = server.stop()
    wall = time.perf_counter() - started
    echo = echoes[0]
    return StallRun(results["stall"], results, echo.updates, echo.joins, wall)


def _linked(links: list[Transport], transport: str, address: str) -> Transport:
    link = connect(transport, address)
    links.append(link)
    return link


def stall_spec(quick: bool) -> FederationSpec:
    """The probed federation: one JSON client (`EchoJsonClient`) and healthy raw clients
    on ResNet-18 (quick: the CNN), gRPC, one round, the default heartbeats (every 2 s,
    failed after 10 s of silence), a deadline no codec work comes near."""
    if quick:
        return FederationSpec("grpc", "raw", clients=2, rounds=1)
    return FederationSpec(
        "grpc", "raw", clients=3, rounds=1, model="resnet18", round_deadline_s=900
    )


def stall_info(run: StallRun, spec: FederationSpec, offload: bool) -> dict[str, Any]:
    """A probed run as a bench row's fields."""
    failed: dict[str, int] = run.stall["failed"]
    return {
        "transport": spec.transport,
        "codec": "json",  # the client whose codec is probed; the others send spec.codec
        "healthy_codec": spec.codec,
        "model": spec.model,
        "dataset": spec.dataset,
        "clients": spec.clients,
        "offload": "processes" if offload else "threads",
        "timing": "federation",
        "worst_stall_ms": run.stall["worst_stall_ms"],
        "late_ticks_100ms": run.stall["late_ticks_100ms"],
        "probe_ticks": run.stall["ticks"],
        "failed_clients": sum(failed.values()),
        "failed_json_clients": failed.get("json", 0),
        "failed_healthy_clients": sum(n for codec, n in failed.items() if codec != "json"),
        "rounds_completed": len(run.results["rounds"]),
        "round_attempts": len(run.results["rounds"]) + len(run.results["attempts"]),
        "json_updates": run.echo_updates,
        "json_joins": run.echo_joins,
        "wall_s": run.wall_s,
    }


@contextlib.contextmanager
def probed_server(log_path: Path) -> Iterator[ProbedBenchServer]:
    server = ProbedBenchServer(log_path)
    try:
        yield server
    finally:
        server.close()


if __name__ == "__main__":
    asyncio.run(serve(ProbedHost()))
