"""Sections for the ``codecs`` suite: encoded size, throughput, lossy error."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedgate.report import plots
from fedgate.report.blocks import (
    MB,
    Image,
    Paragraph,
    Section,
    Table,
    megabytes,
    percent,
    rate,
    scientific,
    seconds,
)
from fedgate.report.results import Row, number

SUITE = "codecs"
MODEL_LABELS = {"cnn": "CNN (digits)", "resnet18": "ResNet-18", "resnet50": "ResNet-50"}
REFERENCES = (("json", "JSON"), ("raw", "raw"))
ERROR_FIELDS = (
    ("rel_l2", "weights"),
    ("rel_l2_delta", "update delta"),
    ("rel_l2_delta_via_weights", "delta from sent weights"),
)


def model_label(name: str) -> str:
    return MODEL_LABELS.get(name, name)


@dataclass(frozen=True)
class CodecGrid:
    """The codec rows by (model, codec); a later row for the same pair replaces an earlier."""

    models: list[str]  # smallest input first
    codecs: list[str]  # largest encoding first, judged on the largest model
    cells: dict[tuple[str, str], Row]

    def get(self, model: str, codec: str) -> Row | None:
        return self.cells.get((model, codec))

    def mb_s(self, model: str, codec: str, timing: str) -> float | None:
        row = self.get(model, codec)
        if row is None:
            return None
        stored = number(row, f"{timing}_mb_s")
        size, time_s = number(row, "input_bytes"), number(row, f"{timing}_s")
        if stored is None and size is not None and time_s:
            return size / time_s / MB
        return stored

    def reduction(self, model: str, codec: str, reference: str) -> float | None:
        row = self.get(model, codec)
        if row is None:
            return None
        stored = number(row, f"reduction_vs_{reference}_pct")
        base = self.get(model, reference)
        size, ref_size = number(row, "bytes"), None if base is None else number(base, "bytes")
        if stored is None and size is not None and ref_size:
            return 100.0 * (1.0 - size / ref_size)
        return stored


def codec_grid(rows: Sequence[Row]) -> CodecGrid | None:
    cells = {
        (str(row["model"]), str(row["codec"])): row
        for row in rows
        if row["suite"] == SUITE and isinstance(row.get("model"), str) and row.get("codec")
    }
    if not cells:
        return None
    inputs: dict[str, float] = {}
    for (model, _), row in cells.items():
        inputs.setdefault(model, number(row, "input_bytes") or math.inf)
    models = sorted(inputs, key=lambda m: inputs[m])
    largest = models[-1]
    first_seen = list(dict.fromkeys(codec for _, codec in cells))

    def size_on_largest(codec: str) -> float:
        row = cells.get((largest, codec))
        size = None if row is None else number(row, "bytes")
        return -1.0 if size is None else size

    codecs = sorted(first_seen, key=lambda c: (-size_on_largest(c), first_seen.index(c)))
    return CodecGrid(models, codecs, cells)


def size_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    grid = codec_grid(rows)
    if grid is None or not any(number(r, "bytes") is not None for r in grid.cells.values()):
        return None
    inputs = [f"{model_label(m)} {megabytes(_input_bytes(grid, m))} MB" for m in grid.models]
    chart = "codec-size.png"
    plots.bar_chart(
        out_dir / chart,
        groups=[model_label(m) for m in grid.models],
        series={c: [_megabytes(grid.get(m, c)) for m in grid.models] for c in grid.codecs},
        title="Encoded size of the full state dict",
        ylabel="MB (log scale)",
        log=True,
    )
    return Section(
        "Encoded size per codec",
        [
            Paragraph(
                "Bytes of one encoded full state dict (BatchNorm buffers included), "
                "MB = 10^6 bytes. 'vs JSON' and 'vs raw' are how much smaller than the json "
                "and raw encodings of the same model (negative: larger). The pickle "
                "baseline is pickle.dumps of the fp32 state dict: measured for comparison, "
                "never sent (unpickling runs code)."
            ),
            Paragraph("fp32 input (sum of numel x element size): " + ", ".join(inputs) + "."),
            _size_table(grid),
            Image(chart, "Encoded size per codec and model (MB, log scale)"),
        ],
    )


def _size_table(grid: CodecGrid) -> Table:
    headers = ["codec"]
    for model in grid.models:
        label = model_label(model)
        headers += [f"{label} MB", *(f"{label} vs {ref_label}" for _, ref_label in REFERENCES)]
    rows = []
    for codec in grid.codecs:
        cells = [codec]
        for model in grid.models:
            cells.append(megabytes(_bytes(grid.get(model, codec))))
            cells += [percent(grid.reduction(model, codec, ref)) for ref, _ in REFERENCES]
        rows.append(cells)
    return Table(headers, rows)


def _input_bytes(grid: CodecGrid, model: str) -> float | None:
    sizes = [number(row, "input_bytes") for (m, _), row in grid.cells.items() if m == model]
    return next((size for size in sizes if size is not None), None)


def _bytes(row: Row | None) -> float | None:
    return None if row is None else number(row, "bytes")


def _megabytes(row: Row | None) -> float | None:
    size = _bytes(row)
    return None if size is None else size / MB


def throughput_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    grid = codec_grid(rows)
    timings = ("encode", "decode")
    if grid is None or not any(
        number(row, f"{t}_s") is not None for row in grid.cells.values() for t in timings
    ):
        return None
    blocks: list[Paragraph | Table | Image] = [
        Paragraph(
            "Median time of one encode / decode of the full state dict (pytest-benchmark "
            "rounds in the last column), and throughput in MB/s of fp32 input "
            "(input bytes / median time, MB = 10^6 bytes)."
        )
    ]
    blocks += [_throughput_table(grid, model) for model in grid.models]
    chart = "codec-throughput.png"
    # One above the other, each the full width: ten codecs x three models of value labels
    # overprint each other in half a page.
    groups = [model_label(m) for m in grid.models]
    plots.bar_rows(
        out_dir / chart,
        panels=[
            plots.BarPanel(
                t,
                groups,
                {c: [grid.mb_s(m, c, t) for m in grid.models] for c in grid.codecs},
                "MB/s of fp32 input (log scale)",
            )
            for t in timings
        ],
        log=True,
    )
    blocks.append(Image(chart, "Encode and decode throughput per codec and model (MB/s)"))
    return Section("Encode / decode throughput", list(blocks))


def _throughput_table(grid: CodecGrid, model: str) -> Table:
    rows = []
    for codec in grid.codecs:
        row = grid.get(model, codec)
        if row is None:
            continue
        rounds = [number(row, f"{t}_rounds") for t in ("encode", "decode")]
        rows.append(
            [
                codec,
                seconds(number(row, "encode_s")),
                seconds(number(row, "decode_s")),
                rate(grid.mb_s(model, codec, "encode")),
                rate(grid.mb_s(model, codec, "decode")),
                " / ".join("—" if r is None else f"{r:.0f}" for r in rounds),
            ]
        )
    headers = ["codec", "encode", "decode", "encode MB/s", "decode MB/s", "rounds (enc / dec)"]
    return Table(headers, rows, caption=model_label(model))


def error_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    grid = codec_grid(rows)
    if grid is None:
        return None
    fields = [
        (name, label)
        for name, label in ERROR_FIELDS
        if any(number(row, name) is not None for row in grid.cells.values())
    ]
    if not fields:
        return None
    table_rows = [
        [f"{model_label(model)} · {codec}", *(scientific(number(row, f)) for f, _ in fields)]
        for model in grid.models
        for codec in grid.codecs
        if (row := grid.get(model, codec)) is not None
        and any(number(row, f) is not None for f, _ in fields)
    ]
    return Section(
        "Lossy codecs: relative L2 error",
        [
            Paragraph(
                "‖decoded - x‖ / ‖x‖ over all float tensors concatenated. 'weights': the "
                "global model; 'update delta': trained minus global weights, encoded as "
                "such; 'delta from sent weights': the delta a server derives when a client "
                "sends its trained weights through the codec, relative to the true delta."
            ),
            Table(["model · codec", *(label for _, label in fields)], table_rows),
        ],
    )
