"""The ``accuracy`` suite's section: accuracy against bytes moved, per codec, raw as reference."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedgate.report import plots
from fedgate.report.blocks import MB, MISSING, Image, Paragraph, Section, Table, megabytes, percent
from fedgate.report.results import Row, number

REFERENCE = "raw"
CHART = "accuracy-vs-bytes.png"


def tradeoff_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    found = [
        row
        for row in rows
        if row["suite"] == "accuracy" and number(row, "bytes_total") and number(row, "accuracy")
    ]
    if not found:
        return None
    reference = next((row for row in found if row.get("codec") == REFERENCE), None)
    ordered = sorted(found, key=lambda row: -float(number(row, "bytes_total") or 0))
    plots.tradeoff(
        out_dir / CHART,
        points={
            str(row["codec"]): (
                float(number(row, "bytes_total") or 0) / MB,
                float(number(row, "accuracy") or 0),
            )
            for row in ordered
        },
        reference=REFERENCE,
        xlabel="MB moved over the whole run, up + down (log scale)",
        ylabel="final accuracy",
    )
    return Section(
        "Accuracy for the bytes",
        [
            Paragraph(_setting(found[0])),
            Table(
                [
                    "codec",
                    "MB moved",
                    "vs raw",
                    "final accuracy",
                    "vs raw (points)",
                    "last 5 rounds",
                    "vs raw (points)",
                ],
                [_row(row, reference) for row in ordered],
            ),
            Image(CHART, "Final accuracy against MB moved, per codec; raw fp32 is the star"),
        ],
    )


def _setting(row: Row) -> str:
    return (
        f"One federation per codec, all else equal: {row.get('model', 'cnn')} on digits, "
        f"{row.get('clients', MISSING)} clients split {row.get('partition', MISSING)}, "
        f"{row.get('rounds', MISSING)} rounds, seed 0; lossy codecs send deltas both ways. "
        "MB moved: encoded models down plus updates up over the run (MB = 10^6 bytes). "
        "'vs raw': the share of raw fp32's bytes, and the accuracy difference in points "
        "(one test example is 0.28 points); the last-5 mean is steadier than the last round."
    )


def _row(row: Row, reference: Row | None) -> list[str]:
    size, accuracy = number(row, "bytes_total"), number(row, "accuracy")
    late = number(row, "accuracy_late")
    base_size = number(reference, "bytes_total") if reference else None
    base_accuracy = number(reference, "accuracy") if reference else None
    base_late = number(reference, "accuracy_late") if reference else None
    return [
        str(row.get("codec", MISSING)),
        megabytes(size),
        percent(100 * size / base_size) if size and base_size else MISSING,
        _fraction(accuracy),
        _points(accuracy, base_accuracy),
        _fraction(late),
        _points(late, base_late),
    ]


def _fraction(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4f}"


def _points(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return MISSING
    return f"{100 * (value - base):+.2f}"
