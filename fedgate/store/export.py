"""A stored run as documents: the JSON of everything kept about it, and its round attempts
as CSV. What `fedgate runs export` writes and the dashboard's runs API serves, the same.

Pure functions of a `StoredRun` (no database here): NaN is null in JSON and empty in CSV,
and no token hash leaves in either.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Mapping
from typing import Any

from fedgate.core.messages import RoundOutcome, RoundRecord, Traffic
from fedgate.core.ports import StoredClient, StoredRun

CSV_COLUMNS = (
    "run_id",
    "round",
    "attempt",
    "outcome",
    "model_version",
    "participants",
    "selected",
    "excluded",
    "num_examples",
    "accuracy",
    "loss",
    "train_loss",
    "bytes_up",
    "bytes_down",
    "duration_s",
    "reason",
    "bytes_by_codec",  # name=up/down, space-separated
    "bytes_by_transport",
)


def run_document(run: StoredRun) -> dict[str, Any]:
    """A run as JSON: everything `runs show` shows, NaN as null, no token hashes."""
    snapshot = run.snapshot
    pending = snapshot.pending_config
    return {
        "run_id": run.meta.run_id,
        "dataset": run.meta.dataset,
        "model": run.meta.model,
        "created_at": run.meta.created_at,
        "state": snapshot.state.value,
        "round": snapshot.round_number,
        "attempt": snapshot.attempt,
        "rounds_completed": completed_rounds(run),
        "model_version": run.model.version,
        "model_sha256": run.model.sha256,
        "accuracy": finite(snapshot.accuracy),
        "loss": finite(snapshot.loss),
        "config": dataclasses.asdict(snapshot.config),
        "pending_config": None if pending is None else dataclasses.asdict(pending),
        "config_changes": [
            {"round": c.round_number, "changes": dict(c.changes), "at": c.at}
            for c in run.config_changes
        ],
        "bytes_by_transport": _traffic(snapshot.bytes_by_transport),
        "bytes_by_codec": _traffic(snapshot.bytes_by_codec),
        "history": [record_document(r) for r in run.history],
        "clients": [_client(c) for c in run.clients],
    }


def rounds_csv(run: StoredRun) -> str:
    """One row per round attempt; lists of client ids space-separated, NaN empty."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in run.history:
        row = record_document(record)
        for column in ("participants", "selected", "excluded"):
            row[column] = " ".join(row[column])
        for column in ("bytes_by_codec", "bytes_by_transport"):
            row[column] = " ".join(f"{k}={t['up']}/{t['down']}" for k, t in row[column].items())
        writer.writerow({"run_id": run.meta.run_id, **{k: _cell(v) for k, v in row.items()}})
    return out.getvalue()


def record_document(record: RoundRecord) -> dict[str, Any]:
    """A round attempt as JSON (NaN as null)."""
    row = dataclasses.asdict(record)
    row["outcome"] = record.outcome.value
    for key in ("participants", "selected", "excluded"):
        row[key] = list(row[key])
    return {k: finite(v) if isinstance(v, float) else v for k, v in row.items()}


def completed_rounds(run: StoredRun) -> int:
    return sum(1 for r in run.history if r.outcome == RoundOutcome.COMPLETED)


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _client(client: StoredClient) -> dict[str, Any]:
    row = dataclasses.asdict(client)
    del row["token_hash"]  # a hash of a credential: no business in an export
    row["state"] = client.state.value
    return row


def _traffic(traffic: Mapping[str, Traffic]) -> dict[str, dict[str, int]]:
    return {key: {"up": t.up, "down": t.down} for key, t in traffic.items()}


def _cell(value: Any) -> Any:
    return "" if value is None else value
