"""A run's life as a `RunStore` sees it, played on any store; and a canonical form of what a
store returns, so that two stores' answers compare equal exactly when they hold the same
thing (tensors by dtype, shape and bytes; NaN equal to NaN; order kept)."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any

import torch

from fedgate.core.config import RunConfig
from fedgate.core.messages import ClientState, RoundOutcome, RoundRecord, RunState, Traffic
from fedgate.core.ports import (
    ClientEvent,
    ConfigChange,
    ModelVersion,
    RoundCommit,
    RoundEvaluation,
    RunMeta,
    RunSnapshot,
    RunStore,
    StoredClient,
)

NAN = math.nan
CONFIG = RunConfig(rounds=5, min_clients=2, round_deadline_s=30.0, seed=7)


def weights(seed: int) -> dict[str, torch.Tensor]:
    """A small model with the dtypes and shapes a real one has (and a scalar, a bool, an
    empty tensor and bfloat16), in an order that is not sorted."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(4, 1, 3, 3, generator=generator),
        "conv.bias": torch.randn(4, generator=generator),
        "bn.num_batches_tracked": torch.tensor(seed, dtype=torch.int64),
        "fc.weight": torch.randn(3, 4, generator=generator).to(torch.bfloat16),
        "a.mask": torch.tensor([True, False, seed % 2 == 0]),
        "empty": torch.zeros(0, 3),
    }


def snapshot(run_id: str, **changes: Any) -> RunSnapshot:
    base = RunSnapshot(
        run_id=run_id,
        state=RunState.IDLE,
        round_number=1,
        attempt=1,
        model_version=0,
        config=CONFIG,
        pending_config=None,
        rng_state="[3, [1, 2, 3], null]",
    )
    return dataclasses.replace(base, **changes)


def client(number: int, **changes: Any) -> StoredClient:
    base = StoredClient(
        client_id=f"c{number}",
        name=f"client-{number}",
        token_hash=f"{number:064x}",
        codec="raw" if number % 2 else "int8-zstd",
        transport="grpc" if number % 2 else "rest",
        num_examples=100 * number,
        key_id="k1" if number < 3 else "",
        max_num_examples=1000,
        state=ClientState.READY,
        reason="",
        rounds_completed=0,
        bytes_up=0,
        bytes_down=0,
    )
    return dataclasses.replace(base, **changes)


def record(round_: int, attempt: int, outcome: RoundOutcome, **changes: Any) -> RoundRecord:
    base = RoundRecord(
        round=round_,
        attempt=attempt,
        outcome=outcome,
        participants=("c1", "c2"),
        selected=("c1", "c2"),
        num_examples=300,
        model_version=round_,
        accuracy=NAN,
        loss=NAN,
        bytes_up=1000 * round_,
        bytes_down=2000 * round_,
        duration_s=0.25,
        bytes_by_codec={
            "raw": Traffic(600 * round_, 1200 * round_),
            "int8-zstd": Traffic(400 * round_, 800 * round_),
        },
        bytes_by_transport={"grpc": Traffic(1000 * round_, 2000 * round_)},
    )
    return dataclasses.replace(base, **changes)


def play(store: RunStore, run_id: str = "run-1", created_at: float = 1_700_000_000.0) -> None:
    """Create a run, take clients, retry a round, change the config, complete two rounds,
    and pause: every kind of write a federation makes."""
    store.create_run(
        RunMeta(run_id, "digits", "cnn", created_at),
        snapshot(run_id),
        ModelVersion.of(0, weights(0)),
    )
    store.save_clients(run_id, (client(1),))
    store.save_clients(run_id, (client(2),))
    store.save_clients(
        run_id,
        (),
        (
            ClientEvent("c1", ClientState.JOINED, "", created_at + 1),
            ClientEvent("c2", ClientState.JOINED, "", created_at + 1.5),
            ClientEvent("c1", ClientState.TRAINING, "", created_at + 2),
        ),
    )
    store.set_run_state(run_id, RunState.RUNNING)
    store.commit_round(
        RoundCommit(
            snapshot=snapshot(run_id, state=RunState.WAITING, attempt=2),
            record=record(
                1, 1, RoundOutcome.RETRIED, participants=("c2",), reason="1 of 2 updates"
            ),
            model=None,
            clients=(client(1, state=ClientState.FAILED, reason="no heartbeat for 10s"), client(2)),
        )
    )
    store.add_config_change(run_id, ConfigChange(1, {"learning_rate": 0.05}, created_at + 3))
    traffic = {"grpc": Traffic(10, 20), "rest": Traffic(30, 40)}
    store.commit_round(
        RoundCommit(
            snapshot=snapshot(
                run_id,
                state=RunState.WAITING,
                round_number=2,
                model_version=1,
                config=CONFIG.with_changes({"learning_rate": 0.05}),
                pending_config=CONFIG.with_changes({"learning_rate": 0.05, "rounds": 6}),
                bytes_by_transport=traffic,
                bytes_by_codec={"raw": Traffic(40, 60)},
                accuracy=0.5,
                loss=1.25,
            ),
            record=record(
                1, 2, RoundOutcome.COMPLETED, accuracy=0.5, loss=1.25, train_loss=math.inf
            ),
            model=ModelVersion.of(1, weights(1)),
            clients=(client(2, rounds_completed=1, bytes_up=10, bytes_down=20),),
            strategy_state={"m": torch.ones(3), "v": torch.full((3,), 0.5)},
        )
    )
    store.save_clients(run_id, (client(3, state=ClientState.JOINED),))
    store.save_clients(run_id, (client(1, state=ClientState.READY, reason="rejoined"),))
    # committed before its evaluation (the latest accuracy still round 1's), evaluated after
    store.commit_round(
        RoundCommit(
            snapshot=snapshot(
                run_id,
                state=RunState.WAITING,
                round_number=3,
                model_version=2,
                accuracy=0.5,
                loss=1.25,
                rng_state="[3, [4, 5, 6], null]",
            ),
            record=record(
                2,
                1,
                RoundOutcome.COMPLETED,
                participants=("c1", "c2", "c3"),
                selected=("c1", "c2", "c3"),
                excluded=("c9",),
                train_loss=0.5,
            ),
            model=ModelVersion.of(2, weights(2)),
            clients=(client(1), client(2, rounds_completed=2), client(3, rounds_completed=1)),
            strategy_state={"m": torch.zeros(3)},
        )
    )
    store.record_evaluation(run_id, RoundEvaluation(2, 1, 0.75, NAN))
    store.set_run_state(run_id, RunState.PAUSED)


def play_runs(store: RunStore) -> None:
    """Three runs: a finished one, the unfinished one `play` makes, and a stopped one."""
    play(store, "run-0", created_at=1_600_000_000.0)
    store.set_run_state("run-0", RunState.FINISHED)
    play(store, "run-1")
    meta = RunMeta("run-2", "digits", "mlp", 1_800_000_000.0)
    store.create_run(meta, snapshot("run-2"), ModelVersion.of(0, weights(5)))
    store.set_run_state("run-2", RunState.STOPPED)


def canonical(value: Any) -> Any:
    """``value`` as nested tuples of plain values: equal iff the stores agree."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().contiguous().reshape(-1)
        return ("tensor", str(value.dtype), tuple(value.shape), flat.view(torch.uint8).tolist())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return (
            type(value).__name__,
            *((f.name, canonical(getattr(value, f.name))) for f in fields),
        )
    if isinstance(value, Mapping):
        return ("map", *((key, canonical(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return tuple(canonical(item) for item in value)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, enum.Enum):
        return value.value
    return value
