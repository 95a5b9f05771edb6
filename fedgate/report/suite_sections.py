"""Sections for the ``rounds`` and ``flower`` suites (``transports``: transport_sections).

Each renders only when rows of its suite carry its fields, and is omitted otherwise.
"""

from __future__ import annotations

import statistics
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
    seconds,
)
from fedgate.report.codec_sections import model_label
from fedgate.report.repeats import pooled
from fedgate.report.results import Row, number
from fedgate.report.store_sections import is_store_row

Format = Callable[[float | None], str]


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


def _names(rows: Sequence[Row], field: str) -> list[str]:
    return list(dict.fromkeys(_label(row, [field]) for row in rows))


def _clients(row: Row) -> float:
    return number(row, "clients") or 0.0


def _clients_title(clients: float) -> str:
    return f"{clients:.0f} client" + ("" if clients == 1 else "s")


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
    return [row for row in _suite(rows, "rounds", fields) if not is_store_row(row)]


def rounds_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    found = _grid(rows, [field for field, _, _ in ROUND_FIELDS])
    if not found:
        return None
    codecs, transports = _names(found, "codec"), _names(found, "transport")
    found = sorted(
        found,
        key=lambda r: (
            _clients(r),
            transports.index(_label(r, ["transport"])),
            codecs.index(_label(r, ["codec"])),
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
    base = _label(row, ("transport", "codec"))
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
    for clients in sorted({_clients(r) for r in rows}):
        cells = [f"{clients:.0f}"]
        for transport in transports:
            mine = [
                r for r in rows if _clients(r) == clients and _label(r, ["transport"]) == transport
            ]
            cells.append(seconds(_median([number(r, "round_latency_s") for r in mine])))
            cells.append(seconds(_median([number(r, "overhead_s") for r in mine])))
        table.append(cells)
    return Table(headers, table, caption="Median over codecs, per client count and transport")


def _round_chart(rows: Sequence[Row], path: Path, codecs: list[str], transports: list[str]) -> None:
    panels = []
    for clients in sorted({_clients(r) for r in rows}):
        cells = {
            (_label(r, ["transport"]), _label(r, ["codec"])): r
            for r in rows
            if _clients(r) == clients
        }
        series: dict[str, list[float | None]] = {}
        for transport in transports:
            for field, what in (("round_latency_s", "round"), ("overhead_s", "overhead")):
                series[f"{transport} {what}"] = [
                    None if (row := cells.get((transport, codec))) is None else number(row, field)
                    for codec in codecs
                ]
        panels.append(plots.BarPanel(_clients_title(clients), codecs, series, "seconds"))
    plots.bar_rows(path, panels=panels)


def accuracy_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    found = [row for row in _grid(rows, ("accuracy_per_round",)) if row["accuracy_per_round"]]
    if not found:
        return None
    names = _varying(found, ("transport", "clients", "codec"))
    curves = {_label(row, names): [float(v) for v in row["accuracy_per_round"]] for row in found}
    table = [
        [label, str(len(values)), plain(values[0]), plain(max(values)), plain(values[-1])]
        for label, values in curves.items()
    ]
    shown = _names(found, "transport")[0]
    chart = "accuracy-per-round.png"
    plots.line_rows(
        out_dir / chart,
        panels=_accuracy_panels([r for r in found if _label(r, ["transport"]) == shown]),
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
    for row in sorted(rows, key=_clients):
        title = _clients_title(_clients(row)) if row.get("clients") is not None else MISSING
        panels.setdefault(title, {})[_label(row, ["codec"])] = [
            float(v) for v in row["accuracy_per_round"]
        ]
    return panels


def _transport_spread(rows: Sequence[Row]) -> str:
    """How far apart the transports' curves are, for the same codec and client count."""
    runs: dict[tuple[str, float], list[list[float]]] = {}
    for row in rows:
        key = (_label(row, ["codec"]), _clients(row))
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


FLOWER_FIELDS: tuple[tuple[str, str, Format], ...] = (
    ("round_wall_s", "round wall time", seconds),
    ("bytes_per_round", "MB per round", megabytes),
    ("accuracy", "accuracy", plain),
)
# A run's label (payload: codec or Flower's; mode: how Flower ran, legacy or deployment),
# and, where the rows hold several client counts, the count.
FLOWER_RUN = ("framework", "mode", "transport", "payload")
FLOWER_SERIES = ("framework", "mode", "payload")  # the chart's bars: one colour per these
FLOWER_MISSING = (
    "No Flower rows in these results: the flower suite runs Flower only from its own "
    "virtualenv (`make flower-env`); why this run skipped it is under Machine and commands. "
    "fedgate's side is shown alone."
)
FLOWER_EXPLAIN = (
    "The same federation (model and initial weights, data and partition, training recipe "
    "and seeds, clients, rounds) run by Flower and by fedgate, each as a server process and "
    "one process per client on loopback. Round wall time: median over rounds of each "
    "server's own record of a round, from handing out the round's work to the aggregated "
    "model having been evaluated on the held-out split. MB per round: payload bytes both "
    f"ways (MB = {MB:,} bytes): fedgate's encoded models and updates, Flower's serialized "
    "tensors in its fit instructions and results; protobuf, gRPC and HTTP framing counted "
    "on neither side. Accuracy: held-out accuracy after the last round. Payload: what "
    "the models and updates travel as; fedgate's raw is closest to Flower's np.save "
    "buffers, and its int8-zstd run (model deltas both ways) shows what its codecs save."
)

FLOWER_REPEATS = (
    "Runs: the runs compared round for round (Flower's legacy gRPC, fedgate's raw over "
    "gRPC and REST) ran several times, interleaved, each time in another order, so the "
    "machine's drift over the suite fell on each alike; their round wall time is the "
    "median over the rounds of all their runs, and each run's own median is listed under "
    "the details."
)


FLOWER_MODES = (
    "Mode: how Flower ran. legacy: its deprecated start_server / start_client, one "
    "bidirectional gRPC stream per client on which the server pushes each instruction. "
    "deployment: as Flower 1.x deploys, a SuperLink, one SuperNode per client and flwr run "
    "of a Flower App; the SuperNodes poll the SuperLink's Fleet API (HTTP) for messages and "
    "start a ClientApp process for each. Both run the same strategy, timed in the same "
    "places. Whole federation, deployment: from flwr run to the ServerApp's task having "
    "finished; the SuperLink and SuperNodes start before it, untimed."
)


def flower_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    found = _suite(rows, "flower", [field for field, _, _ in FLOWER_FIELDS])
    found = pooled(found, (*FLOWER_RUN, "clients"))
    if not found:
        return None
    table = [
        [_flower_run(row, found), *(fmt(number(row, field)) for field, _, fmt in FLOWER_FIELDS)]
        for row in found
    ]
    chart = "flower-vs-fedgate.png"
    _flower_chart(found, out_dir / chart)
    blocks: list[Paragraph | Table | Image] = [Paragraph(FLOWER_EXPLAIN)]
    if any(row.get("run_medians_s") for row in found):
        blocks.append(Paragraph(FLOWER_REPEATS))
    if any(row.get("mode") is not None for row in found):
        blocks.append(Paragraph(FLOWER_MODES))
    if "flower" not in _names(found, "framework"):
        blocks.append(Paragraph(FLOWER_MISSING))
    blocks += [
        Table([_flower_run_header(found), *(label for _, label, _ in FLOWER_FIELDS)], table),
        _flower_details(found),
        *_flower_accuracy(found),
        Image(
            chart,
            "Round wall time and payload bytes per round, per framework, payload and transport",
        ),
    ]
    return Section("Flower vs fedgate", list(blocks))


def _several_client_counts(rows: Sequence[Row]) -> bool:
    return len({_clients(row) for row in rows}) > 1


def _flower_run(row: Row, rows: Sequence[Row]) -> str:
    """``row``'s run, as its label fields say, with its client count where ``rows`` differ."""
    label = _label(row, FLOWER_RUN)
    if _several_client_counts(rows):
        label += f" · {_clients_title(_clients(row))}"
    return label


def _flower_run_header(rows: Sequence[Row]) -> str:
    names = [name for name in FLOWER_RUN if any(row.get(name) is not None for row in rows)]
    return " · ".join(names + (["clients"] if _several_client_counts(rows) else []))


def _flower_details(rows: Sequence[Row]) -> Table:
    """Each run's spread of rounds, bytes each way, the whole federation and its software."""
    repeated = any(row.get("run_medians_s") for row in rows)
    headers = [_flower_run_header(rows), "fastest round", "slowest round", "MB down", "MB up"]
    headers += ["whole federation", *(["each run's median round"] if repeated else [])]
    headers += ["runtime"]
    table = [
        [
            _flower_run(row, rows),
            seconds(number(row, "round_wall_min_s")),
            seconds(number(row, "round_wall_max_s")),
            megabytes(number(row, "bytes_down_per_round")),
            megabytes(number(row, "bytes_up_per_round")),
            seconds(number(row, "federation_s")),
            *([_run_medians(row)] if repeated else []),
            str(row.get("runtime") or MISSING),
        ]
        for row in rows
    ]
    caption = (
        "Per round unless said otherwise; the slowest round is usually the first, where "
        "fresh client processes do their first training. Whole federation: the timed run, "
        "from starting the client processes to every process having exited"
    ) + (" (of a run made several times, the median run's)" if repeated else "")
    return Table(headers, table, caption=caption)


def _run_medians(row: Row) -> str:
    medians = row.get("run_medians_s") or []
    return " / ".join(seconds(float(m)) for m in medians) if medians else "one run"


def _flower_accuracy(rows: Sequence[Row]) -> list[Table]:
    """Held-out accuracy after every round, one line per run, when the runs have curves."""
    curves = {
        _flower_run(row, rows): [float(v) for v in row["accuracy_per_round"]]
        for row in rows
        if row.get("accuracy_per_round")
    }
    if not curves:
        return []
    length = max(len(values) for values in curves.values())
    headers = [_flower_run_header(rows), *(f"round {n}" for n in range(1, length + 1))]
    table = [
        [label, *(plain(v) for v in values), *[MISSING] * (length - len(values))]
        for label, values in curves.items()
    ]
    return [Table(headers, table, caption="Held-out accuracy after each round")]


def _flower_chart(rows: Sequence[Row], path: Path) -> None:
    # One group of bars per transport (and client count, where there are several).
    def group(row: Row) -> str:
        if not _several_client_counts(rows):
            return _label(row, ["transport"])
        return f"{_label(row, ['transport'])} · {_clients_title(_clients(row))}"

    transports = list(dict.fromkeys(group(r) for r in rows))
    frameworks = list(dict.fromkeys(_label(r, FLOWER_SERIES) for r in rows))
    cells = {(_label(r, FLOWER_SERIES), group(r)): r for r in rows}

    def panel(title: str, field: str, unit: str, scale: float) -> plots.BarPanel:
        series: dict[str, list[float | None]] = {}
        for framework in frameworks:
            figures = [_field(cells.get((framework, t)), field) for t in transports]
            series[framework] = [None if v is None else v / scale for v in figures]
        return plots.BarPanel(title, transports, series, unit)

    plots.bar_rows(
        path,
        panels=[
            panel("Round wall time", "round_wall_s", "seconds", 1.0),
            panel("Payload bytes per round", "bytes_per_round", "MB", MB),
        ],
        across=True,
    )


def _field(row: Row | None, field: str) -> float | None:
    return None if row is None else number(row, field)
