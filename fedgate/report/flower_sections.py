"""The ``flower`` suite's section: the same federation run by Flower and by fedgate."""

from __future__ import annotations

from collections.abc import Sequence
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
from fedgate.report.repeats import pooled
from fedgate.report.results import Row, number
from fedgate.report.rows import (
    Format,
    clients_of,
    clients_title,
    distinct_labels,
    row_label,
    suite_rows,
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
    found = suite_rows(rows, "flower", [field for field, _, _ in FLOWER_FIELDS])
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
    if "flower" not in distinct_labels(found, "framework"):
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
    return len({clients_of(row) for row in rows}) > 1


def _flower_run(row: Row, rows: Sequence[Row]) -> str:
    """``row``'s run, as its label fields say, with its client count where ``rows`` differ."""
    label = row_label(row, FLOWER_RUN)
    if _several_client_counts(rows):
        label += f" · {clients_title(clients_of(row))}"
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
            return row_label(row, ["transport"])
        return f"{row_label(row, ['transport'])} · {clients_title(clients_of(row))}"

    transports = list(dict.fromkeys(group(r) for r in rows))
    frameworks = list(dict.fromkeys(row_label(r, FLOWER_SERIES) for r in rows))
    cells = {(row_label(r, FLOWER_SERIES), group(r)): r for r in rows}

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
