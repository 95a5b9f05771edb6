"""Reading results documents (written by ``fedgate bench``) and checking their shape.

Renderers trust what passes here: every field they read as a number is a number, every
name is a string, so a malformed file fails once, here, with the file and field named.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgate.errors import ConfigError

Row = dict[str, Any]

# Fields renderers read as names, and as numbers (plus every ``*_s``, ``*_pct``, ``*_bytes``).
NAME_FIELDS = frozenset(
    {"suite", "model", "codec", "wire_codec", "transport", "direction", "framework", "store"}
)
NUMBER_FIELDS = frozenset({"bytes", "clients", "accuracy", "rel_l2", "rel_l2_delta", "tensors"})
NUMBER_SUFFIXES = ("_s", "_pct", "_bytes", "_rounds", "_per_round")
# Per-round series (lists of numbers), though their names end like numeric fields.
LIST_FIELDS = frozenset(
    {"accuracy_per_round", "round_latencies_s", "round_overheads_s", "round_trainings_s"}
)


@dataclass(frozen=True)
class ResultsFile:
    """One results document: where it came from, what produced it, and its rows."""

    path: Path
    machine: dict[str, Any]
    command: str
    created: str | None
    rows: list[Row]
    skipped: list[str]  # pytest's lines for benchmarks the suite skipped, with the reason


def load_results(path: Path) -> ResultsFile:
    """Read and check ``path``; any fault is a `ConfigError` naming the file and the field."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read results file {path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"results file {path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"results file {path}: expected a JSON object at the top level")
    machine, command = document.get("machine"), document.get("command")
    results, created = document.get("results"), document.get("created")
    if not isinstance(machine, dict):
        raise ConfigError(f"results file {path}: 'machine' must be an object")
    if not isinstance(command, str):
        raise ConfigError(f"results file {path}: 'command' must be the command line (a string)")
    if not isinstance(results, list):
        raise ConfigError(f"results file {path}: 'results' must be a list of rows")
    skipped = document.get("skipped", [])
    if not (isinstance(skipped, list) and all(isinstance(line, str) for line in skipped)):
        raise ConfigError(f"results file {path}: 'skipped' must be a list of strings")
    rows = [check_row(path, index, row) for index, row in enumerate(results)]
    return ResultsFile(
        path=path,
        machine=machine,
        command=command,
        created=created if isinstance(created, str) else None,
        rows=rows,
        skipped=skipped,
    )


def check_row(path: Path, index: int, row: object) -> Row:
    where = f"results file {path}: results[{index}]"
    if not isinstance(row, dict):
        raise ConfigError(f"{where} must be an object")
    if not isinstance(row.get("suite"), str):
        raise ConfigError(f"{where} has no 'suite' name")
    for field, value in row.items():
        if value is None:
            continue
        if field in NAME_FIELDS and not isinstance(value, str):
            raise ConfigError(f"{where}: {field!r} must be a string, not {value!r}")
        if _numeric(field) and not _is_number(value):
            raise ConfigError(f"{where}: {field!r} must be a number, not {value!r}")
        if field in LIST_FIELDS and not (
            isinstance(value, list) and all(_is_number(v) for v in value)
        ):
            raise ConfigError(f"{where}: {field!r} must be a list of numbers")
    return row


def _numeric(field: str) -> bool:
    if field in LIST_FIELDS:
        return False
    return field in NUMBER_FIELDS or field.startswith("rel_l2") or field.endswith(NUMBER_SUFFIXES)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def rows_of(files: Iterable[ResultsFile], suite: str) -> list[Row]:
    return [row for results in files for row in results.rows if row["suite"] == suite]


def number(row: Mapping[str, Any], field: str) -> float | None:
    """``row[field]`` as a float, or None when absent (checked numeric on load)."""
    value = row.get(field)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
