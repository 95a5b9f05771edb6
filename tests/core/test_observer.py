"""The `Observer` port: a federation tells its observers of every round, byte and timed
piece of work, the same as its own history and ledger; an observer that fails cannot
break the run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import RoundRecord, Traffic
from fedgate.core.observer import NULL_OBSERVER, Observable, Observer, Observers
from fedgate.core.training import EvalResult
from tests.conftest import join, tiny_model, until


@dataclass
class Recording:
    rounds: list[RoundRecord] = field(default_factory=list)
    by_transport: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_codec: Counter[tuple[str, str]] = field(default_factory=Counter)
    work: Counter[tuple[str, str]] = field(default_factory=Counter)

    def round_closed(self, record: RoundRecord) -> None:
        self.rounds.append(record)

    def traffic(self, transport: str, codec: str, up: int, down: int) -> None:
        for name, table in ((transport, self.by_transport), (codec, self.by_codec)):
            table[name, "up"] += up
            table[name, "down"] += down

    def decoded(self, codec: str, seconds: float) -> None:
        assert seconds >= 0
        self.work["decoded", codec] += 1

    def encoded(self, codec: str, seconds: float) -> None:
        assert seconds >= 0
        self.work["encoded", codec] += 1

    def aggregated(self, strategy: str, seconds: float) -> None:
        assert seconds >= 0
        self.work["aggregated", strategy] += 1

    def evaluated(self, seconds: float) -> None:
        assert seconds >= 0
        self.work["evaluated", ""] += 1

    def evaluation_waited(self, seconds: float) -> None:
        assert seconds >= 0
        self.work["evaluation_waited", ""] += 1


class Broken(Recording):
    """Raises at every call."""

    def round_closed(self, record: RoundRecord) -> None:
        raise RuntimeError("broken")

    def traffic(self, transport: str, codec: str, up: int, down: int) -> None:
        raise RuntimeError("broken")

    def decoded(self, codec: str, seconds: float) -> None:
        raise RuntimeError("broken")

    def aggregated(self, strategy: str, seconds: float) -> None:
        raise RuntimeError("broken")

    def evaluated(self, seconds: float) -> None:
        raise RuntimeError("broken")


def halfway(weights: Mapping[str, torch.Tensor]) -> EvalResult:
    return EvalResult(loss=0.5, accuracy=0.5, num_examples=1)


def as_table(counts: Counter[tuple[str, str]]) -> dict[str, Traffic]:
    names = {name for name, _ in counts}
    return {n: Traffic(counts[n, "up"], counts[n, "down"]) for n in names}


async def test_observers_hear_what_history_and_the_ledger_keep() -> None:
    recording = Recording()
    config = RunConfig(rounds=2, min_clients=2, round_deadline_s=5.0)
    federation = Federation(tiny_model(), config, observer=recording, evaluator=halfway)
    federation.observers.add(Broken())  # logged; the others still hear everything
    assert isinstance(federation, Observable)
    run = federation.start()
    players = [await join(federation, "a", "raw"), await join(federation, "b", "msgpack")]
    for round_number in (1, 2):
        for player in players:
            task = await player.train_task()
            await player.send(task, tiny_model(float(round_number)))
        await until(lambda n=round_number: len(federation.history) >= n)
    await run
    status = federation.status()
    assert recording.rounds == list(status.history)
    assert as_table(recording.by_transport) == dict(status.bytes_by_transport)
    assert as_table(recording.by_codec) == dict(status.bytes_by_codec)
    assert recording.work["decoded", "raw"] == recording.work["decoded", "msgpack"] == 2
    assert recording.work["aggregated", "fedavg"] == 2
    assert recording.work["evaluated", ""] == 2  # each published model
    assert recording.work["evaluation_waited", ""] == 1  # round 2's close, for round 1's
    await federation.close()


def test_the_defaults_observe_nothing() -> None:
    quiet: Observer = NULL_OBSERVER
    quiet.traffic("grpc", "raw", 1, 2)
    hub = Observers(None)
    assert len(hub) == 0
    recording = Recording()
    hub.add(recording)
    hub.add(recording)  # once only
    hub.traffic("grpc", "raw", 1, 2)
    assert recording.by_transport["grpc", "up"] == 1
    hub.remove(recording)
    assert len(hub) == 0
