"""The transports, rounds and flower bench suites, run for real in quick mode.

Each suite runs once (through `benchrun.run_suite`, as ``fedgate bench <suite>
--quick`` does: real server processes, real clients on loopback, real training), so the
suites cannot rot; the rows are checked for shape and sense, never for speed.

The flower suite runs Flower (both ways: legacy ``start_server`` and the deployment,
SuperLink + SuperNodes + ``flwr run``; 4 clients, 3 rounds) only with a usable
``.venv-flower`` (``make flower-env``). Its case without one always runs, with
``$FEDGATE_FLOWER_VENV`` naming a path that does not exist; its case with Flower runs
where ``.venv-flower`` can import flwr.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from benchrun import run_suite
from flower_side import VENV_ENV, flower_unavailable, flower_venv

from fedgate.codecs import CODECS
from fedgate.report import render_report
from fedgate.run.sim_config import NETWORK_TRANSPORTS

Row = dict[str, Any]
TRANSPORTS = set(NETWORK_TRANSPORTS)
# the three suites run once, in the first test's fixture: minutes, not seconds
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def flower_missing() -> str | None:
    """Why this checkout's Flower virtualenv cannot run Flower, or None when it can."""
    return flower_unavailable(flower_venv())


# The flower suite's Flower cases (its fedgate cases are the rows of the run with Flower).
FLOWER_CASES = "legacy or deployment"


def run_flower_without_venv(out: Path, workdir: Path, select: str | None = None) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(VENV_ENV, str(workdir / "no-such-venv"))
        run_suite("flower", models=None, quick=True, out=out, command="quick flower", select=select)


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory, flower_missing: str | None
) -> dict[str, Path]:
    """Each suite's quick results file (the suites run once per test session); the flower
    suite with Flower where it can, else explicitly without (see `without_flower`)."""
    out = tmp_path_factory.mktemp("quick-suites")
    paths = {}
    for suite in ("transports", "rounds", "flower"):
        paths[suite] = out / f"{suite}.json"
        if suite == "flower" and flower_missing is not None:
            run_flower_without_venv(paths[suite], out)
            continue
        run_suite(suite, models=None, quick=True, out=paths[suite], command=f"quick {suite}")
    return paths


@pytest.fixture(scope="module")
def without_flower(
    results: dict[str, Path], flower_missing: str | None, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The flower suite's quick results with its venv pointed at nothing: run so already
    when there is no Flower here, else its Flower cases alone (fedgate's rows are checked
    from the run with Flower; a second fedgate federation would only cost time)."""
    if flower_missing is not None:
        return results["flower"]  # already run so
    out = tmp_path_factory.mktemp("no-flower")
    run_flower_without_venv(out / "flower.json", out, select=FLOWER_CASES)
    return out / "flower.json"


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
    every = rows_of(results, "transports")
    rows = [r for r in every if r["transport"] in TRANSPORTS]
    ceiling = [r for r in every if r["transport"] == "tcp"]  # plain TCP, the raw codec's bytes
    assert {(r["codec"], r["direction"]) for r in ceiling} == {("raw", "down"), ("raw", "up")}
    for row in ceiling:
        positive(row, "wall_s", "bytes", "mb_s")
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


def rounds_rows(results: dict[str, Path]) -> tuple[list[Row], list[Row]]:
    """The rounds suite's transport x codec rows, and its store comparison's rows."""
    rows = rows_of(results, "rounds")
    # the start-up and whole-run rows (issue 12): first_request_s and run name them
    rounds = [r for r in rows if "first_request_s" not in r and "run" not in r]
    return [r for r in rounds if "store" not in r], [r for r in rounds if "store" in r]


def test_rounds_give_one_row_per_transport_and_codec(results: dict[str, Path]) -> None:
    rows, _ = rounds_rows(results)
    keys = [(r["transport"], r["codec"]) for r in rows]
    assert len(keys) == len(set(keys)) and set(keys) == {(t, c) for t in TRANSPORTS for c in CODECS}
    for row in rows:
        check_round_row(row, clients=2)


def test_rounds_time_client_start_and_whole_runs_against_the_reference(
    results: dict[str, Path],
) -> None:
    rows = rows_of(results, "rounds")
    starts = [r for r in rows if "first_request_s" in r]
    assert {(r["transport"], r["client_start"]) for r in starts} == {
        (t, "fork") for t in TRANSPORTS
    }  # quick: exec'd clients are for full runs
    for row in starts:
        positive(row, "first_request_s", "help_s")
    runs = {(r["run"], r.get("client_start")) for r in rows if "run" in r}
    assert runs == {("reference", None), ("inproc", None), *((t, "fork") for t in TRANSPORTS)}
    for row in (r for r in rows if "run" in r):
        positive(row, "wall_s", "reference_s", "ratio")


def test_rounds_compare_the_stores_on_one_federation(results: dict[str, Path]) -> None:
    _, rows = rounds_rows(results)
    assert [r["store"] for r in rows] == ["memory", "sqlite"]
    for row in rows:
        assert (row["transport"], row["codec"]) == ("grpc", "raw")
        check_round_row(row, clients=4)
        positive(row, "commit_s", "commit_max_s", "store_write_s")
        assert row["commit_s"] <= row["commit_max_s"]


def check_round_row(row: Row, clients: int) -> None:
    """A rounds row's shape and sense: 2 rounds (quick) of ``clients`` clients."""
    rounds = row["rounds"]
    assert row["clients"] == clients and rounds == 2 and row["round_latency_rounds"] == rounds
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


# (framework, mode, transport, payload); quick: 4 clients, 3 rounds, no fedgate REST run.
Run = tuple[str, str | None, str, str]
FEDGATE_RUNS: set[Run] = {("fedgate", None, "grpc", "raw"), ("fedgate", None, "grpc", "int8-zstd")}
FLOWER_RUNS: set[Run] = {
    ("flower", "legacy", "grpc", "np.save buffers"),
    ("flower", "deployment", "http", "np.save buffers"),
}


def check_flower_rows(rows: list[Row], expected: set[Run]) -> dict[str, Row]:
    """The rows' shape and sense; fedgate's raw rows by transport."""
    runs = {(r["framework"], r.get("mode"), r["transport"], r["payload"]) for r in rows}
    assert runs == expected and len(rows) == len(expected)
    for row in rows:
        rounds = row["rounds"]
        assert row["clients"] == 4 and rounds == row["round_wall_rounds"] == 3
        assert row["partition"] == "dirichlet:0.5" and row["federation_rounds"] == 1
        positive(row, "round_wall_s", "round_wall_min_s", "federation_s")
        positive(row, "bytes_per_round", "bytes_up_per_round", "bytes_down_per_round")
        assert len(row["round_latencies_s"]) == rounds and min(row["round_latencies_s"]) > 0
        assert row["round_wall_s"] == pytest.approx(sorted(row["round_latencies_s"])[1])
        # A whole federation holds its rounds, and process start-up besides.
        assert row["federation_s"] > sum(row["round_latencies_s"])
        assert len(row["accuracy_per_round"]) == rounds
        assert 0 <= row["accuracy"] <= 1 and row["accuracy"] == row["accuracy_per_round"][-1]
    fedgate = {r["transport"]: r for r in rows if r["payload"] == "raw"}
    [int8] = [r for r in rows if r["payload"] == "int8-zstd"]
    # int8 deltas both ways: well under a third of raw's bytes, for the same federation.
    assert int8["bytes_per_round"] < 0.33 * fedgate["grpc"]["bytes_per_round"]
    assert fedgate["grpc"]["runtime"].startswith("fedgate ")
    return fedgate


def test_flower_suite_without_its_venv_runs_fedgate_alone_and_says_why(
    without_flower: Path, flower_missing: str | None
) -> None:
    document = json.loads(without_flower.read_text())
    if flower_missing is not None:  # the whole suite ran without Flower: fedgate's rows
        check_flower_rows(document["results"], FEDGATE_RUNS)
    else:  # its Flower cases alone ran, and each was skipped
        assert document["results"] == []
    skipped = document["skipped"]  # "SKIPPED [n] file:line: why", alike skips as one line
    assert all("no-such-venv" in line and "make flower-env" in line for line in skipped)
    counts = [re.match(r"SKIPPED \[(\d+)\]", line) for line in skipped]
    assert sum(int(m[1]) for m in counts if m) == len(FLOWER_RUNS)  # both ways of running


def test_flower_suite_measures_flower_both_ways_beside_fedgate(
    results: dict[str, Path], flower_missing: str | None
) -> None:
    if flower_missing is not None:
        pytest.skip(f"no Flower to measure ({flower_missing}); `make flower-env` makes one")
    rows = rows_of(results, "flower")
    assert json.loads(results["flower"].read_text())["skipped"] == []
    fedgate = check_flower_rows(rows, FLOWER_RUNS | FEDGATE_RUNS)["grpc"]
    flowers = {row["mode"]: row for row in rows if row["framework"] == "flower"}
    assert set(flowers) == {"legacy", "deployment"}
    for flower in flowers.values():
        assert flower["runtime"].startswith("flwr ") and flower["payload"] == "np.save buffers"
        # The same fp32 model each way: np.save's headers and raw's differ by a few hundred
        # bytes.
        assert flower["bytes_per_round"] == pytest.approx(fedgate["bytes_per_round"], rel=0.01)
        # The same data, start, recipe and seeds (torch builds differ between the venvs, so
        # not to the bit: tests/bench/test_flower_side.py checks the recipe exactly).
        for ours, theirs in zip(
            fedgate["accuracy_per_round"], flower["accuracy_per_round"], strict=True
        ):
            assert ours == pytest.approx(theirs, abs=0.05)
    # Both ways run the same strategy on the same torch: the same payload, round for round.
    legacy, deployment = flowers["legacy"], flowers["deployment"]
    assert legacy["bytes_per_round"] == deployment["bytes_per_round"]


def test_report_renders_every_suite_section_from_real_results(
    results: dict[str, Path], tmp_path: Path, flower_missing: str | None
) -> None:
    markdown_path, html_path = render_report(list(results.values()), tmp_path)
    markdown = markdown_path.read_text()
    if flower_missing is None:  # Flower's two ways, each a row of its own
        for mode, transport in (("legacy", "grpc"), ("deployment", "http")):
            assert f"| flower · {mode} · {transport} · np.save buffers |" in markdown, mode
    sections = ["Transport throughput", "Round latency", "Accuracy per round", "Store overhead"]
    for section in (*sections, "Start-up, whole runs and stalls", "Flower"):
        assert f"## {section}" in markdown, section
    # The store rows are compared in their own section, not in the transport x codec tables.
    assert "4 clients" not in markdown.split("## Round latency")[1].split("## Store overhead")[0]
    assert "| memory | grpc · raw · 4 clients · 2 rounds |" in markdown
    assert "| sqlite | grpc · raw · 4 clients · 2 rounds |" in markdown
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
