"""GIL-bound codecs (JSON) decode and encode in worker processes: the same tensors, the same
refusals, an event loop that keeps ticking meanwhile, and no process left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch

from fedgate.codecs import DecodeLimits, codecs_with, get_codec
from fedgate.codecs.base import GilBoundCodec, holds_gil
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import Update
from fedgate.core.offload import WORKER_NICENESS, CodecOffload
from fedgate.errors import FedgateError, ServerError
from tests.conftest import join, until
from tests.hostile_payloads import attacks

T = TypeVar("T")
JSON = get_codec("json")
TICK_S = 0.005


def model(rows: int = 4) -> dict[str, torch.Tensor]:
    """Every kind of tensor the JSON codec carries, ``rows`` x 1000 floats the largest."""
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(rows, 1000, generator=g),
        "d": torch.randn(3, generator=g, dtype=torch.float64),
        "h": torch.randn(5, generator=g).to(torch.bfloat16),
        "steps": torch.tensor(7, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "none": torch.empty(0, 3),
    }


@pytest.fixture(scope="module")
def offload() -> Iterator[CodecOffload]:
    """A pool that takes every JSON payload, however small; started once for the module."""
    pool = CodecOffload(min_bytes=0)
    pool.warm()
    yield pool
    pool.close()


def refusal(error: BaseException) -> tuple[type[BaseException], str, str, dict[str, Any]]:
    assert isinstance(error, FedgateError), repr(error)
    return type(error), error.code, str(error), dict(vars(error))


async def refused(work: Awaitable[object]) -> tuple[type[BaseException], str, str, dict[str, Any]]:
    with pytest.raises(FedgateError) as info:
        await work
    return refusal(info.value)


def assert_identical(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert torch.equal(a[name], b[name]), name


def test_json_declares_itself_gil_bound_and_the_fast_codecs_do_not() -> None:
    assert codecs_with(GilBoundCodec) == ["json"]
    assert holds_gil(JSON) and not holds_gil(get_codec("raw"))
    assert not CodecOffload().offloads(get_codec("raw"), 1 << 30)  # raw stays on threads


async def test_a_json_update_decoded_in_a_worker_is_bit_identical(offload: CodecOffload) -> None:
    weights = model(rows=200)
    payload, limits = JSON.encode(weights), DecodeLimits.for_model(weights)
    assert offload.offloads(JSON, len(payload))
    assert_identical(await offload.decode(JSON, payload, limits), JSON.decode(payload, limits))
    assert_identical(await offload.decode(JSON, payload, limits), weights)
    # and a model encoded in a worker is the bytes encoding here gives
    encoded = await asyncio.to_thread(offload.runner(JSON).encode, weights)
    assert encoded == payload


def hostile_documents(weights: Mapping[str, torch.Tensor], tmp: Path) -> dict[str, bytes]:
    """JSON bodies a server must refuse, beside the generic payload attacks."""
    document = json.loads(JSON.encode(weights))
    shapes, nesting = json.loads(json.dumps(document)), json.loads(json.dumps(document))
    shapes["tensors"][0]["shape"] = [3, 1000]  # not the model's layout
    nesting["tensors"][0]["data"] = nesting["tensors"][0]["data"][:-1]  # data not as shaped
    bodies = {
        name: body for name, (body, _codes) in attacks("json", weights, tmp / "pwned").items()
    }
    bodies["wrong-layout"] = json.dumps(shapes).encode()
    bodies["bad-nesting"] = json.dumps(nesting).encode()
    bodies["unexpected-tensor"] = JSON.encode({**weights, "extra": torch.zeros(2)})
    bodies["deep"] = b"[" * 100_000 + b"]" * 100_000
    bodies["not-json"] = b"\xff\xfe garbage"
    return bodies


async def test_hostile_json_is_refused_alike_in_a_worker(
    offload: CodecOffload, tmp_path: Path
) -> None:
    weights = model()
    limits = DecodeLimits.for_model(weights)
    bodies = hostile_documents(weights, tmp_path)
    assert {"huge-tensor", "dims-beyond-int64", "pickle", "truncated"} <= set(bodies)
    for name, body in bodies.items():
        here = await refused(asyncio.to_thread(JSON.decode, body, limits))
        there = await refused(offload.decode(JSON, body, limits))
        assert there == here, name
    assert not (tmp_path / "pwned").exists()


async def play_round(federation: Federation, bodies: dict[str, bytes]) -> list[Any]:
    """Two clients: ``a`` sends each hostile body, then both send good updates; returns
    each refusal, and the model the round publishes."""
    federation.start()
    a, b = await join(federation, "a", "json"), await join(federation, "b", "json")
    task, task_b = await a.train_task(), await b.train_task()
    seen: list[Any] = []
    for body in bodies.values():
        update = Update(task.round_id, task.model_version, 10, "json", body)
        seen.append(await refused(federation.submit_update(a.client_id, a.token, update)))
    await a.send(task, model(rows=4) | {"steps": torch.tensor(9)})
    doubled = {k: v * 2 if v.is_floating_point() else v for k, v in model(rows=4).items()}
    await b.send(task_b, doubled, num_examples=30)
    await until(lambda: federation.models.version == 1, within_s=30.0)
    return [*seen, federation.models.current]


async def test_a_federation_refuses_and_folds_alike_with_and_without_workers(
    tmp_path: Path,
) -> None:
    weights = model()
    nan = {**weights, "w": weights["w"].clone()}
    nan["w"][1, 2] = float("nan")
    bodies = hostile_documents(weights, tmp_path) | {"nan": JSON.encode(nan)}
    results = []
    for workers in (2, 0):
        config = RunConfig(rounds=1, min_clients=2, round_deadline_s=60.0)
        offload = CodecOffload(workers, min_bytes=0)
        federation = Federation(weights, config, offload=offload)
        try:
            results.append(await play_round(federation, bodies))
            assert bool(offload.worker_pids()) == (workers > 0)  # the pool did the decoding
        finally:
            await federation.close()
    pooled, threaded = results
    assert pooled[:-1] == threaded[:-1]
    assert pooled[-2][1] == "non_finite_update"
    assert_identical(pooled[-1], threaded[-1])


async def worst_lateness(work: Awaitable[T]) -> tuple[float, T]:
    """The longest a 5 ms sleep on this loop overslept while ``work`` ran, and its result."""
    worst = 0.0
    done = False

    async def tick() -> None:
        nonlocal worst
        while not done:
            started = time.perf_counter()
            await asyncio.sleep(TICK_S)
            worst = max(worst, time.perf_counter() - started - TICK_S)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    try:
        result = await work
    finally:
        done = True
        await ticker
    return worst, result


async def test_the_loop_keeps_ticking_while_a_large_json_update_decodes(
    offload: CodecOffload,
) -> None:
    weights = model(rows=600)  # 12 MB of JSON: seconds of GIL in a thread
    payload, limits = JSON.encode(weights), DecodeLimits.for_model(weights)
    threaded, _ = await worst_lateness(asyncio.to_thread(JSON.decode, payload, limits))
    pooled, tensors = await worst_lateness(offload.decode(JSON, payload, limits))
    assert_identical(tensors, weights)
    # generous bounds: a correctness test on a shared machine, not a benchmark
    assert pooled < 0.5, (pooled, threaded)
    assert pooled < threaded / 2, (pooled, threaded)


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"  # exited; its parent (the forkserver) reaps it


def spooled(spool: str) -> list[str] | None:
    """The files in a spool directory; None once it is gone."""
    path = Path(spool)
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else None


async def test_a_federation_encodes_json_in_its_workers_and_stops_them_when_closed() -> None:
    weights = model()
    federation = Federation(weights, offload=CodecOffload(min_bytes=0))
    assert federation.models.offload is federation.offload
    player = await join(federation, "a", "json")
    fetched = await federation.fetch_model(player.client_id, player.token, 0)
    assert fetched.payload == JSON.encode(weights)
    pids, spool = federation.offload.worker_pids(), federation.offload.spool
    assert pids and spooled(spool) == []  # each call's files are gone once it returns
    await federation.close()
    await until(lambda: all(gone(pid) for pid in pids), within_s=10.0)
    assert federation.offload.worker_pids() == [] and spooled(spool) is None
    # a late call after close still works, in a thread: no pool is started again
    limits = DecodeLimits.for_model(weights)
    assert_identical(await federation.offload.decode(JSON, fetched.payload, limits), weights)
    assert federation.offload.worker_pids() == []


async def test_a_dead_worker_fails_its_call_as_the_servers_fault_and_is_replaced() -> None:
    offload = CodecOffload(workers=1, min_bytes=0)
    try:
        [pid] = offload.warm()
        os.kill(pid, signal.SIGKILL)
        await until(lambda: gone(pid), within_s=10.0)
        await asyncio.sleep(0.2)  # for the pool to notice
        weights = model()
        payload, limits = JSON.encode(weights), DecodeLimits.for_model(weights)
        with pytest.raises(ServerError, match="codec worker process died"):
            await offload.decode(JSON, payload, limits)
        assert_identical(await offload.decode(JSON, payload, limits), weights)
        assert offload.worker_pids() not in ([], [pid])
    finally:
        offload.close()


def test_the_workers_yield_the_cpu_to_the_server(offload: CodecOffload) -> None:
    here = os.getpriority(os.PRIO_PROCESS, 0)
    niceness = [os.getpriority(os.PRIO_PROCESS, pid) for pid in offload.worker_pids()]
    assert niceness == [min(here + WORKER_NICENESS, 19)] * offload.workers
