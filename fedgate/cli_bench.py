"""`fedgate bench` and `fedgate report`.

The bench runner is no part of the installed package: it lives beside the suites in
``bench/benchrun.py`` of a source checkout (it runs them under pytest-benchmark, the extra
``fedgate[bench]``), and this command loads it from there. `fedgate report` needs
matplotlib, the extra ``fedgate[report]``; both load only when their command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import fedgate
from fedgate.errors import ConfigError

REPORT_MISSING = "fedgate report draws with matplotlib, which is not installed: " + (
    "pip install 'fedgate[report]'"
)


def checkout_root() -> Path:
    """The source checkout fedgate runs from: ``bench/`` sits beside the package there."""
    return Path(fedgate.__file__).resolve().parent.parent


def suite_names() -> list[str]:
    """The suites of this checkout: ``bench/test_<suite>.py``, found, not listed."""
    return sorted(path.stem.removeprefix("test_") for path in _bench_dir().glob("test_*.py"))


def add_bench_command(commands: Any) -> None:
    bench = commands.add_parser("bench", help="run a bench suite, write results JSON")
    bench.add_argument("suite", help="bench/test_<suite>.py of the checkout (codecs, rounds, ...)")
    bench.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help="models to cover (space- or comma-separated); default: the suite's own "
        "(all, or cnn with --quick)",
    )
    bench.add_argument("--quick", action="store_true", help="smoke run: cnn only, short budgets")
    bench.add_argument(
        "--select",
        metavar="EXPR",
        help="only the suite's benchmarks whose ids match this pytest -k expression "
        '(e.g. "whole_run or client_startup")',
    )
    bench.add_argument("--out", type=Path, required=True, help="write the results JSON here")
    bench.set_defaults(handler=run_bench_command)


def add_report_command(commands: Any) -> None:
    report = commands.add_parser("report", help="render results JSON into a report")
    report.add_argument(
        "results",
        nargs="+",
        type=Path,
        help="results JSON from fedgate bench, or an experiment directory (fedgate experiment)",
    )
    report.add_argument(
        "--out",
        "--out-dir",
        dest="out_dir",
        type=Path,
        default=None,
        help="directory for report.md, report.html and the PNGs (default: the experiment "
        "directory, when that is all there is to report; else ./report)",
    )
    report.set_defaults(handler=run_report_command)


def run_bench_command(args: argparse.Namespace) -> int:
    runner = bench_runner()
    code: int = runner.run_bench(args, args.argv)
    return code


def bench_runner() -> Any:
    """``bench/benchrun.py`` of this checkout, imported as the suites import their helpers
    (``bench/`` is no package: it goes on ``sys.path``)."""
    folder = _bench_dir()
    if not (folder / "benchrun.py").is_file():
        raise ConfigError(
            f"bench suites live in bench/ of a fedgate source checkout, and {folder} holds "
            "none (is fedgate installed without its repository?)"
        )
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module("benchrun")


def run_report_command(args: argparse.Namespace) -> int:
    try:
        from fedgate.report import run_report  # noqa: PLC0415 - matplotlib loads only here
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] == "matplotlib":
            raise ConfigError(REPORT_MISSING) from None
        raise
    return run_report(args)


def _bench_dir() -> Path:
    return checkout_root() / "bench"
