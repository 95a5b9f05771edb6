"""The results document a run leaves behind (`fedgate sim --out`, `fedgate serve --results`)."""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import fedgate
from fedgate.core.messages import FederationStatus, RoundRecord, Traffic
from fedgate.core.partition import partition as split

if TYPE_CHECKING:
    from fedgate.core.data import Dataset  # torch: not for a CLI that only writes JSON


def results_document(
    config: dict[str, Any],
    status: FederationStatus,
    duration_s: float,
    *,
    partition: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``partition``: how the training data was split among the clients
    (`partition_statistics`), where the caller knows it (sim does, serve does not)."""
    rounds = [round_entry(r) for r in status.history if r.outcome == "completed"]
    return {
        "config": config,
        "run_id": status.run_id,
        "state": status.state.value,
        "rounds": rounds,
        "attempts": [round_entry(r) for r in status.history if r.outcome != "completed"],
        "final_accuracy": rounds[-1]["accuracy"] if rounds else None,
        "final_loss": rounds[-1]["loss"] if rounds else None,
        "bytes_up": sum(t.up for t in status.bytes_by_transport.values()),
        "bytes_down": sum(t.down for t in status.bytes_by_transport.values()),
        "bytes_by_transport": traffic_table(status.bytes_by_transport),
        "bytes_by_codec": traffic_table(status.bytes_by_codec),
        "clients": [
            {
                "client_id": c.client_id,
                "name": c.name,
                "transport": c.transport,
                "codec": c.codec,
                "state": c.state.value,
                "rounds_completed": c.rounds_completed,
                "bytes_up": c.bytes_up,
                "bytes_down": c.bytes_down,
            }
            for c in status.clients
        ],
        "partition": partition,
        "duration_s": round(duration_s, 3),
        **provenance(),
    }


def partition_statistics(
    labels: np.ndarray,
    clients: int,
    spec: str,
    seed: int,
    *,
    num_classes: int,
    classes: Sequence[str] = (),
) -> dict[str, Any]:
    """The examples and the label histogram of each client's part of the split that
    `fedgate.core.partition.partition` makes of ``labels`` (the one clients train on)."""
    labels = np.asarray(labels)
    parts = split(labels, clients, spec, seed)
    return {
        "spec": spec,
        "seed": seed,
        "clients": clients,
        "num_classes": num_classes,
        "classes": list(classes) or [str(label) for label in range(num_classes)],
        "per_client": [
            {
                "index": index,
                "name": f"client-{index}",  # the name clients take by default
                "examples": len(part),
                "labels": np.bincount(labels[part], minlength=num_classes).tolist(),
            }
            for index, part in enumerate(parts)
        ],
    }


def dataset_partition(dataset: Dataset, clients: int, spec: str, seed: int) -> dict[str, Any]:
    """`partition_statistics` of ``dataset``'s training split."""
    labels = dataset.y_train.numpy()
    return partition_statistics(
        labels, clients, spec, seed, num_classes=dataset.num_classes, classes=dataset.classes
    )


def round_entry(record: RoundRecord) -> dict[str, Any]:
    return {
        "round": record.round,
        "attempt": record.attempt,
        "outcome": record.outcome,
        "accuracy": finite(record.accuracy),
        "loss": finite(record.loss),
        "train_loss": finite(record.train_loss),
        "participants": len(record.participants),
        "participant_ids": list(record.participants),
        "num_examples": record.num_examples,
        "bytes_up": record.bytes_up,
        "bytes_down": record.bytes_down,
        "duration_s": record.duration_s,
        "excluded": list(record.excluded),
        "reason": record.reason,
    }


def provenance(command: str | None = None) -> dict[str, Any]:
    """Where and when a document was made (and by which command, where one is known): the
    same fields in run results, experiment cells, the centralized baseline and bench results."""
    stamp: dict[str, Any] = {
        "machine": machine_info(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return stamp if command is None else {**stamp, "command": command}


def machine_info() -> dict[str, Any]:
    """The machine a run or a bench suite ran on, as reports print it (one set of keys for
    results documents, experiment cells, the centralized baseline and bench suites)."""
    return {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gb": memory_gb(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": _version("torch"),
        "fedgate": fedgate.__version__,
        "pytest_benchmark": _version("pytest-benchmark"),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def traffic_table(table: dict[str, Traffic]) -> dict[str, dict[str, int]]:
    return {key: {"up": t.up, "down": t.down} for key, t in sorted(table.items())}


def finite(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def write_json(path: Path, document: dict[str, Any], *, private: bool = False) -> None:
    """Write ``document`` to ``path`` whole (readers never see half a file); ``private``:
    readable and writable by the owner only (mode 0600) from the moment it exists, for a
    file that holds a secret such as the admin token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2) + "\n"
    if private:
        write_private_text(path, text)
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_private_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in a file created with mode 0600: never chmod after
    the fact, which leaves a moment in which others can open the file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: a new file, so it gets this mode (umask can only narrow it), not an old one's
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
