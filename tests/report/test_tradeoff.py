"""The accuracy-for-bytes section from hand-made rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedgate.report import plots, render_report


def results_file(path: Path, rows: list[dict[str, Any]]) -> Path:
    machine = {"cpu": "test", "cores": 2, "memory_gb": 1.0, "python": "3.11", "torch": "x"}
    path.write_text(
        json.dumps(
            {
                "machine": machine,
                "command": "fedgate bench accuracy",
                "created": "2026-01-01T00:00:00+00:00",
                "results": rows,
            }
        )
    )
    return path


def row(codec: str, size: int, accuracy: float, late: float) -> dict[str, Any]:
    return {
        "suite": "accuracy",
        "codec": codec,
        "clients": 10,
        "rounds": 30,
        "partition": "dirichlet:0.5",
        "model": "cnn",
        "bytes_total": size,
        "accuracy": accuracy,
        "accuracy_late": late,
    }


def test_codecs_are_compared_with_raw_in_bytes_and_points(tmp_path: Path) -> None:
    rows = [
        row("raw", 92_000_000, 0.9610, 0.9600),
        row("int8-zstd", 18_400_000, 0.9582, 0.9616),
        row("topk-int8", 8_000_000, 0.9638, 0.9593),
    ]
    markdown_path, _ = render_report([results_file(tmp_path / "a.json", rows)], tmp_path / "r")
    markdown = markdown_path.read_text()
    assert "| int8-zstd | 18.40 | 20.00 % | 0.9582 | -0.28 | 0.9616 | +0.16 |" in markdown
    assert "| topk-int8 | 8.00 | 8.70 % | 0.9638 | +0.28 |" in markdown
    assert "10 clients split dirichlet:0.5, 30 rounds" in markdown
    assert (tmp_path / "r" / "accuracy-vs-bytes.png").exists()


def test_the_section_is_left_out_without_accuracy_rows(tmp_path: Path) -> None:
    other = {"suite": "codecs", "model": "cnn", "codec": "raw", "bytes": 10}
    markdown_path, _ = render_report([results_file(tmp_path / "b.json", [other])], tmp_path / "r")
    assert "Accuracy for the bytes" not in markdown_path.read_text()


def test_points_on_the_same_spot_share_a_label_and_neighbours_do_not() -> None:
    # raw and msgpack differ by 0.15 % of bytes (either side of a 1/100-decade grid line);
    # shuffle-zstd is 10 % smaller: a point of its own.
    points = {"raw": (92.28, 0.961), "msgpack": (92.14, 0.961), "shuffle-zstd": (82.62, 0.961)}
    groups = plots._coinciding(points)
    assert groups == {("raw", "msgpack"): (92.28, 0.961), ("shuffle-zstd",): (82.62, 0.961)}
    apart = plots._coinciding({"a": (92.28, 0.961), "b": (92.28, 0.9638)})
    assert set(apart) == {("a",), ("b",)}
