"""The server's evaluation in a forked worker at the lowest priority (`EvaluationProcess`):
the same figures as in a thread, a worker of its own at niceness +19 that keeps none of the
server's files, failures told and survived, closed with its federation."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import torch

from fedgate.cli import build_parser
from fedgate.cli_serve import run_serve
from fedgate.core.config import RunConfig
from fedgate.core.data import Dataset, load_dataset
from fedgate.core.evaluation_process import GRPC_FORK_SUPPORT, NICENESS, EvaluationProcess
from fedgate.core.factory import build_federation, evaluator_in
from fedgate.core.models import build_model
from fedgate.core.scheduler import Evaluator
from fedgate.core.training import EvalResult, evaluate, state_dict_copy
from fedgate.errors import ConfigError, ServerError


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", 0)


@pytest.fixture
def here(digits: Dataset) -> Evaluator:
    model = build_model("cnn", digits.model_spec)

    def evaluate_here(weights: object) -> EvalResult:
        return evaluate(model, weights, digits.x_test, digits.y_test)  # type: ignore[arg-type]

    return evaluate_here


@pytest.fixture
def apart(here: Evaluator) -> Iterator[EvaluationProcess]:
    process = EvaluationProcess(here)
    yield process
    process.close()


def weights(seed: int, digits: Dataset) -> dict[str, torch.Tensor]:
    return state_dict_copy(build_model("cnn", digits.model_spec, seed=seed))


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_the_figures_are_the_threads_to_the_bit(
    apart: EvaluationProcess, here: Evaluator, digits: Dataset
) -> None:
    for seed in range(3):
        assert apart(weights(seed, digits)) == here(weights(seed, digits))
    assert apart.pid is not None and apart.pid != os.getpid()


def test_the_worker_is_niced_and_keeps_none_of_the_servers_files(
    here: Evaluator, digits: Dataset
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # open as the worker is forked
        apart = EvaluationProcess(here)
        try:
            pid = apart.pid
            assert pid is not None
            apart(weights(0, digits))  # the worker has set itself up
            assert niceness(pid) == min(19, niceness(os.getpid()) + NICENESS)
            kept = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
            assert listener.fileno() not in kept
            assert len(kept - {0, 1, 2}) == 1  # its pipe to the server
        finally:
            apart.close()


def test_a_failing_evaluation_is_told_and_the_next_one_runs(
    here: Evaluator, digits: Dataset
) -> None:
    apart = EvaluationProcess(here)
    try:
        broken = {**weights(0, digits), "unknown.weight": torch.zeros(1)}  # not the model's
        with pytest.raises(RuntimeError, match=r'Unexpected key.* "unknown\.weight"'):
            apart(broken)
        assert apart(weights(1, digits)) == here(weights(1, digits))
    finally:
        apart.close()


def test_a_worker_that_died_is_told_once_then_the_server_evaluates(
    apart: EvaluationProcess, here: Evaluator, digits: Dataset
) -> None:
    pid = apart.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ServerError, match="the evaluation process died"):
        apart(weights(0, digits))
    assert apart.pid is None
    assert apart(weights(2, digits)) == here(weights(2, digits))  # on this thread now


def test_closing_mid_evaluation_fails_that_call_at_once_and_quietly(
    here: Evaluator, digits: Dataset, capfd: pytest.CaptureFixture[str]
) -> None:
    server = os.getpid()

    def slow(weights: Mapping[str, torch.Tensor]) -> EvalResult:
        if os.getpid() != server:  # slow in the worker only
            time.sleep(30)
        return here(weights)

    apart = EvaluationProcess(slow)
    outcome: list[BaseException | EvalResult] = []

    def call() -> None:
        try:
            outcome.append(apart(weights(0, digits)))
        except ServerError as error:
            outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)  # the worker is in `slow` now
    began = time.monotonic()
    apart.close()
    caller.join(5)
    assert time.monotonic() - began < 2.0  # not the 30 s evaluation, nor the grace
    assert len(outcome) == 1 and isinstance(outcome[0], ServerError)
    assert apart(weights(1, digits)) == here(weights(1, digits))  # later: on this thread
    assert "Traceback" not in capfd.readouterr().err


async def test_the_federation_closes_its_evaluation_process(digits: Dataset) -> None:
    federation = build_federation(digits, "cnn", RunConfig(rounds=1), evaluate_in="process")
    apart = federation.evaluator
    assert isinstance(apart, EvaluationProcess)
    pid = apart.pid
    assert pid is not None and alive(pid)
    await federation.close()
    assert apart.pid is None and not alive(pid)  # ended and reaped


def test_evaluate_in_names_a_place(here: Evaluator) -> None:
    assert evaluator_in("thread", here) is here
    with pytest.raises(ConfigError, match="evaluate_in is one of process, thread, not 'gpu'"):
        evaluator_in("gpu", here)


def test_fedgate_serve_turns_grpc_fork_handlers_off_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """With gRPC's fork handlers on, a forked worker aborted one fork in five after a gRPC
    client had run in the server: `fedgate serve` turns them off before anything else
    (before its options are even checked), for the evaluation worker it will fork."""
    monkeypatch.delenv(GRPC_FORK_SUPPORT, raising=False)
    with pytest.raises(ConfigError, match="--threads"):
        run_serve(build_parser().parse_args(["serve", "--threads", "-1"]))
    assert os.environ[GRPC_FORK_SUPPORT] == "false"
