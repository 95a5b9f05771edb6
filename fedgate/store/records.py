"""Round records and client records: the core's frozen dataclasses to columns and back."""

from __future__ import annotations

from typing import Any

from fedgate.core.messages import ClientState, RoundOutcome, RoundRecord
from fedgate.core.ports import StoredClient
from fedgate.store.schema import ClientRow, RoundRow
from fedgate.store.values import (
    ids_from_json,
    nan_to_null,
    null_to_nan,
    to_json,
    traffic_from_json,
    traffic_to_json,
)


def record_values(record: RoundRecord) -> dict[str, Any]:
    return {
        "round": record.round,
        "attempt": record.attempt,
        "outcome": RoundOutcome(record.outcome).value,
        "participants": to_json(list(record.participants)),
        "selected": to_json(list(record.selected)),
        "excluded": to_json(list(record.excluded)),
        "num_examples": record.num_examples,
        "model_version": record.model_version,
        "accuracy": nan_to_null(record.accuracy),
        "loss": nan_to_null(record.loss),
        "train_loss": nan_to_null(record.train_loss),
        "bytes_up": record.bytes_up,
        "bytes_down": record.bytes_down,
        "duration_s": record.duration_s,
        "reason": record.reason,
        "bytes_by_codec": traffic_to_json(record.bytes_by_codec),
        "bytes_by_transport": traffic_to_json(record.bytes_by_transport),
    }


def record_from_row(row: RoundRow) -> RoundRecord:
    return RoundRecord(
        round=row.round,
        attempt=row.attempt,
        outcome=RoundOutcome(row.outcome),
        participants=ids_from_json(row.participants),
        selected=ids_from_json(row.selected),
        num_examples=row.num_examples,
        model_version=row.model_version,
        accuracy=null_to_nan(row.accuracy),
        loss=null_to_nan(row.loss),
        bytes_up=row.bytes_up,
        bytes_down=row.bytes_down,
        duration_s=row.duration_s,
        train_loss=null_to_nan(row.train_loss),
        excluded=ids_from_json(row.excluded),
        reason=row.reason,
        bytes_by_codec=traffic_from_json(row.bytes_by_codec or "{}"),
        bytes_by_transport=traffic_from_json(row.bytes_by_transport or "{}"),
    )


def client_values(client: StoredClient) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "name": client.name,
        "token_hash": client.token_hash,
        "codec": client.codec,
        "transport": client.transport,
        "num_examples": client.num_examples,
        "key_id": client.key_id,
        "max_num_examples": client.max_num_examples,
        "state": ClientState(client.state).value,
        "reason": client.reason,
        "rounds_completed": client.rounds_completed,
        "bytes_up": client.bytes_up,
        "bytes_down": client.bytes_down,
    }


def client_from_row(row: ClientRow) -> StoredClient:
    return StoredClient(
        client_id=row.client_id,
        name=row.name,
        token_hash=row.token_hash,
        codec=row.codec,
        transport=row.transport,
        num_examples=row.num_examples,
        key_id=row.key_id,
        max_num_examples=row.max_num_examples,
        state=ClientState(row.state),
        reason=row.reason,
        rounds_completed=row.rounds_completed,
        bytes_up=row.bytes_up,
        bytes_down=row.bytes_down,
    )
