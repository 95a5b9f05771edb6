"""Sections for the ``transports``, ``rounds`` and ``flower`` suites.

Each renders only when rows of its suite carry its fields, and is omitted otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from fedgate.report import plots
from fedgate.report.blocks import (
    MB,
    MISSING,
    Image,
    Paragraph,
    Section,
    Table,
    megabytes,
    plain,
    rate,
    seconds,
)
from fedgate.report.codec_sections import model_label
from fedgate.report.results import Row, number

Format = Callable[[float | None], str]
DIRECTION_ORDER = {"down": 0, "up": 1}


def _suite(rows: Sequence[Row], suite: str, fields: Sequence[str]) -> list[Row]:
    """Rows of ``suite`` holding at least one of ``fields``."""
    return [
        row
        for row in rows
        if row["suite"] == suite and any(row.get(field) is not None for field in fields)
    ]


def _label(row: Row, names: Sequence[str], separator: str = " · ") -> str:
    parts = []
    for name in names:
        value = row.get(name)
        if value is not None:
            parts.append(model_label(value) if name == "model" else str(value))
    return separator.join(parts) or MISSING


def _varying(rows: Sequence[Row], names: Sequence[str]) -> list[str]:
    """The name fields that tell rows apart (a field with one value everywhere is noise)."""
    return [n for n in names if len({row.get(n) for row in rows}) > 1] or list(names[-1:])


def transport_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    found = _suite(rows, "transports", ("mb_s", "wall_s"))
    if not found:
        return None
    keys = ["transport", "codec"]
    if len({row.get("model") for row in found}) > 1:
        keys.insert(0, "model")
    directions = sorted(
        {_direction(row) for row in found}, key=lambda d: (DIRECTION_ORDER.get(d, 2), d)
    )
    cells: dict[str, dict[str, Row]] = {}
    for row in found:
        cells.setdefault(_label(row, keys), {})[_direction(row)] = row
    chart = "transport-throughput.png"
    plots.bar_chart(
        out_dir / chart,
        groups=[label.replace(" · ", "\n") for label in cells],
        series={d: [_field(cells[label].get(d), "mb_s") for label in cells] for d in directions},
        title="Model transfer throughput per transport and codec",
        ylabel="MB/s",
    )
    return Section(
        "Transport throughput",
        [
            Paragraph(
                "Wall time and MB/s of moving one encoded model: 'down' is the global model "
                "to a client, 'up' an update to the server."
            ),
            _transport_table(keys, directions, cells),
            Image(chart, "Transfer throughput (MB/s) per transport and codec"),
        ],
    )


def _direction(row: Row) -> str:
    return str(row.get("direction") or MISSING)


def _transport_table(
    keys: Sequence[str], directions: Sequence[str], cells: dict[str, dict[str, Row]]
) -> Table:
    headers = [" · ".join(keys), *(f"{d} MB/s" for d in directions)]
    headers += [f"{d} wall" for d in directions]
    rows = [
        [label, *(rate(_field(by_dir.get(d), "mb_s")) for d in directions)]
        + [seconds(_field(by_dir.get(d), "wall_s")) for d in directions]
        for label, by_dir in cells.items()
    ]
    return Table(headers, rows)


def _field(row: Row | None, field: str) -> float | None:
    return None if row is None else number(row, field)


ROUND_FIELDS: tuple[tuple[str, str, Format], ...] = (
    ("round_latency_s", "round latency", seconds),
    ("overhead_s", "overhead", seconds),
    ("bytes_per_round", "MB per round", megabytes),
    ("accuracy", "accuracy", plain),
)


def rounds_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    found = _suite(rows, "rounds", [field for field, _, _ in ROUND_FIELDS])
    if not found:
        return None
    names = ["transport", "codec", "clients"]
    table = [
        [_round_label(row), *(fmt(number(row, field)) for field, _, fmt in ROUND_FIELDS)]
        for row in found
    ]
    headers = [" · ".join(names), *(label for _, label, _ in ROUND_FIELDS)]
    chart = "round-latency.png"
    plots.bar_chart(
        out_dir / chart,
        groups=[_round_label(row).replace(" · ", "\n") for row in found],
        series={
            "round latency": [number(row, "round_latency_s") for row in found],
            "overhead": [number(row, "overhead_s") for row in found],
        },
        title="Round latency per transport and codec",
        ylabel="seconds",
    )
    return Section(
        "Round latency",
        [
            Paragraph(
                "Wall time of one federated round, the part of it not spent training "
                "(overhead), encoded bytes moved per round (MB = 10^6 bytes) and final accuracy."
            ),
            Table(headers, table),
            Image(chart, "Round latency and overhead per transport and codec (s)"),
        ],
    )


def _round_label(row: Row) -> str:
    clients = number(row, "clients")
    base = _label(row, ("transport", "codec"))
    return base if clients is None else f"{base} · {clients:.0f} clients"


def accuracy_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    found = [
        row for row in _suite(rows, "rounds", ("accuracy_per_round",)) if row["accuracy_per_round"]
    ]
    if not found:
        return None
    names = _varying(found, ("transport", "clients", "codec"))
    curves = {_label(row, names): [float(v) for v in row["accuracy_per_round"]] for row in found}
    table = [
        [label, str(len(values)), plain(values[0]), plain(max(values)), plain(values[-1])]
        for label, values in curves.items()
    ]
    chart = "accuracy-per-round.png"
    plots.line_chart(
        out_dir / chart,
        series=curves,
        title="Test accuracy after each round",
        xlabel="round",
        ylabel="accuracy",
    )
    return Section(
        "Accuracy per round",
        [
            Paragraph("Held-out accuracy of the global model after each round, per codec."),
            Table([" · ".join(names), "rounds", "first", "best", "final"], table),
            Image(chart, "Accuracy per round per codec"),
        ],
    )


FLOWER_FIELDS: tuple[tuple[str, str, Format], ...] = (
    ("round_wall_s", "round wall time", seconds),
    ("bytes_per_round", "MB per round", megabytes),
    ("accuracy", "accuracy", plain),
)


def flower_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    found = _suite(rows, "flower", [field for field, _, _ in FLOWER_FIELDS])
    if not found:
        return None
    names = ["framework", "transport"]
    table = [
        [_label(row, names), *(fmt(number(row, field)) for field, _, fmt in FLOWER_FIELDS)]
        for row in found
    ]
    transports = list(dict.fromkeys(_label(row, ["transport"]) for row in found))
    frameworks = list(dict.fromkeys(_label(row, ["framework"]) for row in found))
    walls = {(_label(r, ["framework"]), _label(r, ["transport"])): r for r in found}
    chart = "flower-vs-fedgate.png"
    plots.bar_chart(
        out_dir / chart,
        groups=transports,
        series={
            f: [_field(walls.get((f, t)), "round_wall_s") for t in transports] for f in frameworks
        },
        title="Round wall time: Flower vs fedgate",
        ylabel="seconds",
    )
    return Section(
        "Flower vs fedgate",
        [
            Paragraph(
                "The same federation run by Flower and by fedgate: wall time per round, "
                f"bytes per round (MB = {MB:,} bytes) and final accuracy."
            ),
            Table([" · ".join(names), *(label for _, label, _ in FLOWER_FIELDS)], table),
            Image(chart, "Round wall time per framework and transport (s)"),
        ],
    )
