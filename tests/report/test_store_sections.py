"""The store comparison of the rounds suite, from hand-made rows: its own section, and
never in the transport x codec tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedgate.report import render_report


def results_file(path: Path, rows: list[dict[str, Any]]) -> Path:
    machine = {"cpu": "test", "cores": 2, "memory_gb": 1.0, "python": "3.11", "torch": "x"}
    document = {"machine": machine, "command": "fedgate bench rounds", "results": rows}
    path.write_text(json.dumps(document))
    return path


def row(clients: int, latency: float, **fields: Any) -> dict[str, Any]:
    return {
        "suite": "rounds",
        "transport": "grpc",
        "codec": "raw",
        "clients": clients,
        "rounds": 8,
        "model": "cnn",
        "round_latency_s": latency,
        "round_latency_min_s": latency - 0.05,
        "round_latency_max_s": latency + 0.25,
        "overhead_s": 0.1,
        "accuracy": 0.9,
        "accuracy_per_round": [0.5, 0.9],
        **fields,
    }


def render(tmp_path: Path, rows: list[dict[str, Any]]) -> str:
    markdown_path, _ = render_report([results_file(tmp_path / "r.json", rows)], tmp_path / "out")
    return markdown_path.read_text()


def test_each_store_is_compared_with_memory_in_milliseconds(tmp_path: Path) -> None:
    grid = row(2, 0.3)
    memory = row(4, 0.5, store="memory", commit_s=0.00002, store_write_s=0.00004)
    sqlite = row(4, 0.5064, store="sqlite", commit_s=0.0041, store_write_s=0.0052)
    markdown = render(tmp_path, [grid, memory, sqlite])
    assert "| memory | grpc · raw · 4 clients · 8 rounds | 500 ms | +0.0 ms | 0.02 ms |" in markdown
    assert "| sqlite | grpc · raw · 4 clients · 8 rounds | 506 ms | +6.4 ms | 4.1 ms |" in markdown
    # The grid's tables hold the 2-client row alone: the store rows stay out of them.
    rounds = markdown.split("## Round latency")[1].split("## Store overhead")[0]
    assert "2 clients" in rounds and "4 clients" not in rounds


def test_a_store_without_its_memory_run_has_no_difference(tmp_path: Path) -> None:
    markdown = render(tmp_path, [row(4, 0.5, store="sqlite")])
    assert "| sqlite | grpc · raw · 4 clients · 8 rounds | 500 ms | — | — |" in markdown
    assert "## Round latency" not in markdown and "## Accuracy per round" not in markdown


def test_the_section_is_left_out_without_store_rows(tmp_path: Path) -> None:
    assert "## Store overhead" not in render(tmp_path, [row(2, 0.3)])
