"""The probe `round_timeline.py` puts in every process of a federation, as ``sitecustomize``.

Each wrapped step writes ``<monotonic seconds> <event>`` to ``$FEDGATE_TIMELINE_DIR/<pid>.log``
when it starts (``:s``) and ends (``:e``); CLOCK_MONOTONIC is one clock for every process
on the machine, so the logs line up. It wraps methods by name: a step that is renamed is
logged as ``missing <Class.method>`` (and the tool says so), not skipped in silence. A few
microseconds per event; a round has some 10 per client.

Not a benchmark: it shows where a round's wall time goes (see bench/README.md, "Where a
round's time goes"), which totals cannot.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import time
from collections.abc import Callable
from typing import Any

DIR_ENV = "FEDGATE_TIMELINE_DIR"

# (module, class, method, event): the steps of a round, server (S.) and client (C.)
STEPS = (
    ("fedgate.core.run", "Run", "round_opened", "S.open"),
    ("fedgate.core.federation", "Federation", "_hand_out", "S.handout"),
    ("fedgate.core.intake", "UpdateIntake", "finish", "S.finish"),
    ("fedgate.core.scheduler", "Scheduler", "_complete", "S.complete"),
    ("fedgate.core.scheduler", "Scheduler", "_conclude", "S.conclude"),
    ("fedgate.core.scheduler", "Scheduler", "_evaluate", "S.evaluate"),
    ("fedgate.core.recorder", "Recorder", "commit_round", "S.commit"),
    ("fedgate.core.client", "FederatedClient", "_next_task", "C.task"),
    ("fedgate.core.client", "FederatedClient", "_decoded", "C.decode"),
    ("fedgate.core.training", "LocalTrainer", "train", "C.train"),
    ("fedgate.core.client", "FederatedClient", "_encode", "C.encode"),
    ("fedgate.transport.grpc.client", "GrpcTransport", "submit_update", "C.submit"),
    ("fedgate.transport.rest.client", "RestTransport", "submit_update", "C.submit"),
)


def emit(event: str) -> None:
    with open(os.path.join(os.environ[DIR_ENV], f"{os.getpid()}.log"), "a") as log:
        log.write(f"{time.monotonic():.6f} {event}\n")


def timed(fn: Callable[..., Any], event: str) -> Callable[..., Any]:
    """``fn``, logging ``event:s`` as it starts and ``event:e`` as it ends."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def step(*args: Any, **kwargs: Any) -> Any:
            emit(f"{event}:s")
            try:
                return await fn(*args, **kwargs)
            finally:
                emit(f"{event}:e")

        return step

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        emit(f"{event}:s")
        try:
            return fn(*args, **kwargs)
        finally:
            emit(f"{event}:e")

    return call


def install() -> None:
    for module_name, class_name, method, event in STEPS:
        try:
            owner = getattr(importlib.import_module(module_name), class_name)
            setattr(owner, method, timed(getattr(owner, method), event))
        except (ImportError, AttributeError):
            emit(f"missing {class_name}.{method}")


if os.environ.get(DIR_ENV):
    install()
