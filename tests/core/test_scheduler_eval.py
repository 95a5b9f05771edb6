"""The held-out evaluation runs off the round's critical path: the next round opens while
the last model is evaluated, records reach the history and the store complete and in
round order, the run ends with its last evaluation, a failing evaluation is recorded and
the rounds go on, and a run resumed before its last evaluation was kept evaluates it.

In process, on the in-memory store, with hand-driven clients and an evaluator the test
holds back; on real digits training for the results (tests/test_resume.py kills a real
server and compares accuracies with an uninterrupted run).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
from collections.abc import Mapping

import pytest
import torch

from fedgate.core import scheduler
from fedgate.core.client import FederatedClient
from fedgate.core.config import RunConfig
from fedgate.core.data import load_dataset
from fedgate.core.factory import build_federation
from fedgate.core.federation import Federation
from fedgate.core.memory_store import InMemoryRunStore
from fedgate.core.messages import RoundOutcome, RunState
from fedgate.core.models import build_model
from fedgate.core.observer import NullObserver
from fedgate.core.ports import weights_hash
from fedgate.core.trainers import build_trainer
from fedgate.core.training import EvalResult, evaluate, state_dict_copy
from fedgate.transport.inproc import InProcTransport
from tests.conftest import join, play_round, tiny_model, until

CONFIG = RunConfig(
    rounds=3, min_clients=2, round_deadline_s=5.0, heartbeat_interval_s=0.2, heartbeat_timeout_s=2.0
)
GATE_S = 10.0  # the longest a held-back evaluation waits (a worker thread must end)


def score(weights: Mapping[str, torch.Tensor]) -> EvalResult:
    """A deterministic stand-in for the held-out split: a function of the weights."""
    mean = float(weights["w"].mean())
    return EvalResult(loss=1.0 / (1.0 + mean), accuracy=mean / 10.0, num_examples=1)


class HeldEvaluator:
    """`score`, the calls numbered in ``held`` (every call if None) waiting until the test
    lets them through, those in ``failing`` raising."""

    def __init__(self, held: set[int] | None = None, failing: frozenset[int] = frozenset()):
        self.gate = threading.Event()
        self.calls = 0
        self.held, self.failing = held, failing

    def __call__(self, weights: Mapping[str, torch.Tensor]) -> EvalResult:
        self.calls += 1
        if self.calls in self.failing:
            raise RuntimeError("out of memory")
        if self.held is None or self.calls in self.held:
            self.gate.wait(GATE_S)
        return score(weights)


async def test_the_next_round_opens_while_the_last_model_is_evaluated() -> None:
    store, evaluator = InMemoryRunStore(), HeldEvaluator()
    federation = Federation(tiny_model(), CONFIG, store=store, evaluator=evaluator)
    federation.start()
    try:
        a, b = await join(federation, "a"), await join(federation, "b")
        await play_round(federation, a, b, value=2.0)
        task = await a.train_task()  # round 2 is open; round 1's evaluation is held
        await until(lambda: evaluator.calls == 1)
        assert (task.round_id, evaluator.gate.is_set()) == ("2.1", False)
        status = federation.status()
        assert (status.history, status.rounds_completed, status.round) == ((), 1, 2)
        assert math.isnan(status.accuracy)
        await federation.recorder.flush()  # the round itself is kept, its evaluation not yet
        (kept,) = store.load_run(federation.run_id).history
        assert kept.outcome is RoundOutcome.COMPLETED and math.isnan(kept.accuracy)

        evaluator.gate.set()
        await until(lambda: len(federation.history) == 1)
        (record,) = federation.history
        expected = score(tiny_model(2.0))
        assert (record.accuracy, record.loss) == (expected.accuracy, expected.loss)
        assert federation.status().accuracy == expected.accuracy
        await federation.recorder.flush()
        run = store.load_run(federation.run_id)
        assert run.history == (record,)
        assert (run.snapshot.accuracy, run.snapshot.loss) == (expected.accuracy, expected.loss)
    finally:
        evaluator.gate.set()
        await federation.close()


class Waits(NullObserver):
    """Hears the evaluations' times and the rounds' waits for them."""

    def __init__(self) -> None:
        self.evaluations: list[float] = []
        self.waits: list[float] = []

    def evaluated(self, seconds: float) -> None:
        self.evaluations.append(seconds)

    def evaluation_waited(self, seconds: float) -> None:
        self.waits.append(seconds)


async def test_a_close_held_by_a_slow_evaluation_is_told_to_the_operator(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler, "EVALUATION_WAIT_WARN_S", 0.2)
    evaluator, waits = HeldEvaluator(held={1}), Waits()
    federation = Federation(tiny_model(), CONFIG, evaluator=evaluator, observer=waits)
    run = federation.start()
    try:
        a, b = await join(federation, "a"), await join(federation, "b")
        await play_round(federation, a, b, value=1.0)
        with caplog.at_level(logging.WARNING, logger="fedgate.scheduler"):
            tasks = await asyncio.gather(a.train_task(), b.train_task())
            for player, task in zip((a, b), tasks, strict=True):
                await player.send(task, tiny_model(2.0))
            await asyncio.sleep(0.4)  # round 2 is done; its close waits for round 1's
            assert federation.models.version == 2 and len(federation.history) == 0
            evaluator.gate.set()
            await until(lambda: len(federation.history) == 2)  # round 2's is instant
            await play_round(federation, a, b, value=3.0)  # no wait: nothing told
            await run
        (told,) = [r.getMessage() for r in caplog.records if "waited" in r.getMessage()]
        assert "for the evaluation of round 1" in told and "--evaluate-in thread" in told
        assert len(waits.waits) == 2 and waits.waits[0] >= 0.4 > waits.waits[1]
        assert len(waits.evaluations) == 3 and waits.evaluations[0] >= 0.4
    finally:
        evaluator.gate.set()
        await federation.close()


@pytest.mark.parametrize(("every_s", "told"), [(60.0, 1), (0.0, 2)])
async def test_the_wait_warning_is_told_once_a_minute_at_most(
    every_s: float, told: int, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every wait counts here (threshold 0): two closes wait, the warning is told once
    within its interval, and again once the interval has passed."""
    monkeypatch.setattr(scheduler, "EVALUATION_WAIT_WARN_S", 0.0)
    monkeypatch.setattr(scheduler, "EVALUATION_WARN_EVERY_S", every_s)
    waits = Waits()
    federation = Federation(tiny_model(), CONFIG, evaluator=score, observer=waits)
    run = federation.start()
    try:
        a, b = await join(federation, "a"), await join(federation, "b")
        with caplog.at_level(logging.WARNING, logger="fedgate.scheduler"):
            for value in (1.0, 2.0, 3.0):
                await play_round(federation, a, b, value=value)
            await run
        assert len(waits.waits) == 2
        assert sum("waited" in r.getMessage() for r in caplog.records) == told
    finally:
        await federation.close()


async def test_records_keep_round_order_and_the_run_ends_with_its_last_evaluation() -> None:
    store, evaluator = InMemoryRunStore(), HeldEvaluator(held={3})
    federation = Federation(tiny_model(), CONFIG, store=store, evaluator=evaluator)
    run = federation.start()
    try:
        a, b = await join(federation, "a"), await join(federation, "b")
        for value in (1.0, 2.0, 3.0):
            await play_round(federation, a, b, value=value)
        await until(lambda: len(federation.history) == 2)
        await until(lambda: evaluator.calls == 3)
        assert federation.state is RunState.WAITING  # not finished before its evaluation
        assert [r.round for r in federation.history] == [1, 2]
        evaluator.gate.set()
        status = await asyncio.wait_for(run, GATE_S)
        assert status.state is RunState.FINISHED
        assert [(r.round, r.model_version) for r in status.history] == [(1, 1), (2, 2), (3, 3)]
        await federation.recorder.flush()
        kept = store.load_run(federation.run_id)
        assert kept.history == status.history
        for record in status.history:  # each version's accuracy, evaluated again inline
            again = score(store.load_model(federation.run_id, record.model_version).weights)
            assert (record.accuracy, record.loss) == (again.accuracy, again.loss)
        assert kept.snapshot.accuracy == status.accuracy == status.history[-1].accuracy
        assert [m.accuracy for m in store.list_models(federation.run_id)][1:] == [
            r.accuracy for r in status.history
        ]
    finally:
        evaluator.gate.set()
        await federation.close()


async def test_a_failing_evaluation_is_recorded_and_the_rounds_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, evaluator = InMemoryRunStore(), HeldEvaluator(held=set(), failing=frozenset({1}))
    federation = Federation(tiny_model(), CONFIG, store=store, evaluator=evaluator)
    run = federation.start()
    try:
        a, b = await join(federation, "a"), await join(federation, "b")
        with caplog.at_level(logging.ERROR, logger="fedgate.scheduler"):
            for value in (1.0, 2.0, 3.0):
                await play_round(federation, a, b, value=value)
            status = await asyncio.wait_for(run, GATE_S)
        assert "evaluating round 1 failed" in caplog.text
        failed, *evaluated = status.history
        assert failed.outcome is RoundOutcome.COMPLETED and math.isnan(failed.accuracy)
        assert failed.reason == "evaluation failed: out of memory"
        assert [r.accuracy for r in evaluated] == [
            score(tiny_model(v)).accuracy for v in (2.0, 3.0)
        ]
        await federation.recorder.flush()
        assert store.load_run(federation.run_id).history == status.history
    finally:
        await federation.close()


async def test_a_run_resumed_before_its_last_evaluation_was_kept_evaluates_it() -> None:
    store, held = InMemoryRunStore(), HeldEvaluator()
    first = Federation(tiny_model(), CONFIG, store=store, evaluator=held)
    first.start()
    a, b = await join(first, "a"), await join(first, "b")
    await play_round(first, a, b, value=2.0)
    await a.train_task()  # round 2 is open, round 1 still being evaluated: the process "dies"
    await first.recorder.flush()
    await first.close()
    held.gate.set()

    stored = store.unfinished_run()
    assert stored is not None and math.isnan(stored.history[0].accuracy)
    second = Federation.resumed(stored, store=store, evaluator=score)
    second.start()
    try:
        expected = score(tiny_model(2.0))
        await until(lambda: second.status().accuracy == expected.accuracy)
        outcomes = [(r.round, r.attempt, r.outcome, r.accuracy) for r in second.history]
        assert outcomes[0] == (1, 1, RoundOutcome.COMPLETED, expected.accuracy)
        assert outcomes[1][:3] == (2, 1, RoundOutcome.ABANDONED)
        a2 = dataclasses.replace(a, federation=second)
        b2 = dataclasses.replace(b, federation=second)
        await play_round(second, a2, b2, value=3.0)
        await second.recorder.flush()
        kept = store.load_run(second.run_id)
        assert kept.history[:2] == tuple(second.history[:2])
        assert kept.history[0].accuracy == expected.accuracy
    finally:
        await second.close()


async def train_digits(*, evaluated: bool) -> tuple[str, list[tuple[float, float]], list[float]]:
    """Three rounds of two clients on digits: the final model's hash, each round's
    recorded (accuracy, loss), and each published version's accuracy evaluated inline."""
    data = load_dataset("digits", 4)
    config = RunConfig(rounds=3, clients_per_round=2, min_clients=2, seed=4, learning_rate=0.05)
    store = InMemoryRunStore()
    if evaluated:
        federation = build_federation(data, "cnn", config, store=store)
    else:
        initial = state_dict_copy(build_model("cnn", data.model_spec, seed=config.seed))
        federation = Federation(initial, config, store=store)
    run = federation.start()
    clients = [
        FederatedClient(
            InProcTransport(federation),
            build_trainer(data, "cnn", spec="iid", index=i, of=2, seed=4),
            name=f"c{i}",
            codec="raw",
        )
        for i in range(2)
    ]
    try:
        tasks = [asyncio.create_task(c.run()) for c in clients]
        status = await run
        await asyncio.gather(*tasks)
    finally:
        await federation.close()
    history = status.history
    eval_model = build_model("cnn", data.model_spec)
    inline = [
        evaluate(
            eval_model,
            store.load_model(federation.run_id, r.model_version).weights,
            data.x_test,
            data.y_test,
        ).accuracy
        for r in history
    ]
    recorded = [(r.accuracy, r.loss) for r in history]
    return weights_hash(federation.models.current), recorded, inline


async def test_background_evaluation_changes_no_weight_and_records_each_versions_accuracy() -> None:
    final, recorded, inline = await train_digits(evaluated=True)
    unevaluated_final, nothing, _ = await train_digits(evaluated=False)
    assert final == unevaluated_final  # bit-identical weights, evaluated or not
    assert [accuracy for accuracy, _ in recorded] == inline
    assert all(math.isfinite(loss) for _, loss in recorded)
    assert all(math.isnan(accuracy) for accuracy, _ in nothing)
