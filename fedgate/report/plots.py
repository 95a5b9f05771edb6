"""PNG charts. Figures are drawn on matplotlib's Agg canvas directly: no pyplot, so no
global state and never a window, whatever backend the environment asks for."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 110
WIDTH_IN = 9.0
HEIGHT_IN = 5.0

Series = Mapping[str, Sequence[float | None]]


def _figure(panels: int = 1) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
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
    axes.set_xticks(range(len(groups)), list(groups))
    if log:
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


def bar_panels(
    path: Path,
    *,
    groups: Sequence[str],
    panels: Mapping[str, Series],
    ylabel: str,
    log: bool = False,
) -> None:
    """Side-by-side grouped bar charts sharing groups and series (e.g. encode | decode)."""
    figure, axes_list = _figure(len(panels))
    for axes, (title, series) in zip(axes_list, panels.items(), strict=True):
        _draw_bars(axes, groups, series, log)
        axes.set_title(title)
        axes.set_ylabel(ylabel)
    _legend(figure, axes_list[0], len(next(iter(panels.values()), {})))
    _save(figure, path)


def line_chart(
    path: Path,
    *,
    series: Mapping[str, Sequence[float]],
    title: str,
    xlabel: str,
    ylabel: str,
) -> None:
    figure, (axes,) = _figure()
    for name, values in series.items():
        axes.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    _legend(figure, axes, len(series))
    _save(figure, path)
