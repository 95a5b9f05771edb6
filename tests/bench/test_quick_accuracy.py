"""The accuracy suite, run for real in quick mode, and its report section."""

from __future__ import annotations

import json
from pathlib import Path

from benchrun import run_suite

from fedgate.codecs import CODECS
from fedgate.report import render_report


def test_accuracy_suite_gives_a_row_per_codec_and_a_tradeoff_section(tmp_path: Path) -> None:
    out = tmp_path / "accuracy.json"
    run_suite("accuracy", models=None, quick=True, out=out, command="quick accuracy")
    rows = json.loads(out.read_text())["results"]
    assert sorted(r["codec"] for r in rows) == sorted(CODECS)
    by_codec = {r["codec"]: r for r in rows}
    for row in rows:
        assert row["suite"] == "accuracy" and row["clients"] == 4 and row["rounds"] == 3
        assert row["bytes_total"] == row["bytes_up"] + row["bytes_down"] > 0
        assert len(row["accuracy_per_round"]) == 3
        assert row["accuracy"] == row["accuracy_per_round"][-1]
        assert row["federation_s"] > 0
    # lossless codecs train identically to raw; every compressed one moves fewer bytes
    assert by_codec["shuffle-zstd"]["accuracy_per_round"] == by_codec["raw"]["accuracy_per_round"]
    assert by_codec["topk-int8"]["bytes_total"] < by_codec["int8-zstd"]["bytes_total"]
    assert by_codec["int8-zstd"]["bytes_total"] < by_codec["raw"]["bytes_total"]
    markdown_path, _ = render_report([out], tmp_path / "report")
    markdown = markdown_path.read_text()
    assert "## Accuracy for the bytes" in markdown
    assert "| raw |" in markdown and "100.00 %" in markdown
    assert (tmp_path / "report" / "accuracy-vs-bytes.png").stat().st_size > 0
