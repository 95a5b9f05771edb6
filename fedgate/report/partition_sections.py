"""How a run's training data was split among its clients: examples and labels per client.

The results document of a simulated run holds the split under ``partition``
(`fedgate.run.results.partition_statistics`): per client, its examples and its label
histogram. Bench rows that carry it (a ``partition`` field, copied from a run's document)
get this section; `splits_section` draws it for any documents a caller has already read
(the experiment runner's cells). Each distinct split is drawn once, as stacked bars: a bar
per client, as long as its examples, coloured by label, so IID splits show bars of even
colour bands and label-skewed ones (``dirichlet:<alpha>``) bars dominated by few colours.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fedgate.errors import ConfigError
from fedgate.report.blocks import Block, Image, Paragraph, Section, Table
from fedgate.report.results import Row

DPI = 110
WIDTH_IN = 9.0
BAR_IN = 0.28  # of figure height per client
MAX_HEIGHT_IN = 40.0
LEGEND_CLASSES = 20  # more classes than this: a colour scale instead of a legend
EXPLAIN = (
    "How each run's training split was divided among its clients (the split every client "
    "computes from the partition spec, the client count and the seed): a bar per client, "
    "its length the client's examples, its colours the labels among them. The table gives "
    "per client its examples, the labels it holds at all, and the share of its largest label."
)


@dataclass(frozen=True)
class ClientShare:
    name: str
    examples: int
    labels: tuple[int, ...]  # examples per label

    @property
    def largest_share(self) -> float:
        return max(self.labels) / self.examples if self.examples else 0.0


@dataclass(frozen=True)
class Split:
    spec: str
    seed: int
    classes: tuple[str, ...]
    clients: tuple[ClientShare, ...]

    @property
    def title(self) -> str:
        return f"{self.spec}, {len(self.clients)} clients, seed {self.seed}"


def read_split(value: object, where: str) -> Split:
    """A results document's ``partition`` checked; a `ConfigError` naming ``where``."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: 'partition' must be an object")
    classes, per_client = value.get("classes"), value.get("per_client")
    spec, seed = value.get("spec"), value.get("seed")
    if not (isinstance(spec, str) and _is_int(seed)):
        raise ConfigError(f"{where}: 'partition' needs its spec (text) and seed (integer)")
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise ConfigError(f"{where}: 'partition.classes' must be a list of names")
    if not isinstance(per_client, list):
        raise ConfigError(f"{where}: 'partition.per_client' must be a list")
    shares = tuple(_client(entry, len(classes), where) for entry in per_client)
    return Split(spec, int(seed), tuple(classes), shares)


def _client(entry: object, num_classes: int, where: str) -> ClientShare:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: each 'partition.per_client' entry must be an object")
    name, examples, labels = entry.get("name"), entry.get("examples"), entry.get("labels")
    if not (isinstance(name, str) and _is_int(examples) and isinstance(labels, list)):
        raise ConfigError(f"{where}: a client's partition needs name, examples and labels")
    if len(labels) != num_classes or not all(_is_int(n) and n >= 0 for n in labels):
        raise ConfigError(f"{where}: {name}'s labels must count each of {num_classes} classes")
    if sum(labels) != examples:
        raise ConfigError(f"{where}: {name}'s label counts do not add up to its examples")
    return ClientShare(name, int(examples), tuple(int(n) for n in labels))


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def partition_section(rows: Sequence[Row], out_dir: Path) -> Section | None:
    """The section for bench rows that carry a run's ``partition``."""
    named = [
        (f"{row['suite']} row {index}", row["partition"])
        for index, row in enumerate(rows)
        if isinstance(row.get("partition"), Mapping)  # a bench row's "iid" names a spec only
    ]
    return splits_section(named, out_dir)


def splits_section(
    named: Sequence[tuple[str, object]], out_dir: Path, *, filename_prefix: str = "partition"
) -> Section | None:
    """A chart and a table per distinct split among ``named`` (where, ``partition``);
    charts are ``<filename_prefix>-<n>.png`` (callers sharing a report keep theirs apart)."""
    splits: dict[str, Split] = {}
    for where, value in named:
        split = read_split(value, where)
        splits.setdefault(json.dumps(value, sort_keys=True), split)
    if not splits:
        return None
    blocks: list[Block] = [Paragraph(EXPLAIN)]
    for number, split in enumerate(splits.values(), start=1):
        filename = f"{filename_prefix}-{number}.png"
        partition_chart(split, out_dir / filename)
        blocks += [Image(filename, f"Examples per client by label: {split.title}")]
        blocks.append(split_table(split))
    return Section("Data partition", blocks)


def split_table(split: Split) -> Table:
    rows = [
        [
            client.name,
            f"{client.examples:,}",
            f"{sum(1 for n in client.labels if n)} of {len(split.classes)}",
            f"{client.largest_share * 100:.1f} %",
        ]
        for client in split.clients
    ]
    headers = ["client", "examples", "labels held", "largest label"]
    return Table(headers, rows, caption=split.title)


def partition_chart(split: Split, path: Path) -> None:
    """Stacked horizontal bars: a bar per client, a segment per label."""
    height = min(MAX_HEIGHT_IN, 1.8 + BAR_IN * len(split.clients))
    figure = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    names = [client.name for client in split.clients]
    left = [0] * len(split.clients)
    for label, name in enumerate(split.classes):
        counts = [client.labels[label] for client in split.clients]
        colour = _colour(label, len(split.classes))
        axes.barh(names, counts, left=left, color=colour, label=name, height=0.8)
        left = [a + b for a, b in zip(left, counts, strict=True)]
    axes.invert_yaxis()  # client 0 at the top, as the table lists them
    axes.set_xlabel("training examples")
    axes.set_title(f"Examples per client by label: {split.title}")
    axes.grid(axis="x", alpha=0.3)
    if len(split.classes) <= LEGEND_CLASSES:
        figure.legend(loc="outside lower center", ncols=min(len(split.classes), 10), fontsize=8)
    figure.savefig(path, format="png", dpi=DPI)


def _colour(label: int, classes: int) -> tuple[float, float, float, float]:
    """Distinct colours for few classes; a colour scale for many (no legend then)."""
    if classes <= 10:
        return colormaps["tab10"](label)
    if classes <= LEGEND_CLASSES:
        return colormaps["tab20"](label)
    return colormaps["viridis"](label / (classes - 1))
