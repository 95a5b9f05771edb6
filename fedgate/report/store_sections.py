"""The ``rounds`` suite's store rows: what writing every round to a run store costs.

``bench/test_rounds.py::test_store_overhead`` runs the same federation once per run store
(rows with a ``store`` field); they are left out of the transport x codec tables
(`suite_sections`) and compared here, each against the in-memory store's row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedgate.report.blocks import MISSING, Paragraph, Section, Table, seconds
from fedgate.report.results import Row, number

REFERENCE = "memory"  # the default store, which writes nothing anywhere
# What else must agree for two rows to be the same federation on another store.
SAME_FEDERATION = ("transport", "codec", "clients", "rounds", "model", "dataset", "partition")
STORE_EXPLAIN = (
    "The same federation (the rows' transport, codec, clients and rounds) once per run "
    "store: memory, the in-memory default, and sqlite, a fresh SQLite file (WAL) written "
    "as `fedgate serve --db` writes it. The next round opens only once the last round's "
    "commit is written, so round latency (median, as in the round latency section) holds "
    "the store's writes; the difference is to the memory row of the same federation, "
    "and, as two medians of separate runs, carries their noise. Commit: median time of "
    "one round's transaction (round record, model version, client records) on the "
    "server's writer thread; writes per round: every write after the run's creation, "
    "client transitions included, divided by its rounds (transitions are written while "
    "the round runs, not awaited, but on the CPU and GIL of the server process, which "
    "the round needs too)."
)


def store_rows(rows: Sequence[Row]) -> list[Row]:
    """The rounds suite's rows that name a store and hold a round latency."""
    return [
        row
        for row in rows
        if row["suite"] == "rounds"
        and row.get("store") is not None
        and number(row, "round_latency_s") is not None
    ]


def is_store_row(row: Row) -> bool:
    """A row of the store comparison (kept out of the transport x codec tables)."""
    return row.get("store") is not None


def store_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    found = store_rows(rows)
    if not found:
        return None
    references = {_federation(r): r for r in found if r["store"] == REFERENCE}
    headers = ["store", "federation", "round latency", "difference", "commit", "writes per round"]
    headers += ["fastest round", "slowest round"]
    table = []
    for row in found:
        latency = number(row, "round_latency_s")
        reference = references.get(_federation(row))
        base = None if reference is None else number(reference, "round_latency_s")
        table.append(
            [
                str(row["store"]),
                _federation_label(row),
                seconds(latency),
                difference_ms(latency, base),
                seconds(number(row, "commit_s")),
                seconds(number(row, "store_write_s")),
                seconds(number(row, "round_latency_min_s")),
                seconds(number(row, "round_latency_max_s")),
            ]
        )
    return Section("Store overhead", [Paragraph(STORE_EXPLAIN), Table(headers, table)])


def difference_ms(value: float | None, reference: float | None) -> str:
    """``value - reference`` in signed milliseconds (the reference row itself: 0)."""
    if value is None or reference is None:
        return MISSING
    return f"{(value - reference) * 1000:+.1f} ms"


def _federation(row: Row) -> tuple[str, ...]:
    return tuple(str(row.get(name)) for name in SAME_FEDERATION)


def _federation_label(row: Row) -> str:
    clients, rounds = number(row, "clients"), number(row, "rounds")
    parts = [str(row.get("transport") or MISSING), str(row.get("codec") or MISSING)]
    if clients is not None:
        parts.append(f"{clients:.0f} clients")
    if rounds is not None:
        parts.append(f"{rounds:.0f} rounds")
    return " · ".join(parts)
