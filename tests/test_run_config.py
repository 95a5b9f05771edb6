"""The run configuration is declared once (`fedgate.core.config.RunConfig`); every place
that spells it again — the proto, the REST schemas, the CLI, `sim` — must agree with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fedgate.cli import build_parser
from fedgate.cli_serve import run_serve
from fedgate.core.config import MUTABLE_FIELDS, RunConfig
from fedgate.errors import ConfigError
from fedgate.run.sim_config import SimConfig
from fedgate.run.simulation import serve_arguments
from fedgate.transport.grpc import serde
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.rest import schemas

FIELDS = [f.name for f in dataclasses.fields(RunConfig)]
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
    strategy="trimmed-mean:0.3",
    clip_norm=2.5,
)


def test_the_changed_sample_changes_every_field() -> None:
    defaults = RunConfig()
    assert [n for n in FIELDS if getattr(CHANGED, n) == getattr(defaults, n)] == []


def test_the_proto_carries_every_field_and_every_change() -> None:
    assert set(pb.RunConfig.DESCRIPTOR.fields_by_name) == set(FIELDS)
    assert set(pb.ConfigChange.DESCRIPTOR.fields_by_name) == set(MUTABLE_FIELDS)
    wire = pb.RunConfig.FromString(serde.config_to_proto(CHANGED).SerializeToString())
    assert serde.config_from_proto(wire) == CHANGED
    changes = {name: getattr(CHANGED, name) for name in MUTABLE_FIELDS}
    change = pb.ConfigChange.FromString(serde.config_change_to_proto(changes).SerializeToString())
    assert serde.config_change_from_proto(change) == changes


def test_the_rest_schemas_carry_every_field_and_every_change() -> None:
    assert set(schemas.RunConfigJson.model_fields) == set(FIELDS)
    assert set(schemas.ConfigChangeBody.model_fields) == set(MUTABLE_FIELDS)
    body = schemas.RunConfigJson(**vars(CHANGED))
    assert (
        RunConfig(**schemas.RunConfigJson.model_validate_json(body.model_dump_json()).model_dump())
        == CHANGED
    )
    changes = {name: getattr(CHANGED, name) for name in MUTABLE_FIELDS}
    assert schemas.ConfigChangeBody(**changes).model_dump(exclude_none=True) == changes


def test_serve_has_an_option_for_every_field_with_the_same_default() -> None:
    args = vars(build_parser().parse_args(["serve"]))
    assert {name: args[name] for name in FIELDS} == dataclasses.asdict(RunConfig())


def test_sim_passes_its_run_options_through_to_the_server_it_starts() -> None:
    config = SimConfig(
        clients=3,
        rounds=4,
        seed=2,
        learning_rate=0.2,
        local_epochs=2,
        batch_size=8,
        clients_per_round=3,
        min_clients=2,
        round_deadline_s=30.0,
        strategy="median",
        clip_norm=0.75,
    )
    args = vars(build_parser().parse_args(["serve", *serve_arguments(config, Path("out.json"))]))
    assert RunConfig(**{name: args[name] for name in FIELDS}) == config.run_config()
    sim = vars(build_parser().parse_args(["sim", "--strategy", "median", "--clip-norm", "0.75"]))
    assert (sim["strategy"], sim["clip_norm"]) == ("median", 0.75)
    # sim's own options for run fields (it has none for some, e.g. the heartbeat) default
    # as SimConfig does
    defaults = vars(build_parser().parse_args(["sim"]))
    shared = {f.name for f in dataclasses.fields(SimConfig)} & set(FIELDS) & set(defaults)
    assert {"strategy", "clip_norm", "rounds", "learning_rate"} <= shared
    assert {name: defaults[name] for name in shared} == {
        name: getattr(SimConfig(), name) for name in shared
    }


def test_a_simulation_gives_its_server_one_torch_thread_as_each_client() -> None:
    served = vars(build_parser().parse_args(["serve", *serve_arguments(SimConfig(), Path())]))
    assert served["threads"] == 1
    assert vars(build_parser().parse_args(["serve"]))["threads"] == 0  # torch's default
    with pytest.raises(ConfigError, match="--threads must be 0"):
        run_serve(build_parser().parse_args(["serve", "--threads", "-1"]))
