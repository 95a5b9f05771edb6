"""What `fedgate sim` runs: the simulation's settings, light enough for the CLI to build
its parser from (no torch, no server code)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedgate.core.config import RunConfig, settings_of
from fedgate.core.messages import RoundRecord
from fedgate.core.transport import INPROC
from fedgate.errors import ConfigError
from fedgate.run.client_options import DELTAS
from fedgate.run.engines import ENGINES, LOCAL, RAY
from fedgate.transport.connect import TRANSPORTS as CLIENT_TRANSPORTS
from fedgate.transport.servers import SERVER_ADAPTERS

MIXED = "mixed"
# how a network simulation starts its client processes: forked by a fork server that has
# imported the client side once (fedgate.run.forkserver), or each `python -m fedgate client`
FORK, EXEC = "fork", "exec"
CLIENT_STARTS = (FORK, EXEC)
# served by `fedgate serve` and reachable by `fedgate client`: both registries name them
NETWORK_TRANSPORTS = tuple(name for name in SERVER_ADAPTERS if name in CLIENT_TRANSPORTS)
TRANSPORT_CHOICES = (INPROC, *NETWORK_TRANSPORTS, MIXED)
RoundCallback = Callable[[RoundRecord], None]
ResultsCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SimConfig:
    clients: int = 5
    rounds: int = 20
    transport: str = "inproc"  # inproc | grpc | rest | mixed (clients alternate grpc, rest)
    codec: str = "raw"  # a codec, "a,b,c" (clients take them in turn), or "mixed" (all)
    partition: str = "iid"
    dataset: str = "digits"
    model: str = "cnn"
    seed: int = 0
    learning_rate: float = 0.1
    local_epochs: int = 1
    batch_size: int = 32
    clients_per_round: int = 0
    min_clients: int = 0  # 0: clients_per_round, else every client
    round_deadline_s: float = 120.0
    deltas: str = "auto"  # auto (deltas for lossy codecs) | on | off
    strategy: str = "fedavg"  # a name in fedgate.core.strategy.STRATEGIES
    clip_norm: float = 0.0  # > 0: clip each update's difference to the model to this norm
    # the rest of RunConfig's settings, with its defaults: sim has a flag for every one
    heartbeat_interval_s: float = 2.0
    heartbeat_timeout_s: float = 10.0
    admit_late: bool = False
    data_dir: str = ""  # where cifar10, cifar100, imagefolder are read ("": $FEDGATE_DATA_DIR)
    engine: str = LOCAL  # where the clients run: local | ray (`fedgate.run.engines`)
    ray_address: str = ""  # the engine's Ray cluster ("": start one here)
    client_start: str = FORK  # the local engine's client processes: fork | exec

    def codec_for(self, index: int) -> str:
        from fedgate.codecs import codec_names  # noqa: PLC0415 - torch: not at parse time

        names = codec_names() if self.codec == MIXED else self.codec.split(",")
        return names[index % len(names)]

    def transport_for(self, index: int) -> str:
        if self.transport == MIXED:
            return NETWORK_TRANSPORTS[index % len(NETWORK_TRANSPORTS)]
        return self.transport

    def deltas_flag(self) -> bool | None:
        return DELTAS[self.deltas]

    def run_config(self) -> RunConfig:
        """The run settings, by name (tests/test_config_schema.py: sim holds all of them)."""
        # 0: every client, or, when a round takes fewer, as many as a round takes
        wanted = self.min_clients or self.clients_per_round or self.clients
        return RunConfig(**{**settings_of(self), "min_clients": wanted})

    def validate(self) -> None:
        if self.transport not in TRANSPORT_CHOICES:
            raise ConfigError(
                f"unknown transport {self.transport!r}; available: {', '.join(TRANSPORT_CHOICES)}"
            )
        from fedgate.codecs import get_codec  # noqa: PLC0415 - torch: not at parse time

        if self.codec != MIXED:
            for name in self.codec.split(","):
                get_codec(name)
        if self.clients < 1:
            raise ConfigError("a simulation needs at least one client")
        if self.deltas not in DELTAS:
            raise ConfigError(f"deltas must be one of {', '.join(DELTAS)}, got {self.deltas!r}")
        self._validate_engine()
        self.run_config()

    def _validate_engine(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}; available: {', '.join(ENGINES)}")
        if self.ray_address and self.engine != RAY:
            raise ConfigError("a Ray address is for the ray engine (--engine ray)")
        if self.client_start not in CLIENT_STARTS:
            raise ConfigError(
                f"unknown client start {self.client_start!r}; available: {', '.join(CLIENT_STARTS)}"
            )
