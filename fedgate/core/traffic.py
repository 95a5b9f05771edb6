"""Bytes that crossed a transport, counted per client, transport, codec and round."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from fedgate.core.messages import Traffic
from fedgate.core.observer import NULL_OBSERVER, Observer
from fedgate.core.registry import ClientRecord
from fedgate.core.rounds import Round


class TrafficLedger:
    def __init__(
        self,
        by_transport: Mapping[str, Traffic] | None = None,
        by_codec: Mapping[str, Traffic] | None = None,
    ) -> None:
        """A new ledger, or one carried on from a resumed run's counters."""
        self.by_transport: defaultdict[str, Traffic] = defaultdict(Traffic, by_transport or {})
        self.by_codec: defaultdict[str, Traffic] = defaultdict(Traffic, by_codec or {})
        self.total = Traffic(
            sum(t.up for t in self.by_transport.values()),
            sum(t.down for t in self.by_transport.values()),
        )
        self.observer: Observer = NULL_OBSERVER  # told every count, as it is made

    def count(
        self, client: ClientRecord, codec: str, round_: Round | None, up: int = 0, down: int = 0
    ) -> None:
        """Record a payload of ``up``/``down`` bytes for ``client`` in ``codec``."""
        self.total = self.total.add(up, down)
        client.traffic = client.traffic.add(up, down)
        self.by_transport[client.transport] = self.by_transport[client.transport].add(up, down)
        self.by_codec[codec] = self.by_codec[codec].add(up, down)
        if round_ is not None:
            round_.count(client.client_id, codec, client.transport, up, down)
        self.observer.traffic(client.transport, codec, up, down)
