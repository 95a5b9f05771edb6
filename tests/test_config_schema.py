"""The run configuration is declared once (`fedgate.core.config.RunConfig`, its fields'
`Option`s) and everything else derives from it or is checked against it.

Two halves: a declaration with settings the code has never seen (built with
``dataclasses.make_dataclass`` over the same metadata) gets a CLI flag and a REST field with
its bounds, with no code touched, and the proto check, sim and the bench spec fail naming
what they lack; and the real declaration, CLI, REST schemas, proto and bench spec agree
field by field.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from pydantic import ValidationError

from fedgate.cli import build_parser
from fedgate.cli_config import add_config_options, config_arguments
from fedgate.core.config import MUTABLE_FIELDS, RunConfig, option, settings, settings_of
from fedgate.core.messages import TrainConfig
from fedgate.core.strategy import strategy_names
from fedgate.errors import ConfigError
from fedgate.run.sim_config import SimConfig
from fedgate.run.simulation import serve_arguments
from fedgate.transport.grpc import serde
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.rest import schemas

BENCH = Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:  # bench/ is no package: pytest puts it on the path there
    sys.path.insert(0, str(BENCH))

from federations import FederationSpec  # noqa: E402

# Two settings no code knows: one an operator may change mid-run, one fixed for the run.
Extended = dataclasses.make_dataclass(
    "Extended",
    [
        ("momentum", float, option(0.0, "server momentum", ge=0, le=0.99)),
        ("warmup_rounds", int, option(0, "rounds before momentum", ge=0, le=50, mutable=False)),
    ],
    bases=(RunConfig,),
    frozen=True,
)
NEW = ("momentum", "warmup_rounds")

# Every setting away from its default (and the strategy a registry name).
CHANGED = RunConfig(
    rounds=7,
    clients_per_round=4,
    min_clients=3,
    round_deadline_s=12.5,
    learning_rate=0.05,
    local_epochs=2,
    batch_size=16,
    heartbeat_interval_s=1.5,
    heartbeat_timeout_s=9.0,
    admit_late=True,
    seed=11,
    strategy="median",
    clip_norm=2.5,
)
NAMES = [setting.name for setting in settings()]


def parser_for(declaration: type[Any]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_options(parser, declaration)
    return parser


def spec_problems(spec: type[Any], declaration: type[Any] | None = None) -> list[str]:
    """The settings a spec (SimConfig, FederationSpec) lacks or holds as another type."""
    hints = typing.get_type_hints(spec)
    return [
        f"{spec.__name__} lacks {setting.name}"
        if setting.name not in hints
        else f"{spec.__name__}.{setting.name} is not {setting.kind.__name__}"
        for setting in settings(declaration)
        if hints.get(setting.name) is not setting.kind
    ]


# ---- a new setting, declared and nothing else ------------------------------------------


def test_a_new_setting_is_validated_by_its_declaration() -> None:
    with pytest.raises(ConfigError, match=r"momentum must be a finite number <= 0\.99"):
        Extended(momentum=1.5)
    with pytest.raises(ConfigError, match="cannot change warmup_rounds"):
        Extended().with_changes({"warmup_rounds": 2})
    assert Extended().with_changes({"momentum": 0.5}) == Extended(momentum=0.5)


def test_a_new_setting_gets_a_cli_flag_read_back_into_the_config() -> None:
    parser = parser_for(Extended)
    args = parser.parse_args(["--momentum", "0.9", "--warmup-rounds", "3", "--rounds", "4"])
    config = Extended(**settings_of(args, Extended))
    assert config == Extended(momentum=0.9, warmup_rounds=3, rounds=4)
    assert Extended(**settings_of(parser.parse_args([]), Extended)) == Extended()
    again = parser.parse_args(config_arguments(config, Extended))
    assert Extended(**settings_of(again, Extended)) == config


def test_a_new_setting_gets_a_rest_field_with_its_bounds() -> None:
    whole = schemas.config_model(Extended, "ExtendedJson")
    change = schemas.config_model(Extended, "ExtendedChange", changes=True)
    assert set(whole.model_fields) == {*NAMES, *NEW}
    assert set(change.model_fields) == {*MUTABLE_FIELDS, "momentum"}  # warmup_rounds is fixed
    momentum = whole.model_json_schema()["properties"]["momentum"]
    assert (momentum["minimum"], momentum["maximum"], momentum["description"]) == (
        0,
        0.99,
        "server momentum",
    )
    assert change(momentum=0.5).model_dump(exclude_none=True) == {"momentum": 0.5}
    for bad in ({"momentum": 1.5}, {"warmup_rounds": 1}):
        with pytest.raises(ValidationError):
            change(**bad)


def test_a_new_setting_missing_from_the_proto_fails_the_check_naming_it() -> None:
    assert serde.config_wire_mismatches(Extended) == [
        "fedgate.v1.RunConfig lacks the declared setting momentum",
        "fedgate.v1.RunConfig lacks the declared setting warmup_rounds",
        "fedgate.v1.ConfigChange lacks the declared setting momentum",
    ]


def test_sim_and_the_bench_spec_fail_naming_a_new_setting() -> None:
    for spec in (SimConfig, FederationSpec):
        assert spec_problems(spec, Extended) == [f"{spec.__name__} lacks {name}" for name in NEW]
    with pytest.raises(ConfigError, match="SimConfig lacks the run settings momentum"):
        settings_of(SimConfig(), Extended)


def test_the_proto_check_names_a_wire_type_too_narrow_for_a_setting() -> None:
    wide = dataclasses.make_dataclass(
        "Wide",
        [("rounds", int, option(20, "rounds", gt=0, le=2**40))],
        bases=(RunConfig,),
        frozen=True,
    )
    assert serde.config_wire_mismatches(wide) == [
        f"fedgate.v1.{message}.rounds holds [-2147483648, 2147483647]; the setting allows "
        "[1, 1.09951e+12]"
        for message in ("RunConfig", "ConfigChange")
    ]


# ---- the real declaration and every surface, field by field -----------------------------


def test_every_field_is_a_declared_setting_and_the_sample_changes_each() -> None:
    assert [field.name for field in dataclasses.fields(RunConfig)] == NAMES
    assert [n for n in NAMES if getattr(CHANGED, n) == getattr(RunConfig(), n)] == []
    assert tuple(n for n in NAMES if n != "seed") == MUTABLE_FIELDS


@pytest.mark.parametrize("command", ["serve", "sim"])
def test_serve_and_sim_have_the_declared_flag_for_every_setting(command: str) -> None:
    commands = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    flags = {
        action.dest: action.option_strings[0]
        for action in commands.choices[command]._actions
        if action.option_strings
    }
    assert {name: flags.get(name) for name in NAMES} == {s.name: s.flag for s in settings()}


def test_serve_reads_every_setting_back_with_its_default() -> None:
    serve = vars(build_parser().parse_args(["serve"]))
    assert RunConfig(**settings_of(argparse.Namespace(**serve))) == RunConfig()
    changed = build_parser().parse_args(["serve", *config_arguments(CHANGED)])
    assert RunConfig(**settings_of(changed)) == CHANGED


def test_the_strategy_names_come_from_the_registry() -> None:
    strategy = next(s for s in settings() if s.name == "strategy")
    assert strategy.option.choices is not None
    assert list(strategy.option.choices()) == list(strategy_names())
    described = schemas.RunConfigJson.model_json_schema()["properties"]["strategy"]
    assert all(name in described["description"] for name in strategy_names())
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--strategy", "no-such-strategy"])


def test_the_rest_schemas_carry_every_setting_with_its_bounds() -> None:
    assert list(schemas.RunConfigJson.model_fields) == NAMES
    assert list(schemas.ConfigChangeBody.model_fields) == list(MUTABLE_FIELDS)
    properties = schemas.RunConfigJson.model_json_schema()["properties"]
    keys = {"gt": "exclusiveMinimum", "ge": "minimum", "le": "maximum"}
    for setting in settings():
        bounds = {k: getattr(setting.option, k) for k in keys}
        shown = properties[setting.name]
        assert {k: v for k, v in bounds.items() if v is not None} == {
            k: shown[key] for k, key in keys.items() if key in shown
        }, setting.name
    body = schemas.RunConfigJson(**vars(CHANGED))
    assert RunConfig(**type(body).model_validate_json(body.model_dump_json()).model_dump()) == (
        CHANGED
    )


def test_the_proto_carries_every_setting() -> None:
    assert serde.config_wire_mismatches() == []
    wire = pb.RunConfig.FromString(serde.config_to_proto(CHANGED).SerializeToString())
    assert serde.config_from_proto(wire) == CHANGED


def test_sim_and_the_bench_spec_hold_every_setting_and_pass_it_on() -> None:
    assert spec_problems(SimConfig) == []
    assert spec_problems(FederationSpec) == []
    # their defaults are the declaration's, but where a simulation needs its own
    run = dataclasses.asdict(RunConfig())
    own = {"min_clients": 0, "round_deadline_s": 120.0}  # 0: every client
    assert {n: getattr(SimConfig(), n) for n in NAMES} == {**run, **own}
    spec = FederationSpec("grpc", "raw", clients=3, rounds=20)
    assert {n: getattr(spec, n) for n in NAMES} == {**run, **own}
    values = settings_of(CHANGED)
    assert SimConfig(clients=5, **values).run_config() == CHANGED
    assert FederationSpec("grpc", "raw", 5, **values).run_config() == CHANGED
    served = build_parser().parse_args(["serve", *serve_arguments(SimConfig(**values), Path())])
    assert RunConfig(**settings_of(served)) == CHANGED


def test_train_config_travels_whole_over_both_transports() -> None:
    # no declaration of its own (a client reads it, nobody sets it): the wire must hold
    # every field of the core's message, and serde and schemas map them by name
    declared = typing.get_type_hints(TrainConfig)
    proto_types: dict[type, int] = {
        int: FieldDescriptor.TYPE_INT32,
        float: FieldDescriptor.TYPE_DOUBLE,
    }
    wire = {field.name: field.type for field in pb.TrainConfig.DESCRIPTOR.fields}
    assert wire == {name: proto_types[kind] for name, kind in declared.items()}
    assert set(schemas.TrainConfigJson.model_fields) == set(declared)
