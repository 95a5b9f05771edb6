"""What an experiment shows while it runs: rich progress bars on a terminal (cells, and the
running cell's rounds or epochs), plain log lines anywhere else (a log file, CI, a pipe),
where bars would be noise."""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fedgate.core.messages import RoundRecord
from fedgate.experiment.spec import Cell


class ExperimentProgress(Protocol):
    """Told of every step of an experiment, in order; shows them as it sees fit."""

    def begin(self, cells: int) -> None: ...
    def cell_skipped(self, number: int, cell: Cell, result: dict[str, Any]) -> None: ...
    def cell_started(self, number: int, cell: Cell, redo: str) -> None: ...
    def round_closed(self, record: RoundRecord) -> None: ...
    def epoch_done(self, entry: dict[str, Any]) -> None: ...
    def cell_finished(
        self, number: int, cell: Cell, result: dict[str, Any], wall_s: float
    ) -> None: ...
    def cell_failed(self, number: int, cell: Cell, error: BaseException) -> None: ...
    def end(self) -> None: ...


def accuracy(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "n/a"


class LogProgress:
    """One line per event, flushed: readable in a log file as it grows."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.cells = 0
        self.steps = 0

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _tag(self, number: int) -> str:
        return f"[{number:>{len(str(self.cells))}}/{self.cells}]"

    def begin(self, cells: int) -> None:
        self.cells = cells
        self._print(f"experiment: {cells} cells")

    def cell_skipped(self, number: int, cell: Cell, result: dict[str, Any]) -> None:
        final = accuracy(result.get("final_accuracy"))
        self._print(f"{self._tag(number)} {cell.id}: skipped, finished earlier (accuracy {final})")

    def cell_started(self, number: int, cell: Cell, redo: str) -> None:
        self.steps = cell.steps()
        unit = "rounds" if cell.kind != "centralized" else "epochs"
        again = f" ({redo}, running it again)" if redo else ""
        self._print(f"{self._tag(number)} {cell.id}: {self.steps} {unit}{again}")

    def round_closed(self, record: RoundRecord) -> None:
        if record.outcome != "completed":
            self._print(f"  round {record.round}: {record.outcome} (attempt {record.attempt})")
            return
        self._print(
            f"  round {record.round:>3}/{self.steps}  accuracy {accuracy(record.accuracy)}  "
            f"up {record.bytes_up / 1e6:.2f} MB  down {record.bytes_down / 1e6:.2f} MB  "
            f"{record.duration_s:.2f}s"
        )

    def epoch_done(self, entry: dict[str, Any]) -> None:
        self._print(
            f"  epoch {entry['epoch']:>3}/{self.steps}  accuracy {accuracy(entry['accuracy'])}  "
            f"{entry['duration_s']:.2f}s"
        )

    def cell_finished(self, number: int, cell: Cell, result: dict[str, Any], wall_s: float) -> None:
        final = accuracy(result.get("final_accuracy"))
        self._print(f"{self._tag(number)} {cell.id}: done, accuracy {final} in {wall_s:.1f}s")

    def cell_failed(self, number: int, cell: Cell, error: BaseException) -> None:
        self._print(f"{self._tag(number)} {cell.id}: FAILED: {error}")

    def end(self) -> None:
        return None


class RichProgress:
    """Two bars: the grid's cells, and the running cell's rounds (or epochs); a line above
    them for every cell that ends."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.cells_bar: TaskID | None = None
        self.steps_bar: TaskID | None = None

    def begin(self, cells: int) -> None:
        self.bars.start()
        self.cells_bar = self.bars.add_task("cells", total=cells, note="")
        self.steps_bar = self.bars.add_task("rounds", total=None, note="", visible=False)

    def _advance_cells(self) -> None:
        if self.cells_bar is not None:
            self.bars.advance(self.cells_bar)

    def cell_skipped(self, number: int, cell: Cell, result: dict[str, Any]) -> None:
        final = accuracy(result.get("final_accuracy"))
        self.console.print(f"[dim]{cell.id}: finished earlier (accuracy {final}), skipped[/]")
        self._advance_cells()

    def cell_started(self, number: int, cell: Cell, redo: str) -> None:
        unit = "epochs" if cell.kind == "centralized" else "rounds"
        if redo:
            self.console.print(f"[yellow]{cell.id}: {redo}, running it again[/]")
        if self.cells_bar is not None and self.steps_bar is not None:
            self.bars.update(self.cells_bar, note=cell.id)
            self.bars.reset(self.steps_bar, total=cell.steps(), description=unit, visible=True)
            self.bars.update(self.steps_bar, note="")

    def _step(self, note: str) -> None:
        if self.steps_bar is not None:
            self.bars.update(self.steps_bar, advance=1, note=note)

    def round_closed(self, record: RoundRecord) -> None:
        if record.outcome == "completed":
            self._step(f"accuracy {accuracy(record.accuracy)}")
        else:
            self.console.print(f"[yellow]round {record.round}: {record.outcome}[/]")

    def epoch_done(self, entry: dict[str, Any]) -> None:
        self._step(f"accuracy {accuracy(entry['accuracy'])}")

    def cell_finished(self, number: int, cell: Cell, result: dict[str, Any], wall_s: float) -> None:
        final = accuracy(result.get("final_accuracy"))
        self.console.print(f"[green]{cell.id}[/]: accuracy {final} in {wall_s:.1f}s")
        self._advance_cells()

    def cell_failed(self, number: int, cell: Cell, error: BaseException) -> None:
        self.console.print(f"[red]{cell.id}: FAILED: {error}[/]")
        self._advance_cells()

    def end(self) -> None:
        self.bars.stop()


def progress_for(stream: TextIO | None = None) -> ExperimentProgress:
    """Bars when ``stream`` (stdout) is a terminal, as rich judges it (FORCE_TERMINAL and
    friends are honoured); log lines otherwise."""
    console = Console(file=stream or sys.stdout)
    return RichProgress(console) if console.is_terminal else LogProgress(stream)
