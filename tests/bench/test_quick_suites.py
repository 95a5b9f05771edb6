"""The transports, rounds and flower bench suites, run for real in quick mode.

Each suite runs once (through `fedgate.benchrun.run_suite`, as ``fedgate bench <suite>
--quick`` does: real server processes, real clients on loopback, real training), so the
suites cannot rot; the rows are checked for shape and sense, never for speed.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

from fedgate.benchrun import run_suite
from fedgate.codecs import CODECS
from fedgate.report import render_report

Row = dict[str, Any]
TRANSPORTS = {"grpc", "rest"}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each suite's quick results file (the suites run once per test session)."""
    out = tmp_path_factory.mktemp("quick-suites")
    paths = {}
    for suite in ("transports", "rounds", "flower"):
        paths[suite] = out / f"{suite}.json"
        run_suite(suite, models=None, quick=True, out=paths[suite], command=f"quick {suite}")
    return paths


def rows_of(results: dict[str, Path], suite: str) -> list[Row]:
    document = json.loads(results[suite].read_text())
    assert document["command"] == f"quick {suite}" and document["machine"]["cores"] >= 1
    rows: list[Row] = document["results"]
    assert rows and all(row["suite"] == suite for row in rows)
    return rows


def positive(row: Row, *fields: str) -> None:
    for field in fields:
        value = row[field]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, field


def test_transports_give_one_row_per_codec_transport_and_direction(
    results: dict[str, Path],
) -> None:
    rows = rows_of(results, "transports")
    keys = [(r["model"], r["codec"], r["transport"], r["direction"]) for r in rows]
    expected = {("cnn", c, t, d) for c in CODECS for t in TRANSPORTS for d in ("down", "up")}
    assert len(keys) == len(set(keys)) and set(keys) == expected
    for row in rows:
        positive(row, "wall_s", "bytes", "fp32_bytes", "mb_s", "fp32_mb_s")
        assert row["wall_rounds"] >= 1 and row["lossy"] is CODECS[row["codec"]].lossy
        assert row["mb_s"] == pytest.approx(row["bytes"] / row["wall_s"] / 1e6)
        assert row["fp32_mb_s"] == pytest.approx(row["fp32_bytes"] / row["wall_s"] / 1e6)
    by_key = {(r["codec"], r["transport"], r["direction"]): r for r in rows}
    for codec in CODECS:
        for direction in ("down", "up"):  # both transports carry the same bytes
            assert len({by_key[(codec, t, direction)]["bytes"] for t in TRANSPORTS}) == 1
        down, up = by_key[(codec, "grpc", "down")], by_key[(codec, "grpc", "up")]
        assert up["wire_codec"] == codec and down["wire_codec"] in CODECS
        if down["wire_codec"] == codec:  # the update is the model as it came down
            assert down["bytes"] == up["bytes"]
    sizes = {key: row["bytes"] for key, row in by_key.items()}
    fp32 = {r["fp32_bytes"] for r in rows}
    assert len(fp32) == 1 and sizes[("raw", "grpc", "down")] >= fp32.pop()


def test_rounds_give_one_row_per_transport_and_codec(results: dict[str, Path]) -> None:
    rows = rows_of(results, "rounds")
    keys = [(r["transport"], r["codec"]) for r in rows]
    assert len(keys) == len(set(keys)) and set(keys) == {(t, c) for t in TRANSPORTS for c in CODECS}
    for row in rows:
        rounds = row["rounds"]
        assert row["clients"] == 2 and rounds == 2 and row["round_latency_rounds"] == rounds
        positive(row, "round_latency_s", "overhead_s", "train_s", "server_round_s")
        positive(row, "bytes_per_round", "bytes_up_per_round", "bytes_down_per_round")
        for series in ("round_latencies_s", "round_overheads_s", "round_trainings_s"):
            assert len(row[series]) == rounds and all(v > 0 for v in row[series]), series
        # Each round's overhead is its wall time minus its slowest training.
        for wall, over, train in zip(
            row["round_latencies_s"],
            row["round_overheads_s"],
            row["round_trainings_s"],
            strict=True,
        ):
            assert over == pytest.approx(wall - train)
        assert len(row["accuracy_per_round"]) == rounds
        assert 0 <= row["accuracy"] <= 1 and row["accuracy"] == row["accuracy_per_round"][-1]


def test_flower_suite_runs_fedgate_side_and_flower_when_installed(
    results: dict[str, Path],
) -> None:
    rows = rows_of(results, "flower")
    runs = {(r["framework"], r["transport"]) for r in rows}
    expected = {("fedgate", "grpc"), ("fedgate", "rest")}
    skipped = json.loads(results["flower"].read_text())["skipped"]
    if importlib.util.find_spec("flwr") is not None:
        expected.add(("flower", "grpc"))
        assert skipped == []
    else:  # the results file says what was left out, and why
        assert len(skipped) == 1 and "Flower is not installed" in skipped[0]
    assert runs == expected and len(rows) == len(expected)
    for row in rows:
        positive(row, "round_wall_s", "bytes_per_round", "server_round_s")
        assert row["clients"] == 2 and row["round_wall_rounds"] == row["rounds"] == 2
        assert 0 <= row["accuracy"] <= 1


def test_report_renders_every_suite_section_from_real_results(
    results: dict[str, Path], tmp_path: Path
) -> None:
    markdown_path, html_path = render_report(list(results.values()), tmp_path)
    markdown = markdown_path.read_text()
    for section in ("Transport throughput", "Round latency", "Accuracy per round", "Flower"):
        assert f"## {section}" in markdown, section
    for codec in CODECS:  # a codec that sends whole models in another one says which
        assert f"| {codec} · grpc |" in markdown or f"| {codec} (down: " in markdown, codec
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == [
        "accuracy-per-round.png",
        "flower-vs-fedgate.png",
        "round-latency.png",
        "transport-fp32-throughput.png",
        "transport-throughput.png",
    ]
    assert html_path.read_text().count("data:image/png;base64,") == len(pngs)
