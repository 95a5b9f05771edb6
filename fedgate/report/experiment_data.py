"""Reading an experiment directory (written by `fedgate experiment`) and checking its shape.

``DIR/experiment.json`` lists the cells and where each one's file is; a cell's file holds
its parameters and its results document (`fedgate sim`'s, or `fedgate train`'s for the
centralized baseline). Cells listed without a file have not finished: the report says so
and draws the rest. Anything malformed is a `ConfigError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from fedgate.errors import ConfigError

EXPERIMENT_FILE = "experiment.json"
CENTRALIZED = "centralized"
FEDERATED = "federated"
SEED = "seed"


@dataclass(frozen=True)
class Run:
    """A finished cell: a federation's accuracy per round, or the baseline's per epoch."""

    id: str
    kind: str
    params: dict[str, Any]
    accuracy: tuple[float | None, ...]
    traffic: tuple[int, ...]  # bytes up + down on the wire by the end of each round
    final_accuracy: float | None
    duration_s: float | None
    partition: object | None

    @property
    def seed(self) -> int:
        value = self.params.get(SEED, 0)
        return value if _is_int(value) else 0


@dataclass(frozen=True)
class Experiment:
    path: Path
    name: str
    description: str
    spec_file: str
    target: float | None
    fixed: dict[str, Any]
    axes: dict[str, list[Any]]
    centralized: dict[str, Any] | None
    runs: tuple[Run, ...]
    missing: tuple[str, ...]  # listed cells that have not finished
    sessions: tuple[dict[str, Any], ...]
    machine: dict[str, Any]

    @property
    def varying(self) -> list[str]:
        """The axes that take more than one value, seeds aside: what tells groups apart."""
        return [name for name, values in self.axes.items() if name != SEED and len(values) > 1]

    def label(self, run: Run) -> str:
        parts = [_shown(name, run.params.get(name)) for name in self.varying]
        return ", ".join(parts) or FEDERATED

    def groups(self) -> dict[str, list[Run]]:
        """Federated runs by every parameter but the seed, in the grid's order."""
        groups: dict[str, list[Run]] = {}
        for run in self.runs:
            if run.kind == FEDERATED:
                groups.setdefault(self.label(run), []).append(run)
        return groups

    def baselines(self) -> list[Run]:
        return [run for run in self.runs if run.kind == CENTRALIZED]

    def baseline(self, seed: int) -> Run | None:
        return next((run for run in self.baselines() if run.seed == seed), None)


def _shown(name: str, value: object) -> str:
    if name == "clients":
        return f"{value} clients"
    return str(value) if isinstance(value, str) else f"{name} {value}"


def is_experiment(path: Path) -> bool:
    return path.is_dir()


def load_experiment(path: Path) -> Experiment:
    document = _json(path / EXPERIMENT_FILE, f"{path} is not an experiment directory")
    where = str(path / EXPERIMENT_FILE)
    cells = _field(document, "cells", list, where)
    runs: list[Run] = []
    missing: list[str] = []
    for index, entry in enumerate(cells):
        run = _cell(path, entry, f"{where}: cells[{index}]")
        if isinstance(run, Run):
            runs.append(run)
        else:
            missing.append(run)
    target = document.get("target_accuracy")
    centralized = document.get("centralized")
    return Experiment(
        path=path,
        name=_field(document, "name", str, where),
        description=_text(document.get("description")),
        spec_file=_text(document.get("spec_file")),
        target=float(target) if _is_number(target) else None,
        fixed=_field(document, "fixed", dict, where),
        axes=_field(document, "axes", dict, where),
        centralized=centralized if isinstance(centralized, dict) else None,
        runs=tuple(runs),
        missing=tuple(missing),
        sessions=tuple(s for s in document.get("sessions", []) if isinstance(s, dict)),
        machine=_field(document, "machine", dict, where),
    )


def _json(path: Path, absent: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{absent} (no {path.name})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None


def _field(document: object, key: str, kind: type, where: str) -> Any:
    value = document.get(key) if isinstance(document, dict) else None
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: {key!r} must be a {kind.__name__}")
    return value


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _cell(root: Path, entry: object, where: str) -> Run | str:
    """The cell's run, or its id when it has not finished."""
    cell_id: str = _field(entry, "id", str, where)
    kind = _field(entry, "kind", str, where)
    params = _field(entry, "params", dict, where)
    relative = Path(_field(entry, "file", str, where))
    if relative.is_absolute() or ".." in relative.parts:
        raise ConfigError(f"{where}: its file must lie inside the experiment directory")
    if kind not in (FEDERATED, CENTRALIZED):
        raise ConfigError(f"{where}: kind must be {FEDERATED} or {CENTRALIZED}, not {kind!r}")
    if not (root / relative).is_file():
        return cell_id
    document = _json(root / relative, f"{root / relative} is missing")
    result = _field(document, "result", dict, str(root / relative))
    return _run(cell_id, kind, params, result, str(root / relative))


def _run(
    cell_id: str, kind: str, params: dict[str, Any], result: dict[str, Any], where: str
) -> Run:
    steps = _field(result, "epochs" if kind == CENTRALIZED else "rounds", list, where)
    accuracy = tuple(_accuracy(step, f"{where}: step {i}") for i, step in enumerate(steps))
    final = result.get("final_accuracy")
    duration = result.get("duration_s")
    return Run(
        id=cell_id,
        kind=kind,
        params=params,
        accuracy=accuracy,
        traffic=() if kind == CENTRALIZED else _traffic(result, where),
        final_accuracy=float(final) if _is_number(final) else None,
        duration_s=float(duration) if _is_number(duration) else None,
        partition=result.get("partition"),
    )


def _accuracy(step: object, where: str) -> float | None:
    value = step.get("accuracy") if isinstance(step, dict) else "absent"
    if value is not None and not _is_number(value):
        raise ConfigError(f"{where}: 'accuracy' must be a number or null")
    return None if value is None else float(value)


def _traffic(result: Mapping[str, Any], where: str) -> tuple[int, ...]:
    """Bytes on the wire by the end of each completed round, the attempts that failed
    before it included: what reaching that round's accuracy cost."""
    rounds = _entries(result.get("rounds"), where)
    attempts = _entries(result.get("attempts", []), where)
    spent, totals = 0, []
    for entry in rounds:
        number = entry["round"]
        spent += sum(a["bytes_up"] + a["bytes_down"] for a in attempts if a["round"] == number)
        spent += entry["bytes_up"] + entry["bytes_down"]
        totals.append(spent)
    return tuple(totals)


def _entries(value: object, where: str) -> list[dict[str, int]]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: 'rounds' and 'attempts' must be lists")
    for entry in value:
        fields = (
            [entry.get(k) for k in ("round", "bytes_up", "bytes_down")]
            if isinstance(entry, dict)
            else [None]
        )
        if not all(_is_int(v) and v >= 0 for v in fields):
            raise ConfigError(f"{where}: a round needs its number, bytes_up and bytes_down")
    return value


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
