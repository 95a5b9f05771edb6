"""Every x_to_proto / x_from_proto pair round-trips, and survives serialisation."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest

from fedgate.core.config import RunConfig
from fedgate.core.messages import (
    ClientEvent,
    ClientState,
    ClientView,
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
    UpdateReceipt,
)
from fedgate.errors import BadRequest, ConfigError
from fedgate.transport.grpc import serde
from fedgate.transport.grpc.proto import fedgate_pb2 as pb


def wire(message: Any) -> Any:
    """Through bytes and back, as the message would cross the network."""
    return type(message).FromString(message.SerializeToString())


def sample_status(pending: bool) -> FederationStatus:
    record = RoundRecord(
        round=2,
        attempt=1,
        outcome=RoundOutcome.COMPLETED,
        participants=("c1", "c2"),
        selected=("c1", "c2", "c3"),
        num_examples=300,
        model_version=2,
        accuracy=0.9,
        loss=0.3,
        bytes_up=10,
        bytes_down=20,
        duration_s=1.5,
        train_loss=0.4,
        bytes_by_codec={"raw": Traffic(6, 12), "msgpack": Traffic(4, 8)},
        bytes_by_transport={"grpc": Traffic(6, 12), "rest": Traffic(4, 8)},
    )
    refused = dataclasses.replace(
        record,
        round=3,
        outcome=RoundOutcome.RETRIED,
        excluded=("c3",),
        reason="the aggregate holds 9 NaN or infinite values; excluded c3 (distance nan)",
    )
    view = ClientView("c1", "alice", ClientState.TRAINING, "raw", "grpc", 100, 2, 5, 6, 0.5, "")
    return FederationStatus(
        run_id="r1",
        state=RunState.RUNNING,
        round=3,
        rounds_completed=2,
        model_version=2,
        config=RunConfig(rounds=7, admit_late=True, strategy="trimmed-mean:0.1", clip_norm=2.0),
        pending_config=RunConfig(learning_rate=0.3, strategy="median") if pending else None,
        clients=(view,),
        history=(record, refused),
        bytes_by_transport={"grpc": Traffic(1, 2)},
        bytes_by_codec={"raw": Traffic(3, 4)},
        accuracy=0.9,
        loss=0.3,
        events=(
            ClientEvent("c1", ClientState.UPLOADING, "", 1_700_000_000.25),
            ClientEvent("c1", ClientState.FINISHED, "", 1_700_000_000.5),
        ),
        open_round=OpenRound(4, 2, ("c1", "c2"), ("c1",), (), 1.25, -0.5) if pending else None,
    )


@pytest.mark.parametrize(
    "to_proto,from_proto,value",
    [
        (serde.join_ack_to_proto, serde.join_ack_from_proto, JoinAck("c1", "t", "r", "raw", 2.0)),
        (serde.receipt_to_proto, serde.receipt_from_proto, UpdateReceipt(3, 2, 5)),
        (
            serde.heartbeat_to_proto,
            serde.heartbeat_from_proto,
            HeartbeatAck(ClientState.UPLOADING, RunState.PAUSED),
        ),
        (serde.config_to_proto, serde.config_from_proto, RunConfig(rounds=3, seed=9)),
        (
            serde.task_to_proto,
            serde.task_from_proto,
            Task(
                TaskKind.TRAIN, 4, "4.2", 3, 9.5, TrainConfig(0.1, 2, 16, round=4, proximal_mu=0.01)
            ),
        ),
        (serde.task_to_proto, serde.task_from_proto, Task(TaskKind.WAIT)),
        (serde.task_to_proto, serde.task_from_proto, Task(TaskKind.STOP)),
        (serde.status_to_proto, serde.status_from_proto, sample_status(pending=True)),
        (serde.status_to_proto, serde.status_from_proto, sample_status(pending=False)),
    ],
)
def test_round_trips(to_proto: Any, from_proto: Any, value: Any) -> None:
    assert from_proto(wire(to_proto(value))) == value


def test_join_request_takes_the_transport_from_the_server_side() -> None:
    request = JoinRequest("a", "raw", 5, transport="claimed-by-client")
    back = serde.join_request_from_proto(wire(serde.join_request_to_proto(request)), "grpc")
    assert back == JoinRequest("a", "raw", 5, transport="grpc")


def test_update_header_and_payload_round_trip() -> None:
    update = Update("1.1", 0, 10, "raw", b"payload", train_loss=0.5, base_ref="0.a1")
    header = wire(serde.update_header_to_proto(update))
    assert header.total_size == len(update.payload)
    assert serde.update_from_proto(header, update.payload) == update


def test_fields_removed_from_the_contract_are_skipped_when_an_older_peer_sends_them() -> None:
    # field 7 (a double) was Task.retry_after_s and UpdateHeader.train_accuracy: reserved
    # now, so what an older client or server sends there is ignored, never misread
    old_field_7 = bytes([7 << 3 | 1]) + struct.pack("<d", 0.25)
    task = pb.Task.FromString(
        serde.task_to_proto(Task(TaskKind.WAIT)).SerializeToString() + old_field_7
    )
    assert serde.task_from_proto(task) == Task(TaskKind.WAIT)
    update = Update("1.1", 0, 10, "raw", b"", train_loss=0.5)
    sent = serde.update_header_to_proto(update).SerializeToString() + old_field_7
    assert serde.update_from_proto(pb.UpdateHeader.FromString(sent), b"") == update


def test_config_changes_carry_only_what_changes() -> None:
    changes = {"rounds": 4, "admit_late": False, "strategy": "median", "clip_norm": 0.0}
    message = wire(serde.config_change_to_proto(changes))
    assert serde.config_change_from_proto(message) == changes
    assert serde.config_change_from_proto(pb.ConfigChange()) == {}
    with pytest.raises(ConfigError):
        serde.config_change_to_proto({"seed": 1})


def test_an_unknown_task_kind_is_refused() -> None:
    with pytest.raises(ConfigError):
        serde.task_from_proto(pb.Task(kind=pb.TASK_KIND_UNSPECIFIED))


# ---- a task with its model (NextTaskWithModel) -----------------------------------------


@pytest.mark.parametrize("want", [ModelWant(), ModelWant("bf16-zstd", "1.ab2")])
def test_a_model_want_round_trips(want: ModelWant) -> None:
    message = wire(serde.model_want_to_proto(want, 7.5))
    assert message.wait_s == 7.5
    assert serde.model_want_from_proto(message) == want


@pytest.mark.parametrize("field", ["codec", "have_ref"])
def test_a_model_want_with_names_past_the_limit_is_refused(field: str) -> None:
    message = pb.NextTaskWithModelRequest()
    setattr(message, field, "x" * (serde.MAX_NAME_CHARS + 1))
    with pytest.raises(BadRequest):
        serde.model_want_from_proto(message)
