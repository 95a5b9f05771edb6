"""Run a bench suite under pytest-benchmark and write fedgate's results JSON.

``fedgate bench <suite>`` runs ``python -m pytest bench/test_<suite>.py --benchmark-json=…``
in a subprocess and converts pytest-benchmark's document into fedgate's, which
``fedgate report`` renders::

    {"machine": {...}, "command": "fedgate bench codecs --out r.json", "created": "…",
     "skipped": ["SKIPPED [1] bench/test_x.py:12: why", …],
     "results": [{"suite": "codecs", "model": "cnn", "codec": "raw", "bytes": …}, …]}

The conversion knows nothing about any one suite, so new suites need no change here:

- every benchmark's ``extra_info`` is copied into its row as is;
- benchmarks whose ``extra_info["row"]`` is the same are merged into one row (e.g. the
  encode and the decode benchmark of one model x codec); without ``row``, each benchmark
  is its own row;
- the timing stats land under ``extra_info["timing"]`` (default ``time``): ``<timing>_s``
  is the median, plus ``<timing>_mean_s``, ``_min_s``, ``_max_s``, ``_stddev_s``,
  ``_rounds``;
- a row with ``input_bytes`` gains ``<timing>_mb_s`` (input MB per second, MB = 10^6 bytes);
- a row with ``bytes`` and ``codec`` gains ``reduction_vs_json_pct`` and
  ``reduction_vs_raw_pct`` against the ``json`` and ``raw`` rows that share all its other
  string-valued fields (model, transport, direction, …).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import fedgate
from fedgate.core.models import MODELS
from fedgate.errors import ConfigError, FedgateError

SUITES = ("codecs", "transports", "rounds", "accuracy", "flower")
MB = 1_000_000
REFERENCE_CODECS = ("json", "raw")
CODEC_FIELDS = ("codec", "wire_codec")  # wire_codec: what a codec's bytes travelled in
_STATS = {"median": "s", "mean": "mean_s", "min": "min_s", "max": "max_s", "stddev": "stddev_s"}
_TAIL_LINES = 40

Row = dict[str, Any]


class BenchFailed(FedgateError):
    """A bench suite ran but failed, or produced results that cannot be converted."""

    code = "bench_failed"


def repository_root() -> Path:
    """The checkout fedgate runs from: ``bench/`` is not installed, it sits beside the package."""
    return Path(fedgate.__file__).resolve().parent.parent


def suite_file(suite: str) -> Path:
    """``bench/test_<suite>.py``, or a `ConfigError` saying why it cannot be run."""
    if suite not in SUITES:
        raise ConfigError(f"unknown bench suite {suite!r}; available: {', '.join(SUITES)}")
    bench = repository_root() / "bench"
    if not bench.is_dir():
        raise ConfigError(
            f"bench suites live in bench/ of a fedgate source checkout, and {bench} does not "
            "exist (is fedgate installed without its repository?)"
        )
    path = bench / f"test_{suite}.py"
    if not path.is_file():
        raise ConfigError(f"bench suite {suite!r} is not available yet: {path} does not exist")
    return path


def check_models(models: Iterable[str] | None) -> list[str] | None:
    """Model names split on commas and checked; None keeps the suite's own default."""
    if models is None:
        return None
    names = [name.strip() for item in models for name in item.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise ConfigError(f"unknown model(s) {', '.join(unknown)}; available: {', '.join(MODELS)}")
    return names or None


def bench_command(suite: str, models: Sequence[str] | None, quick: bool, out: Path) -> str:
    """The ``fedgate bench`` command line that runs ``suite`` this way."""
    argv = ["fedgate", "bench", suite]
    argv += ["--models", *models] if models else []
    argv += ["--quick"] if quick else []
    return shlex.join([*argv, "--out", str(out)])


def pytest_argv(
    path: Path, json_path: Path, models: Sequence[str] | None, quick: bool
) -> list[str]:
    argv = [sys.executable, "-m", "pytest", str(path), f"--benchmark-json={json_path}"]
    # No cache: a bench run must not leave state that changes the next one. -rs: the
    # summary names each skipped test and its reason, which the results file keeps.
    argv += ["-p", "no:cacheprovider", "-rs", "--benchmark-columns=median,min,max,rounds"]
    argv += ["--fedgate-quick"] if quick else []
    return argv + ([f"--fedgate-models={','.join(models)}"] if models else [])


def run_suite(
    suite: str,
    *,
    models: list[str] | None,
    quick: bool,
    out: Path,
    command: str | None = None,
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Run ``bench/test_<suite>.py`` and write the results document to ``out``.

    ``command`` is recorded as the command line that produced the file (default: the
    equivalent ``fedgate bench`` command); pytest's output is echoed to ``progress``.
    """
    path = suite_file(suite)
    names = check_models(models)
    if importlib.util.find_spec("pytest_benchmark") is None:
        raise ConfigError("bench suites need pytest-benchmark: pip install -e '.[dev]'")
    with tempfile.TemporaryDirectory(prefix="fedgate-bench-") as tmp:
        json_path = Path(tmp) / "benchmark.json"
        argv = pytest_argv(path, json_path, names, quick)
        skipped = run_pytest(argv, repository_root(), progress)
        if not json_path.is_file():
            raise BenchFailed(f"bench suite {suite!r} wrote no benchmark JSON")
        raw = json.loads(json_path.read_text())
    document = results_document(
        convert(raw, suite), command or bench_command(suite, names, quick, out), skipped
    )
    write_results(document, out)
    return document


def run_pytest(argv: Sequence[str], cwd: Path, progress: TextIO | None) -> list[str]:
    """Run pytest, echoing its output; a failure carries the tail of that output.

    Returns pytest's summary lines for skipped tests (``-ra``: ``SKIPPED [n] file:line:
    reason``), so a results file says what its suite left out, and why.
    """
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    skipped: list[str] = []
    # argv is this interpreter running pytest on a suite file from our own checkout.
    with subprocess.Popen(  # noqa: S603
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line)
            if line.startswith("SKIPPED "):
                skipped.append(line.strip())
            if progress is not None:
                progress.write(line)
                progress.flush()
    if process.returncode != 0:
        raise BenchFailed(
            f"bench run failed (pytest exit code {process.returncode}): {shlex.join(argv)}\n"
            + "".join(tail)
        )
    return skipped


def write_results(document: Mapping[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")


def results_document(rows: list[Row], command: str, skipped: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "machine": machine_info(),
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "skipped": list(skipped),
        "results": rows,
    }


def convert(raw: Mapping[str, Any], suite: str) -> list[Row]:
    """pytest-benchmark's JSON document -> fedgate result rows (see the module docstring)."""
    benchmarks = raw.get("benchmarks")
    if not isinstance(benchmarks, list):
        raise BenchFailed("pytest-benchmark JSON has no 'benchmarks' list")
    rows: dict[str, Row] = {}
    labels: dict[str, list[str]] = collections.defaultdict(list)
    for bench in benchmarks:
        key, label, fields = benchmark_fields(bench)
        merge_into(rows.setdefault(key, {"suite": suite}), fields, key)
        if label is not None:
            labels[key].append(label)
    for key, row in rows.items():
        add_throughput(row, labels[key])
    result = list(rows.values())
    add_reductions(result)
    return result


def benchmark_fields(bench: Mapping[str, Any]) -> tuple[str, str | None, Row]:
    """(row key, timing label or None without stats, fields) of one benchmark."""
    extra = dict(bench.get("extra_info") or {})
    key = str(extra.pop("row", bench.get("fullname", bench.get("name"))))
    label = str(extra.pop("timing", "time"))
    stats = bench.get("stats")
    if not isinstance(stats, Mapping) or "median" not in stats:
        return key, None, extra
    for stat, suffix in _STATS.items():
        extra[f"{label}_{suffix}"] = stats[stat]
    extra[f"{label}_rounds"] = stats.get("rounds")
    return key, label, extra


def merge_into(row: Row, fields: Mapping[str, Any], key: str) -> None:
    for field, value in fields.items():
        if field in row and row[field] != value:
            raise BenchFailed(
                f"benchmarks of row {key!r} disagree on {field!r}: {row[field]!r} vs {value!r}"
            )
        row[field] = value


def add_throughput(row: Row, labels: Iterable[str]) -> None:
    size = row.get("input_bytes")
    if not isinstance(size, int | float):
        return
    for label in labels:
        seconds = row.get(f"{label}_s")
        if isinstance(seconds, int | float) and seconds > 0:
            row.setdefault(f"{label}_mb_s", size / seconds / MB)


def _dimensions(row: Row) -> tuple[tuple[str, str], ...]:
    # String-valued fields name what a row measures (model, transport, …); numbers are
    # results. The codec fields are what reductions compare across, so they are left out.
    return tuple(
        sorted((k, v) for k, v in row.items() if isinstance(v, str) and k not in CODEC_FIELDS)
    )


def add_reductions(rows: Sequence[Row]) -> None:
    """``reduction_vs_<ref>_pct``: how much smaller ``bytes`` is than the reference codec's."""
    references: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
    for row in rows:
        if row.get("codec") in REFERENCE_CODECS and isinstance(row.get("bytes"), int | float):
            references.setdefault(_dimensions(row), {})[row["codec"]] = row["bytes"]
    for row in rows:
        size = row.get("bytes")
        if row.get("codec") is None or not isinstance(size, int | float):
            continue
        for codec, reference in references.get(_dimensions(row), {}).items():
            if reference > 0:
                row.setdefault(f"reduction_vs_{codec}_pct", 100.0 * (1.0 - size / reference))


def machine_info() -> dict[str, Any]:
    """The machine the suite ran on, as a report prints it."""
    return {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gb": memory_gb(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "fedgate": fedgate.__version__,
        "pytest_benchmark": _version("pytest-benchmark"),
        "platform": platform.platform(),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fedgate bench SUITE [--models M ...] [--quick] --out results.json``."""
    parser.add_argument("suite", choices=SUITES, help="bench/test_<suite>.py to run")
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help=f"models to cover (space- or comma-separated): {', '.join(MODELS)}; "
        "default: the suite's own (all, or cnn with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: cnn only, short budgets")
    parser.add_argument("--out", type=Path, required=True, help="write the results JSON here")


def run_bench(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Handler for ``fedgate bench``; ``argv`` (after ``fedgate``) is recorded verbatim if given."""
    models = check_models(args.models)
    command = (
        shlex.join(["fedgate", *argv])
        if argv is not None
        else bench_command(args.suite, models, args.quick, args.out)
    )
    document = run_suite(
        args.suite,
        models=models,
        quick=args.quick,
        out=args.out,
        command=command,
        progress=sys.stderr,
    )
    print(f"{len(document['results'])} result rows written to {args.out}")
    return 0
