"""Whole federations in one process: every codec learns digits; the CLI writes its JSON."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from fedgate.cli import main
from fedgate.codecs import CODECS, SparseCodec, frame_codecs, get_codec
from fedgate.run.sim_config import SimConfig
from fedgate.run.simulation import simulate


@pytest.mark.parametrize("codec", sorted(CODECS))
async def test_every_codec_reaches_93_percent_on_digits(codec: str) -> None:
    config = SimConfig(clients=5, rounds=20, partition="dirichlet:0.5", codec=codec, seed=0)
    results = await simulate(config)
    assert results["final_accuracy"] >= 0.93
    assert len(results["rounds"]) == 20
    assert results["bytes_up"] == sum(r["bytes_up"] for r in results["rounds"])
    assert results["bytes_by_codec"] == {
        codec: {"up": results["bytes_up"], "down": results["bytes_down"]}
    }


async def test_the_same_seed_gives_the_same_run() -> None:
    config = SimConfig(clients=3, rounds=3, partition="iid", codec="raw", seed=5)
    first, again = await simulate(config), await simulate(config)
    assert [r["accuracy"] for r in first["rounds"]] == [r["accuracy"] for r in again["rounds"]]


async def test_mixed_codecs_share_one_run() -> None:
    results = await simulate(SimConfig(clients=len(CODECS), rounds=2, codec="mixed"))
    assert set(results["bytes_by_codec"]) == set(CODECS)
    assert all(t["up"] > 0 and t["down"] > 0 for t in results["bytes_by_codec"].values())


def test_sim_command_writes_results_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    code = main(
        [
            "sim",
            "--clients",
            "3",
            "--rounds",
            "2",
            "--codec",
            "bf16-zstd",
            "--partition",
            "shards:2",
            "--seed",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "round   1/2" in printed and "round   2/2" in printed
    document = json.loads(out.read_text())
    assert document["config"]["codec"] == "bf16-zstd"
    assert {"final_accuracy", "bytes_up", "bytes_down", "rounds"} <= set(document)
    for entry in document["rounds"]:
        assert {
            "round",
            "accuracy",
            "loss",
            "participants",
            "bytes_up",
            "bytes_down",
            "duration_s",
        } <= set(entry)
        assert entry["participants"] == 3 and entry["bytes_up"] > 0


def test_sim_command_refuses_bad_input_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--partition", "zipf:1", "--rounds", "1"]) == 2
    assert "unknown partition 'zipf:1'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ten_client_runs() -> dict[str, dict[str, Any]]:
    """10 clients, dirichlet:0.5, 30 rounds, seed 0: raw and every frame codec."""
    runs: dict[str, dict[str, Any]] = {}
    for codec in ("raw", *SMALLER_CODECS):
        config = SimConfig(clients=10, rounds=30, partition="dirichlet:0.5", codec=codec)
        runs[codec] = asyncio.run(simulate(config))
    return runs


# The registry's frame codecs (issue 5's, and any added since): each must pay for its bytes.
SMALLER_CODECS = frame_codecs()


def late_accuracy(run: dict[str, Any]) -> float:
    """Mean accuracy of the last five rounds: one test sample is 0.28 points of accuracy."""
    return float(sum(r["accuracy"] for r in run["rounds"][-5:]) / 5)


def traffic(run: dict[str, Any]) -> int:
    return int(run["bytes_up"] + run["bytes_down"])


@pytest.mark.parametrize("codec", SMALLER_CODECS)
def test_smaller_codecs_keep_the_accuracy_of_raw(
    codec: str, ten_client_runs: dict[str, dict[str, Any]]
) -> None:
    raw, run = ten_client_runs["raw"], ten_client_runs[codec]
    # a sparse codec (top-k keeps a tenth of each update) may drift a little more than dense
    tolerance = 0.01 if isinstance(get_codec(codec), SparseCodec) else 0.005
    assert late_accuracy(run) >= late_accuracy(raw) - tolerance
    assert traffic(run) < traffic(raw)


def test_int8_and_topk_deltas_move_a_fraction_of_raw_bytes(
    ten_client_runs: dict[str, dict[str, Any]],
) -> None:
    raw = traffic(ten_client_runs["raw"])
    assert traffic(ten_client_runs["int8-zstd"]) <= 0.25 * raw
    assert traffic(ten_client_runs["topk-int8"]) <= 0.10 * raw
