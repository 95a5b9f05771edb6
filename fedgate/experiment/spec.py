"""An experiment spec (TOML) and the grid of cells it expands to.

A spec names fixed parameters, the grid's axes and, optionally, a centralized baseline::

    name = "digits-small"
    target_accuracy = 0.9          # the report's "bytes to reach" target (optional)

    [fixed]                        # any `SimConfig` field but seed: dataset, model, rounds...
    dataset = "digits"
    rounds = 30

    [grid]                         # a list per axis (any `SimConfig` field but seed), and seeds
    clients = [2, 3, 5]
    partition = ["iid", "dirichlet:0.5"]
    seeds = [0, 1]

    [centralized]                  # one `fedgate train` cell per seed (optional)
    epochs = 30

Every cell is checked when the spec is read (unknown names, wrong types, values the
simulation would refuse), so a typo fails before the first cell runs, not hours into it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from fedgate.core.data import DATASETS
from fedgate.core.models import MODELS
from fedgate.core.partition import partition
from fedgate.errors import ConfigError, FedgateError
from fedgate.run.sim_config import SimConfig
from fedgate.run.train_spec import TrainSpec

FEDERATED = "federated"
CENTRALIZED = "centralized"
SEED = "seed"
SEEDS = "seeds"  # the grid's seed axis, as a spec spells it
MAX_CELLS = 10_000  # a grid this large is a typo, not an experiment
SECTIONS = frozenset({"name", "description", "target_accuracy", "fixed", "grid", "centralized"})
CENTRALIZED_KEYS = ("epochs", "learning_rate", "batch_size")
# what the centralized baseline shares with every federated cell: none may be an axis
SHARED_WITH_BASELINE = ("dataset", "model", "learning_rate", "batch_size", "data_dir")
SCALARS = (bool, int, float, str)
# where the data and the cluster are is not what a cell measures: moving them must not redo
# finished cells
NOT_IDENTITY = frozenset({"data_dir", "ray_address"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a federation (``sim``) or the centralized baseline (``train``)."""

    kind: str
    params: tuple[tuple[str, Any], ...]  # the grid's values for this cell, seed last
    config: SimConfig | TrainSpec

    @property
    def id(self) -> str:
        """Readable, and unique to every parameter: a changed spec never reuses a result.
        Parameters at their defaults are left out, so a fedgate that gains a setting (with
        a default that changes nothing) still finds the cells an older one finished."""
        defaults = dataclasses.asdict(type(self.config)())
        identity = {
            name: value
            for name, value in dataclasses.asdict(self.config).items()
            if name not in NOT_IDENTITY and value != defaults.get(name)
        }
        canonical = json.dumps({"kind": self.kind, "config": identity}, sort_keys=True)
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
        words = [self.kind] if self.kind == CENTRALIZED else []
        words += [_word(name, value) for name, value in self.params]
        return "-".join([*words, digest])

    @property
    def seed(self) -> int:
        return self.config.seed

    def label(self) -> str:
        return ", ".join(f"{name}={value}" for name, value in self.params)

    def steps(self) -> int:
        """Rounds (federated) or epochs (centralized): what the progress bar counts."""
        if isinstance(self.config, SimConfig):
            return self.config.rounds
        return self.config.epochs

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "params": dict(self.params),
            "config": dataclasses.asdict(self.config),
        }


def _word(name: str, value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    text = text if isinstance(value, str) else f"{name}{text}"
    return _UNSAFE.sub("_", text).strip("_") or name


@dataclass(frozen=True)
class CentralizedSpec:
    epochs: int
    learning_rate: float
    batch_size: int


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    description: str
    target_accuracy: float | None
    fixed: dict[str, Any]  # as the spec gives them, checked and typed
    axes: tuple[tuple[str, tuple[Any, ...]], ...]  # the grid's axes in spec order, no seed
    seeds: tuple[int, ...]
    centralized: CentralizedSpec | None
    source: dict[str, Any]  # the spec as read, for the record

    def cells(self) -> list[Cell]:
        """The centralized cells first (the reference every report needs), then the grid,
        seeds innermost."""
        cells = [self._baseline(seed) for seed in self.seeds] if self.centralized else []
        names = [name for name, _ in self.axes]
        for values in product(*(values for _, values in self.axes), self.seeds):
            params = (*zip(names, values[:-1], strict=True), (SEED, values[-1]))
            config = SimConfig(**{**self.fixed, **dict(params)})
            cells.append(Cell(FEDERATED, params, config))
        return cells

    def _baseline(self, seed: int) -> Cell:
        assert self.centralized is not None
        shared = {k: v for k, v in self.fixed.items() if k in ("dataset", "model", "data_dir")}
        config = TrainSpec(
            **shared,
            epochs=self.centralized.epochs,
            learning_rate=self.centralized.learning_rate,
            batch_size=self.centralized.batch_size,
            seed=seed,
        )
        return Cell(CENTRALIZED, ((SEED, seed),), config)

    def axes_record(self) -> dict[str, list[Any]]:
        return {**{name: list(values) for name, values in self.axes}, SEED: list(self.seeds)}


def load_spec(path: Path) -> ExperimentSpec:
    """Read and check the spec at ``path``; any fault is a `ConfigError` naming it."""
    try:
        source = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read experiment spec {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"experiment spec {path} is not valid TOML: {exc}") from None
    try:
        return parse_spec(source, default_name=path.stem)
    except ConfigError as exc:
        raise ConfigError(f"experiment spec {path}: {exc.message}") from None


def parse_spec(source: Mapping[str, Any], default_name: str = "experiment") -> ExperimentSpec:
    unknown = sorted(set(source) - SECTIONS)
    if unknown:
        raise ConfigError(f"unknown keys {', '.join(unknown)}; a spec has {', '.join(SECTIONS)}")
    fixed = _fixed(_table(source, "fixed"))
    axes, seeds = _grid(_table(source, "grid"), fixed)
    centralized = _centralized(source.get("centralized"), fixed, axes)
    spec = ExperimentSpec(
        name=_text(source, "name", default_name),
        description=_text(source, "description", ""),
        target_accuracy=_target(source.get("target_accuracy")),
        fixed=fixed,
        axes=axes,
        seeds=seeds,
        centralized=centralized,
        source=dict(source),
    )
    check_cells(spec)
    return spec


def _table(source: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = source.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{key}] must be a table")
    return value


def _text(source: Mapping[str, Any], key: str, default: str) -> str:
    value = source.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be text, not {value!r}")
    return value


def _target(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(f"target_accuracy must be a number in (0, 1], not {value!r}")
    return float(value)


def settable_fields() -> dict[str, type]:
    """`SimConfig`'s fields a spec may set, with their types (seed: the grid's seeds)."""
    hints = typing.get_type_hints(SimConfig)
    return {
        field.name: hints[field.name]
        for field in dataclasses.fields(SimConfig)
        if field.name != SEED and hints[field.name] in SCALARS
    }


def typed(name: str, value: object, kind: type) -> Any:
    """``value`` from TOML as the field's type: whole numbers pass for floats, nothing else
    changes type (true is not 1, "3" is not 3)."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise ConfigError(f"{name} must be {kind.__name__}, not {value!r}")
    return value


def _field_type(name: str, where: str) -> type:
    fields = settable_fields()
    if name not in fields:
        raise ConfigError(f"[{where}] {name}: unknown parameter; known: {', '.join(fields)}")
    return fields[name]


def _fixed(table: Mapping[str, Any]) -> dict[str, Any]:
    return {name: typed(name, value, _field_type(name, "fixed")) for name, value in table.items()}


def _grid(
    table: Mapping[str, Any], fixed: Mapping[str, Any]
) -> tuple[tuple[tuple[str, tuple[Any, ...]], ...], tuple[int, ...]]:
    axes: list[tuple[str, tuple[Any, ...]]] = []
    seeds: tuple[int, ...] = (0,)
    for name, value in table.items():
        values = _values(name, value)
        if name == SEEDS:
            seeds = tuple(typed(SEEDS, seed, int) for seed in values)
            continue
        kind = _field_type(name, "grid")
        if name in fixed:
            raise ConfigError(f"{name} is both fixed and an axis of the grid")
        axes.append((name, tuple(typed(name, v, kind) for v in values)))
    if any(seed < 0 for seed in seeds):
        raise ConfigError("seeds must be >= 0")
    return tuple(axes), seeds


def _values(name: str, value: object) -> tuple[Any, ...]:
    values = tuple(value) if isinstance(value, list) else (value,)
    if not values:
        raise ConfigError(f"[grid] {name} has no values")
    if len({json.dumps(v) for v in values}) != len(values):
        raise ConfigError(f"[grid] {name} repeats a value: {list(values)}")
    return values


def _centralized(
    value: object, fixed: Mapping[str, Any], axes: tuple[tuple[str, tuple[Any, ...]], ...]
) -> CentralizedSpec | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError("[centralized] must be a table")
    unknown = sorted(set(value) - set(CENTRALIZED_KEYS))
    if unknown:
        raise ConfigError(
            f"[centralized] {', '.join(unknown)}: unknown; known: {', '.join(CENTRALIZED_KEYS)}"
        )
    if "epochs" not in value:
        raise ConfigError("[centralized] needs epochs")
    shared = [name for name, _ in axes if name in SHARED_WITH_BASELINE]
    if shared:
        raise ConfigError(
            f"with a centralized baseline, {', '.join(shared)} must be fixed, not an axis: "
            "the baseline trains on one data set with one recipe"
        )
    defaults = SimConfig()
    return CentralizedSpec(
        epochs=typed("epochs", value["epochs"], int),
        learning_rate=typed(
            "learning_rate",
            value.get("learning_rate", fixed.get("learning_rate", defaults.learning_rate)),
            float,
        ),
        batch_size=typed(
            "batch_size", value.get("batch_size", fixed.get("batch_size", defaults.batch_size)), int
        ),
    )


def check_cells(spec: ExperimentSpec) -> None:
    """What the runs would refuse, refused now, with the cell named."""
    cells = spec.cells()
    if len(cells) > MAX_CELLS:
        raise ConfigError(f"the grid has {len(cells)} cells; at most {MAX_CELLS}")
    for cell in _distinct(cells):
        try:
            _check(cell.config)
        except FedgateError as exc:  # an unknown codec is a CodecError, and as much a typo
            raise ConfigError(f"cell {cell.label() or cell.kind}: {exc.message}") from None


def _distinct(cells: list[Cell]) -> Iterator[Cell]:
    """One cell per configuration but the seed: seeds change no rule the checks apply."""
    seen: set[str] = set()
    for cell in cells:
        key = json.dumps({**dataclasses.asdict(cell.config), SEED: 0}, sort_keys=True)
        if key not in seen:
            seen.add(key)
            yield cell


# any labels will do: one client takes them all, so only the spec's syntax is tried
_SOME_LABELS = np.arange(100) % 10


def _check(config: SimConfig | TrainSpec) -> None:
    if config.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {config.dataset!r}; available: {', '.join(DATASETS)}")
    if config.model not in MODELS:
        raise ConfigError(f"unknown model {config.model!r}; available: {', '.join(MODELS)}")
    config.validate()
    if isinstance(config, SimConfig):
        partition(_SOME_LABELS, 1, config.partition)
