"""JSON bodies of the REST API (pydantic, for validation and OpenAPI), paired with the
core messages: ``x_to_json`` builds a body from a core message, ``x_from_json`` the reverse.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from fedgate.core.config import RunConfig, Setting, settings
from fedgate.core.enrolment import MAX_NUM_EXAMPLES
from fedgate.core.messages import (
    ClientEvent,
    ClientState,
    ClientView,
    FederationStatus,
    HeartbeatAck,
    JoinAck,
    OpenRound,
    RoundOutcome,
    RoundRecord,
    RunState,
    Task,
    TaskKind,
    Traffic,
    TrainConfig,
    UpdateReceipt,
)


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
    round: int = Field(default=0, ge=0)  # the round's number: it seeds the batch order
    proximal_mu: float = Field(default=0.0, ge=0, allow_inf_nan=False)  # FedProx; 0: off


class TaskJson(Body):
    kind: TaskKind
    round: int = 0
    round_id: str = ""
    model_version: int = 0
    deadline_s: float = 0.0
    train: TrainConfigJson | None = None


class ReceiptJson(Body):
    round: int
    accepted: int
    expected: int


class HeartbeatJson(Body):
    state: ClientState
    run_state: RunState


class DerivedBody(Body):
    """A body whose fields are derived from a declaration when the module loads."""

    if TYPE_CHECKING:  # so mypy, which cannot see those fields, takes them by keyword

        def __init__(self, **data: Any) -> None: ...


def config_model(declaration: type[Any], name: str, *, changes: bool = False) -> type[DerivedBody]:
    """A body of ``declaration``'s settings (`RunConfig`'s), with their bounds, help and
    checks as pydantic constraints, so OpenAPI shows them and a bad value is refused where it
    enters: every setting, required (a whole config); or, with ``changes``, the mutable ones,
    each optional (a change: omitted fields stay as they are)."""
    fields: dict[str, Any] = {}
    for setting in settings(declaration):
        if changes and not setting.option.mutable:
            continue
        annotation, described = setting_type(setting), setting.describe()
        if changes:
            fields[setting.name] = (annotation | None, Field(None, description=described))
        else:
            fields[setting.name] = (annotation, Field(description=described))
    doc = (
        "Fields to change from the next round; omitted fields stay as they are."
        if changes
        else "A run's configuration: every setting."
    )
    return create_model(name, __base__=DerivedBody, __doc__=doc, **fields)


def setting_type(setting: Setting) -> Any:
    """The setting's kind, annotated with its constraints (pydantic's ``Annotated`` form)."""
    option = setting.option
    constraints: dict[str, Any] = {}
    if setting.kind is float:
        constraints["allow_inf_nan"] = False
    if setting.kind in (int, float):
        constraints.update(gt=option.gt, ge=option.ge, le=option.le)
    if setting.kind is str:
        constraints["max_length"] = option.max_length
    validators = [_checked(option.check)] if option.check is not None else []
    return Annotated[setting.kind, Field(**constraints), *validators]


def _checked(check: Callable[[Any], object]) -> AfterValidator:
    """A pydantic validator that runs the setting's own check (a strategy's name, say)."""

    def validate(value: Any) -> Any:
        check(value)  # a ConfigError is a ValueError: pydantic reports it as the field's
        return value

    return AfterValidator(validate)


if TYPE_CHECKING:  # mypy's view; the fields are derived at run time, below

    class RunConfigJson(DerivedBody):
        """A run's configuration: every setting."""

else:
    RunConfigJson = config_model(RunConfig, "RunConfigJson")
ConfigChangeBody = config_model(RunConfig, "ConfigChangeBody", changes=True)


class KickBody(Body):
    reason: str = Field(default="removed by operator", max_length=200)


class TrafficJson(Body):
    up: int
    down: int


class RoundRecordJson(Body):
    round: int
    attempt: int
    outcome: RoundOutcome
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
    bytes_by_codec: dict[str, TrafficJson] = {}
    bytes_by_transport: dict[str, TrafficJson] = {}


class ClientEventJson(Body):
    client_id: str
    state: ClientState
    reason: str
    at: float = Field(description="seconds since the epoch")


class OpenRoundJson(Body):
    """The round attempt open now (history holds the closed ones)."""

    round: int
    attempt: int
    selected: list[str]
    reported: list[str]
    dropped: list[str]
    open_for_s: float
    deadline_in_s: float = Field(description="negative: past its deadline")


class StatusJson(Body):
    run_id: str
    state: RunState
    round: int
    rounds_completed: int
    model_version: int
    config: RunConfigJson
    pending_config: RunConfigJson | None
    clients: list[ClientView]  # the core's dataclass: pydantic validates it field by field
    history: list[RoundRecordJson]
    bytes_by_transport: dict[str, TrafficJson]
    bytes_by_codec: dict[str, TrafficJson]
    accuracy: float | None
    loss: float | None
    events: list[ClientEventJson] = Field(
        default_factory=list,
        description="in a watched status: every client transition since the previous one",
    )
    open_round: OpenRoundJson | None = None


def join_ack_to_json(ack: JoinAck) -> JoinReply:
    return JoinReply(**vars(ack))


def join_ack_from_json(body: JoinReply) -> JoinAck:
    return JoinAck(**body.model_dump())


def task_to_json(task: Task) -> TaskJson:
    """The task without its model: a model travels as a binary body, never in JSON."""
    train = TrainConfigJson(**vars(task.train)) if task.train else None
    fields = {name: value for name, value in vars(task).items() if name != "model"}
    return TaskJson(**{**fields, "train": train})


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
        clients=list(status.clients),
        history=[_record_to_json(r) for r in status.history],
        bytes_by_transport={
            k: TrafficJson(**vars(v)) for k, v in status.bytes_by_transport.items()
        },
        bytes_by_codec={k: TrafficJson(**vars(v)) for k, v in status.bytes_by_codec.items()},
        accuracy=_finite(status.accuracy),
        loss=_finite(status.loss),
        events=[ClientEventJson(**vars(e)) for e in status.events],
        open_round=OpenRoundJson(**vars(status.open_round)) if status.open_round else None,
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
        clients=tuple(body.clients),
        history=tuple(_record_from_json(r) for r in body.history),
        bytes_by_transport={
            k: Traffic(**v.model_dump()) for k, v in body.bytes_by_transport.items()
        },
        bytes_by_codec={k: Traffic(**v.model_dump()) for k, v in body.bytes_by_codec.items()},
        accuracy=_nan(body.accuracy),
        loss=_nan(body.loss),
        events=tuple(ClientEvent(**e.model_dump()) for e in body.events),
        open_round=_open_round_from_json(body.open_round) if body.open_round else None,
    )


def _open_round_from_json(body: OpenRoundJson) -> OpenRound:
    fields = body.model_dump()
    for name in ("selected", "reported", "dropped"):
        fields[name] = tuple(fields[name])
    return OpenRound(**fields)


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
            "bytes_by_codec": _traffic_to_json(record.bytes_by_codec),
            "bytes_by_transport": _traffic_to_json(record.bytes_by_transport),
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
            "bytes_by_codec": {
                k: Traffic(**v.model_dump()) for k, v in body.bytes_by_codec.items()
            },
            "bytes_by_transport": {
                k: Traffic(**v.model_dump()) for k, v in body.bytes_by_transport.items()
            },
        }
    )


def _traffic_to_json(split: Mapping[str, Traffic]) -> dict[str, TrafficJson]:
    return {key: TrafficJson(**vars(traffic)) for key, traffic in split.items()}


def _traffic_from_json(split: Mapping[str, TrafficJson]) -> dict[str, Traffic]:
    return {key: Traffic(**traffic.model_dump()) for key, traffic in split.items()}


def _finite(value: float) -> float | None:
    """JSON has no NaN: a value not measured yet is null."""
    return value if math.isfinite(value) else None


def _nan(value: float | None) -> float:
    return math.nan if value is None else value
