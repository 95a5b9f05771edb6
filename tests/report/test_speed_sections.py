"""The rounds suite's start-up, whole-run and stall rows, from hand-made rows: one section
of their own, out of the round latency tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.report.test_store_sections import render, row

STARTS = [
    {"suite": "rounds", "transport": "grpc", "client_start": "fork", "first_request_s": 0.04,
     "first_request_tries": [0.05, 0.04, 0.04], "help_s": 0.18, "timing": "client_start"},
    {"suite": "rounds", "transport": "rest", "client_start": "exec", "first_request_s": 1.35,
     "first_request_tries": [1.35], "help_s": 0.2, "timing": "client_start"},
]  # fmt: skip
RUNS = [
    {"suite": "rounds", "run": "reference", "clients": 10, "rounds": 20,
     "partition": "dirichlet:0.5", "wall_s": 2.3, "reference_s": 2.3, "ratio": 1.0},
    {"suite": "rounds", "run": "grpc", "client_start": "fork", "clients": 10, "rounds": 20,
     "partition": "dirichlet:0.5", "wall_s": 5.25, "reference_s": 2.3, "ratio": 5.25 / 2.3},
]  # fmt: skip
STALL: dict[str, Any] = {
    "suite": "rounds", "model": "resnet18", "transport": "grpc", "offload": "processes",
    "clients": 3, "worst_stall_ms": 21.7, "late_ticks_100ms": 0, "failed_clients": 0,
    "rounds_completed": 1, "round_attempts": 1, "wall_s": 29.5,
}  # fmt: skip


def test_start_up_whole_runs_and_the_stall_have_their_section(tmp_path: Path) -> None:
    markdown = render(tmp_path, [row(4, 0.08), *STARTS, *RUNS, STALL])
    section = markdown.split("## Start-up, whole runs and stalls")[1].split("\n## ")[0]
    assert "| grpc | fork | 40 ms | 50 ms, 40 ms, 40 ms | 180 ms |" in section
    assert "| rest | exec | 1.35 s | 1.35 s | 200 ms |" in section
    assert "| reference | — | 10 x 20 | dirichlet:0.5 | 2.30 s | 1.00 x |" in section
    assert "| grpc | fork | 10 x 20 | dirichlet:0.5 | 5.25 s | 2.28 x |" in section
    assert "| resnet18 | grpc | processes | 3 | 21.7 ms | 0 | 0 | 1 / 1 |" in section
    # the round latency table holds the federation's row alone
    latency = markdown.split("## Round latency")[1].split("\n## ")[0]
    assert "fork" not in latency and "resnet18" not in latency


def test_the_section_is_left_out_without_such_rows(tmp_path: Path) -> None:
    assert "## Start-up" not in render(tmp_path, [row(4, 0.08)])
