"""What the core reports as it works, for whoever measures it: the `Observer` port.

The core knows nothing of Prometheus or any other metrics library (the layering forbids
it); it calls an `Observer` at the few points worth measuring, and the web side
(`fedgate.web.metrics`) implements one. What can be read at any moment (clients by state,
the round, the model version) is not reported: a metrics exporter reads it from
`Federation.status()` when it is scraped.

Every call is made on the event loop's thread, after the fact, and must be cheap and
never raise: an observer watches the run, it must not be able to break it. `Observers`
fans the calls out and keeps a failing observer from reaching the core.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

from fedgate.core.messages import RoundRecord

log = logging.getLogger("fedgate.observer")


class Observer(Protocol):
    """Told what happened; every method returns at once and does not raise."""

    def round_closed(self, record: RoundRecord) -> None:
        """A round attempt ended (completed, retried or abandoned), as history keeps it."""

    def traffic(self, transport: str, codec: str, up: int, down: int) -> None:
        """A payload crossed ``transport`` in ``codec``: the same bytes, counted the same
        way, as the federation's traffic ledger (status and the results document)."""

    def decoded(self, codec: str, seconds: float) -> None:
        """An update's body was decoded from ``codec`` (and checked) in ``seconds``."""

    def encoded(self, codec: str, seconds: float) -> None:
        """A model version was encoded in ``codec`` for clients to fetch."""

    def aggregated(self, strategy: str, seconds: float) -> None:
        """A round's result was checked and turned into the next model by ``strategy``."""

    def evaluated(self, seconds: float) -> None:
        """A published model was evaluated on the held-out split (wherever that runs)."""

    def evaluation_waited(self, seconds: float) -> None:
        """A round's close waited ``seconds`` for the last round's evaluation to finish
        (0: it had finished while the round ran, as it should)."""


class NullObserver:
    """Sees nothing: the default."""

    def round_closed(self, record: RoundRecord) -> None:
        pass

    def traffic(self, transport: str, codec: str, up: int, down: int) -> None:
        pass

    def decoded(self, codec: str, seconds: float) -> None:
        pass

    def encoded(self, codec: str, seconds: float) -> None:
        pass

    def aggregated(self, strategy: str, seconds: float) -> None:
        pass

    def evaluated(self, seconds: float) -> None:
        pass

    def evaluation_waited(self, seconds: float) -> None:
        pass


NULL_OBSERVER = NullObserver()


class Observers:
    """Every observer of one federation. Observers may be added before the run starts
    (the gateway's metrics join when the gateway is built); one that raises is logged
    and the others still hear about it."""

    def __init__(self, *observers: Observer | None) -> None:
        self._observers: list[Observer] = [o for o in observers if o is not None]

    def add(self, observer: Observer) -> None:
        if observer not in self._observers:
            self._observers.append(observer)

    def remove(self, observer: Observer) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def __len__(self) -> int:
        return len(self._observers)

    def __iter__(self) -> Iterator[Observer]:
        return iter(list(self._observers))

    def round_closed(self, record: RoundRecord) -> None:
        for observer in self._observers:
            _guarded(observer.round_closed, record)

    def traffic(self, transport: str, codec: str, up: int, down: int) -> None:
        for observer in self._observers:
            _guarded(observer.traffic, transport, codec, up, down)

    def decoded(self, codec: str, seconds: float) -> None:
        for observer in self._observers:
            _guarded(observer.decoded, codec, seconds)

    def encoded(self, codec: str, seconds: float) -> None:
        for observer in self._observers:
            _guarded(observer.encoded, codec, seconds)

    def aggregated(self, strategy: str, seconds: float) -> None:
        for observer in self._observers:
            _guarded(observer.aggregated, strategy, seconds)

    def evaluated(self, seconds: float) -> None:
        for observer in self._observers:
            _guarded(observer.evaluated, seconds)

    def evaluation_waited(self, seconds: float) -> None:
        for observer in self._observers:
            _guarded(observer.evaluation_waited, seconds)


@runtime_checkable
class Observable(Protocol):
    """A federation that reports to observers (`fedgate.core.federation.Federation`);
    adapters hold a `FederationService` and check for this before adding one."""

    @property
    def observers(self) -> Observers: ...


def _guarded(call: Callable[..., object], *args: object) -> None:
    try:
        call(*args)
    except Exception:  # an observer must never break the run it watches
        log.exception("observer %r failed", call)
