"""A run's knobs, declared once. Operators may change some mid-run; changes apply from the
next round.

Each `RunConfig` field carries an `Option` (help, bounds, whether it may change mid-run, its
CLI flag, where its names come from). Every surface derives from it: the CLI flags
(`fedgate.cli_config`), the REST schemas (`fedgate.transport.rest.schemas`), the proto
mapping and its check against the hand-written .proto (`fedgate.transport.grpc.serde`), and
``sim`` and the bench specs (checked against it by tests/test_config_schema.py). A new
option is one field here; the hand-written proto messages, `SimConfig` and the bench's
`FederationSpec` each need one line too, and the checks name the field until they have it.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fedgate.errors import ConfigError

T = TypeVar("T")
OPTION = "fedgate.option"  # the key of a field's Option in its dataclass metadata
# what a setting may hold (each has a CLI, a JSON and a proto type), as errors name them
KINDS: dict[type[Any], str] = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
}


@dataclass(frozen=True)
class Option:
    """How one setting is declared: what the CLI, REST, proto and sim derive from."""

    help: str
    gt: float | None = None  # bounds, as pydantic spells them; numbers are always finite
    ge: float | None = None
    le: float | None = None
    mutable: bool = True  # may an operator change it mid-run?
    flag: str = ""  # the CLI flag; "": --name-with-dashes
    max_length: int | None = None  # strings
    # the names a value is made of (a name, or name:parameter), read from a registry when
    # asked, so a strategy added there shows up everywhere without an edit here
    choices: Callable[[], Sequence[str]] | None = None
    check: Callable[[Any], object] | None = None  # raises ConfigError for a bad value


def option(
    default: T,
    help: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    mutable: bool = True,
    flag: str = "",
    max_length: int | None = None,
    choices: Callable[[], Sequence[str]] | None = None,
    check: Callable[[Any], object] | None = None,
) -> T:
    """A dataclass field with ``default``, declared as a setting."""
    declared = Option(help, gt, ge, le, mutable, flag, max_length, choices, check)
    return dataclasses.field(default=default, metadata={OPTION: declared})


@dataclass(frozen=True)
class Setting:
    """One declared setting, resolved: its name, kind (bool/int/float/str) and default."""

    name: str
    kind: type[Any]
    default: Any
    option: Option

    @property
    def flag(self) -> str:
        return self.option.flag or "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        """The help text, with the names a value may take when they come from a registry."""
        if self.option.choices is None:
            return self.option.help
        return f"{self.option.help}; one of: {', '.join(self.option.choices())}"

    def validate(self, value: Any) -> None:
        """ConfigError naming the setting unless ``value`` is of its kind and within bounds."""
        if self.kind is str or self.kind is bool:
            if not isinstance(value, self.kind):
                raise ConfigError(f"{self.name} must be {KINDS[self.kind]}, got {value!r}")
            if self.option.max_length is not None and len(value) > self.option.max_length:
                raise ConfigError(f"{self.name} must be at most {self.option.max_length} long")
        else:
            self._validate_number(value)
        if self.option.check is not None:
            self.option.check(value)

    def _validate_number(self, value: Any) -> None:
        kinds = int if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ConfigError(f"{self.name} must be {KINDS[self.kind]}, got {value!r}")
        upper = self.option.le
        if not math.isfinite(value) or (upper is not None and value > upper):
            bound = f" <= {upper:g}" if upper is not None else ""
            raise ConfigError(f"{self.name} must be a finite number{bound}, got {value!r}")
        if self.option.gt is not None and not value > self.option.gt:
            raise ConfigError(f"{self.name} must be > {self.option.gt:g}, got {value!r}")
        if self.option.ge is not None and not value >= self.option.ge:
            raise ConfigError(f"{self.name} must be >= {self.option.ge:g}, got {value!r}")


def settings(declaration: type[Any] | None = None) -> tuple[Setting, ...]:
    """The settings ``declaration`` (default `RunConfig`) declares, in field order."""
    declaration = RunConfig if declaration is None else declaration
    found = _DECLARED.get(declaration)
    if found is None:  # read once: every RunConfig built validates against these
        found = _DECLARED[declaration] = _declared(declaration)
    return found


def _declared(declaration: type[Any]) -> tuple[Setting, ...]:
    hints = typing.get_type_hints(declaration)
    declared = []
    for field in dataclasses.fields(declaration):
        spec = field.metadata.get(OPTION)
        kind = hints[field.name]
        if not isinstance(spec, Option) or kind not in KINDS:
            raise ConfigError(
                f"{declaration.__name__}.{field.name} must be declared with option() "
                f"and be one of {', '.join(k.__name__ for k in KINDS)}"
            )
        declared.append(Setting(field.name, kind, field.default, spec))
    return tuple(declared)


_DECLARED: dict[type[Any], tuple[Setting, ...]] = {}


def settings_of(source: object, declaration: type[Any] | None = None) -> dict[str, Any]:
    """The settings as ``source`` (parsed flags, a SimConfig, a bench spec...) holds them,
    by name: the one way a config is read off something that spells it field by field."""
    names = [s.name for s in settings(declaration)]
    missing = [name for name in names if not hasattr(source, name)]
    if missing:
        raise ConfigError(f"{type(source).__name__} lacks the run settings {', '.join(missing)}")
    return {name: getattr(source, name) for name in names}


# The strategies' names, for the CLI's choices and the REST schema; the strategies
# themselves (torch) load when a name is checked. fedgate.core.strategy refuses to import
# if its registry and this tuple disagree, so neither can drift.
STRATEGY_NAMES = ("fedavg", "fedprox", "fedadam", "median", "trimmed-mean")


# Where a server evaluates each new model (`fedgate.core.factory.evaluator_in`), for the
# CLI's choices without torch: a forked worker at the lowest CPU priority, or a thread.
EVALUATE_IN = ("process", "thread")


def strategy_names() -> tuple[str, ...]:
    return STRATEGY_NAMES


def _check_strategy(name: str) -> None:
    if name in STRATEGY_NAMES:
        return  # a bare name: nothing to parse, no need to load the strategies
    from fedgate.core.strategy import get_strategy  # noqa: PLC0415 - see STRATEGY_NAMES

    get_strategy(name)  # an unknown name or a bad parameter is refused here


# Every number is bounded where it enters: these values travel as int32/int64/double in the
# wire contract and as JSON, and an operator's typo must not break status for the run.
MILLION = 1_000_000


@dataclass(frozen=True)
class RunConfig:
    rounds: int = option(20, "rounds to run", gt=0, le=MILLION)
    clients_per_round: int = option(
        0, "clients selected per round (0: all ready)", ge=0, le=MILLION
    )
    min_clients: int = option(
        2,
        "ready clients needed to open a round, and reports to close one at its deadline",
        gt=0,
        le=MILLION,
    )
    round_deadline_s: float = option(
        60.0, "seconds a round stays open", gt=0, le=30 * 86_400.0, flag="--deadline"
    )
    learning_rate: float = option(0.1, "clients' learning rate", gt=0, le=1e6, flag="--lr")
    local_epochs: int = option(1, "epochs each client trains per round", gt=0, le=10_000)
    batch_size: int = option(32, "clients' batch size", gt=0, le=MILLION)
    heartbeat_interval_s: float = option(
        2.0, "seconds between a client's heartbeats", gt=0, le=3_600.0, flag="--heartbeat-interval"
    )
    heartbeat_timeout_s: float = option(
        10.0,
        "seconds without a heartbeat before a client is dropped (> the interval)",
        gt=0,
        le=7 * 86_400.0,
        flag="--heartbeat-timeout",
    )
    admit_late: bool = option(False, "let a joiner into an open round that has room")
    seed: int = option(0, "seeds client selection and the model", ge=0, le=2**63 - 1, mutable=False)
    strategy: str = option(
        "fedavg",
        "how updates are aggregated; a parameter may follow a colon (trimmed-mean:0.1)",
        max_length=64,
        choices=strategy_names,
        check=_check_strategy,
    )
    clip_norm: float = option(
        0.0,
        "scale each update's difference to the global model down to this L2 norm before it "
        "is aggregated (0: off)",
        ge=0,
        le=1e30,
    )

    def __post_init__(self) -> None:
        for setting in settings(type(self)):
            setting.validate(getattr(self, setting.name))
        if 0 < self.clients_per_round < self.min_clients:
            raise ConfigError(
                f"clients_per_round ({self.clients_per_round}) is below min_clients "
                f"({self.min_clients})"
            )
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ConfigError("heartbeat_timeout_s must exceed heartbeat_interval_s")

    def with_changes(self, changes: Mapping[str, Any]) -> RunConfig:
        """A copy with ``changes`` applied; unknown keys and wrong types are refused."""
        declared = {s.name: s for s in settings(type(self)) if s.option.mutable}
        unknown = sorted(set(changes) - set(declared))
        if unknown:
            raise ConfigError(
                f"cannot change {', '.join(unknown)}; changeable: {', '.join(declared)}"
            )
        return dataclasses.replace(
            self, **{k: _coerce(k, v, declared[k].kind) for k, v in changes.items()}
        )


MUTABLE_FIELDS = tuple(s.name for s in settings() if s.option.mutable)
UPPER_BOUNDS: dict[str, float] = {
    s.name: s.option.le for s in settings() if s.option.le is not None
}


def _coerce(key: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind``: a change from JSON may spell a whole number as 3.0."""
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if kind is int and not (math.isfinite(value) and value == int(value)):
        raise ConfigError(f"{key} must be a whole number, got {value!r}")
    return kind(value)
