"""Sections for the ``rounds`` and ``accuracy`` suites (``transports``: transport_sections;
``flower``: flower_sections).

Each renders only when rows of its suite carry its fields, and is omitted otherwise.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from fedgate.report import plots
from fedgate.report.blocks import (
    MISSING,
    Image,
    Paragraph,
    Section,
    Table,
    megabytes,
    plain,
    seconds,
)
from fedgate.report.results import Row, number
from fedgate.report.rows import (
    Format,
    clients_of,
    clients_title,
    distinct_labels,
    row_label,
    suite_rows,
    varying,
)
from fedgate.report.store_sections import is_store_row

ROUND_FIELDS: tuple[tuple[str, str, Format], ...] = (
    ("round_latency_s", "round latency", seconds),
    ("overhead_s", "overhead", seconds),
    ("train_s", "slowest training", seconds),
    ("bytes_per_round", "MB per round", megabytes),
    ("accuracy", "accuracy", plain),
)
ROUNDS_EXPLAIN = (
    "Whole federations on loopback (server and clients in separate processes), one per "
    "transport x codec x client count. Round latency: median wall time of a round, from the "
    "first client receiving the round's task to the first receiving the next one's. "
    "Overhead: median over rounds of the round's wall time minus the local training time "
    "of its slowest client (transfers, codec work on both sides, server checks, "
    "aggregation, evaluation). MB per round: encoded payload bytes both ways (MB = 10^6 "
    "bytes). Accuracy: held-out accuracy after the last round."
)


def _grid(rows: Sequence[Row], fields: Sequence[str]) -> list[Row]:
    """The rounds suite's transport x codec x clients rows: its store comparison has a
    section of its own (`store_sections`)."""
    return [row for row in suite_rows(rows, "rounds", fields) if not is_store_row(row)]


def rounds_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    found = _grid(rows, [field for field, _, _ in ROUND_FIELDS])
    if not found:
        return None
    codecs, transports = distinct_labels(found, "codec"), distinct_labels(found, "transport")
    found = sorted(
        found,
        key=lambda r: (
            clients_of(r),
            transports.index(row_label(r, ["transport"])),
            codecs.index(row_label(r, ["codec"])),
        ),
    )
    table = [
        [_round_label(row), *(fmt(number(row, field)) for field, _, fmt in ROUND_FIELDS)]
        for row in found
    ]
    headers = ["transport · codec · clients", *(label for _, label, _ in ROUND_FIELDS)]
    chart = "round-latency.png"
    _round_chart(found, out_dir / chart, codecs, transports)
    return Section(
        "Round latency",
        [
            Paragraph(ROUNDS_EXPLAIN),
            _round_summary(found, transports),
            Table(headers, table),
            Image(
                chart,
                "Round latency and overhead (s) per codec and transport, a panel per client count",
            ),
        ],
    )


def _round_label(row: Row) -> str:
    clients = number(row, "clients")
    base = row_label(row, ("transport", "codec"))
    return base if clients is None else f"{base} · {clients:.0f} clients"


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _round_summary(rows: Sequence[Row], transports: Sequence[str]) -> Table:
    """Per client count and transport, the median over codecs (each codec weighs the same)."""
    headers = ["clients"]
    for transport in transports:
        headers += [f"{transport} round", f"{transport} overhead"]
    table = []
    for clients in sorted({clients_of(r) for r in rows}):
        cells = [f"{clients:.0f}"]
        for transport in transports:
            mine = [
                r
                for r in rows
                if clients_of(r) == clients and row_label(r, ["transport"]) == transport
            ]
            cells.append(seconds(_median([number(r, "round_latency_s") for r in mine])))
            cells.append(seconds(_median([number(r, "overhead_s") for r in mine])))
        table.append(cells)
    return Table(headers, table, caption="Median over codecs, per client count and transport")


def _round_chart(rows: Sequence[Row], path: Path, codecs: list[str], transports: list[str]) -> None:
    panels = []
    for clients in sorted({clients_of(r) for r in rows}):
        cells = {
            (row_label(r, ["transport"]), row_label(r, ["codec"])): r
            for r in rows
            if clients_of(r) == clients
        }
        series: dict[str, list[float | None]] = {}
        for transport in transports:
            for field, what in (("round_latency_s", "round"), ("overhead_s", "overhead")):
                series[f"{transport} {what}"] = [
                    None if (row := cells.get((transport, codec))) is None else number(row, field)
                    for codec in codecs
                ]
        panels.append(plots.BarPanel(clients_title(clients), codecs, series, "seconds"))
    plots.bar_rows(path, panels=panels)


def accuracy_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    found = [row for row in _grid(rows, ("accuracy_per_round",)) if row["accuracy_per_round"]]
    if not found:
        return None
    names = varying(found, ("transport", "clients", "codec"))
    curves = {row_label(row, names): [float(v) for v in row["accuracy_per_round"]] for row in found}
    table = [
        [label, str(len(values)), plain(values[0]), plain(max(values)), plain(values[-1])]
        for label, values in curves.items()
    ]
    shown = distinct_labels(found, "transport")[0]
    chart = "accuracy-per-round.png"
    plots.line_rows(
        out_dir / chart,
        panels=_accuracy_panels([r for r in found if row_label(r, ["transport"]) == shown]),
        xlabel="round",
        ylabel="accuracy",
        ylim=(0.0, 1.0),
    )
    return Section(
        "Accuracy per round",
        [
            Paragraph(
                "Held-out accuracy of the global model after each round. The chart shows the "
                f"{shown} runs, one line per codec and one panel per client count; "
                + _transport_spread(found)
            ),
            Table([" · ".join(names), "rounds", "first", "best", "final"], table),
            Image(chart, f"Accuracy per round per codec ({shown}), one panel per client count"),
        ],
    )


def _accuracy_panels(rows: Sequence[Row]) -> dict[str, dict[str, list[float]]]:
    panels: dict[str, dict[str, list[float]]] = {}
    for row in sorted(rows, key=clients_of):
        title = clients_title(clients_of(row)) if row.get("clients") is not None else MISSING
        panels.setdefault(title, {})[row_label(row, ["codec"])] = [
            float(v) for v in row["accuracy_per_round"]
        ]
    return panels


def _transport_spread(rows: Sequence[Row]) -> str:
    """How far apart the transports' curves are, for the same codec and client count."""
    runs: dict[tuple[str, float], list[list[float]]] = {}
    for row in rows:
        key = (row_label(row, ["codec"]), clients_of(row))
        runs.setdefault(key, []).append([float(v) for v in row["accuracy_per_round"]])
    gaps = [
        abs(a - b)
        for curves in runs.values()
        for other in curves[1:]
        for a, b in zip(curves[0], other, strict=False)
    ]
    if not gaps:
        return "each configuration ran on one transport only."
    return (
        f"the largest gap between transports at any round, same codec and clients: {max(gaps):.4f}."
    )
