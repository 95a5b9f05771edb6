"""Every x_to_json / x_from_json pair round-trips, through JSON text."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from pydantic import ValidationError

from fedgate.core.messages import (
    ClientState,
    EncodedModel,
    HeartbeatAck,
    JoinAck,
    RunState,
    Task,
    TaskKind,
    TrainConfig,
    UpdateReceipt,
)
from fedgate.transport.rest import schemas
from tests.transport.grpc.test_serde import sample_status


def through_json(body: Any) -> Any:
    return type(body).model_validate_json(body.model_dump_json())


@pytest.mark.parametrize(
    "to_json,from_json,value",
    [
        (schemas.join_ack_to_json, schemas.join_ack_from_json, JoinAck("c", "t", "r", "raw", 1.0)),
        (
            schemas.task_to_json,
            schemas.task_from_json,
            Task(
                TaskKind.TRAIN, 2, "2.1", 1, 5.0, TrainConfig(0.1, 1, 32, round=2, proximal_mu=0.5)
            ),
        ),
        (schemas.task_to_json, schemas.task_from_json, Task(TaskKind.STOP)),
        (schemas.receipt_to_json, schemas.receipt_from_json, UpdateReceipt(1, 1, 3)),
        (
            schemas.heartbeat_to_json,
            schemas.heartbeat_from_json,
            HeartbeatAck(ClientState.READY, RunState.WAITING),
        ),
        (schemas.status_to_json, schemas.status_from_json, sample_status(pending=True)),
        (schemas.status_to_json, schemas.status_from_json, sample_status(pending=False)),
    ],
)
def test_round_trips(to_json: Any, from_json: Any, value: Any) -> None:
    assert from_json(through_json(to_json(value))) == value


def test_values_not_measured_yet_are_null_in_json() -> None:
    status = sample_status(pending=False)
    unmeasured = type(status)(**{**vars(status), "accuracy": math.nan, "loss": math.nan})
    body = schemas.status_to_json(unmeasured)
    assert body.accuracy is None and '"accuracy":null' in body.model_dump_json()
    assert math.isnan(schemas.status_from_json(through_json(body)).accuracy)


def test_config_changes_are_bounded_where_they_enter() -> None:
    assert schemas.ConfigChangeBody(strategy="median", clip_norm=1.5).model_dump(
        exclude_none=True
    ) == {"strategy": "median", "clip_norm": 1.5}
    for bad in ({"clip_norm": -1.0}, {"clip_norm": math.inf}, {"strategy": "x" * 65}):
        with pytest.raises(ValidationError):
            schemas.ConfigChangeBody(**bad)


def test_a_task_s_model_never_goes_into_json() -> None:
    """A model travels as a binary body (task-with-model): its task's JSON is the task's."""
    task = Task(TaskKind.TRAIN, 2, "2.1", 1, 5.0, TrainConfig(0.1, 1, 32, round=2))
    carrying = dataclasses.replace(task, model=EncodedModel(1, "raw", b"\x00" * 64, ref="1"))
    text = schemas.task_to_json(carrying).model_dump_json()
    assert text == schemas.task_to_json(task).model_dump_json()
    assert schemas.task_from_json(schemas.TaskJson.model_validate_json(text)) == task
