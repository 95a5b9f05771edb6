"""`fedgate runs list|show|export` and `fedgate db upgrade`: the run store, read directly.

They open the database (``--db``, default `fedgate.store.DEFAULT_DB_URL`, the one
`fedgate serve` writes) without a server: SQLite's WAL lets them read while a server
writes. Readers change nothing: a database whose schema is older than this fedgate is
refused with the `fedgate db upgrade` to run, not migrated behind the operator's back.

`fedgate.store` (SQLAlchemy, Alembic) is imported by the handlers only: every `fedgate`
command builds this parser, and client processes have no business loading a database stack.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedgate.core.messages import RoundRecord
from fedgate.errors import NotFound

if TYPE_CHECKING:
    from fedgate.core.ports import StoredClient, StoredRun
    from fedgate.store import SqlStore

DEFAULT_DB_URL = "sqlite:///runs/fedgate.db"  # `fedgate.store.DEFAULT_DB_URL` (a test checks)


def add_store_commands(commands: Any) -> None:
    runs = commands.add_parser("runs", help="list, show and export the runs in the store")
    actions = runs.add_subparsers(required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every run, newest first")
    _db_option(listing)
    listing.set_defaults(handler=run_runs_list)
    show = actions.add_parser("show", help="a run: its config, rounds and clients")
    show.add_argument("run_id", metavar="ID", help="a run id (or a prefix of one)")
    _db_option(show)
    show.set_defaults(handler=run_runs_show)
    export = actions.add_parser("export", help="a run as JSON, or its rounds as CSV")
    export.add_argument("run_id", metavar="ID", help="a run id (or a prefix of one)")
    export.add_argument(
        "--format",
        choices=("json", "csv"),
        default="json",
        help="json: the run with its config, config changes, every round attempt and its "
        "clients; csv: one row per round attempt",
    )
    export.add_argument("--out", type=Path, help="write here (default: stdout)")
    _db_option(export)
    export.set_defaults(handler=run_runs_export)
    db = commands.add_parser("db", help="the run store's database schema")
    db_actions = db.add_subparsers(required=True, metavar="ACTION")
    up = db_actions.add_parser(
        "upgrade", help="migrate the schema to this fedgate's revision (serve does it on start)"
    )
    _db_option(up)
    up.set_defaults(handler=run_db_upgrade)


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=DEFAULT_DB_URL,
        help=f"the store's database URL (default: {DEFAULT_DB_URL}, relative to the working "
        "directory; or postgresql+psycopg://user:password@host/dbname)",
    )


# ---- handlers --------------------------------------------------------------------------


def run_runs_list(args: argparse.Namespace) -> int:
    with _open(args.db) as store:
        summaries = store.runs.list_runs()
    if not summaries:
        _note(f"no runs in {store.url}")
        return 0
    rows: list[Sequence[str]] = [
        ("RUN", "STATE", "DATASET", "MODEL", "CREATED", "ROUNDS", "ACCURACY")
    ]
    rows += [
        (
            s.run_id,
            s.state.value,
            s.dataset,
            s.model,
            _time(s.created_at),
            f"{s.rounds_completed}/{s.rounds}",
            _number(s.accuracy),
        )
        for s in summaries
    ]
    _print_table(rows)
    return 0


def run_runs_show(args: argparse.Namespace) -> int:
    with _open(args.db) as store:
        run = _load(store, args.run_id)
    print("\n".join(describe(run)))
    return 0


def run_runs_export(args: argparse.Namespace) -> int:
    from fedgate.store.export import rounds_csv, run_document  # noqa: PLC0415 - see above

    with _open(args.db) as store:
        run = _load(store, args.run_id)
    if args.format == "json":
        text = json.dumps(run_document(run), indent=2, allow_nan=False) + "\n"
    else:
        text = rounds_csv(run)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    _note(f"run {run.meta.run_id}: {len(run.history)} round attempts written to {args.out}")
    return 0


def run_db_upgrade(args: argparse.Namespace) -> int:
    from fedgate.store import printable, schema_revision, upgrade  # noqa: PLC0415

    before = schema_revision(args.db)
    after = upgrade(args.db)
    where = printable(args.db)
    if before == after:
        _note(f"{where}: the schema is at revision {after} already, the newest")
    else:
        _note(f"{where}: the schema upgraded from revision {before or 'none'} to {after}")
    return 0


def _open(url: str) -> SqlStore:
    from fedgate.store import open_store  # noqa: PLC0415

    return open_store(url, migrate=False)


def _load(store: SqlStore, run_id: str) -> StoredRun:
    """The run ``run_id`` names, or the one run whose id starts with it."""
    try:
        return store.runs.load_run(run_id)
    except NotFound:
        matches = [s.run_id for s in store.runs.list_runs() if s.run_id.startswith(run_id)]
        if len(matches) != 1:
            which = f"; it starts {', '.join(matches)}" if matches else ""
            raise NotFound(f"no single run {run_id!r} in {store.url}{which}") from None
        return store.runs.load_run(matches[0])


# ---- documents (`runs export` writes `fedgate.store.export`'s) --------------------------


def describe(run: StoredRun) -> list[str]:
    """`runs show`: the run, then a table of its round attempts and one of its clients."""
    snap, meta = run.snapshot, run.meta
    lines = [
        f"run       {meta.run_id} ({meta.dataset}, {meta.model}), created {_time(meta.created_at)}",
        f"state     {snap.state.value}: {_completed(run)}/{snap.config.rounds} rounds completed, "
        f"next round {snap.round_number} (attempt {snap.attempt})",
        f"model     version {run.model.version}, sha256 {run.model.sha256[:16]}",
        f"accuracy  {_number(snap.accuracy)}  loss {_number(snap.loss)}",
        f"config    {_config(dataclasses.asdict(snap.config))}",
    ]
    if snap.pending_config is not None:
        lines.append(f"pending   {_config(dataclasses.asdict(snap.pending_config))}")
    lines += [
        f"change    from round {c.round_number}: {_config(c.changes)} ({_time(c.at)})"
        for c in run.config_changes
    ]
    for kind, traffic in (("transport", snap.bytes_by_transport), ("codec", snap.bytes_by_codec)):
        lines += [
            f"bytes     {kind} {key}: up {_mb(t.up)}, down {_mb(t.down)}"
            for key, t in traffic.items()
        ]
    lines += ["", *_table(_history_rows(run.history)), "", *_table(_client_rows(run.clients))]
    return lines


def _history_rows(history: Sequence[RoundRecord]) -> list[Sequence[str]]:
    rows: list[Sequence[str]] = [
        ("ROUND", "ATTEMPT", "OUTCOME", "CLIENTS", "ACCURACY", "LOSS", "UP", "DOWN", "SECONDS")
    ]
    rows += [
        (
            str(r.round),
            str(r.attempt),
            r.outcome.value + (f" ({r.reason})" if r.reason else ""),
            f"{len(r.participants)}/{len(r.selected)}",
            _number(r.accuracy),
            _number(r.loss),
            _mb(r.bytes_up),
            _mb(r.bytes_down),
            f"{r.duration_s:.2f}",
        )
        for r in history
    ]
    return rows


def _client_rows(clients: Sequence[StoredClient]) -> list[Sequence[str]]:
    rows: list[Sequence[str]] = [
        ("CLIENT", "NAME", "STATE", "TRANSPORT", "CODEC", "EXAMPLES", "ROUNDS", "UP", "DOWN")
    ]
    rows += [
        (
            c.client_id,
            c.name,
            c.state.value + (f" ({c.reason})" if c.reason else ""),
            c.transport,
            c.codec,
            str(c.num_examples),
            str(c.rounds_completed),
            _mb(c.bytes_up),
            _mb(c.bytes_down),
        )
        for c in clients
    ]
    return rows


# ---- formatting ------------------------------------------------------------------------


def _completed(run: StoredRun) -> int:
    return sum(1 for r in run.history if r.outcome == "completed")


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def _config(values: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in values.items())


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def _time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    print("\n".join(_table(rows)))


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
