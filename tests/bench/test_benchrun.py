"""`bench/benchrun.py`: the real codec suite end to end (quick), and the generic converter."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import benchrun
import pytest
from benchrun import BenchFailed, convert, run_suite

from fedgate import cli_bench
from fedgate.cli import build_parser
from fedgate.codecs import CODECS
from fedgate.errors import ConfigError
from fedgate.report import render_report

BASELINE = "pickle (baseline)"


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    document = run_suite("codecs", models=None, quick=True, out=out, command="fedgate bench x")
    return document, out


def test_quick_codec_suite_gives_one_row_per_codec_and_the_baseline(
    quick_results: tuple[dict[str, Any], Path],
) -> None:
    document, out = quick_results
    assert json.loads(out.read_text()) == document
    assert document["command"] == "fedgate bench x" and document["created"]
    assert document["skipped"] == []
    assert document["machine"]["cores"] >= 1 and document["machine"]["torch"]
    rows = {row["codec"]: row for row in document["results"]}
    assert len(rows) == len(document["results"]) == len(CODECS) + 1
    assert set(rows) == {*CODECS, BASELINE}
    for name, row in rows.items():
        assert row["suite"] == "codecs" and row["model"] == "cnn", name
        assert row["bytes"] > 0 and row["input_bytes"] > 0, name
        for timing in ("encode", "decode"):
            assert row[f"{timing}_s"] > 0 and row[f"{timing}_rounds"] >= 1, name
            assert row[f"{timing}_mb_s"] == pytest.approx(
                row["input_bytes"] / row[f"{timing}_s"] / 1e6
            )
        lossy = name in CODECS and CODECS[name].lossy
        assert ("rel_l2" in row) is lossy and ("rel_l2_delta" in row) is lossy, name
        assert row["baseline"] is (name == BASELINE)
    assert rows["json"]["reduction_vs_json_pct"] == 0.0
    assert rows["bf16-zstd"]["bytes"] < rows["raw"]["bytes"] < rows["json"]["bytes"]
    assert rows["bf16-zstd"]["reduction_vs_raw_pct"] > 0
    assert 0 < rows["bf16-zstd"]["rel_l2"] < 2.0**-8


def test_quick_results_render(quick_results: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    markdown_path, _ = render_report([quick_results[1]], tmp_path)
    markdown = markdown_path.read_text()
    assert "fedgate bench x" in markdown and BASELINE in markdown
    assert "relative L2 error" in markdown


def bench(name: str, extra: dict[str, Any], median: float | None = 0.5) -> dict[str, Any]:
    stats = None if median is None else {
        "median": median, "mean": median, "min": median, "max": median, "stddev": 0.0,
        "rounds": 3,
    }  # fmt: skip
    return {"name": name, "fullname": f"bench/test_x.py::{name}", "extra_info": extra,
            "stats": stats}  # fmt: skip


def test_convert_merges_rows_and_copies_any_extra_info() -> None:
    raw = {
        "benchmarks": [
            bench("a", {"row": "m/json", "timing": "encode", "model": "m", "codec": "json",
                        "bytes": 400, "input_bytes": 2_000_000}, 2.0),
            bench("b", {"row": "m/json", "timing": "decode", "model": "m", "codec": "json",
                        "bytes": 400}, 4.0),
            bench("c", {"model": "m", "codec": "raw", "bytes": 100, "input_bytes": 100}),
            bench("d", {"transport": "grpc", "accuracy_per_round": [0.5, 0.75]}, None),
        ]
    }  # fmt: skip
    rows = convert(raw, "demo")
    assert len(rows) == 3 and all(row["suite"] == "demo" for row in rows)
    merged, single, untimed = rows
    assert merged["encode_s"] == 2.0 and merged["decode_s"] == 4.0
    assert merged["encode_mb_s"] == 1.0 and merged["decode_mb_s"] == 0.5
    assert merged["encode_rounds"] == 3 and "row" not in merged and "timing" not in merged
    assert merged["reduction_vs_raw_pct"] == -300.0
    assert single["time_s"] == 0.5 and single["reduction_vs_json_pct"] == 75.0
    assert untimed == {"suite": "demo", "transport": "grpc", "accuracy_per_round": [0.5, 0.75]}


def test_reductions_compare_only_rows_that_measure_the_same_thing() -> None:
    rows = convert(
        {
            "benchmarks": [
                bench("a", {"model": "m", "direction": "up", "codec": "json", "bytes": 10}),
                bench("b", {"model": "m", "direction": "down", "codec": "raw", "bytes": 5}),
            ]
        },
        "transports",
    )
    up_json, down_raw = rows
    assert up_json["reduction_vs_json_pct"] == 0.0 and "reduction_vs_raw_pct" not in up_json
    assert down_raw["reduction_vs_raw_pct"] == 0.0 and "reduction_vs_json_pct" not in down_raw


def test_convert_refuses_disagreeing_benchmarks_and_bad_documents() -> None:
    raw = {
        "benchmarks": [bench("a", {"row": "r", "bytes": 1}), bench("b", {"row": "r", "bytes": 2})]
    }
    with pytest.raises(BenchFailed, match="disagree on 'bytes'"):
        convert(raw, "codecs")
    with pytest.raises(BenchFailed, match="'benchmarks'"):
        convert({}, "codecs")


def test_suites_that_do_not_exist_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_bench, "checkout_root", lambda: tmp_path)
    with pytest.raises(ConfigError, match=r"bench suites live in bench/"):
        cli_bench.bench_runner()
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "test_codecs.py").touch()
    monkeypatch.setattr(benchrun, "repository_root", lambda: tmp_path)
    with pytest.raises(ConfigError, match=r"unknown bench suite 'nope'; available: codecs$"):
        run_suite("nope", models=None, quick=True, out=tmp_path / "r.json")


def test_models_are_checked_and_the_command_is_reconstructed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown model.*vgg"):
        run_suite("codecs", models=["vgg"], quick=False, out=tmp_path / "r.json")
    assert benchrun.check_models(["cnn,resnet18", "resnet50"]) == ["cnn", "resnet18", "resnet50"]
    args = build_parser().parse_args(
        ["bench", "codecs", "--models", "cnn", "--quick", "--out", "r.json"]
    )
    assert (args.suite, args.models, args.quick, args.out) == (
        "codecs",
        ["cnn"],
        True,
        Path("r.json"),
    )
    assert (
        benchrun.bench_command("codecs", ["cnn"], True, Path("r.json"))
        == "fedgate bench codecs --models cnn --quick --out r.json"
    )


def test_a_failing_suite_reports_pytest_output(tmp_path: Path) -> None:
    with pytest.raises(BenchFailed, match=r"exit code \d+") as caught:
        benchrun.run_pytest(
            [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path, None
        )
    assert "boom" in str(caught.value)


def test_skipped_benchmarks_are_returned_with_their_reason(tmp_path: Path) -> None:
    script = "print('x.py s'); print('SKIPPED [1] bench/x.py:3: no flwr'); print('1 skipped')"
    lines = benchrun.run_pytest([sys.executable, "-c", script], tmp_path, None)
    assert lines == ["SKIPPED [1] bench/x.py:3: no flwr"]
    document = benchrun.results_document([], "c", lines)
    assert document["skipped"] == lines and document["results"] == []


def test_bench_handler_records_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[dict[str, Any]] = []

    def record(suite: str, **kwargs: Any) -> dict[str, Any]:
        calls.append({"suite": suite, **kwargs})
        return {"results": [{}, {}]}

    monkeypatch.setattr(benchrun, "run_suite", record)
    argv = ["codecs", "--models", "cnn,resnet18", "--out", str(tmp_path / "r.json")]
    args = build_parser().parse_args(["bench", *argv])
    assert benchrun.run_bench(args, ["bench", *argv]) == 0
    assert benchrun.run_bench(args) == 0
    first, second = calls
    assert first["models"] == ["cnn", "resnet18"] and first["quick"] is False
    assert first["command"] == f"fedgate bench {' '.join(argv)}"
    assert second["command"] == (
        f"fedgate bench codecs --models cnn resnet18 --out {tmp_path / 'r.json'}"
    )
    assert "2 result rows written" in capsys.readouterr().out
