"""The messages the core exchanges with clients, as frozen dataclasses.

Transports map these to and from their wire formats (protobuf, JSON + binary bodies);
the core never sees a wire type.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from fedgate.core.config import RunConfig


class ClientState(enum.StrEnum):
    """Where a client stands; shown the same in status, dashboard and logs."""

    JOINED = "joined"
    READY = "ready"
    TRAINING = "training"
    UPLOADING = "uploading"
    FINISHED = "finished"
    LEFT = "left"
    FAILED = "failed"


GONE_STATES = frozenset({ClientState.LEFT, ClientState.FAILED})


class RunState(enum.StrEnum):
    IDLE = "idle"
    WAITING = "waiting"  # for enough clients to open a round
    RUNNING = "running"  # a round is open
    PAUSED = "paused"
    FINISHED = "finished"
    STOPPED = "stopped"


FINAL_RUN_STATES = frozenset({RunState.FINISHED, RunState.STOPPED})


class RoundOutcome(enum.StrEnum):
    """How a round attempt ended."""

    COMPLETED = "completed"  # its aggregate became the next model version
    RETRIED = "retried"  # too few updates, or a refused aggregate: the round runs again
    ABANDONED = "abandoned"  # the run stopped (or the server died) with the round open


class TaskKind(enum.StrEnum):
    TRAIN = "train"
    WAIT = "wait"  # nothing for this client yet: ask again
    STOP = "stop"  # the run is over: leave


@dataclass(frozen=True)
class JoinRequest:
    name: str
    codec: str
    num_examples: int = 0  # the client's dataset size; 0 when it does not say
    transport: str = "inproc"  # set by the server-side adapter, not trusted from the client
    # The enrolment key's secret (fgk_...); on the wire as a bearer credential. Kept out of
    # repr, so that logging a request never logs a secret.
    key: str = field(default="", repr=False)
    # The caller's address, set by the server-side adapter from the connection (never from
    # the request body) for the per-peer join limit; "" for in-process callers.
    peer: str = ""


@dataclass(frozen=True)
class JoinAck:
    client_id: str
    token: str
    run_id: str
    codec: str
    heartbeat_interval_s: float


@dataclass(frozen=True)
class TrainConfig:
    """What a client needs to run one round of local training."""

    learning_rate: float
    local_epochs: int
    batch_size: int
    # The round's number (not its attempt): a client's batch order depends only on its seed
    # and this, so a retried or resumed round trains exactly as the first try did.
    round: int = 0
    proximal_mu: float = 0.0  # FedProx: weight of the proximal term (0: plain local SGD)


@dataclass(frozen=True)
class Task:
    kind: TaskKind
    round: int = 0
    round_id: str = ""
    model_version: int = 0
    deadline_s: float = 0.0  # seconds left when the task was handed out
    train: TrainConfig | None = None
    # A TRAIN task's model, when the client asked for it with the task (`ModelWant`): the
    # same encoding `fetch_model` would send. None: fetch it (an older server, or a
    # transport that cannot carry it). Out of repr: it may be gigabytes.
    model: EncodedModel | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ModelWant:
    """What a client asking for a task wants a TRAIN task's model in, so that the model
    comes with the task: its codec ("" for the one it joined with), and the model it holds
    (``have_ref``, "" for none) for a delta, as `fetch_model` takes them."""

    codec: str = ""
    have_ref: str = ""


@dataclass(frozen=True)
class EncodedModel:
    """A model version as sent: in full, or as the difference to a model the client holds.

    ``ref`` names what the client holds once it has decoded this (send it back as
    ``have_ref`` and as an update's ``base_ref``); ``base_ref``, when set, says the payload
    is a delta to add to the model the client holds under that name.
    """

    version: int
    codec: str
    # A download's bytes may come as the bytearray they were received into, handed over:
    # the decoder's tensors share it (`fedgate.transport.filling`).
    payload: bytes | bytearray
    ref: str = ""
    base_ref: str = ""


@dataclass(frozen=True)
class UpdateHeader:
    """Everything about an update but its payload: what the server checks (who sends it,
    for which round, in which codec, with what weight) before it reads a byte of the body."""

    round_id: str
    model_version: int
    num_examples: int
    codec: str
    train_loss: float = float("nan")
    base_ref: str = ""


@dataclass(frozen=True)
class Update:
    """A client's result for one round, in the codec it names: its trained weights, or,
    with ``base_ref`` set, their difference to the model it was sent under that name."""

    round_id: str
    model_version: int
    num_examples: int
    codec: str
    payload: bytes
    train_loss: float = float("nan")
    base_ref: str = ""

    @property
    def header(self) -> UpdateHeader:
        return UpdateHeader(
            round_id=self.round_id,
            model_version=self.model_version,
            num_examples=self.num_examples,
            codec=self.codec,
            train_loss=self.train_loss,
            base_ref=self.base_ref,
        )


@dataclass(frozen=True)
class UpdateReceipt:
    round: int
    accepted: int  # updates accepted so far in this round, this one included
    expected: int


@dataclass(frozen=True)
class HeartbeatAck:
    state: ClientState
    run_state: RunState


@dataclass(frozen=True)
class ClientView:
    """What status reports about one client."""

    client_id: str
    name: str
    state: ClientState
    codec: str
    transport: str
    num_examples: int
    rounds_completed: int
    bytes_up: int
    bytes_down: int
    last_seen_s: float
    reason: str = ""
    key_id: str = ""  # the enrolment key it joined with ("": none)


@dataclass(frozen=True)
class RoundRecord:
    """One closed round attempt, as history keeps it."""

    round: int
    attempt: int
    outcome: RoundOutcome
    participants: tuple[str, ...]
    selected: tuple[str, ...]
    num_examples: int
    model_version: int
    accuracy: float
    loss: float
    bytes_up: int
    bytes_down: int
    duration_s: float
    train_loss: float = float("nan")
    excluded: tuple[str, ...] = ()  # clients whose updates were left out of a refused result
    reason: str = ""  # why a round was retried or abandoned (empty when it completed)
    # the round's payload bytes split by codec and by transport (selected clients only)
    bytes_by_codec: Mapping[str, Traffic] = field(default_factory=dict)
    bytes_by_transport: Mapping[str, Traffic] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientEvent:
    """One change of a client's state (or of the reason shown), with its wall-clock time."""

    client_id: str
    state: ClientState
    reason: str
    at: float


@dataclass(frozen=True)
class Traffic:
    up: int = 0
    down: int = 0

    def add(self, up: int = 0, down: int = 0) -> Traffic:
        return Traffic(self.up + up, self.down + down)


@dataclass(frozen=True)
class OpenRound:
    """The round attempt open now (history holds the closed ones)."""

    round: int
    attempt: int
    selected: tuple[str, ...]
    reported: tuple[str, ...]
    dropped: tuple[str, ...]
    open_for_s: float  # since it opened
    deadline_in_s: float  # until its deadline (negative: past it)


@dataclass(frozen=True)
class FederationStatus:
    run_id: str
    state: RunState
    round: int  # the round open or about to open (1-based); rounds completed = round - 1
    rounds_completed: int
    model_version: int
    config: RunConfig
    pending_config: RunConfig | None
    clients: tuple[ClientView, ...]
    history: tuple[RoundRecord, ...]
    bytes_by_transport: dict[str, Traffic] = field(default_factory=dict)
    bytes_by_codec: dict[str, Traffic] = field(default_factory=dict)
    accuracy: float = float("nan")
    loss: float = float("nan")
    # In a watched status: every client transition since the watcher's previous status,
    # so that changes closer together than the watch interval are all seen.
    events: tuple[ClientEvent, ...] = ()
    open_round: OpenRound | None = None
