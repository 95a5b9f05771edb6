"""The committed bench reports are what their committed results files render to.

Each ``bench/reports/<date>/`` holds a report and the results files it came from; rendering
those files again must give the same Markdown, so no figure in a committed report was
edited by hand or left behind by a change to the renderer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedgate.report import render_report

ROOT = Path(__file__).resolve().parents[2]
# experiment reports (an experiment.json inside) have their own test: tests/experiment/
REPORTS = sorted(
    p
    for p in (ROOT / "bench" / "reports").glob("*")
    if p.is_dir() and not (p / "experiment.json").exists()
)
SUITE_ORDER = ("codecs", "transports", "rounds", "accuracy", "flower")


def test_a_report_is_committed() -> None:
    assert REPORTS, "bench/reports/ holds no report"


@pytest.mark.parametrize("report", REPORTS, ids=[p.name for p in REPORTS])
def test_committed_report_renders_from_its_results(
    report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the report names its files as given, relative to the checkout
    where = report.relative_to(ROOT)
    results = [where / "results" / f"{suite}.json" for suite in SUITE_ORDER]
    results = [path for path in results if path.exists()]
    assert results, f"{where} has no results files"
    markdown_path, _ = render_report(results, tmp_path)
    rendered = markdown_path.read_text().replace(f"--out {tmp_path}", f"--out {where}")
    assert rendered == (report / "report.md").read_text()
    for image in (report / "report.md").read_text().split("](")[1:]:
        name = image.split(")")[0]
        if name.endswith(".png"):
            assert (report / name).exists(), name
