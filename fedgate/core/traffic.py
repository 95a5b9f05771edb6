"""Bytes that crossed a transport, counted per client, transport, codec and round."""

from __future__ import annotations

from collections import defaultdict

from fedgate.core.messages import Traffic
from fedgate.core.registry import ClientRecord
from fedgate.core.rounds import Round


class TrafficLedger:
    def __init__(self) -> None:
        self.total = Traffic()
        self.by_transport: defaultdict[str, Traffic] = defaultdict(Traffic)
        self.by_codec: defaultdict[str, Traffic] = defaultdict(Traffic)

    def count(
        self, client: ClientRecord, codec: str, round_: Round | None, up: int = 0, down: int = 0
    ) -> None:
        """Record a payload of ``up``/``down`` bytes for ``client`` in ``codec``."""
        self.total = self.total.add(up, down)
        client.traffic = client.traffic.add(up, down)
        self.by_transport[client.transport] = self.by_transport[client.transport].add(up, down)
        self.by_codec[codec] = self.by_codec[codec].add(up, down)
        if round_ is not None and client.client_id in round_.selected:
            round_.traffic = round_.traffic.add(up, down)
