"""Core messages to protobuf and back: paired ``x_to_proto`` / ``x_from_proto`` functions.

Protobuf types never leave this adapter; everything else sees the core's dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from fedgate.core.config import MUTABLE_FIELDS, RunConfig, Setting, settings, settings_of
from fedgate.core.enrolment import MAX_NUM_EXAMPLES
from fedgate.core.messages import (
    ClientEvent,
    ClientState,
    ClientView,
    EncodedModel,
    FederationStatus,
    HeartbeatAck,
    JoinAck,
    JoinRequest,
    ModelWant,
    OpenRound,
    RoundOutcome,
    RoundRecord,
    RunState,
    Task,
    TaskKind,
    Traffic,
    TrainConfig,
    Update,
    UpdateHeader,
    UpdateReceipt,
)
from fedgate.errors import BadRequest, ConfigError
from fedgate.transport.grpc.proto import fedgate_pb2 as pb

_TASK_KINDS = {
    TaskKind.TRAIN: pb.TASK_KIND_TRAIN,
    TaskKind.WAIT: pb.TASK_KIND_WAIT,
    TaskKind.STOP: pb.TASK_KIND_STOP,
}
_KINDS_BY_PROTO = {value: kind for kind, value in _TASK_KINDS.items()}
MAX_NAME_CHARS = 64  # a codec's name or a model reference: REST's query limit on them


def join_request_to_proto(request: JoinRequest) -> pb.JoinRequest:
    return pb.JoinRequest(name=request.name, codec=request.codec, num_examples=request.num_examples)


def join_request_from_proto(
    message: pb.JoinRequest, transport: str, *, key: str = "", peer: str = ""
) -> JoinRequest:
    """The join ``message`` asks for; ``key`` (from the call's metadata) and ``peer`` (from
    its connection) are the adapter's to supply: the message never carries them."""
    if not 0 <= message.num_examples <= MAX_NUM_EXAMPLES:
        raise BadRequest(f"num_examples must be in [0, {MAX_NUM_EXAMPLES}]")
    return JoinRequest(
        name=message.name,
        codec=message.codec,
        num_examples=message.num_examples,
        transport=transport,
        key=key,
        peer=peer,
    )


def join_ack_to_proto(ack: JoinAck) -> pb.JoinReply:
    return pb.JoinReply(
        client_id=ack.client_id,
        token=ack.token,
        run_id=ack.run_id,
        codec=ack.codec,
        heartbeat_interval_s=ack.heartbeat_interval_s,
    )


def join_ack_from_proto(message: pb.JoinReply) -> JoinAck:
    return JoinAck(
        client_id=message.client_id,
        token=message.token,
        run_id=message.run_id,
        codec=message.codec,
        heartbeat_interval_s=message.heartbeat_interval_s,
    )


def task_to_proto(task: Task) -> pb.Task:
    message = pb.Task(
        kind=_TASK_KINDS[task.kind],
        round=task.round,
        round_id=task.round_id,
        model_version=task.model_version,
        deadline_s=task.deadline_s,
    )
    if task.train is not None:
        message.train.CopyFrom(pb.TrainConfig(**vars(task.train)))
    return message


def task_from_proto(message: pb.Task) -> Task:
    kind = _KINDS_BY_PROTO.get(message.kind)
    if kind is None:
        raise ConfigError(f"unknown task kind {message.kind}")
    train = None
    if message.HasField("train"):
        names = [field.name for field in dataclasses.fields(TrainConfig)]
        train = TrainConfig(**{name: getattr(message.train, name) for name in names})
    return Task(
        kind=kind,
        round=message.round,
        round_id=message.round_id,
        model_version=message.model_version,
        deadline_s=message.deadline_s,
        train=train,
    )


def model_want_to_proto(want: ModelWant, wait_s: float) -> pb.NextTaskWithModelRequest:
    return pb.NextTaskWithModelRequest(wait_s=wait_s, codec=want.codec, have_ref=want.have_ref)


def model_want_from_proto(message: pb.NextTaskWithModelRequest) -> ModelWant:
    """The model a task request wants (its wait_s the servicer reads as NextTask's)."""
    if len(message.codec) > MAX_NAME_CHARS or len(message.have_ref) > MAX_NAME_CHARS:
        raise BadRequest(f"codec and have_ref take at most {MAX_NAME_CHARS} characters")
    return ModelWant(codec=message.codec, have_ref=message.have_ref)


def update_header_to_proto(update: Update) -> pb.UpdateHeader:
    return pb.UpdateHeader(
        round_id=update.round_id,
        model_version=update.model_version,
        num_examples=update.num_examples,
        codec=update.codec,
        total_size=len(update.payload),
        train_loss=update.train_loss,
        base_ref=update.base_ref,
    )


def update_header_from_proto(header: pb.UpdateHeader) -> UpdateHeader:
    return UpdateHeader(
        round_id=header.round_id,
        model_version=header.model_version,
        num_examples=header.num_examples,
        codec=header.codec,
        train_loss=header.train_loss,
        base_ref=header.base_ref,
    )


def update_from_proto(header: pb.UpdateHeader, payload: bytes) -> Update:
    return Update(
        round_id=header.round_id,
        model_version=header.model_version,
        num_examples=header.num_examples,
        codec=header.codec,
        payload=payload,
        train_loss=header.train_loss,
        base_ref=header.base_ref,
    )


def model_header_to_proto(model: EncodedModel, first_chunk: bytes) -> pb.ModelChunk:
    """The first chunk of a model download: what it is, and its first bytes."""
    return pb.ModelChunk(
        version=model.version,
        codec=model.codec,
        total_size=len(model.payload),
        data=first_chunk,
        ref=model.ref,
        base_ref=model.base_ref,
    )


def model_from_proto(header: pb.ModelChunk, payload: bytes | bytearray) -> EncodedModel:
    return EncodedModel(
        version=header.version,
        codec=header.codec,
        payload=payload,
        ref=header.ref,
        base_ref=header.base_ref,
    )


def receipt_to_proto(receipt: UpdateReceipt) -> pb.UpdateReceipt:
    return pb.UpdateReceipt(
        round=receipt.round, accepted=receipt.accepted, expected=receipt.expected
    )


def receipt_from_proto(message: pb.UpdateReceipt) -> UpdateReceipt:
    return UpdateReceipt(round=message.round, accepted=message.accepted, expected=message.expected)


def heartbeat_to_proto(ack: HeartbeatAck) -> pb.HeartbeatReply:
    return pb.HeartbeatReply(state=ack.state.value, run_state=ack.run_state.value)


def heartbeat_from_proto(message: pb.HeartbeatReply) -> HeartbeatAck:
    return HeartbeatAck(state=ClientState(message.state), run_state=RunState(message.run_state))


def _outcome(text: str) -> RoundOutcome:
    try:
        return RoundOutcome(text)
    except ValueError:
        raise ConfigError(f"unknown round outcome {text!r}") from None


# The run settings travel field by field under their declared names (fedgate.core.config);
# `config_wire_mismatches` checks the hand-written messages can carry them.


def config_to_proto(config: RunConfig) -> pb.RunConfig:
    return pb.RunConfig(**settings_of(config))


def config_from_proto(message: pb.RunConfig) -> RunConfig:
    return RunConfig(**settings_of(message))


def config_change_to_proto(changes: Mapping[str, Any]) -> pb.ConfigChange:
    unknown = sorted(set(changes) - set(MUTABLE_FIELDS))
    if unknown:
        raise ConfigError(f"cannot change {', '.join(unknown)}")
    return pb.ConfigChange(**changes)


def config_change_from_proto(message: pb.ConfigChange) -> dict[str, Any]:
    present = {field.name for field, _ in message.ListFields()}
    return {name: getattr(message, name) for name in MUTABLE_FIELDS if name in present}


def status_to_proto(status: FederationStatus) -> pb.Status:
    message = pb.Status(
        run_id=status.run_id,
        state=status.state.value,
        round=status.round,
        rounds_completed=status.rounds_completed,
        model_version=status.model_version,
        config=config_to_proto(status.config),
        clients=[client_view_to_proto(c) for c in status.clients],
        history=[round_record_to_proto(r) for r in status.history],
        accuracy=status.accuracy,
        loss=status.loss,
        events=[client_event_to_proto(e) for e in status.events],
    )
    if status.pending_config is not None:
        message.pending_config.CopyFrom(config_to_proto(status.pending_config))
    if status.open_round is not None:
        message.open_round.CopyFrom(pb.OpenRound(**vars(status.open_round)))
    for key, traffic in status.bytes_by_transport.items():
        message.bytes_by_transport[key].CopyFrom(pb.Traffic(up=traffic.up, down=traffic.down))
    for key, traffic in status.bytes_by_codec.items():
        message.bytes_by_codec[key].CopyFrom(pb.Traffic(up=traffic.up, down=traffic.down))
    return message


def status_from_proto(message: pb.Status) -> FederationStatus:
    pending = message.pending_config if message.HasField("pending_config") else None
    return FederationStatus(
        run_id=message.run_id,
        state=RunState(message.state),
        round=message.round,
        rounds_completed=message.rounds_completed,
        model_version=message.model_version,
        config=config_from_proto(message.config),
        pending_config=config_from_proto(pending) if pending is not None else None,
        clients=tuple(client_view_from_proto(c) for c in message.clients),
        history=tuple(round_record_from_proto(r) for r in message.history),
        bytes_by_transport={
            k: Traffic(v.up, v.down) for k, v in message.bytes_by_transport.items()
        },
        bytes_by_codec={k: Traffic(v.up, v.down) for k, v in message.bytes_by_codec.items()},
        accuracy=message.accuracy,
        loss=message.loss,
        events=tuple(client_event_from_proto(e) for e in message.events),
        open_round=open_round_from_proto(message.open_round)
        if message.HasField("open_round")
        else None,
    )


def open_round_from_proto(message: pb.OpenRound) -> OpenRound:
    return OpenRound(
        round=message.round,
        attempt=message.attempt,
        selected=tuple(message.selected),
        reported=tuple(message.reported),
        dropped=tuple(message.dropped),
        open_for_s=message.open_for_s,
        deadline_in_s=message.deadline_in_s,
    )


def client_event_to_proto(event: ClientEvent) -> pb.ClientEvent:
    return pb.ClientEvent(
        client_id=event.client_id, state=event.state.value, reason=event.reason, at=event.at
    )


def client_event_from_proto(message: pb.ClientEvent) -> ClientEvent:
    return ClientEvent(message.client_id, ClientState(message.state), message.reason, message.at)


def client_view_to_proto(view: ClientView) -> pb.ClientView:
    return pb.ClientView(**{**vars(view), "state": view.state.value})


def client_view_from_proto(message: pb.ClientView) -> ClientView:
    fields = {name: getattr(message, name) for name in ClientView.__dataclass_fields__}
    return ClientView(**{**fields, "state": ClientState(message.state)})


def round_record_to_proto(record: RoundRecord) -> pb.RoundRecord:
    split = ("bytes_by_codec", "bytes_by_transport")
    fields = {k: v for k, v in vars(record).items() if k not in split}
    message = pb.RoundRecord(**{**fields, "outcome": str(record.outcome)})
    for key, traffic in record.bytes_by_codec.items():
        message.bytes_by_codec[key].CopyFrom(pb.Traffic(up=traffic.up, down=traffic.down))
    for key, traffic in record.bytes_by_transport.items():
        message.bytes_by_transport[key].CopyFrom(pb.Traffic(up=traffic.up, down=traffic.down))
    return message


def round_record_from_proto(message: pb.RoundRecord) -> RoundRecord:
    fields = {name: getattr(message, name) for name in RoundRecord.__dataclass_fields__}
    return RoundRecord(
        **{
            **fields,
            "outcome": _outcome(message.outcome),
            "participants": tuple(fields["participants"]),
            "selected": tuple(fields["selected"]),
            "excluded": tuple(fields["excluded"]),
            "bytes_by_codec": _traffic(message.bytes_by_codec),
            "bytes_by_transport": _traffic(message.bytes_by_transport),
        }
    )


def _traffic(entries: Mapping[str, pb.Traffic]) -> dict[str, Traffic]:
    return {key: Traffic(value.up, value.down) for key, value in entries.items()}


# The values each proto scalar type holds, for the kinds a setting may have.
_INT = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_SCALAR = {
    bool: FieldDescriptor.TYPE_BOOL,
    str: FieldDescriptor.TYPE_STRING,
    float: FieldDescriptor.TYPE_DOUBLE,  # a float (32 bits) would not give 0.1 back
}


def config_wire_mismatches(declaration: type[Any] | None = None) -> list[str]:
    """Why the proto's RunConfig and ConfigChange cannot carry the settings ``declaration``
    (default `RunConfig`) declares; empty when they can. RunConfig must have every setting,
    ConfigChange every mutable one with presence (only set fields change), each in a wire
    type that holds every value the setting allows; neither may have an undeclared field."""
    declared = settings(declaration)
    mutable = [setting for setting in declared if setting.option.mutable]
    return [
        *message_mismatches(pb.RunConfig.DESCRIPTOR, declared, presence=False),
        *message_mismatches(pb.ConfigChange.DESCRIPTOR, mutable, presence=True),
    ]


def message_mismatches(
    message: Descriptor, declared: Sequence[Setting], *, presence: bool
) -> list[str]:
    """What keeps ``message`` from carrying exactly the ``declared`` settings."""
    wire = message.fields_by_name
    problems = [
        f"{message.full_name}.{name} is not a declared setting"
        for name in sorted(set(wire) - {setting.name for setting in declared})
    ]
    for setting in declared:
        field = wire.get(setting.name)
        if field is None:
            problems.append(f"{message.full_name} lacks the declared setting {setting.name}")
            continue
        problem = _field_problem(setting, field, presence)
        if problem:
            problems.append(f"{message.full_name}.{setting.name} {problem}")
    return problems


def _field_problem(setting: Setting, field: FieldDescriptor, presence: bool) -> str:
    if field.is_repeated:
        return "is repeated; a setting is one value"
    if presence and not field.has_presence:
        return "must be `optional`: a change carries only the fields it sets"
    if setting.kind is not int:
        fits = field.type == _SCALAR[setting.kind]
        return "" if fits else f"cannot carry a {setting.kind.__name__} (proto type {field.type})"
    if field.type not in _INT:
        return f"cannot carry an int (proto type {field.type})"
    low, high = _INT[field.type]
    option = setting.option
    lowest = option.ge if option.ge is not None else -math.inf
    if option.gt is not None:
        lowest = math.floor(option.gt) + 1
    highest = option.le if option.le is not None else math.inf
    if lowest < low or highest > high:
        return f"holds [{low}, {high}]; the setting allows [{lowest:g}, {highest:g}]"
    return ""
