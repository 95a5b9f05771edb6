"""Experiment grids: a TOML spec -> cells (federated runs and a centralized baseline), run
resumably into a directory that `fedgate report DIR` renders."""

from __future__ import annotations

from fedgate.experiment.runner import ExperimentDir, Outcome, run_experiment
from fedgate.experiment.spec import Cell, ExperimentSpec, load_spec, parse_spec

__all__ = [
    "Cell",
    "ExperimentDir",
    "ExperimentSpec",
    "Outcome",
    "load_spec",
    "parse_spec",
    "run_experiment",
]
