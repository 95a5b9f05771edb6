"""Reports render from small hand-made results documents, and refuse malformed ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedgate.errors import ConfigError
from fedgate.report import load_results, render_report

MACHINE = {
    "cpu": "Test CPU 9000",
    "cores": 3,
    "memory_gb": 7.5,
    "python": "3.11.7",
    "torch": "9.9.9",
    "platform": "TestOS",
}
CODECS_COMMAND = "fedgate bench codecs --models resnet18 --out codecs.json"


def codec_row(codec: str, size: int, **extra: Any) -> dict[str, Any]:
    return {
        "suite": "codecs",
        "model": "resnet18",
        "codec": codec,
        "bytes": size,
        "input_bytes": 44_734_408,
        "encode_s": 0.5,
        "decode_s": 0.25,
        "encode_rounds": 3,
        "decode_rounds": 4,
        **extra,
    }


CODEC_ROWS = [
    codec_row("json", 247_720_000, reduction_vs_json_pct=0.0),
    codec_row("raw", 44_830_000, reduction_vs_json_pct=81.9),
    codec_row("pickle (baseline)", 44_870_000, baseline=True),
    codec_row("bf16-zstd", 16_720_000, rel_l2=0.00234, rel_l2_delta=0.00191, lossy=True),
]
TRANSPORT_ROWS: list[dict[str, Any]] = [
    {"suite": "transports", "transport": "grpc", "codec": "raw", "model": "resnet18",
     "direction": "down", "wall_s": 0.375, "mb_s": 119.25, "bytes": 44_720_000,
     "fp32_bytes": 44_734_408, "fp32_mb_s": 119.5},
    {"suite": "transports", "transport": "grpc", "codec": "raw", "model": "resnet18",
     "direction": "up", "wall_s": 0.5, "mb_s": 89.5, "bytes": 44_720_000},
    {"suite": "transports", "transport": "rest", "codec": "bf16-zstd", "model": "resnet18",
     "direction": "down", "wall_s": 0.125, "mb_s": 133.75, "fp32_mb_s": 357.75},
]  # fmt: skip
ROUND_ROWS = [
    {"suite": "rounds", "transport": "rest", "codec": "json", "clients": 4,
     "round_latency_s": 3.25, "overhead_s": 1.125, "bytes_per_round": 12_340_000,
     "accuracy": 0.913, "accuracy_per_round": [0.411, 0.782, 0.913]},
    {"suite": "rounds", "transport": "rest", "codec": "bf16-zstd", "clients": 4,
     "round_latency_s": 2.5, "overhead_s": 0.375, "bytes_per_round": 4_560_000,
     "accuracy": 0.907, "accuracy_per_round": [0.398, 0.801, 0.907]},
]  # fmt: skip
FLOWER_ROWS = [
    {"suite": "flower", "framework": "flower", "transport": "grpc", "round_wall_s": 4.75,
     "bytes_per_round": 9_870_000, "accuracy": 0.876},
    {"suite": "flower", "framework": "fedgate", "transport": "grpc", "round_wall_s": 3.5,
     "bytes_per_round": 6_540_000, "accuracy": 0.881},
]  # fmt: skip


def write(path: Path, rows: list[dict[str, Any]], command: str = CODECS_COMMAND) -> Path:
    document = {"machine": MACHINE, "command": command, "created": "2026-01-02T03:04:05+00:00"}
    path.write_text(json.dumps({**document, "results": rows}))
    return path


def render(tmp_path: Path, *documents: Path) -> tuple[str, str, Path]:
    out = tmp_path / "report"
    markdown_path, html_path = render_report(list(documents), out)
    assert (markdown_path, html_path) == (out / "report.md", out / "report.html")
    return markdown_path.read_text(), html_path.read_text(), out


def test_codec_report_has_tables_charts_machine_and_command(tmp_path: Path) -> None:
    markdown, html, out = render(tmp_path, write(tmp_path / "codecs.json", CODEC_ROWS))
    for figure in ("247.72", "44.83", "16.72", "93.25 %", "62.70 %", "2.34e-03", "1.91e-03"):
        assert figure in markdown and figure in html, figure
    # Throughput: 44.73 MB of fp32 input in a 0.5 s median encode, 0.25 s decode.
    assert "| 500 ms | 250 ms | 89.5 | 179 | 3 / 4 |" in markdown
    assert "81.90 %" in markdown  # a stored reduction is shown as stored
    assert "| Test CPU 9000 | 3 | 7.5 | 3.11.7 | 9.9.9 |" in markdown
    assert "<td>Test CPU 9000</td><td>3</td><td>7.5</td>" in html
    assert CODECS_COMMAND in markdown and CODECS_COMMAND in html
    rendered_by = f"fedgate report {tmp_path / 'codecs.json'} --out {out}"
    assert rendered_by in markdown and rendered_by in html
    assert "pickle (baseline)" in markdown and "ResNet-18" in markdown
    for png in ("codec-size.png", "codec-throughput.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG"), png
        assert f"]({png})" in markdown
    assert html.count("data:image/png;base64,") == 2 and "<table>" in html
    for absent in ("Transport throughput", "Round latency", "Accuracy per round", "Flower"):
        assert absent not in markdown and absent not in html, absent
    assert not (out / "round-latency.png").exists()


def test_lossless_only_results_leave_out_the_error_section(tmp_path: Path) -> None:
    markdown, _, _ = render(tmp_path, write(tmp_path / "r.json", CODEC_ROWS[:2]))
    assert "Encoded size per codec" in markdown and "relative L2 error" not in markdown


def test_every_suite_renders_from_several_files(tmp_path: Path) -> None:
    files = [
        write(tmp_path / "codecs.json", CODEC_ROWS),
        write(tmp_path / "t.json", TRANSPORT_ROWS, "fedgate bench transports --out t.json"),
        write(tmp_path / "r.json", ROUND_ROWS, "fedgate bench rounds --out r.json"),
        write(tmp_path / "f.json", FLOWER_ROWS, "fedgate bench flower --out f.json"),
    ]
    markdown, html, out = render(tmp_path, *files)
    sections = ("Transport throughput", "Round latency", "Accuracy per round", "Flower vs fedgate")
    for text in (*sections, "bench transports", "bench rounds", "bench flower"):
        assert text in markdown and text in html, text
    assert "| raw · grpc | 44.72 | 375 ms | 119 | 120 | 44.72 | 500 ms | 89.5 | — |" in markdown
    assert "| bf16-zstd · rest | — | 125 ms | 134 | 358 | — | — | — | — |" in markdown
    assert "*ResNet-18 (fp32 44.73 MB)*" in markdown
    # gRPC vs REST on raw: REST has no raw row here, so no ratio either.
    assert "| ResNet-18 · down | 119 | — | — |" in markdown
    assert "| ResNet-18 · up | 89.5 | — | — |" in markdown
    assert "| rest · json · 4 clients | 3.25 s | 1.12 s | — | 12.34 | 0.913 |" in markdown
    assert "| 4 | 2.88 s | 750 ms |" in markdown  # medians over the two codecs
    assert "| json | 3 | 0.411 | 0.913 | 0.913 |" in markdown
    assert "each configuration ran on one transport only" in markdown
    assert "| flower · grpc | 4.75 s | 9.87 | 0.876 |" in markdown
    assert "| fedgate · grpc | 3.50 s | 6.54 | 0.881 |" in markdown
    assert "No Flower rows" not in markdown
    pngs = (
        "transport-throughput",
        "transport-fp32-throughput",
        "round-latency",
        "accuracy-per-round",
        "flower-vs-fedgate",
    )
    for png in pngs:
        assert (out / f"{png}.png").read_bytes().startswith(b"\x89PNG"), png
    assert html.count("data:image/png;base64,") == 7


def test_transports_compare_on_raw_and_accuracy_spread_across_transports(tmp_path: Path) -> None:
    rest_raw = [{**row, "transport": "rest", "mb_s": row["mb_s"] / 2} for row in TRANSPORT_ROWS[:2]]
    grpc_rounds = [{**row, "transport": "grpc"} for row in ROUND_ROWS]
    grpc_rounds[0]["accuracy_per_round"] = [0.411, 0.79, 0.913]
    files = [
        write(tmp_path / "t.json", [*TRANSPORT_ROWS, *rest_raw], "t"),
        write(tmp_path / "r.json", [*ROUND_ROWS, *grpc_rounds], "r"),
    ]
    markdown, _, _ = render(tmp_path, *files)
    assert "| ResNet-18 · down | 119 | 59.6 | 2.00x |" in markdown
    assert "| ResNet-18 · up | 89.5 | 44.8 | 2.00x |" in markdown
    assert "| 4 | 2.88 s | 750 ms | 2.88 s | 750 ms |" in markdown
    assert "the largest gap between transports at any round, same codec and clients: 0.0080" in (
        markdown
    )


def test_transports_are_shown_as_a_share_of_the_tcp_ceiling(tmp_path: Path) -> None:
    rest_raw = [{**row, "transport": "rest", "mb_s": row["mb_s"] / 2} for row in TRANSPORT_ROWS[:2]]
    ceiling = [{**row, "transport": "tcp", "mb_s": row["mb_s"] * 4} for row in TRANSPORT_ROWS[:2]]
    files = [write(tmp_path / "t.json", [*TRANSPORT_ROWS, *rest_raw, *ceiling], "t")]
    markdown, _, _ = render(tmp_path, *files)
    assert "| grpc MB/s | rest MB/s | tcp MB/s | grpc / rest | grpc % of tcp | rest % of tcp |" in (
        markdown
    )
    assert "| ResNet-18 · down | 119 | 59.6 | 477 | 2.00x | 25 % | 12 % |" in markdown


def test_a_codec_sent_down_in_another_says_so(tmp_path: Path) -> None:
    rows = [
        {"suite": "transports", "transport": "grpc", "codec": "topk-int8", "model": "cnn",
         "direction": "down", "wire_codec": "int8-zstd", "wall_s": 0.002, "mb_s": 20.0,
         "bytes": 40_000},
        {"suite": "transports", "transport": "grpc", "codec": "topk-int8", "model": "cnn",
         "direction": "up", "wire_codec": "topk-int8", "wall_s": 0.001, "mb_s": 4.5,
         "bytes": 4_500},
    ]  # fmt: skip
    markdown, _, _ = render(tmp_path, write(tmp_path / "t.json", rows, "t"))
    expected = (
        "| topk-int8 (down: int8-zstd) · grpc | 0.04 | 2 ms | 20 | — | 0.0045 | 1 ms | 4.5 | — |"
    )
    assert expected in markdown


def test_flower_results_without_flower_say_so(tmp_path: Path) -> None:
    fedgate_only = [row for row in FLOWER_ROWS if row["framework"] == "fedgate"]
    path = write(tmp_path / "f.json", fedgate_only, "f")
    document = json.loads(path.read_text())
    skip = "SKIPPED [1] bench/test_flower.py:9: Flower is not installed"
    path.write_text(json.dumps({**document, "skipped": [skip]}))
    markdown, html, out = render(tmp_path, path)
    assert "Skipped by this run" in markdown and skip in markdown and skip in html
    assert "No Flower rows in these results" in markdown
    assert "| fedgate · grpc | 3.50 s | 6.54 | 0.881 |" in markdown
    assert (out / "flower-vs-fedgate.png").read_bytes().startswith(b"\x89PNG")


def test_suites_render_without_the_codec_suite(tmp_path: Path) -> None:
    markdown, _, _ = render(tmp_path, write(tmp_path / "r.json", ROUND_ROWS, "fedgate x"))
    assert "Round latency" in markdown and "Encoded size" not in markdown
    assert "fedgate x" in markdown


def test_text_from_results_is_escaped_in_html(tmp_path: Path) -> None:
    rows = [codec_row("<b>x</b>", 10), codec_row("json", 20)]
    _, html, _ = render(tmp_path, write(tmp_path / "r.json", rows, "fedgate <script>"))
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "<script>" not in html


@pytest.mark.parametrize(
    ("content", "fault"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "JSON object"),
        (json.dumps({"command": "c", "results": []}), "'machine'"),
        (json.dumps({"machine": {}, "results": []}), "'command'"),
        (json.dumps({"machine": {}, "command": "c"}), "'results'"),
        (json.dumps({"machine": {}, "command": "c", "results": [1]}), "results[0]"),
        (json.dumps({"machine": {}, "command": "c", "results": [{"bytes": 1}]}), "'suite'"),
        (
            json.dumps(
                {"machine": {}, "command": "c", "results": [{"suite": "codecs", "bytes": "9"}]}
            ),
            "'bytes' must be a number",
        ),
        (
            json.dumps(
                {
                    "machine": {},
                    "command": "c",
                    "results": [{"suite": "rounds", "accuracy_per_round": [0.1, "x"]}],
                }
            ),
            "list of numbers",
        ),
        (
            json.dumps({"machine": {}, "command": "c", "results": [], "skipped": [3]}),
            "'skipped' must be a list of strings",
        ),
    ],
)
def test_malformed_results_are_a_config_error(tmp_path: Path, content: str, fault: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"bad\.json") as caught:
        render_report([path], tmp_path / "out")
    assert fault in str(caught.value)


def test_missing_results_file_and_empty_list_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read results file"):
        load_results(tmp_path / "absent.json")
    with pytest.raises(ConfigError, match="at least one"):
        render_report([], tmp_path / "out")
