"""The section for the ``transports`` suite: moving a model down and an update up."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedgate.report import plots
from fedgate.report.blocks import MISSING, Image, Paragraph, Section, Table, megabytes, rate
from fedgate.report.blocks import seconds as format_seconds
from fedgate.report.codec_sections import model_label
from fedgate.report.results import Row, number

SUITE = "transports"
DIRECTIONS = ("down", "up")
REFERENCE_CODEC = "raw"  # the summary compares transports on plain bytes
CEILING = "tcp"  # plain loopback TCP with the raw codec's bytes: what a transport could reach
SPEEDS = (("mb_s", "wire"), ("fp32_mb_s", "fp32"))
EXPLAIN = (
    "Wall time of one transfer through the client's transport call (median of the "
    "pytest-benchmark rounds), client and server in separate processes on loopback. "
    "'down': fetching the global model, which the server encodes once per codec and serves "
    "from that cache; 'up': sending an update, timed until the server's answer after it has "
    "received every byte (see bench/test_transports.py). Two throughputs, MB = 10^6 bytes: "
    "'wire' is encoded bytes on the wire per second; 'fp32' is the fp32 model size moved "
    "per second, which credits a codec with the bytes it saved."
)


@dataclass(frozen=True)
class TransportGrid:
    """Transport rows by (model, codec, transport, direction)."""

    models: list[str]  # smallest model first
    codecs: list[str]  # largest encoding first
    transports: list[str]
    cells: dict[tuple[str, str, str, str], Row]

    def get(self, model: str, codec: str, transport: str, direction: str) -> Row | None:
        return self.cells.get((model, codec, transport, direction))

    def speed(
        self, model: str, codec: str, transport: str, direction: str, field: str
    ) -> float | None:
        row = self.get(model, codec, transport, direction)
        return None if row is None else number(row, field)

    def size(self, model: str, codec: str) -> float | None:
        for transport in self.transports:
            for direction in DIRECTIONS:
                row = self.get(model, codec, transport, direction)
                if row is not None and number(row, "bytes") is not None:
                    return number(row, "bytes")
        return None

    def fp32_size(self, model: str) -> float | None:
        sizes = [number(row, "fp32_bytes") for key, row in self.cells.items() if key[0] == model]
        return next((size for size in sizes if size is not None), None)


def _text(row: Row, field: str) -> str:
    value = row.get(field)
    return MISSING if value is None else str(value)


def transport_grid(rows: Sequence[Row]) -> TransportGrid | None:
    found = [
        row
        for row in rows
        if row["suite"] == SUITE and any(row.get(f) is not None for f in ("mb_s", "wall_s"))
    ]
    if not found:
        return None
    cells = {
        (_text(r, "model"), _text(r, "codec"), _text(r, "transport"), _text(r, "direction")): r
        for r in found
    }
    fp32 = {m: number(r, "fp32_bytes") or math.inf for (m, _, _, _), r in cells.items()}
    models = sorted(dict.fromkeys(key[0] for key in cells), key=lambda m: fp32[m])
    transports = list(dict.fromkeys(key[2] for key in cells))
    first_seen = list(dict.fromkeys(key[1] for key in cells))
    partial = TransportGrid(models, first_seen, transports, cells)

    def largest_first(codec: str) -> tuple[float, int]:
        size = partial.size(models[-1], codec)
        return (-(size if size is not None else -1.0), first_seen.index(codec))

    return TransportGrid(models, sorted(first_seen, key=largest_first), transports, cells)


def transport_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    grid = transport_grid(rows)
    if grid is None:
        return None
    blocks: list[Paragraph | Table | Image] = [Paragraph(EXPLAIN)]
    summary = _summary_table(grid)
    if summary is not None:
        blocks.append(summary)
    blocks += [_model_table(grid, model) for model in grid.models]
    for field, label in SPEEDS:
        if not any(number(row, field) is not None for row in grid.cells.values()):
            continue
        chart = "transport-throughput.png" if field == "mb_s" else "transport-fp32-throughput.png"
        what = "encoded bytes on the wire" if label == "wire" else "fp32 model size"
        _chart(grid, out_dir / chart, field, f"MB/s of {what}", log=field != "mb_s")
        blocks.append(
            Image(
                chart,
                f"Transfer throughput per codec, transport and direction: MB/s of {what}"
                + (" (log scale)" if field != "mb_s" else ""),
            )
        )
    return Section("Transport throughput", list(blocks))


def _summary_table(grid: TransportGrid) -> Table | None:
    """The transports on the raw codec (plain bytes), per model and direction, and each as
    a share of plain TCP's throughput where the run measured that ceiling."""
    if not any(key[1] == REFERENCE_CODEC for key in grid.cells):
        return None
    wires = [t for t in grid.transports if t != CEILING]
    ceiling = CEILING in grid.transports
    headers = ["model · direction", *(f"{t} MB/s" for t in grid.transports)]
    ratio = len(wires) == 2
    headers += [f"{wires[0]} / {wires[1]}"] if ratio else []
    headers += [f"{t} % of {CEILING}" for t in wires] if ceiling else []
    table = []
    for model in grid.models:
        for direction in DIRECTIONS:
            speed = {
                t: grid.speed(model, REFERENCE_CODEC, t, direction, "mb_s") for t in grid.transports
            }
            cells = [f"{model_label(model)} · {direction}"]
            cells += [rate(speed[t]) for t in grid.transports]
            cells += [_share(speed[wires[0]], speed[wires[1]], "x")] if ratio else []
            cells += [_share(speed[t], speed[CEILING], "%") for t in wires] if ceiling else []
            table.append(cells)
    return Table(
        headers,
        table,
        caption=f"Transports compared on the {REFERENCE_CODEC} codec (MB/s on the wire)",
    )


def _share(part: float | None, whole: float | None, unit: str) -> str:
    if not part or not whole:
        return MISSING
    return f"{part / whole:.2f}x" if unit == "x" else f"{100 * part / whole:.0f} %"


def _model_table(grid: TransportGrid, model: str) -> Table:
    headers = ["codec · transport"]
    for direction in DIRECTIONS:
        headers += [f"{direction} MB", f"{direction} wall"]
        headers += [f"{direction} MB/s {label}" for _, label in SPEEDS]
    table = []
    for codec in grid.codecs:
        for transport in grid.transports:
            rows = [grid.get(model, codec, transport, d) for d in DIRECTIONS]
            if all(row is None for row in rows):
                continue
            cells = [f"{_codec_label(codec, rows)} · {transport}"]
            for row in rows:
                cells += [megabytes(_number(row, "bytes")), format_seconds(_number(row, "wall_s"))]
                cells += [rate(_number(row, f)) for f, _ in SPEEDS]
            table.append(cells)
    fp32 = grid.fp32_size(model)
    caption = model_label(model) + ("" if fp32 is None else f" (fp32 {megabytes(fp32)} MB)")
    return Table(headers, table, caption=caption)


def _number(row: Row | None, field: str) -> float | None:
    return None if row is None else number(row, field)


def _codec_label(codec: str, rows: Sequence[Row | None]) -> str:
    """The codec, and what its bytes travelled in where that differs (a codec for deltas
    only sends whole models down in the dense codec it names)."""
    others = sorted(
        {
            f"{r.get('direction')}: {r['wire_codec']}"
            for r in rows
            if r is not None and r.get("wire_codec") not in (None, codec)
        }
    )
    return codec if not others else f"{codec} ({', '.join(others)})"


def _chart(grid: TransportGrid, path: Path, field: str, ylabel: str, log: bool) -> None:
    panels = []
    for model in grid.models:
        series = {
            f"{transport} {direction}": [
                grid.speed(model, codec, transport, direction, field) for codec in grid.codecs
            ]
            for transport in grid.transports
            for direction in DIRECTIONS
        }
        panels.append(plots.BarPanel(model_label(model), grid.codecs, series, ylabel))
    # fp32 MB/s spans four orders of magnitude (a sparse codec moves a model in kilobytes).
    plots.bar_rows(path, panels=panels, log=log)
