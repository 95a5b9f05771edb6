"""The bench suites' federations spell the run configuration as the core declares it."""

from __future__ import annotations

import dataclasses

from federations import FederationSpec

from fedgate.core.config import RunConfig


def test_a_spec_passes_its_run_options_on() -> None:
    spec = FederationSpec("grpc", "raw", clients=3, rounds=2, strategy="median", clip_norm=1.5)
    run = spec.run_config()
    assert (run.strategy, run.clip_norm, run.min_clients, run.rounds) == ("median", 1.5, 3, 2)
    spec_fields = {f.name for f in dataclasses.fields(FederationSpec)}
    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert {"strategy", "clip_norm", "learning_rate", "seed"} <= spec_fields & run_fields
