"""A tiny experiment (in-process digits federations of two rounds, and a two-epoch
baseline), run once per session; tests that change it work on a copy."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fedgate.experiment import ExperimentSpec, parse_spec, run_experiment
from fedgate.experiment.progress import LogProgress

TINY: dict[str, Any] = {
    "name": "tiny",
    "description": "two rounds of digits, in process",
    "target_accuracy": 0.5,
    "fixed": {"rounds": 2, "transport": "inproc"},
    "grid": {"clients": [2], "partition": ["iid", "dirichlet:0.5"], "seeds": [0]},
    "centralized": {"epochs": 2},
}
TINY_TOML = """\
name = "tiny"
description = "two rounds of digits, in process"
target_accuracy = 0.5

[fixed]
rounds = 2
transport = "inproc"

[grid]
clients = [2]
partition = ["iid", "dirichlet:0.5"]
seeds = [0]

[centralized]
epochs = 2
"""


def tiny_spec() -> ExperimentSpec:
    return parse_spec(TINY)


def run_logged(spec: ExperimentSpec, out: Path, **options: Any) -> tuple[Any, str]:
    """Run ``spec`` into ``out`` with plain log lines; the outcome and the log."""
    log = io.StringIO()
    outcome = run_experiment(spec, out, LogProgress(log), **options)
    return outcome, log.getvalue()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The tiny model gains nothing from more; on a shared machine, they cost."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def finished_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("experiment") / "tiny"
    run_logged(tiny_spec(), out, spec_file="tiny.toml")
    return out


@pytest.fixture
def experiment_copy(finished_experiment: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "tiny"
    shutil.copytree(finished_experiment, copy)
    return copy
