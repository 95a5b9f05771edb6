"""The ``rounds`` suite's issue-12 rows: how fast clients start, what a whole simulation
costs against a framework-free loop, and how long the server's event loop stalls while a
JSON client takes part (``bench/test_rounds.py``: ``test_client_startup``,
``test_whole_run``, ``test_codec_stall``; their fields: ``bench/startup.py`` and
``bench/stall_probe.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedgate.report.blocks import MISSING, Paragraph, Section, Table, seconds
from fedgate.report.results import Row, number

STARTUP_EXPLAIN = (
    "Start-up: from starting a client (exec'd as `python -m fedgate client`, or forked by "
    "a fork server that has imported torch and fedgate once) to its first request reaching "
    "the server's port; the median of the tries, each listed. `--help`: the wall time of "
    "`fedgate client --help`."
)
WHOLE_RUN_EXPLAIN = (
    "Whole run: a simulation from call to return, server and client processes included "
    "(one OS process per client, forked or exec'd), against the same arithmetic in a "
    "plain loop in one process with no framework (the reference: local SGD per client, "
    "FedAvg by examples, evaluation after every round; its best of two runs). Ratio: "
    "run / reference."
)
STALL_EXPLAIN = (
    "Event-loop stall: a ticker on the server's event loop every 5 ms while one client "
    "sends its model in JSON beside healthy raw clients; the worst gap beyond the tick, "
    "the ticks more than 100 ms late, and the clients the server marked failed. "
    "Codecs: where the GIL-bound codecs' decoding and encoding ran (worker processes, "
    "or threads as before)."
)


def speed_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    rounds = [row for row in rows if row["suite"] == "rounds"]
    starts = [row for row in rounds if number(row, "first_request_s") is not None]
    runs = [row for row in rounds if row.get("run") is not None]
    stalls = [row for row in rounds if number(row, "worst_stall_ms") is not None]
    blocks: list[Paragraph | Table] = []
    if starts:
        blocks += [Paragraph(STARTUP_EXPLAIN), _startup_table(starts)]
    if runs:
        blocks += [Paragraph(WHOLE_RUN_EXPLAIN), _whole_run_table(runs)]
    if stalls:
        blocks += [Paragraph(STALL_EXPLAIN), _stall_table(stalls)]
    return Section("Start-up, whole runs and stalls", list(blocks)) if blocks else None


def _startup_table(rows: Sequence[Row]) -> Table:
    headers = ["transport", "client start", "first request", "tries", "--help"]
    body = [
        [
            str(row["transport"]),
            str(row["client_start"]),
            seconds(number(row, "first_request_s")),
            ", ".join(seconds(t) for t in row.get("first_request_tries") or []) or MISSING,
            seconds(number(row, "help_s")),
        ]
        for row in rows
    ]
    return Table(headers, body)


def _whole_run_table(rows: Sequence[Row]) -> Table:
    headers = ["run", "client start", "clients x rounds", "partition", "wall", "ratio"]
    body = []
    for row in rows:
        ratio = number(row, "ratio")
        body.append(
            [
                str(row["run"]),
                str(row.get("client_start") or MISSING),
                f"{row.get('clients', '?')} x {row.get('rounds', '?')}",
                str(row.get("partition", MISSING)),
                seconds(number(row, "wall_s")),
                MISSING if ratio is None else f"{ratio:.2f} x",
            ]
        )
    return Table(headers, body)


def _stall_table(rows: Sequence[Row]) -> Table:
    headers = ["model", "transport", "codecs", "clients", "worst stall", "ticks > 100 ms"]
    headers += ["clients failed", "rounds / attempts"]
    body = [
        [
            str(row.get("model", MISSING)),
            str(row.get("transport", MISSING)),
            str(row.get("offload", MISSING)),
            str(row.get("clients", MISSING)),
            seconds(_ms_to_s(number(row, "worst_stall_ms"))),
            str(row.get("late_ticks_100ms", MISSING)),
            str(row.get("failed_clients", MISSING)),
            f"{row.get('rounds_completed', '?')} / {row.get('round_attempts', '?')}",
        ]
        for row in rows
    ]
    return Table(headers, body)


def _ms_to_s(value: float | None) -> float | None:
    return None if value is None else value / 1000
