"""JSON bodies of the REST API (pydantic, for validation and OpenAPI), paired with the
core messages: ``x_to_json`` builds a body from a core message, ``x_from_json`` the reverse.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fedgate.core.config import RunConfig
from fedgate.core.messages import (
    ClientState,
    ClientView,
    FederationStatus,
    HeartbeatAck,
    JoinAck,
    RoundRecord,
    RunState,
    Task,
    TaskKind,
    Traffic,
    TrainConfig,
    UpdateReceipt,
)
from fedgate.core.validation import MAX_NUM_EXAMPLES


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JoinBody(Body):
    name: str = Field(min_length=1, max_length=128)
    codec: str = Field(min_length=1, max_length=64)
    num_examples: int = Field(default=0, ge=0, le=MAX_NUM_EXAMPLES)


class JoinReply(Body):
    client_id: str
    token: str
    run_id: str
    codec: str
    heartbeat_interval_s: float


class TrainConfigJson(Body):
    learning_rate: float
    local_epochs: int
    batch_size: int


class TaskJson(Body):
    kind: TaskKind
    round: int = 0
    round_id: str = ""
    model_version: int = 0
    deadline_s: float = 0.0
    train: TrainConfigJson | None = None
    retry_after_s: float = 0.0


class ReceiptJson(Body):
    round: int
    accepted: int
    expected: int


class HeartbeatJson(Body):
    state: ClientState
    run_state: RunState


class RunConfigJson(Body):
    rounds: int
    clients_per_round: int
    min_clients: int
    round_deadline_s: float
    learning_rate: float
    local_epochs: int
    batch_size: int
    heartbeat_interval_s: float
    heartbeat_timeout_s: float
    admit_late: bool
    seed: int
    strategy: str
    clip_norm: float


class ConfigChangeBody(Body):
    """Fields to change from the next round; omitted fields stay as they are."""

    rounds: int | None = None
    clients_per_round: int | None = None
    min_clients: int | None = None
    round_deadline_s: float | None = None
    learning_rate: float | None = None
    local_epochs: int | None = None
    batch_size: int | None = None
    heartbeat_interval_s: float | None = None
    heartbeat_timeout_s: float | None = None
    admit_late: bool | None = None
    strategy: str | None = Field(
        default=None, max_length=64, description="fedavg | median | trimmed-mean[:fraction]"
    )
    clip_norm: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="0: off; > 0: clip each update"
    )


class KickBody(Body):
    reason: str = Field(default="removed by operator", max_length=200)


class TrafficJson(Body):
    up: int
    down: int


class ClientViewJson(Body):
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
    key_id: str = ""  # the enrolment key the client joined with ("": none)


class RoundRecordJson(Body):
    round: int
    attempt: int
    outcome: str
    participants: list[str]
    selected: list[str]
    num_examples: int
    model_version: int
    accuracy: float | None
    loss: float | None
    bytes_up: int
    bytes_down: int
    duration_s: float
    train_loss: float | None = None
    excluded: list[str] = []
    reason: str = ""


class StatusJson(Body):
    run_id: str
    state: RunState
    round: int
    rounds_completed: int
    model_version: int
    config: RunConfigJson
    pending_config: RunConfigJson | None
    clients: list[ClientViewJson]
    history: list[RoundRecordJson]
    bytes_by_transport: dict[str, TrafficJson]
    bytes_by_codec: dict[str, TrafficJson]
    accuracy: float | None
    loss: float | None


def join_ack_to_json(ack: JoinAck) -> JoinReply:
    return JoinReply(**vars(ack))


def join_ack_from_json(body: JoinReply) -> JoinAck:
    return JoinAck(**body.model_dump())


def task_to_json(task: Task) -> TaskJson:
    train = TrainConfigJson(**vars(task.train)) if task.train else None
    return TaskJson(**{**vars(task), "train": train})


def task_from_json(body: TaskJson) -> Task:
    train = TrainConfig(**body.train.model_dump()) if body.train else None
    return Task(**{**dict(body), "train": train})


def receipt_to_json(receipt: UpdateReceipt) -> ReceiptJson:
    return ReceiptJson(**vars(receipt))


def receipt_from_json(body: ReceiptJson) -> UpdateReceipt:
    return UpdateReceipt(**body.model_dump())


def heartbeat_to_json(ack: HeartbeatAck) -> HeartbeatJson:
    return HeartbeatJson(state=ack.state, run_state=ack.run_state)


def heartbeat_from_json(body: HeartbeatJson) -> HeartbeatAck:
    return HeartbeatAck(state=body.state, run_state=body.run_state)


def status_to_json(status: FederationStatus) -> StatusJson:
    pending = status.pending_config
    return StatusJson(
        run_id=status.run_id,
        state=status.state,
        round=status.round,
        rounds_completed=status.rounds_completed,
        model_version=status.model_version,
        config=RunConfigJson(**vars(status.config)),
        pending_config=RunConfigJson(**vars(pending)) if pending else None,
        clients=[ClientViewJson(**vars(c)) for c in status.clients],
        history=[_record_to_json(r) for r in status.history],
        bytes_by_transport={
            k: TrafficJson(**vars(v)) for k, v in status.bytes_by_transport.items()
        },
        bytes_by_codec={k: TrafficJson(**vars(v)) for k, v in status.bytes_by_codec.items()},
        accuracy=_finite(status.accuracy),
        loss=_finite(status.loss),
    )


def status_from_json(body: StatusJson) -> FederationStatus:
    pending = body.pending_config
    return FederationStatus(
        run_id=body.run_id,
        state=body.state,
        round=body.round,
        rounds_completed=body.rounds_completed,
        model_version=body.model_version,
        config=RunConfig(**body.config.model_dump()),
        pending_config=RunConfig(**pending.model_dump()) if pending else None,
        clients=tuple(ClientView(**c.model_dump()) for c in body.clients),
        history=tuple(_record_from_json(r) for r in body.history),
        bytes_by_transport={
            k: Traffic(**v.model_dump()) for k, v in body.bytes_by_transport.items()
        },
        bytes_by_codec={k: Traffic(**v.model_dump()) for k, v in body.bytes_by_codec.items()},
        accuracy=_nan(body.accuracy),
        loss=_nan(body.loss),
    )


def _record_to_json(record: RoundRecord) -> RoundRecordJson:
    fields: dict[str, Any] = vars(record)
    return RoundRecordJson(
        **{
            **fields,
            "participants": list(record.participants),
            "selected": list(record.selected),
            "excluded": list(record.excluded),
            "accuracy": _finite(record.accuracy),
            "loss": _finite(record.loss),
            "train_loss": _finite(record.train_loss),
        }
    )


def _record_from_json(body: RoundRecordJson) -> RoundRecord:
    return RoundRecord(
        **{
            **body.model_dump(),
            "participants": tuple(body.participants),
            "selected": tuple(body.selected),
            "excluded": tuple(body.excluded),
            "accuracy": _nan(body.accuracy),
            "loss": _nan(body.loss),
            "train_loss": _nan(body.train_loss),
        }
    )


def _finite(value: float) -> float | None:
    """JSON has no NaN: a value not measured yet is null."""
    return value if math.isfinite(value) else None


def _nan(value: float | None) -> float:
    return math.nan if value is None else value
