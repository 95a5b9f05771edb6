"""An experiment's charts: accuracy curves per cell group against the centralized line,
and final accuracy per group with its spread over seeds. Drawn on matplotlib's Agg canvas
(no pyplot), as `fedgate.report.plots` draws."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 110
WIDTH_IN = 9.0
PANEL_HEIGHT_IN = 2.7
FEDERATED_COLOUR = "tab:blue"
CENTRALIZED_COLOUR = "black"
TARGET_COLOUR = "tab:red"

Curve = Sequence[float | None]


@dataclass(frozen=True)
class CurvePanel:
    title: str
    runs: Sequence[Curve]  # one accuracy curve per seed
    reference: Curve  # the centralized baseline's mean accuracy per epoch (empty: none)


def mean_curve(curves: Sequence[Curve]) -> list[float | None]:
    """Per step, the mean of the curves that have a value there."""
    longest = max((len(curve) for curve in curves), default=0)
    means: list[float | None] = []
    for step in range(longest):
        values = [c[step] for c in curves if step < len(c) and c[step] is not None]
        means.append(sum(v for v in values if v is not None) / len(values) if values else None)
    return means


def _points(curve: Curve) -> tuple[list[int], list[float]]:
    return list(range(1, len(curve) + 1)), [math.nan if v is None else v for v in curve]


def curve_grid(
    path: Path, panels: Sequence[CurvePanel], columns: int, target: float | None
) -> None:
    """A panel per group: each seed's curve, their mean, the centralized line, the target."""
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(WIDTH_IN, PANEL_HEIGHT_IN * rows + 0.9), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    for index, axes in enumerate(grid.flat):
        if index >= len(panels):
            axes.set_visible(False)
            continue
        _panel(axes, panels[index], target)
    handles, labels = grid.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=8)
    figure.savefig(path, format="png", dpi=DPI)


def _panel(axes: Axes, panel: CurvePanel, target: float | None) -> None:
    for number, curve in enumerate(panel.runs):
        label = "federated, each seed" if number == 0 else None
        axes.plot(*_points(curve), color=FEDERATED_COLOUR, alpha=0.35, linewidth=1, label=label)
    axes.plot(
        *_points(mean_curve(panel.runs)),
        color=FEDERATED_COLOUR,
        linewidth=2,
        label="federated, mean over seeds (per round)",
    )
    if panel.reference:
        axes.plot(
            *_points(panel.reference),
            color=CENTRALIZED_COLOUR,
            linestyle="--",
            linewidth=1.5,
            label="centralized, mean over seeds (per epoch)",
        )
    if target is not None:
        axes.axhline(target, color=TARGET_COLOUR, linestyle=":", linewidth=1, label="target")
    axes.set_title(panel.title, fontsize=10)
    axes.set_ylim(0.0, 1.0)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("round / epoch", fontsize=8)
    axes.set_ylabel("test accuracy", fontsize=8)
    axes.grid(alpha=0.3)


@dataclass(frozen=True)
class FinalPoint:
    group: str
    finals: Sequence[float]  # one per seed


def final_chart(path: Path, points: Sequence[FinalPoint], reference: Sequence[float]) -> None:
    """Each group's final accuracy: a dot per seed, the mean with a min-max bar; the
    centralized baseline's mean (and range) across the chart. Dots, not bars: the axis
    is zoomed to where the values are, which a bar's length would misstate."""
    figure = Figure(figsize=(WIDTH_IN, 4.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    if reference:
        low, high, middle = min(reference), max(reference), sum(reference) / len(reference)
        band = "centralized, min to max over seeds"
        axes.axhspan(low, high, color=CENTRALIZED_COLOUR, alpha=0.08, label=band)
        axes.axhline(middle, color=CENTRALIZED_COLOUR, linestyle="--", label="centralized, mean")
    for x, point in enumerate(points):
        if not point.finals:
            continue
        middle = sum(point.finals) / len(point.finals)
        spread = [[middle - min(point.finals)], [max(point.finals) - middle]]
        label = "federated: mean, min to max over seeds" if x == 0 else None
        axes.errorbar(
            [x], [middle], yerr=spread, fmt="o", color=FEDERATED_COLOUR, capsize=4, label=label
        )
        axes.scatter([x] * len(point.finals), point.finals, s=12, color="grey", zorder=3)
    axes.set_xticks(range(len(points)), [p.group for p in points])
    axes.tick_params(axis="x", labelrotation=20, labelsize=8)
    for tick in axes.get_xticklabels():
        tick.set_horizontalalignment("right")
    axes.set_ylabel("final test accuracy")
    axes.set_title("Final accuracy per cell group (grey: each seed)")
    axes.margins(y=0.2)
    axes.grid(axis="y", alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    figure.savefig(path, format="png", dpi=DPI)
