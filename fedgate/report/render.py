"""Results JSON -> ``report.md`` + ``report.html`` with PNG charts beside them."""

from __future__ import annotations

import argparse
import html
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedgate.errors import ConfigError
from fedgate.report import (
    codec_sections,
    flower_sections,
    partition_sections,
    speed_sections,
    store_sections,
    suite_sections,
    tradeoff_sections,
    transport_sections,
)
from fedgate.report.blocks import MISSING, Code, Paragraph, Section, Table
from fedgate.report.experiment_data import is_experiment
from fedgate.report.experiment_sections import experiment_sections
from fedgate.report.results import ResultsFile, Row, load_results

TITLE = "fedgate bench report"
EXPERIMENT_TITLE = "fedgate experiment report"
SectionBuilder = Callable[[Sequence[Row], Path], Section | None]
SECTIONS: tuple[SectionBuilder, ...] = (
    codec_sections.size_section,
    codec_sections.throughput_section,
    codec_sections.error_section,
    transport_sections.transport_section,
    suite_sections.rounds_section,
    suite_sections.accuracy_section,
    store_sections.store_section,
    speed_sections.speed_section,
    tradeoff_sections.tradeoff_section,
    flower_sections.flower_section,
    partition_sections.partition_section,
)
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
caption { text-align: left; font-style: italic; padding-bottom: 0.3rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; }
th { background: #f2f2f2; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; }
figure { margin: 1rem 0; }
img { max-width: 100%; }
figcaption { font-size: 0.85rem; color: #555; }
"""


def render_report(results_paths: list[Path], out_dir: Path) -> tuple[Path, Path]:
    """Write ``out_dir/report.md`` and ``out_dir/report.html`` (PNG charts beside them).

    A directory among ``results_paths`` is an experiment (`fedgate experiment --out DIR`):
    its sections follow the results files'. Malformed results files raise `ConfigError`;
    sections for suites absent from every file are left out.
    """
    if not results_paths:
        raise ConfigError("a report needs at least one results file")
    experiments = [Path(path) for path in results_paths if is_experiment(Path(path))]
    files = [load_results(Path(path)) for path in results_paths if not is_experiment(Path(path))]
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [row for results in files for row in results.rows]
    command = shlex.join(["fedgate", "report", *map(str, results_paths), "--out", str(out_dir)])
    bench = [s for build in SECTIONS if (s := build(rows, out_dir)) is not None]
    if files and not bench:
        bench.append(Section("Results", [Paragraph("The results files hold no rows.")]))
    sections = [runs_section(files, command), *bench] if files else []
    sections += experiment_sections(experiments, out_dir, command)
    title = TITLE if files else EXPERIMENT_TITLE
    markdown_path, html_path = out_dir / "report.md", out_dir / "report.html"
    markdown_path.write_text(to_markdown(sections, title), encoding="utf-8")
    html_path.write_text(to_html(sections, out_dir, title), encoding="utf-8")
    return markdown_path, html_path


def runs_section(files: Sequence[ResultsFile], report_command: str) -> Section:
    """Where every figure comes from: the machine and the exact command per results file,
    and the command that rendered the report from them."""
    headers = ["results file", "created", "CPU", "cores", "memory GB", "Python", "torch"]
    table = [
        [
            results.path.name,
            results.created or MISSING,
            *(_text(results.machine.get(key)) for key in ("cpu", "cores", "memory_gb")),
            *(_text(results.machine.get(key)) for key in ("python", "torch")),
        ]
        for results in files
    ]
    blocks: list[Paragraph | Code | Table] = [
        Paragraph("Every figure below comes from these results files."),
        Table(headers, table, figures=False),
    ]
    for results in files:
        platform = _text(results.machine.get("platform"))
        blocks.append(Paragraph(f"{results.path} ({len(results.rows)} rows, platform {platform}):"))
        blocks.append(Code(results.command))
        if results.skipped:
            blocks.append(Paragraph("Skipped by this run, as pytest reported it:"))
            blocks.append(Code("\n".join(results.skipped)))
    blocks += [Paragraph("This report was rendered from them by:"), Code(report_command)]
    return Section("Machine and commands", list(blocks))


def _text(value: Any) -> str:
    return MISSING if value is None or value == "" else str(value)


def to_markdown(sections: Sequence[Section], title: str = TITLE) -> str:
    parts = [f"# {title}"]
    for section in sections:
        parts.append(f"## {section.title}")
        parts += [block.markdown() for block in section.blocks]
    return "\n\n".join(parts) + "\n"


def to_html(sections: Sequence[Section], out_dir: Path, title: str = TITLE) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body += [block.html(out_dir) for block in section.blocks]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def run_report(args: argparse.Namespace) -> int:
    """Handler for ``fedgate report``; without ``--out``, one experiment directory gets its
    report inside it, anything else in ./report."""
    paths: list[Path] = list(args.results)
    single = len(paths) == 1 and is_experiment(paths[0])
    out_dir = args.out_dir or (paths[0] if single else Path("report"))
    markdown_path, html_path = render_report(paths, out_dir)
    print(f"wrote {markdown_path} and {html_path}")
    return 0
