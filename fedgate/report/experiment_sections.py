"""The report of an experiment directory (`fedgate report DIR`).

Cells are grouped by every grid parameter but the seed. Per group: the accuracy per round
of each seed against the centralized baseline's accuracy per epoch, the final accuracy
with its spread over seeds, and the bytes on the wire until the global model first reached
the spec's target accuracy. Per cell: the gap to the centralized baseline of the same seed
(the same train/test split and the same initial weights), in percentage points.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from fedgate.report.blocks import MISSING, Block, Code, Image, Paragraph, Section, Table, megabytes
from fedgate.report.experiment_data import Experiment, Run, load_experiment, mean
from fedgate.report.experiment_plots import (
    CurvePanel,
    FinalPoint,
    curve_grid,
    final_chart,
    mean_curve,
)
from fedgate.report.partition_sections import splits_section

MAX_COLUMNS = 3
GAP_EXPLAIN = (
    "Gap = federated final accuracy - centralized final accuracy of the same seed (the "
    "same train/test split, the same initial weights), in percentage points (pp) of test "
    "accuracy; negative: the federation ends below the centralized model."
)


def experiment_sections(paths: Sequence[Path], out_dir: Path, command: str) -> list[Section]:
    """Every section for the experiment directories ``paths``; charts named apart per
    experiment, so several share one report."""
    experiments = [load_experiment(path) for path in paths]
    sections: list[Section] = []
    used: set[str] = set()
    for experiment in experiments:
        prefix = _unique(_slug(experiment.name), used)
        tag = f" ({experiment.name})" if len(experiments) > 1 else ""
        sections += sections_for(experiment, out_dir, prefix, command, tag)
    return sections


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "experiment"


def _unique(slug: str, used: set[str]) -> str:
    candidate, number = slug, 1
    while candidate in used:
        number += 1
        candidate = f"{slug}-{number}"
    used.add(candidate)
    return candidate


def sections_for(
    experiment: Experiment, out_dir: Path, prefix: str, command: str, tag: str = ""
) -> list[Section]:
    sections = [overview_section(experiment, command, tag)]
    if experiment.groups():
        sections += [
            curves_section(experiment, out_dir, prefix, tag),
            gap_section(experiment, tag),
            final_section(experiment, out_dir, prefix, tag),
        ]
        if experiment.target is not None:
            sections.append(bytes_section(experiment, experiment.target, tag))
        first_seed = min(run.seed for runs in experiment.groups().values() for run in runs)
        splits = [
            (f"{experiment.path} cell {run.id}", run.partition)
            for runs in experiment.groups().values()
            for run in runs
            if run.seed == first_seed and run.partition is not None
        ]
        partition = splits_section(splits, out_dir, filename_prefix=f"{prefix}-partition")
        if partition is not None:
            partition.title += tag
            partition.blocks.insert(0, Paragraph(f"The splits of seed {first_seed}."))
            sections.append(partition)
    return sections


def percent(value: float | None) -> str:
    return MISSING if value is None else f"{value * 100:.2f} %"


def points(value: float | None) -> str:
    # + 0.0 turns the -0.0 a rounding leaves into 0.0: no "-0.00 pp"
    return MISSING if value is None else f"{round(value, 2) + 0.0:+.2f} pp"


def _spread(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f} pp"


def _finals(runs: Sequence[Run]) -> list[float]:
    return [run.final_accuracy for run in runs if run.final_accuracy is not None]


def overview_section(experiment: Experiment, command: str, tag: str) -> Section:
    total = len(experiment.runs) + len(experiment.missing)
    blocks: list[Block] = [
        Paragraph(experiment.description or f"Experiment {experiment.name}."),
        Paragraph(
            f"{len(experiment.runs)} of {total} cells finished, from {experiment.spec_file} "
            f"in {experiment.path}."
        ),
    ]
    if experiment.missing:
        blocks.append(Paragraph("Not finished yet: " + ", ".join(experiment.missing) + "."))
    fixed = [[name, str(value)] for name, value in experiment.fixed.items()]
    fixed += [[f"centralized {k}", str(v)] for k, v in (experiment.centralized or {}).items()]
    if experiment.target is not None:
        fixed.append(["target accuracy", percent(experiment.target)])
    blocks.append(Table(["parameter", "value"], fixed, caption="Fixed", figures=False))
    axes = [[name, ", ".join(map(str, values))] for name, values in experiment.axes.items()]
    blocks.append(Table(["axis", "values"], axes, caption="Grid", figures=False))
    blocks += sessions_blocks(experiment)
    blocks += [Paragraph("This report was rendered by:"), Code(command)]
    return Section(f"Experiment {experiment.name}{tag}", blocks)


def sessions_blocks(experiment: Experiment) -> list[Block]:
    """When the cells ran, how long each invocation took, and on what machine."""
    rows = [
        [
            str(session.get("started", MISSING)),
            _wall(session.get("wall_s")),
            *(str(len(session.get(key) or [])) for key in ("ran", "skipped", "failed")),
            "yes" if session.get("ended") else "no (killed)",
            _loads(session.get("load_avg_1min")),
        ]
        for session in experiment.sessions
    ]
    headers = ["started (UTC)", "wall time", "cells run", "skipped", "failed", "ended", "load"]
    machine = experiment.machine
    about = ", ".join(
        f"{key} {machine[key]}"
        for key in ("platform", "cores", "cpus", "python", "torch")  # cpus: before 12-01
        if key in machine
    )
    commands = sorted({str(s.get("command", "")) for s in experiment.sessions} - {""})
    caption = (
        "Runs of the experiment (fedgate experiment); load: the machine's 1-minute load "
        "average at the start and at the end of each run"
    )
    return [
        Table(headers, rows, caption=caption),
        Paragraph(f"Machine: {about}." if about else "Machine: not recorded."),
        *([Code("\n".join(commands))] if commands else []),
    ]


def _loads(value: object) -> str:
    """The 1-minute load average at a session's start and end (its last update)."""
    if isinstance(value, list) and all(isinstance(v, int | float) for v in value) and value:
        return " to ".join(f"{v:.1f}" for v in value)
    return MISSING


def _wall(value: object) -> str:
    if not isinstance(value, int | float):
        return MISSING
    minutes, seconds = divmod(float(value), 60)
    return f"{int(minutes)} min {seconds:04.1f} s" if minutes else f"{seconds:.1f} s"


def reference_curve(experiment: Experiment) -> list[float | None]:
    return mean_curve([run.accuracy for run in experiment.baselines()])


def curves_section(experiment: Experiment, out_dir: Path, prefix: str, tag: str) -> Section:
    groups = experiment.groups()
    reference = reference_curve(experiment)
    panels = [
        CurvePanel(label, [run.accuracy for run in runs], reference)
        for label, runs in groups.items()
    ]
    varying = experiment.varying
    last = len(experiment.axes.get(varying[-1], [])) if varying else 1
    columns = last if 1 < last <= MAX_COLUMNS else min(MAX_COLUMNS, len(panels))
    filename = f"{prefix}-accuracy-per-round.png"
    curve_grid(out_dir / filename, panels, columns, experiment.target)
    baseline = "the centralized baseline (dashed, mean over seeds, per epoch)"
    text = (
        f"Test accuracy of the global model after each round, per cell group: each seed "
        f"(thin), their mean (thick), against {baseline}"
        if reference
        else "Test accuracy of the global model after each round, per cell group (no "
        "centralized cell has finished)"
    )
    return Section(
        f"Accuracy per round{tag}",
        [Paragraph(text + "."), Image(filename, "Accuracy per round, per cell group")],
    )


def gap_rows(experiment: Experiment) -> list[tuple[str, Run, float | None, float | None]]:
    """(group, run, centralized final accuracy, gap in pp) for every federated run."""
    fallback = mean(_finals(experiment.baselines()))
    rows = []
    for label, runs in experiment.groups().items():
        for run in runs:
            own = experiment.baseline(run.seed)
            central = own.final_accuracy if own is not None else fallback
            gap = None
            if run.final_accuracy is not None and central is not None:
                gap = (run.final_accuracy - central) * 100
            rows.append((label, run, central, gap))
    return rows


def gap_section(experiment: Experiment, tag: str) -> Section:
    rows = gap_rows(experiment)
    table = [
        [f"{label}, seed {run.seed}", percent(run.final_accuracy), percent(central), points(gap)]
        for label, run, central, gap in rows
    ]
    headers = ["cell", "federated", "centralized", "gap"]
    blocks: list[Block] = [Paragraph(GAP_EXPLAIN + _budget(experiment))]
    blocks.append(Table(headers, table, caption="FL vs centralized gap, per cell"))
    gaps = [(gap, label, run) for label, run, _, gap in rows if gap is not None]
    if gaps:
        low, high = min(gaps, key=lambda g: g[0]), max(gaps, key=lambda g: g[0])
        blocks.append(
            Paragraph(
                f"Gaps range from {points(low[0])} ({low[1]}, seed {low[2].seed}) to "
                f"{points(high[0])} ({high[1]}, seed {high[2].seed})."
            )
        )
    else:
        blocks.append(Paragraph("No gap can be stated: no centralized cell has finished."))
    return Section(f"FL vs centralized gap{tag}", blocks)


def _budget(experiment: Experiment) -> str:
    rounds = experiment.fixed.get("rounds", experiment.axes.get("rounds"))
    epochs = (experiment.centralized or {}).get("epochs")
    if rounds is None or epochs is None:
        return ""
    return f" Federated: after {rounds} rounds; centralized: after {epochs} epochs."


def final_section(experiment: Experiment, out_dir: Path, prefix: str, tag: str) -> Section:
    table, chart = [], []
    gaps_by_group: dict[str, list[float]] = {}
    centrals_by_group: dict[str, list[float]] = {}
    for label, _, central, gap in gap_rows(experiment):
        if gap is not None and central is not None:
            gaps_by_group.setdefault(label, []).append(gap)
            centrals_by_group.setdefault(label, []).append(central)
    for label, runs in experiment.groups().items():
        finals = _finals(runs)
        chart.append(FinalPoint(label, finals))
        table.append(
            [
                label,
                str(len(finals)),
                percent(mean(finals)),
                percent(min(finals, default=None)),
                percent(max(finals, default=None)),
                _spread(statistics.stdev(finals) * 100 if len(finals) > 1 else None),
                percent(mean(centrals_by_group.get(label, []))),
                points(mean(gaps_by_group.get(label, []))),
            ]
        )
    headers = ["group", "seeds", "mean", "min", "max", "std", "centralized", "mean gap"]
    filename = f"{prefix}-final-accuracy.png"
    final_chart(out_dir / filename, chart, _finals(experiment.baselines()))
    explain = (
        "Final test accuracy per group over its seeds (std: sample standard deviation, in "
        "pp), the centralized final accuracy over the same seeds, and the mean of the "
        "groups' per-seed gaps."
    )
    return Section(
        f"Final accuracy over seeds{tag}",
        [
            Paragraph(explain),
            Table(headers, table, caption="Final accuracy, mean and spread over seeds"),
            Image(filename, "Final accuracy per cell group"),
        ],
    )


def reached(run: Run, target: float) -> int | None:
    """The first round (or epoch), counted from 1, whose accuracy reaches ``target``."""
    return next(
        (
            n
            for n, value in enumerate(run.accuracy, start=1)
            if value is not None and value >= target
        ),
        None,
    )


def bytes_section(experiment: Experiment, target: float, tag: str) -> Section:
    table = []
    for label, runs in experiment.groups().items():
        hits = [(n, run.traffic[n - 1]) for run in runs if (n := reached(run, target)) is not None]
        table.append(
            [
                label,
                f"{len(hits)} of {len(runs)}",
                _mean_range([float(n) for n, _ in hits], lambda v: f"{v:.1f}"),
                _mean_range([float(size) for _, size in hits], megabytes),
            ]
        )
    epochs = [n for run in experiment.baselines() if (n := reached(run, target)) is not None]
    if experiment.baselines():
        shown = _mean_range([float(n) for n in epochs], lambda v: f"{v:.1f}")
        table.append(
            [
                "centralized (epochs)",
                f"{len(epochs)} of {len(experiment.baselines())}",
                shown,
                MISSING,
            ]
        )
    explain = (
        f"Rounds, and megabytes on the wire (up + down, all clients, failed attempts "
        f"included), until the global model first reached {percent(target)} test accuracy: "
        "mean over the seeds that reached it (min to max in brackets). The centralized row "
        "counts epochs; it sends nothing."
    )
    headers = ["group", "seeds reaching", "rounds to reach", "MB to reach"]
    return Section(
        f"Bytes to reach {percent(target)} accuracy{tag}",
        [Paragraph(explain), Table(headers, table, caption=f"Cost of {percent(target)}")],
    )


def _mean_range(values: Sequence[float], shown: Callable[[float], str]) -> str:
    if not values:
        return "not reached"
    middle = shown(sum(values) / len(values))
    if len(values) == 1:
        return middle
    return f"{middle} ({shown(min(values))} to {shown(max(values))})"
