"""Running an experiment: one file per finished cell, and a re-run that runs only what is
not finished (never started, interrupted, failed, half-written)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fedgate.cli import main
from fedgate.errors import ConfigError, DataError
from fedgate.experiment import ExperimentDir, parse_spec
from fedgate.experiment.runner import EXPERIMENT_FILE, LOCK_FILE
from tests.experiment.conftest import TINY, TINY_TOML, run_logged, tiny_spec


def cell_files(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((out / "cells").iterdir())}


def test_every_cell_leaves_its_results_and_the_directory_lists_them(
    finished_experiment: Path,
) -> None:
    cells = tiny_spec().cells()
    record = json.loads((finished_experiment / EXPERIMENT_FILE).read_text())
    assert [entry["id"] for entry in record["cells"]] == [cell.id for cell in cells]
    assert record["axes"] == {"clients": [2], "partition": ["iid", "dirichlet:0.5"], "seed": [0]}
    assert sorted(cell_files(finished_experiment)) == sorted(f"{c.id}.json" for c in cells)
    assert not (finished_experiment / LOCK_FILE).exists()
    (session,) = record["sessions"]
    assert session["ran"] == [cell.id for cell in cells] and session["ended"]
    baseline = json.loads((finished_experiment / record["cells"][0]["file"]).read_text())
    assert baseline["cell"]["kind"] == "centralized"
    assert [e["epoch"] for e in baseline["result"]["epochs"]] == [1, 2]
    federated = json.loads((finished_experiment / record["cells"][2]["file"]).read_text())
    assert federated["cell"]["params"] == {"clients": 2, "partition": "dirichlet:0.5", "seed": 0}
    assert [r["round"] for r in federated["result"]["rounds"]] == [1, 2]
    assert federated["result"]["partition"]["spec"] == "dirichlet:0.5"


def test_a_rerun_skips_every_finished_cell(experiment_copy: Path) -> None:
    before = cell_files(experiment_copy)
    outcome, log = run_logged(tiny_spec(), experiment_copy)
    assert outcome.ran == () and len(outcome.skipped) == 3
    assert cell_files(experiment_copy) == before
    assert log.count("skipped, finished earlier") == 3 and "round" not in log
    sessions = json.loads((experiment_copy / EXPERIMENT_FILE).read_text())["sessions"]
    assert [len(s["ran"]) for s in sessions] == [3, 0]


def test_a_deleted_cell_is_the_only_one_run_again_and_comes_out_the_same(
    experiment_copy: Path,
) -> None:
    target = tiny_spec().cells()[1]
    path = ExperimentDir(experiment_copy).cell_path(target)
    original = json.loads(path.read_text())["result"]
    path.unlink()
    outcome, log = run_logged(tiny_spec(), experiment_copy)
    assert outcome.ran == (target.id,) and len(outcome.skipped) == 2
    again = json.loads(path.read_text())["result"]
    accuracy = [r["accuracy"] for r in original["rounds"]]
    assert [r["accuracy"] for r in again["rounds"]] == accuracy  # in process: deterministic
    assert again["bytes_up"] == original["bytes_up"]
    assert f"{target.id}: 2 rounds\n" in log


def test_half_written_and_interrupted_cells_are_redone(experiment_copy: Path) -> None:
    baseline, iid, skewed = tiny_spec().cells()
    directory = ExperimentDir(experiment_copy)
    text = directory.cell_path(iid).read_text()
    directory.cell_path(iid).write_text(text[: len(text) // 2])  # a torn file
    directory.cell_path(skewed).unlink()
    directory.partial_path(skewed).write_text('{"cell": "started, then killed"}')
    directory.partial_path(baseline).write_text("{}")  # finished just after its file
    outcome, log = run_logged(tiny_spec(), experiment_copy)
    assert outcome.ran == (iid.id, skewed.id) and outcome.skipped == (baseline.id,)
    assert f"{iid.id}: 2 rounds (its results file is unreadable, running it again)" in log
    assert f"{skewed.id}: 2 rounds (interrupted or failed earlier, running it again)" in log
    assert not list((experiment_copy / "cells").glob("*.partial"))
    assert directory.finished(iid) is not None and directory.finished(skewed) is not None


def test_a_failing_cell_stops_the_run_unless_told_to_keep_going(tmp_path: Path) -> None:
    spec = parse_spec(
        {
            "fixed": {"rounds": 1, "data_dir": str(tmp_path / "no-data")},
            "grid": {"dataset": ["cifar10", "digits"], "clients": [2]},
        }
    )
    cifar, digits = spec.cells()
    with pytest.raises(DataError):
        run_logged(spec, tmp_path / "stop")
    marker = json.loads(ExperimentDir(tmp_path / "stop").partial_path(cifar).read_text())
    assert marker["error"].startswith("DataError: ")
    assert not ExperimentDir(tmp_path / "stop").cell_path(digits).exists()
    outcome, log = run_logged(spec, tmp_path / "stop", keep_going=True)
    assert outcome.failed == (cifar.id,) and outcome.ran == (digits.id,)
    assert f"{cifar.id}: 1 rounds (interrupted or failed earlier, running it again)" in log
    assert f"{cifar.id}: FAILED: " in log


def test_one_writer_at_a_time_and_a_dead_writers_lock_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    (out / LOCK_FILE).write_text(f"{os.getpid()}\n")  # a live process holds it
    with pytest.raises(ConfigError, match=rf"another fedgate experiment \(pid {os.getpid()}\)"):
        run_logged(tiny_spec(), out)
    assert not (out / "cells").exists()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    (out / LOCK_FILE).write_text(gone.stdout)  # that process has exited
    outcome, _ = run_logged(tiny_spec(), out)
    assert len(outcome.ran) == 3 and not (out / LOCK_FILE).exists()


def test_the_command_lists_cells_and_their_state(
    experiment_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path = tmp_path / "tiny.toml"
    spec_path.write_text(TINY_TOML)
    first = tiny_spec().cells()[0]
    ExperimentDir(experiment_copy).cell_path(first).unlink()
    assert main(["experiment", str(spec_path), "--out", str(experiment_copy), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"to run  {first.id}",
        *(f"done    {cell.id}" for cell in tiny_spec().cells()[1:]),
    ]
    assert main(["experiment", str(tmp_path / "absent.toml"), "--out", str(tmp_path)]) == 2


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_experiment_killed_mid_grid_resumes_where_it_stopped(tmp_path: Path) -> None:
    """A real `fedgate experiment` process, killed (SIGKILL: no clean-up at all) once its
    first cell has finished, then started again: it runs only the cells not finished."""
    spec = {
        **TINY,
        "fixed": {**TINY["fixed"], "rounds": 4},
        "grid": {**TINY["grid"], "clients": [2, 3]},
    }
    spec_path = tmp_path / "grid.toml"
    spec_path.write_text(TINY_TOML.replace("rounds = 2", "rounds = 4").replace("[2]", "[2, 3]"))
    cells = parse_spec(spec).cells()
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fedgate", "experiment", str(spec_path), "--out", str(out)]
    command += ["--threads", "1"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for((out / "cells" / f"{cells[1].id}.partial").exists)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    finished = {c.id for c in cells if ExperimentDir(out).finished(c) is not None}
    assert cells[0].id in finished and len(finished) < len(cells)
    assert (out / LOCK_FILE).exists()  # left behind by the killed process
    second = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    skipped = {c.id for c in cells if f"{c.id}: skipped, finished earlier" in second.stdout}
    ran = {c.id for c in cells if f"{c.id}: done" in second.stdout}
    assert skipped == finished and ran == {c.id for c in cells} - finished
    assert all(ExperimentDir(out).finished(c) is not None for c in cells)
    sessions = json.loads((out / EXPERIMENT_FILE).read_text())["sessions"]
    assert [s["ended"] is None for s in sessions] == [True, False]
