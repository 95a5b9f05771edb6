"""`python -m fedgate` is the `fedgate` command."""

from fedgate.cli import run

run()
