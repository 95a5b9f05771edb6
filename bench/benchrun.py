"""Run a bench suite under pytest-benchmark and write fedgate's results JSON.

This file is the bench runner of a source checkout (``fedgate bench`` loads it from here;
it is not installed with the package). ``fedgate bench <suite>`` runs
``python -m pytest bench/test_<suite>.py --benchmark-json=…`` in a subprocess and
converts pytest-benchmark's document into fedgate's, which
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
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from fedgate.core.models import MODELS
from fedgate.errors import ConfigError, FedgateError
from fedgate.run.results import provenance, write_json

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
    """The checkout this runner belongs to (``bench/``'s parent)."""
    return Path(__file__).resolve().parent.parent


def suite_names() -> list[str]:
    """The suites: every ``bench/test_<suite>.py`` (a new suite needs no change here)."""
    bench = repository_root() / "bench"
    return sorted(path.stem.removeprefix("test_") for path in bench.glob("test_*.py"))


def suite_file(suite: str) -> Path:
    """``bench/test_<suite>.py``, or a `ConfigError` saying why it cannot be run."""
    path = repository_root() / "bench" / f"test_{suite}.py"
    if not path.is_file():
        raise ConfigError(f"unknown bench suite {suite!r}; available: {', '.join(suite_names())}")
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


def bench_command(
    suite: str, models: Sequence[str] | None, quick: bool, out: Path, select: str | None = None
) -> str:
    """The ``fedgate bench`` command line that runs ``suite`` this way."""
    argv = ["fedgate", "bench", suite]
    argv += ["--models", *models] if models else []
    argv += ["--quick"] if quick else []
    argv += ["--select", select] if select else []
    return shlex.join([*argv, "--out", str(out)])


def pytest_argv(
    path: Path,
    json_path: Path,
    models: Sequence[str] | None,
    quick: bool,
    select: str | None = None,
) -> list[str]:
    """The pytest command for a suite; ``select`` is a pytest ``-k`` expression over the
    suite's test ids (``"whole_run or client_startup"``, ``"raw and -4]"``)."""
    argv = [sys.executable, "-m", "pytest", str(path), f"--benchmark-json={json_path}"]
    # No cache: a bench run must not leave state that changes the next one. -rs: the
    # summary names each skipped test and its reason, which the results file keeps.
    argv += ["-p", "no:cacheprovider", "-rs", "--benchmark-columns=median,min,max,rounds"]
    argv += ["--fedgate-quick"] if quick else []
    argv += ["-k", select] if select else []
    return argv + ([f"--fedgate-models={','.join(models)}"] if models else [])


def run_suite(
    suite: str,
    *,
    models: list[str] | None,
    quick: bool,
    out: Path,
    command: str | None = None,
    progress: TextIO | None = None,
    select: str | None = None,
) -> dict[str, Any]:
    """Run ``bench/test_<suite>.py`` (its tests ``select`` picks, all by default) and write
    the results document to ``out``.

    ``command`` is recorded as the command line that produced the file (default: the
    equivalent ``fedgate bench`` command); pytest's output is echoed to ``progress``.
    """
    path = suite_file(suite)
    names = check_models(models)
    if importlib.util.find_spec("pytest_benchmark") is None:
        raise ConfigError("bench suites need pytest-benchmark: pip install -e '.[bench]'")
    with tempfile.TemporaryDirectory(prefix="fedgate-bench-") as tmp:
        json_path = Path(tmp) / "benchmark.json"
        argv = pytest_argv(path, json_path, names, quick, select)
        skipped = run_pytest(argv, repository_root(), progress)
        if json_path.is_file():
            raw = json.loads(json_path.read_text())
        elif skipped:  # pytest-benchmark writes nothing when every benchmark was skipped
            raw = {"benchmarks": []}
        else:
            raise BenchFailed(f"bench suite {suite!r} wrote no benchmark JSON")
    command = command or bench_command(suite, names, quick, out, select)
    document = results_document(convert(raw, suite), command, skipped)
    write_json(out, document)
    return document


def run_pytest(argv: Sequence[str], cwd: Path, progress: TextIO | None) -> list[str]:
    """Run pytest, echoing its output; a failure carries the tail of that output.

    Returns pytest's summary lines for skipped tests (``-ra``: ``SKIPPED [n] file:line:
    reason``), so a results file says what its suite left out, and why.
    """
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    skipped: list[str] = []
    # argv is this interpreter running pytest on a suite file from our own checkout.
    with subprocess.Popen(
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


def results_document(rows: list[Row], command: str, skipped: Sequence[str] = ()) -> dict[str, Any]:
    return {**provenance(command), "skipped": list(skipped), "results": rows}


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


def run_bench(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Handler for ``fedgate bench``; ``argv`` (after ``fedgate``) is recorded verbatim if given."""
    models = check_models(args.models)
    command = (
        shlex.join(["fedgate", *argv])
        if argv is not None
        else bench_command(args.suite, models, args.quick, args.out, args.select)
    )
    document = run_suite(
        args.suite,
        models=models,
        quick=args.quick,
        out=args.out,
        command=command,
        progress=sys.stderr,
        select=args.select,
    )
    print(f"{len(document['results'])} result rows written to {args.out}")
    return 0
