"""Core messages to protobuf and back: paired ``x_to_proto`` / ``x_from_proto`` functions.

Protobuf types never leave this adapter; everything else sees the core's dataclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedgate.core.config import MUTABLE_FIELDS, RunConfig
from fedgate.core.messages import (
    ClientState,
    ClientView,
    EncodedModel,
    FederationStatus,
    HeartbeatAck,
    JoinAck,
    JoinRequest,
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
from fedgate.core.validation import MAX_NUM_EXAMPLES
from fedgate.errors import BadRequest, ConfigError
from fedgate.transport.grpc.proto import fedgate_pb2 as pb

_TASK_KINDS = {
    TaskKind.TRAIN: pb.TASK_KIND_TRAIN,
    TaskKind.WAIT: pb.TASK_KIND_WAIT,
    TaskKind.STOP: pb.TASK_KIND_STOP,
}
_KINDS_BY_PROTO = {value: kind for kind, value in _TASK_KINDS.items()}


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
        retry_after_s=task.retry_after_s,
    )
    if task.train is not None:
        message.train.CopyFrom(
            pb.TrainConfig(
                learning_rate=task.train.learning_rate,
                local_epochs=task.train.local_epochs,
                batch_size=task.train.batch_size,
            )
        )
    return message


def task_from_proto(message: pb.Task) -> Task:
    kind = _KINDS_BY_PROTO.get(message.kind)
    if kind is None:
        raise ConfigError(f"unknown task kind {message.kind}")
    train = None
    if message.HasField("train"):
        train = TrainConfig(
            learning_rate=message.train.learning_rate,
            local_epochs=message.train.local_epochs,
            batch_size=message.train.batch_size,
        )
    return Task(
        kind=kind,
        round=message.round,
        round_id=message.round_id,
        model_version=message.model_version,
        deadline_s=message.deadline_s,
        train=train,
        retry_after_s=message.retry_after_s,
    )


def update_header_to_proto(update: Update) -> pb.UpdateHeader:
    return pb.UpdateHeader(
        round_id=update.round_id,
        model_version=update.model_version,
        num_examples=update.num_examples,
        codec=update.codec,
        total_size=len(update.payload),
        train_loss=update.train_loss,
        train_accuracy=update.train_accuracy,
        base_ref=update.base_ref,
    )


def update_header_from_proto(header: pb.UpdateHeader) -> UpdateHeader:
    return UpdateHeader(
        round_id=header.round_id,
        model_version=header.model_version,
        num_examples=header.num_examples,
        codec=header.codec,
        train_loss=header.train_loss,
        train_accuracy=header.train_accuracy,
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
        train_accuracy=header.train_accuracy,
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


def model_from_proto(header: pb.ModelChunk, payload: bytes) -> EncodedModel:
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


def config_to_proto(config: RunConfig) -> pb.RunConfig:
    return pb.RunConfig(**_config_fields(config))


def config_from_proto(message: pb.RunConfig) -> RunConfig:
    return RunConfig(**{name: getattr(message, name) for name in _config_fields(RunConfig())})


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
    )
    if status.pending_config is not None:
        message.pending_config.CopyFrom(config_to_proto(status.pending_config))
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
    )


def client_view_to_proto(view: ClientView) -> pb.ClientView:
    return pb.ClientView(**{**vars(view), "state": view.state.value})


def client_view_from_proto(message: pb.ClientView) -> ClientView:
    fields = {name: getattr(message, name) for name in ClientView.__dataclass_fields__}
    return ClientView(**{**fields, "state": ClientState(message.state)})


def round_record_to_proto(record: RoundRecord) -> pb.RoundRecord:
    return pb.RoundRecord(**vars(record))


def round_record_from_proto(message: pb.RoundRecord) -> RoundRecord:
    fields = {name: getattr(message, name) for name in RoundRecord.__dataclass_fields__}
    return RoundRecord(
        **{
            **fields,
            "participants": tuple(fields["participants"]),
            "selected": tuple(fields["selected"]),
            "excluded": tuple(fields["excluded"]),
        }
    )


def _config_fields(config: RunConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in RunConfig.__dataclass_fields__}
