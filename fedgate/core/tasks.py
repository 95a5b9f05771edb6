"""Which task a client gets when it asks: train in the open round, wait, or stop."""

from __future__ import annotations

from fedgate.core.messages import ClientState, Task, TaskKind, TrainConfig
from fedgate.core.registry import ClientRecord
from fedgate.core.rounds import Round
from fedgate.core.run import Run
from fedgate.core.strategy import get_strategy


def task_for(run: Run, record: ClientRecord, now: float) -> Task | None:
    """A task if there is one for this client now, else None (and the client is ready).

    A client that joined while a round is open takes part if the run admits late joiners
    and the round has room."""
    if not run.active:
        return Task(TaskKind.STOP)
    round_ = run.open_round()
    if round_ is not None and _admits_late(round_, record):
        round_.select_late(record.client_id)
    if round_ is not None and record.client_id in round_.pending():
        record.take_task()
        return train_task(round_, now)
    record.wait_for_task()
    return None


def train_task(round_: Round, now: float) -> Task:
    cfg = round_.config
    train = TrainConfig(
        cfg.learning_rate,
        cfg.local_epochs,
        cfg.batch_size,
        round=round_.number,
        proximal_mu=get_strategy(cfg.strategy).proximal_mu,
    )
    return Task(
        TaskKind.TRAIN,
        round=round_.number,
        round_id=round_.round_id,
        model_version=round_.base_version,
        deadline_s=max(0.0, round_.deadline - now),
        train=train,
    )


def _admits_late(round_: Round, record: ClientRecord) -> bool:
    return (
        round_.config.admit_late
        and round_.has_room()
        and record.client_id not in round_.selected
        and record.state in (ClientState.JOINED, ClientState.READY)
    )
