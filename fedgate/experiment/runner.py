"""Running an experiment's grid into a directory, resumably.

The directory::

    DIR/experiment.json        the spec, its cells (id, kind, parameters, file), the sessions
    DIR/cells/<id>.json        one finished cell: its parameters and its results document
    DIR/cells/<id>.partial     a cell that started and has not finished (or failed)
    DIR/.lock                  the process writing DIR now

A cell's file is written whole (a temporary file renamed over it) only once the cell has
finished, so its presence means the cell is done. A re-run skips those and runs every
other cell: never started, interrupted (its ``.partial`` marker is still there), failed,
or with an unreadable file. Ids derive from every parameter, so a changed spec runs the
cells it changed and keeps the rest.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedgate.errors import ConfigError
from fedgate.experiment.progress import ExperimentProgress
from fedgate.experiment.spec import Cell, ExperimentSpec
from fedgate.run.centralized import train_centralized
from fedgate.run.results import provenance, write_json
from fedgate.run.sim_config import SimConfig
from fedgate.run.simulation import run_simulation
from fedgate.run.train_spec import TrainSpec

EXPERIMENT_FILE = "experiment.json"
CELLS_DIR = "cells"
LOCK_FILE = ".lock"
PARTIAL = ".partial"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def load_average() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else 0.0


@dataclass
class Session:
    """One invocation of the runner, as experiment.json records it."""

    command: str
    started: str = field(default_factory=now)
    began: float = field(default_factory=time.perf_counter)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    ended: str | None = None
    # the machine's 1-minute load average when the session began: on a shared machine,
    # what its wall times were measured against
    load_start: float = field(default_factory=load_average)

    def record(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "started": self.started,
            "ended": self.ended,
            "wall_s": round(time.perf_counter() - self.began, 3),
            "load_avg_1min": [self.load_start, load_average()],  # at the start, by now
            "ran": self.ran,
            "skipped": self.skipped,
            "failed": self.failed,
        }


class ExperimentDir:
    """The files of one experiment directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cells = root / CELLS_DIR

    def cell_path(self, cell: Cell) -> Path:
        return self.cells / f"{cell.id}.json"

    def partial_path(self, cell: Cell) -> Path:
        return self.cells / f"{cell.id}{PARTIAL}"

    def finished(self, cell: Cell) -> dict[str, Any] | None:
        """The cell's results document if its file is whole and is this cell's."""
        try:
            document = json.loads(self.cell_path(cell).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(document, dict) or not isinstance(document.get("result"), dict):
            return None
        described = document.get("cell")
        if not isinstance(described, dict) or described.get("id") != cell.id:
            return None
        result: dict[str, Any] = document["result"]
        return result

    def why_again(self, cell: Cell) -> str:
        """Why an unfinished cell runs (again): "" when it never started."""
        if self.partial_path(cell).exists():
            return "interrupted or failed earlier"
        if self.cell_path(cell).exists():
            return "its results file is unreadable"
        return ""

    def start(self, cell: Cell) -> None:
        write_json(self.partial_path(cell), {"cell": cell.id, "started": now(), "pid": os.getpid()})

    def finish(self, cell: Cell, result: dict[str, Any], wall_s: float) -> None:
        document = {"cell": cell.describe(), "finished": now(), "wall_s": wall_s, "result": result}
        write_json(self.cell_path(cell), document)  # whole, then the marker goes
        self.partial_path(cell).unlink(missing_ok=True)

    def fail(self, cell: Cell, error: BaseException) -> None:
        marker = {"cell": cell.id, "failed": now(), "error": f"{type(error).__name__}: {error}"}
        write_json(self.partial_path(cell), marker)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """This process alone writes the directory; a lock left by a dead one is taken over."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = self.root / LOCK_FILE
        if not _take(lock):
            holder = _lock_holder(lock)
            if holder is None or _alive(holder):
                who = "another fedgate experiment" + (f" (pid {holder})" if holder else "")
                raise ConfigError(
                    f"{who} is writing {self.root}; if none is, delete {lock} and start again"
                )
            lock.unlink(missing_ok=True)  # its writer died (killed, crashed): the lock is stale
            if not _take(lock):
                raise ConfigError(f"another fedgate experiment has just begun writing {self.root}")
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)


def _take(lock: Path) -> bool:
    """Create ``lock`` holding this pid, unless it exists (O_EXCL: two runners never both win)."""
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{os.getpid()}\n")
    return True


def _lock_holder(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: is there such a process, nothing sent
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def experiment_record(
    spec: ExperimentSpec, cells: list[Cell], directory: ExperimentDir, spec_file: str
) -> dict[str, Any]:
    """experiment.json without its sessions."""
    return {
        "kind": "experiment",
        "name": spec.name,
        "description": spec.description,
        "spec_file": spec_file,
        "spec": spec.source,
        "target_accuracy": spec.target_accuracy,
        "fixed": spec.fixed,
        "axes": spec.axes_record(),
        "centralized": None if spec.centralized is None else vars(spec.centralized),
        "cells": [
            {
                "id": cell.id,
                "kind": cell.kind,
                "params": dict(cell.params),
                "file": directory.cell_path(cell).relative_to(directory.root).as_posix(),
            }
            for cell in cells
        ],
        **provenance(),
    }


def _sessions(directory: ExperimentDir) -> list[Any]:
    """The sessions earlier runs recorded (experiment.json is rewritten, they are kept)."""
    try:
        earlier = json.loads((directory.root / EXPERIMENT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    sessions = earlier.get("sessions") if isinstance(earlier, dict) else None
    return sessions if isinstance(sessions, list) else []


@dataclass(frozen=True)
class Outcome:
    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[str, ...]
    wall_s: float


def run_experiment(
    spec: ExperimentSpec,
    out: Path,
    progress: ExperimentProgress,
    *,
    spec_file: str = "",
    command: str = "",
    keep_going: bool = False,
) -> Outcome:
    """Run every unfinished cell of ``spec`` into ``out``. A failing cell stops the run
    (its marker records the error) unless ``keep_going``: then the rest run, and the
    failures are in the outcome."""
    directory = ExperimentDir(out)
    cells = spec.cells()
    session = Session(command or shlex.join(["fedgate", "experiment", spec_file]))
    with directory.locked():
        record = experiment_record(spec, cells, directory, spec_file)
        history = _sessions(directory)

        def save() -> None:
            write_json(
                directory.root / EXPERIMENT_FILE,
                {**record, "sessions": [*history, session.record()]},
            )

        save()
        progress.begin(len(cells))
        try:
            for number, cell in enumerate(cells, start=1):
                _run_one(directory, number, cell, progress, session=session, keep_going=keep_going)
                save()
        finally:
            session.ended = now()
            save()
            progress.end()
    wall = round(time.perf_counter() - session.began, 3)
    return Outcome(tuple(session.ran), tuple(session.skipped), tuple(session.failed), wall)


def _run_one(
    directory: ExperimentDir,
    number: int,
    cell: Cell,
    progress: ExperimentProgress,
    *,
    session: Session,
    keep_going: bool,
) -> None:
    done = directory.finished(cell)
    if done is not None:
        directory.partial_path(cell).unlink(missing_ok=True)  # finished just after its file
        session.skipped.append(cell.id)
        progress.cell_skipped(number, cell, done)
        return
    progress.cell_started(number, cell, directory.why_again(cell))
    directory.start(cell)
    began = time.perf_counter()
    try:
        result = run_cell(cell, progress)
    except Exception as error:
        directory.fail(cell, error)
        session.failed.append(cell.id)
        progress.cell_failed(number, cell, error)
        if not keep_going:
            raise
        return
    wall = round(time.perf_counter() - began, 3)
    directory.finish(cell, result, wall)
    session.ran.append(cell.id)
    progress.cell_finished(number, cell, result, wall)


def run_cell(cell: Cell, progress: ExperimentProgress) -> dict[str, Any]:
    """One cell's results document: `fedgate train`'s or `fedgate sim`'s."""
    if isinstance(cell.config, TrainSpec):
        return train_centralized(cell.config, on_epoch=progress.epoch_done)
    assert isinstance(cell.config, SimConfig)
    return run_simulation(cell.config, on_round=progress.round_closed)
