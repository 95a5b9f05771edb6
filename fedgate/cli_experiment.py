"""`fedgate experiment SPEC.toml --out DIR`: run a grid of federations (and a centralized
baseline) into DIR, resumably; `fedgate report DIR` renders it."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedgate.cli_train import add_data_dir_option

if TYPE_CHECKING:
    from fedgate.experiment.spec import ExperimentSpec


def add_experiment_command(commands: Any) -> None:
    experiment = commands.add_parser(
        "experiment",
        help="run an experiment grid (clients x partition x codec x transport x strategy x "
        "seeds, and a centralized baseline) into a directory; re-running resumes it",
    )
    experiment.add_argument("spec", type=Path, help="the experiment spec (TOML)")
    experiment.add_argument(
        "--out", type=Path, required=True, help="the experiment directory (created; reused)"
    )
    add_data_dir_option(experiment)
    experiment.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    experiment.add_argument(
        "--keep-going",
        action="store_true",
        help="when a cell fails, go on with the others (default: stop; a re-run retries it)",
    )
    experiment.add_argument(
        "--list", action="store_true", help="list the cells and whether each is done, run nothing"
    )
    experiment.set_defaults(handler=run_experiment_command)


def with_data_dir(spec: ExperimentSpec, data_dir: str) -> ExperimentSpec:
    """``--data-dir`` over the spec's: where the data is belongs to this machine."""
    if not data_dir:
        return spec
    return dataclasses.replace(spec, fixed={**spec.fixed, "data_dir": data_dir})


def run_experiment_command(args: argparse.Namespace) -> int:
    # torch and the simulation load when an experiment runs, not when the CLI parses
    import torch  # noqa: PLC0415

    from fedgate.experiment.progress import progress_for  # noqa: PLC0415
    from fedgate.experiment.runner import run_experiment  # noqa: PLC0415
    from fedgate.experiment.spec import load_spec  # noqa: PLC0415

    spec = with_data_dir(load_spec(args.spec), args.data_dir)
    if args.list:
        return list_cells(spec, args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = shlex.join(["fedgate", *getattr(args, "argv", [])])
    outcome = run_experiment(
        spec,
        args.out,
        progress_for(),
        spec_file=str(args.spec),
        command=command,
        keep_going=args.keep_going,
    )
    print(
        f"experiment {spec.name}: {len(outcome.ran)} cells run, {len(outcome.skipped)} "
        f"finished earlier, {len(outcome.failed)} failed, in {outcome.wall_s:.1f}s"
    )
    print(f"report: fedgate report {shlex.quote(str(args.out))}")
    return 1 if outcome.failed else 0


def list_cells(spec: ExperimentSpec, out: Path) -> int:
    from fedgate.experiment.runner import ExperimentDir  # noqa: PLC0415

    directory = ExperimentDir(out)
    for cell in spec.cells():
        state = "done" if directory.finished(cell) is not None else "to run"
        again = directory.why_again(cell) if state != "done" else ""
        print(f"{state:<6}  {cell.id}" + (f"  ({again})" if again else ""))
    return 0
