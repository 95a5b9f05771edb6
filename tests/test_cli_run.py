"""The `fedgate` process's exit: serve and client leave without tearing the interpreter
down (`fedgate.cli.run`); every other command exits as Python does."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import pytest

from fedgate import cli


class Exited(Exception):
    def __init__(self, how: str, code: object) -> None:
        super().__init__(how, code)
        self.how, self.code = how, code


def _os_exit(code: int) -> NoReturn:
    raise Exited("os._exit", code)


def run_with(
    monkeypatch: pytest.MonkeyPatch, command: str, exit_at_once: bool, code: int
) -> Exited:
    args = argparse.Namespace(handler=lambda _: code, verbose=False, info=False)
    if exit_at_once:
        args.exit_at_once = True
    monkeypatch.setattr(sys, "argv", ["fedgate", command])
    monkeypatch.setattr(cli, "parse", lambda argv: args)
    monkeypatch.setattr("os._exit", _os_exit)  # the one fedgate.cli calls
    with pytest.raises((Exited, SystemExit)) as caught:
        cli.run()
    if isinstance(caught.value, SystemExit):
        return Exited("sys.exit", caught.value.code)
    assert isinstance(caught.value, Exited)
    return caught.value


@pytest.mark.parametrize(
    "argv",
    [["serve"], ["client", "--server", "127.0.0.1:1", "--transport", "grpc"]],
    ids=["serve", "client"],
)
def test_serve_and_client_ask_to_exit_at_once(argv: list[str]) -> None:
    assert cli.build_parser().parse_args(argv).exit_at_once is True


def test_other_commands_exit_as_python_does() -> None:
    for argv in (["codecs"], ["sim"], ["runs", "list"]):
        assert not getattr(cli.build_parser().parse_args(argv), "exit_at_once", False), argv


def test_run_leaves_at_once_with_the_handlers_code(monkeypatch: pytest.MonkeyPatch) -> None:
    exited = run_with(monkeypatch, "serve", exit_at_once=True, code=3)
    assert (exited.how, exited.code) == ("os._exit", 3)


def test_run_exits_normally_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    exited = run_with(monkeypatch, "codecs", exit_at_once=False, code=0)
    assert (exited.how, exited.code) == ("sys.exit", 0)
