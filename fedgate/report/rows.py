"""What the suites' sections share: picking a suite's rows, and labelling them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fedgate.report.blocks import MISSING
from fedgate.report.codec_sections import model_label
from fedgate.report.results import Row, number

Format = Callable[[float | None], str]


def suite_rows(rows: Sequence[Row], suite: str, fields: Sequence[str]) -> list[Row]:
    """Rows of ``suite`` holding at least one of ``fields``."""
    return [
        row
        for row in rows
        if row["suite"] == suite and any(row.get(field) is not None for field in fields)
    ]


def row_label(row: Row, names: Sequence[str], separator: str = " · ") -> str:
    """The row's values of ``names`` that it has, joined (a model by its label)."""
    parts = []
    for name in names:
        value = row.get(name)
        if value is not None:
            parts.append(model_label(value) if name == "model" else str(value))
    return separator.join(parts) or MISSING


def varying(rows: Sequence[Row], names: Sequence[str]) -> list[str]:
    """The name fields that tell rows apart (a field with one value everywhere is noise)."""
    return [n for n in names if len({row.get(n) for row in rows}) > 1] or list(names[-1:])


def distinct_labels(rows: Sequence[Row], field: str) -> list[str]:
    """Each value of ``field`` over ``rows``, once, in order of first appearance."""
    return list(dict.fromkeys(row_label(row, [field]) for row in rows))


def clients_of(row: Row) -> float:
    return number(row, "clients") or 0.0


def clients_title(clients: float) -> str:
    return f"{clients:.0f} client" + ("" if clients == 1 else "s")
