"""Repeats of a run pool into one row: the median over all their rounds, each repeat's own
median beside it; rows that are no repeat stay as they are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedgate.report import render_report
from fedgate.report.repeats import pooled
from tests.report.test_render import write

KEY = ("framework", "transport", "clients")


def run(framework: str, repeat: int | None, walls: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "suite": "flower",
        "framework": framework,
        "transport": "grpc",
        "payload": "raw",
        "clients": 4,
        **({} if repeat is None else {"repeat": repeat, "repeats": 3}),
        "round_wall_s": sorted(walls)[len(walls) // 2],
        "round_latencies_s": walls,
        "federation_s": 10.0 + sum(walls),
        "bytes_per_round": 1000.0 * (repeat or 1),
        "accuracy": 0.9,
        **extra,
    }


def test_repeats_pool_their_rounds_in_the_place_of_the_first() -> None:
    rows = [
        run("flower", 1, [0.10, 0.30, 0.20]),
        run("fedgate", 1, [0.15, 0.15, 0.15]),
        run("fedgate", 2, [0.11, 0.12, 0.13]),
        run("flower", 2, [0.40, 0.50, 0.60]),
        run("flower", 3, [0.05, 0.06, 0.07]),
    ]
    flower, fedgate = pooled(rows, KEY)
    assert flower["framework"] == "flower" and flower["repeats"] == 3
    assert flower["round_latencies_s"] == [0.10, 0.30, 0.20, 0.40, 0.50, 0.60, 0.05, 0.06, 0.07]
    assert flower["round_wall_s"] == 0.20  # the median of all nine, not of the three medians
    assert flower["run_medians_s"] == [0.20, 0.50, 0.06]
    assert (flower["round_wall_min_s"], flower["round_wall_max_s"]) == (0.05, 0.60)
    assert flower["round_wall_rounds"] == 9
    assert flower["federation_s"] == 10.0 + 0.60  # the median run's
    assert flower["bytes_per_round"] == 2000.0
    assert fedgate["round_wall_s"] == (0.13 + 0.15) / 2 and fedgate["repeats"] == 2


def test_rows_that_are_no_repeat_stay_as_they_are() -> None:
    once = run("flower", None, [0.1, 0.2, 0.3])
    other = run("fedgate", None, [0.1, 0.2, 0.3])
    assert pooled([once, other, dict(once)], KEY) == [once, other, once]


def test_the_report_shows_a_repeated_run_once_with_each_runs_median(tmp_path: Path) -> None:
    rows = [run("flower", r, [0.1 * r, 0.1 * r + 0.01, 0.1 * r + 0.02]) for r in (1, 2, 3)]
    rows.append(run("fedgate", None, [0.05, 0.06, 0.07]))
    markdown_path, _ = render_report([write(tmp_path / "f.json", rows, "f")], tmp_path / "out")
    markdown = markdown_path.read_text()
    assert markdown.count("| flower · grpc · raw |") == 2  # the main and the details tables
    assert "| flower · grpc · raw | 210 ms |" in markdown  # the median of all nine rounds
    assert "110 ms / 210 ms / 310 ms" in markdown and "| one run |" in markdown
    assert "ran several times, interleaved" in markdown
