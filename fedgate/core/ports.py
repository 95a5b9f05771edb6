"""What a federation keeps, and the port it keeps it through.

The core never imports a storage library: it hands these frozen records to a `RunStore`
(`fedgate.store` implements it in SQL; `InMemoryRunStore` serves `sim --transport inproc`
and the tests). A round's records travel as one `RoundCommit`, which a store writes in one
transaction, so that a crash leaves either the whole round or none of it. A completed
round's held-out evaluation comes after its commit (the next round does not wait for it),
as a `RoundEvaluation`: a crash between the two leaves the round kept without it.

Enrolment keys, users and sessions have ports of their own beside the code that uses them
(`fedgate.core.enrolment.KeyStore`, `fedgate.core.accounts.UserStore`/`SessionStore`).

Times are wall-clock seconds since the epoch (`time.time()`): they outlive the process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from fedgate.core.config import RunConfig
from fedgate.core.messages import ClientEvent, ClientState, RoundRecord, RunState, Traffic

# ClientEvent lives with the messages (a watched status carries them); stored from here too
__all__ = [
    "ClientEvent",
    "ConfigChange",
    "ModelInfo",
    "ModelVersion",
    "RoundCommit",
    "RoundEvaluation",
    "RunMeta",
    "RunSnapshot",
    "RunStore",
    "RunSummary",
    "StoredClient",
    "StoredRun",
    "TensorDict",
    "weights_hash",
]

TensorDict = dict[str, torch.Tensor]


def weights_hash(weights: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: equal
    hashes mean bit-identical models (what resume checks on read, and tests compare)."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelVersion:
    """A global model version as kept: its tensors and their `weights_hash`."""

    version: int
    weights: TensorDict
    sha256: str

    @classmethod
    def of(cls, version: int, weights: Mapping[str, torch.Tensor]) -> ModelVersion:
        return cls(version, dict(weights), weights_hash(weights))


@dataclass(frozen=True)
class ModelInfo:
    """A kept model version without its tensors: what lists of versions show, and what
    inference picks the deployed version by."""

    version: int
    round: int  # the round that published it (0: the initial model)
    accuracy: float  # on the held-out split when it was published (NaN: not evaluated)
    loss: float
    sha256: str  # `weights_hash` of its tensors


@dataclass(frozen=True)
class RunMeta:
    """What a run was started on; resume refuses a database whose run differs."""

    run_id: str
    dataset: str = ""
    model: str = ""
    created_at: float = 0.0


@dataclass(frozen=True)
class StoredClient:
    """A client's registry record as kept (its token only as a hash)."""

    client_id: str
    name: str
    token_hash: str
    codec: str
    transport: str
    num_examples: int
    key_id: str
    max_num_examples: int
    state: ClientState
    reason: str
    rounds_completed: int
    bytes_up: int
    bytes_down: int


@dataclass(frozen=True)
class RunSnapshot:
    """Where a run stands between rounds: everything resume needs but the history."""

    run_id: str
    state: RunState
    round_number: int  # the next round to run (1-based)
    attempt: int
    model_version: int
    config: RunConfig
    pending_config: RunConfig | None
    rng_state: str  # the selection RNG (`random.Random.getstate`), as JSON
    bytes_by_transport: Mapping[str, Traffic] = field(default_factory=dict)
    bytes_by_codec: Mapping[str, Traffic] = field(default_factory=dict)
    accuracy: float = float("nan")
    loss: float = float("nan")


@dataclass(frozen=True)
class RoundCommit:
    """One closed round attempt and the run's state after it, written as one transaction."""

    snapshot: RunSnapshot
    record: RoundRecord
    model: ModelVersion | None  # the version the round published (completed rounds only)
    clients: tuple[StoredClient, ...]  # every client record as the round closed
    # server-side strategy state that must survive a restart (FedAdam's moments); {} if none
    strategy_state: TensorDict = field(default_factory=dict)


@dataclass(frozen=True)
class RoundEvaluation:
    """A completed round attempt's held-out accuracy and loss, kept after its commit (NaN
    and a ``reason`` if the evaluation failed)."""

    round: int
    attempt: int
    accuracy: float
    loss: float
    reason: str = ""

    @classmethod
    def of(cls, record: RoundRecord) -> RoundEvaluation:
        return cls(record.round, record.attempt, record.accuracy, record.loss, record.reason)


@dataclass(frozen=True)
class ConfigChange:
    """An operator's change to the run config, and from which round it applies."""

    round_number: int
    changes: Mapping[str, Any]
    at: float


@dataclass(frozen=True)
class StoredRun:
    """A run as the store holds it: enough to resume it, or to show and export it."""

    meta: RunMeta
    snapshot: RunSnapshot
    model: ModelVersion  # the latest version published (version 0: the initial model)
    history: tuple[RoundRecord, ...]
    clients: tuple[StoredClient, ...]
    config_changes: tuple[ConfigChange, ...] = ()
    strategy_state: TensorDict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.snapshot.state in (RunState.FINISHED, RunState.STOPPED)


@dataclass(frozen=True)
class RunSummary:
    """One line of `fedgate runs list`."""

    run_id: str
    state: RunState
    dataset: str
    model: str
    created_at: float
    rounds_completed: int
    rounds: int
    accuracy: float


class RunStore(Protocol):
    """Runs, their rounds, client sessions and model versions.

    Methods are synchronous and may block (a database round trip): the federation calls
    them from one writer thread (`fedgate.core.recorder.Recorder`), never on its event
    loop, in the order things happened."""

    def create_run(self, meta: RunMeta, snapshot: RunSnapshot, model: ModelVersion) -> None:
        """A new run, with its initial model as version 0."""
        ...

    def commit_round(self, commit: RoundCommit) -> None:
        """A closed round attempt, the model it published, the client records and the run's
        snapshot: all of it or none of it."""
        ...

    def record_evaluation(self, run_id: str, evaluation: RoundEvaluation) -> None:
        """A committed round attempt's evaluation, which comes after its commit: set on its
        record and, unless it failed (NaN accuracy), as the run's latest accuracy and loss
        (`NotFound`: no such run or round attempt)."""
        ...

    def save_clients(
        self,
        run_id: str,
        clients: tuple[StoredClient, ...],
        events: tuple[ClientEvent, ...] = (),
    ) -> None:
        """Insert or replace client records (on join, and as their states change) and add
        their transitions, in one transaction."""
        ...

    def add_config_change(self, run_id: str, change: ConfigChange) -> None: ...

    def set_run_state(self, run_id: str, state: RunState) -> None: ...

    def unfinished_run(self) -> StoredRun | None:
        """The most recently created run that neither finished nor was stopped, if any."""
        ...

    def load_run(self, run_id: str) -> StoredRun:
        """A run by id (`fedgate.errors.NotFound` if there is none); the model's hash is
        checked against its bytes on read."""
        ...

    def list_runs(self) -> list[RunSummary]:
        """Every run, newest first."""
        ...

    def client_events(self, run_id: str) -> list[ClientEvent]: ...

    def list_models(self, run_id: str) -> list[ModelInfo]:
        """Every model version the run published, oldest first, with the round that
        published it and its held-out accuracy and loss (`NotFound`: no such run)."""
        ...

    def load_model(self, run_id: str, version: int) -> ModelVersion:
        """One version's tensors, its hash checked against its bytes (`NotFound`: no such
        run or version; `fedgate.errors.StoreCorrupt`: the bytes fail the check)."""
        ...

    def close(self) -> None: ...
