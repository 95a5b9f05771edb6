"""PNG charts. Figures are drawn on matplotlib's Agg canvas directly: no pyplot, so no
global state and never a window, whatever backend the environment asks for."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 110
WIDTH_IN = 9.0
HEIGHT_IN = 5.0
ROW_HEIGHT_IN = 3.4  # per panel, when panels are stacked

Series = Mapping[str, Sequence[float | None]]


def _figure(panels: int = 1) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    return figure, list(axes)


def _stacked(panels: int) -> tuple[Figure, list[Axes]]:
    """Panels one above the other, each as tall as a readable chart needs."""
    height = max(HEIGHT_IN, ROW_HEIGHT_IN * panels + 0.8)
    figure = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
    return figure, list(axes)


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, format="png", dpi=DPI)


def _value_label(value: float) -> str:
    if math.isnan(value):
        return ""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _legend(figure: Figure, axes: Axes, entries: int) -> None:
    # Below the plots, so it never hides a bar, whatever the data.
    handles, labels = axes.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=min(entries, 6), fontsize=8)


def _draw_bars(axes: Axes, groups: Sequence[str], series: Series, log: bool) -> None:
    """Grouped bars: one group per label on the x axis, one bar per series within it."""
    width = 0.8 / max(len(series), 1)
    # Crowded panels get vertical value labels so neighbours do not overprint each other.
    rotation = 90 if len(groups) * len(series) > 8 else 0
    for index, (name, values) in enumerate(series.items()):
        heights = [math.nan if v is None else v for v in values]
        offset = (index - (len(series) - 1) / 2) * width
        positions = [g + offset for g in range(len(groups))]
        bars = axes.bar(positions, heights, width, label=name)
        labels = [_value_label(h) for h in heights]
        axes.bar_label(bars, labels=labels, fontsize=7, padding=2, rotation=rotation)
    # Many groups: slanted names, so long ones (codec names) do not run into each other.
    axes.set_xticks(range(len(groups)), list(groups))
    if len(groups) > 6:
        axes.tick_params(axis="x", labelrotation=25)
        for label in axes.get_xticklabels():
            label.set_horizontalalignment("right")
    # A log axis needs something positive to show; an empty panel stays linear.
    if log and any(v is not None and v > 0 for values in series.values() for v in values):
        axes.set_yscale("log")
    axes.margins(y=0.25 if log else 0.15)
    axes.grid(axis="y", alpha=0.3)


def bar_chart(
    path: Path,
    *,
    groups: Sequence[str],
    series: Series,
    title: str,
    ylabel: str,
    log: bool = False,
) -> None:
    figure, (axes,) = _figure()
    _draw_bars(axes, groups, series, log)
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    _legend(figure, axes, len(series))
    _save(figure, path)


@dataclass(frozen=True)
class BarPanel:
    """One panel of grouped bars: its own title, groups and y label."""

    title: str
    groups: Sequence[str]
    series: Series
    ylabel: str


def bar_rows(
    path: Path, *, panels: Sequence[BarPanel], log: bool = False, across: bool = False
) -> None:
    """Grouped bar panels stacked vertically (``across``: side by side, for panels of few
    bars); the legend (the series names they share) below."""
    figure, axes_list = _figure(len(panels)) if across else _stacked(len(panels))
    names: dict[str, None] = {}
    for axes, panel in zip(axes_list, panels, strict=True):
        _draw_bars(axes, panel.groups, panel.series, log)
        axes.set_title(panel.title)
        axes.set_ylabel(panel.ylabel)
        names.update(dict.fromkeys(panel.series))
    _legend(figure, axes_list[0], len(names))
    _save(figure, path)


def line_rows(
    path: Path,
    *,
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
) -> None:
    """Line panels (title -> series) stacked vertically, sharing the legend below them;
    ``ylim`` gives every panel the same scale."""
    figure, axes_list = _stacked(len(panels))
    most = 0
    for axes, (title, series) in zip(axes_list, panels.items(), strict=True):
        for name, values in series.items():
            axes.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(title)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        if ylim is not None:
            axes.set_ylim(*ylim)
        axes.grid(alpha=0.3)
        most = max(most, len(series))
    busiest = max(axes_list, key=lambda a: len(a.get_legend_handles_labels()[1]))
    _legend(figure, busiest, most)
    _save(figure, path)


def tradeoff(
    path: Path,
    *,
    points: Mapping[str, tuple[float, float]],
    reference: str,
    xlabel: str,
    ylabel: str,
) -> None:
    """One labelled point per name (x on a log scale); ``reference`` drawn as guide lines,
    so what lies left of it costs fewer bytes and what lies above it is more accurate."""
    figure, (axes,) = _figure()
    groups = sorted(_coinciding(points).items(), key=lambda item: item[1][0])
    below = False
    for index, (names, (x, y)) in enumerate(groups):
        marker = "*" if reference in names else "o"
        label = ", ".join(names)
        axes.scatter([x], [y], s=120 if reference in names else 45, marker=marker, label=label)
        # neighbours on the same level take turns above and below, so labels never collide
        near = index > 0 and _close(groups[index - 1][1], (x, y))
        below = not below if near else False
        offset = (6, -12) if below else (6, 4)
        axes.annotate(label, (x, y), textcoords="offset points", xytext=offset, fontsize=8)
    if reference in points:
        x_ref, y_ref = points[reference]
        axes.axvline(x_ref, color="grey", linestyle=":", linewidth=1)
        axes.axhline(y_ref, color="grey", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3, which="both")
    _legend(figure, axes, len(points))
    _save(figure, path)


def _coinciding(
    points: Mapping[str, tuple[float, float]],
) -> dict[tuple[str, ...], tuple[float, float]]:
    """Points that would be drawn on top of each other, merged under one label: within
    1/100 of a decade of the first point of a group, and at the same accuracy to 1e-4
    (rounding to a grid instead would split neighbours that straddle a grid line)."""
    groups: list[list[str]] = []
    for name, point in points.items():
        group = next((g for g in groups if _same_spot(points[g[0]], point)), None)
        if group is None:
            groups.append([name])
        else:
            group.append(name)
    return {tuple(names): points[names[0]] for names in groups}


def _same_spot(a: tuple[float, float], b: tuple[float, float]) -> bool:
    if a[0] <= 0 or b[0] <= 0:
        return a == b
    return abs(math.log10(a[0]) - math.log10(b[0])) < 0.01 and abs(a[1] - b[1]) < 1e-4


def _close(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Near enough on a log-x chart that their labels would overlap."""
    if a[0] <= 0 or b[0] <= 0:
        return False
    return abs(math.log10(a[0]) - math.log10(b[0])) < 0.25 and abs(a[1] - b[1]) < 1e-3
