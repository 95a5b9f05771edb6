"""Bench results JSON -> a Markdown and an HTML report with tables and PNG charts."""

from __future__ import annotations

from fedgate.report.render import render_report, run_report
from fedgate.report.results import ResultsFile, load_results

__all__ = ["ResultsFile", "load_results", "render_report", "run_report"]
