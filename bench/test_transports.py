"""Transport suite: one model down and one update up, over gRPC and over REST, per codec.

For every model x every codec in `fedgate.codecs.CODECS` (new codecs join automatically)
x transport (``grpc``, ``rest``) x direction, pytest-benchmark times one transfer: the
wall time of the client's `Transport` call, from the call until its answer. The server
is a real fedgate Gateway (gRPC + REST on loopback) in a separate process
(``bench_server.py``); the client side runs here, through ``fedgate.transport.connect``
with one connection per transport kept open, as a client keeps its own, in a process set
up as `fedgate client` sets up its own (`fedgate.run.process_memory`: freed memory kept
for the next transfer; the ``tcp`` ceiling's receiver runs here too, under the same).

- ``down``: ``fetch_model`` of the current version in the codec. The server encodes a
  version once per codec and serves every client from that cache, so each timed call is
  the transfer of cached bytes; the encoding is paid once in an untimed warm-up call.
  The client's decode is not included (the codec suite measures encode and decode).
- ``up``: ``submit_update`` of the model as an update in the codec: the bytes it came
  down in (exactly what a client sends with full weights, trained or not), or, for a
  codec that carries deltas only and sends whole models down in a dense codec it names
  (``topk-int8``: ``int8-zstd``), the codec's own encoding of the weights, which is the
  size of the update such a client sends. ``wire_codec`` says what the bytes are.
  An update the federation accepts closes the client's part in the round, and one it
  refuses from the header alone (a duplicate) is refused before its body is read, so
  neither can be timed over and over. Each timed upload is therefore the update with its
  first four bytes zeroed: the header passes every check, the adapter receives every
  byte and hands the body over, and the codec refuses it at its first bytes
  (``CodecError``, 400 / INVALID_ARGUMENT) in microseconds; the client stays free to
  upload again. So the timed call is the complete upload plus the server's answer,
  without the server's decode, check and fold of an accepted update: those are codec
  and aggregation costs (JSON decode of ResNet-50 takes tens of seconds and would swamp
  the transfer); the rounds suite times the full accepted path inside real rounds. (A
  second client that never reports keeps the round open.)

A ``tcp`` row per model and direction is the ceiling, measured in the same run: the raw
codec's bytes over plain loopback TCP between this process and a server process of its
own, sent from one buffer and received straight into fresh memory the receiver keeps, as
a transport must (``bench/tcp_ceiling.py``); the report states each transport's raw
throughput as a share of it.

Rows (one per model x codec x transport x direction): ``wall_s`` (median; also
``wall_min_s`` ... ``wall_rounds``), ``bytes`` (encoded bytes on the wire, the payload),
``fp32_bytes`` (the state dict as fp32 tensors), ``mb_s`` = bytes / wall (MB/s of encoded
bytes on the wire) and ``fp32_mb_s`` = fp32_bytes / wall (MB/s of model moved, which
credits a compressing codec with the bytes it saved); MB = 10^6 bytes. Rounds are sized
from one probe transfer to stay near the time budget; the slow combinations (JSON on the
resnets) get one round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from benchkit import BenchServer, EventLoop, Hosted, fp32_bytes, rate_mb_s
from tcp_ceiling import TcpCeiling

from fedgate.codecs import CODECS, TensorDict
from fedgate.core.config import RunConfig
from fedgate.core.messages import EncodedModel, JoinRequest, Task, TaskKind, Update
from fedgate.core.transport import Session, Transport
from fedgate.errors import CodecError
from fedgate.run.process_memory import keep_freed_memory
from fedgate.run.sim_config import NETWORK_TRANSPORTS
from fedgate.transport.connect import connect

TRANSPORTS = NETWORK_TRANSPORTS  # the server registry's, that clients can reach
CEILING = "tcp"  # plain loopback TCP moving the raw codec's bytes (bench/tcp_ceiling.py)
BUDGET_S = {False: 1.0, True: 0.2}
MAX_ROUNDS = {False: 10, True: 5}
# One round, opened by two clients, open for a day: the uploads happen inside it.
RUN = RunConfig(
    rounds=1,
    min_clients=2,
    round_deadline_s=86_400.0,
    heartbeat_interval_s=3_600.0,
    heartbeat_timeout_s=86_400.0,
)
POLL_S = 30.0

pytestmark = pytest.mark.timeout(3600)
T = TypeVar("T")


@dataclass
class ModelHost:
    """A hosted federation holding one model, and the client side the benchmarks use."""

    model: str
    hosted: Hosted
    session: Session
    task: Task  # the open round; `session` has already reported in it
    weights: TensorDict  # the model the federation serves, exactly (downloaded in raw)
    transports: dict[str, Transport]
    payloads: dict[str, bytes] = field(default_factory=dict)  # codec -> an update in it
    refused: dict[str, bytes] = field(default_factory=dict)  # codec -> its first bytes zeroed

    @property
    def fp32_bytes(self) -> int:
        return fp32_bytes(self.weights)

    def update(self, codec: str, payload: bytes) -> Update:
        return Update(
            round_id=self.task.round_id,
            model_version=self.task.model_version,
            num_examples=1,
            codec=codec,
            payload=payload,
        )


class Bench:
    """One event loop for every client call, and the model host currently served."""

    def __init__(self, server: BenchServer) -> None:
        self.server = server
        self.loop = EventLoop()
        self.host: ModelHost | None = None

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(call)

    def host_for(self, model: str) -> ModelHost:
        if self.host is None or self.host.model != model:
            self.close_host()
            hosted = self.server.start(model, RUN)
            self.host = self.run(open_host(model, hosted))
        return self.host

    def close_host(self) -> None:
        if self.host is not None:
            for transport in self.host.transports.values():
                self.run(transport.close())
            self.server.stop()
            self.host = None

    def close(self) -> None:
        self.close_host()
        self.loop.close()


async def open_host(model: str, hosted: Hosted) -> ModelHost:
    """Join, take the round's task, and download the model (see the docstring)."""
    transports = {name: connect(name, hosted.address(name)) for name in TRANSPORTS}
    setup = transports[TRANSPORTS[0]]  # any transport does for the untimed setup
    session = Session.from_ack(await setup.join(JoinRequest("bench", "raw", num_examples=1)))
    keeper = Session.from_ack(
        await setup.join(JoinRequest("keeps-the-round-open", "raw", num_examples=1))
    )
    await setup.next_task(keeper, 0.0)  # ready: a round opens only on clients that asked
    task = await setup.next_task(session, POLL_S)
    assert task.kind is TaskKind.TRAIN, task
    raw = await setup.fetch_model(session, task.model_version, "raw")
    return ModelHost(model, hosted, session, task, CODECS["raw"].decode(raw.payload), transports)


REFUSED_PREFIX = bytes(4)  # no codec's payload starts so: each refuses at its first bytes


def refused_at_decode(payload: bytes) -> bytes:
    """``payload`` with its first bytes zeroed: every byte crosses, the codec refuses it."""
    return REFUSED_PREFIX + payload[len(REFUSED_PREFIX) :]


def update_payload(host: ModelHost, codec: str, downloaded: EncodedModel | None) -> bytes:
    """The model as an update in ``codec``: the downloaded bytes when the model came down in
    that codec; else (a codec for deltas only, whose whole models travel in a dense codec)
    the codec's own encoding of the weights, the size of the update such a client sends."""
    if downloaded is not None and downloaded.codec == codec:
        return bytes(downloaded.payload)
    return CODECS[codec].encode(host.weights)


@pytest.fixture(scope="module", autouse=True)
def client_process() -> None:
    """This process's memory set up as every client process's (fedgate.run.client_runner),
    before any transfer, the ceiling's included."""
    keep_freed_memory()


@pytest.fixture(scope="module")
def bench(bench_server: BenchServer) -> Iterator[Bench]:
    state = Bench(bench_server)
    try:
        yield state
    finally:
        state.close()


async def upload_refused_at_decode(transport: Transport, session: Session, update: Update) -> None:
    try:
        await transport.submit_update(session, update)
    except CodecError:
        return  # every byte arrived and was handed over; the codec refused the first ones
    raise AssertionError("the server accepted an update whose first bytes were zeroed")


async def download(transport: Transport, host: ModelHost, codec: str) -> EncodedModel:
    return await transport.fetch_model(host.session, host.task.model_version, codec)


def transfer(
    bench: Bench, host: ModelHost, codec: str, transport: str, direction: str
) -> Callable[[], EncodedModel | None]:
    """The call to time: one download or one upload of the model in ``codec``."""
    link = host.transports[transport]
    if direction == "down":
        return lambda: bench.run(download(link, host, codec))
    if codec not in host.refused:  # made once per codec: both transports send the same
        host.refused[codec] = refused_at_decode(host.payloads[codec])
    payload = host.refused[codec]
    update = host.update(codec, payload)
    return lambda: bench.run(upload_refused_at_decode(link, host.session, update))


def timed(call: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def rounds_for(call: Callable[[], object], warm_s: float, quick: bool) -> int:
    """Rounds that keep a benchmark near its time budget. A warm-up over the budget already
    says one round (it may include the server's encoding, so it only bounds a transfer);
    else one more transfer, timed, is the probe."""
    probe = warm_s if warm_s >= BUDGET_S[quick] else timed(call)[1]
    return max(1, min(MAX_ROUNDS[quick], int(BUDGET_S[quick] / max(probe, 1e-9))))


@pytest.mark.parametrize("direction", ["down", "up"])
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("codec", list(CODECS))
def test_transfer(
    benchmark: Any,
    bench: Bench,
    model_name: str,
    codec: str,
    transport: str,
    direction: str,
    quick: bool,
) -> None:
    host = bench.host_for(model_name)
    if direction == "up" and codec not in host.payloads:
        downloaded = bench.run(download(host.transports[TRANSPORTS[0]], host, codec))
        host.payloads[codec] = update_payload(host, codec, downloaded)
    call = transfer(bench, host, codec, transport, direction)
    # Warm-up, untimed: the server's one encoding in this codec, this connection's first use.
    warm, warm_s = timed(call)
    if warm is not None:
        host.payloads.setdefault(codec, update_payload(host, codec, warm))
    rounds = rounds_for(call, warm_s, quick)
    benchmark.group = f"{model_name} {direction}"
    result = benchmark.pedantic(call, rounds=rounds, iterations=1)
    if warm is not None:  # down: every timed transfer brought the same bytes
        assert result is not None and result.payload == warm.payload
    sent = host.payloads[codec] if result is None else result.payload
    benchmark.extra_info.update(
        model=model_name,
        codec=codec,
        # What the bytes are encoded in: the codec, or (down) the dense codec it names.
        wire_codec=codec if result is None else result.codec,
        transport=transport,
        direction=direction,
        lossy=CODECS[codec].lossy,
        timing="wall",
        bytes=len(sent),
        fp32_bytes=host.fp32_bytes,
        **throughput(benchmark, len(sent), host.fp32_bytes),
    )


@pytest.fixture(scope="module")
def tcp() -> Iterator[TcpCeiling]:
    ceiling = TcpCeiling()
    try:
        yield ceiling
    finally:
        ceiling.close()


@pytest.mark.parametrize("direction", ["down", "up"])
def test_tcp_ceiling(
    benchmark: Any,
    bench: Bench,
    tcp: TcpCeiling,
    model_name: str,
    direction: str,
    quick: bool,
) -> None:
    host = bench.host_for(model_name)
    payload = memoryview(host.payloads.get("raw") or CODECS["raw"].encode(host.weights))

    def call() -> None:
        tcp.up(payload) if direction == "up" else tcp.down(len(payload))

    _, warm_s = timed(call)  # the connection's first use of this size, untimed
    rounds = rounds_for(call, warm_s, quick)
    benchmark.group = f"{model_name} {direction}"
    benchmark.pedantic(call, rounds=rounds, iterations=1)
    benchmark.extra_info.update(
        model=model_name,
        codec="raw",
        wire_codec="raw",
        transport=CEILING,
        direction=direction,
        lossy=False,
        timing="wall",
        bytes=len(payload),
        fp32_bytes=host.fp32_bytes,
        **throughput(benchmark, len(payload), host.fp32_bytes),
    )


def throughput(benchmark: Any, size: int, fp32_size: int) -> dict[str, float | None]:
    """MB/s of encoded bytes on the wire and of the fp32 model, at the median wall time."""
    stats = getattr(benchmark.stats, "stats", None)  # None when benchmarks are disabled
    wall = None if stats is None else float(stats.median)
    return {"mb_s": rate_mb_s(size, wall), "fp32_mb_s": rate_mb_s(fp32_size, wall)}
