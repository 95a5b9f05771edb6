"""A run measured several times, pooled into one row: its rounds from every repeat together.

The flower suite runs the federations it compares round for round several times,
interleaved (each row says which ``repeat`` of how many ``repeats`` it is), so the
machine's drift over the suite falls on every side alike. The report shows each such run
once: the median round over all rounds of all its repeats, the spread over all of them,
and each repeat's own median beside it (``run_medians_s``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from fedgate.report.results import Row, number


def pooled(rows: Sequence[Row], key: Sequence[str]) -> list[Row]:
    """``rows`` with the repeats of each run (equal in every ``key`` field) as one row, in
    the place of the run's first; rows that are no repeat (no ``repeat`` field) as they
    are."""
    groups: dict[tuple[object, ...], list[Row]] = {}
    out: list[Row | tuple[object, ...]] = []
    for row in rows:
        if row.get("repeat") is None:
            out.append(row)
            continue
        run = tuple(row.get(field) for field in key)
        if run not in groups:
            groups[run] = []
            out.append(run)
        groups[run].append(row)
    return [item if isinstance(item, dict) else _pool(groups[item]) for item in out]


def _pool(repeats: list[Row]) -> Row:
    if len(repeats) == 1:
        return repeats[0]
    walls = [float(wall) for row in repeats for wall in row.get("round_latencies_s") or []]
    if not walls:  # rows without their rounds: their medians are all there is
        walls = _numbers(repeats, "round_wall_s")
    if not walls:
        return repeats[0]
    row = dict(repeats[0])
    row.update(
        round_wall_s=statistics.median(walls),
        round_wall_mean_s=statistics.fmean(walls),
        round_wall_min_s=min(walls),
        round_wall_max_s=max(walls),
        round_wall_stddev_s=statistics.stdev(walls) if len(walls) > 1 else 0.0,
        round_wall_rounds=len(walls),
        round_latencies_s=walls,
        run_medians_s=_numbers(repeats, "round_wall_s"),
        repeats=len(repeats),
    )
    for field, middle in (
        ("federation_s", statistics.median),
        ("bytes_per_round", statistics.fmean),
        ("bytes_up_per_round", statistics.fmean),
        ("bytes_down_per_round", statistics.fmean),
    ):
        values = _numbers(repeats, field)
        if values:
            row[field] = middle(values)
    return row


def _numbers(rows: Sequence[Row], field: str) -> list[float]:
    return [value for row in rows if (value := number(row, field)) is not None]
