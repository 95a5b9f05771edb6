"""`fedgate demo`, what `make demo` runs, for real and small: a server process, client
processes over both transports with different codecs, and what it prints at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedgate.cli import main
from fedgate.run.sim_config import NETWORK_TRANSPORTS


@pytest.mark.timeout(240)
def test_demo_runs_a_mixed_federation_and_says_where_everything_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "demo"
    assert main(["demo", "--clients", "2", "--rounds", "2", "--out-dir", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    # the dashboard first, for a newcomer to open while the run is young
    assert printed.splitlines()[0].startswith("dashboard  http://127.0.0.1:"), printed[:200]
    for index, transport in enumerate(NETWORK_TRANSPORTS[:2]):  # the clients alternate
        assert f"client-{index}: {transport}" in printed
    for line in ("REST API docs  http://127.0.0.1:", "/api/v1/status/watch", "gRPC  "):
        assert line in printed, line
    assert "round   2/2" in printed
    assert f"results: {(out_dir / 'results.json').resolve()}" in printed
    assert "comparison report" in printed and "make bench" in printed
    # the report named is a full one (every suite), not an experiment's or one suite's
    named = printed.split("comparison report (codecs, transports, rounds, Flower): ")[1]
    report = Path(named.splitlines()[0])
    assert (report.parent / "results" / "codecs.json").is_file(), report
    results = json.loads((out_dir / "results.json").read_text())
    assert len(results["rounds"]) == 2 and results["bytes_up"] > 0
    assert set(results["bytes_by_transport"]) == set(NETWORK_TRANSPORTS[:2])
    assert len(results["bytes_by_codec"]) == 2
