"""A client's trainer on its share of the data: what a client process builds (no server code)."""

from __future__ import annotations

import torch

from fedgate.core.data import Dataset
from fedgate.core.models import build_model
from fedgate.core.partition import client_rows
from fedgate.core.training import LocalTrainer


def build_trainer(
    dataset: Dataset, model: str, *, spec: str, index: int, of: int, seed: int
) -> LocalTrainer:
    """Client ``index`` of ``of``: a trainer on its part of the training split
    (`fedgate.core.partition.client_rows`)."""
    rows = torch.from_numpy(client_rows(dataset.y_train.numpy(), spec, index, of, seed))
    return LocalTrainer(
        build_model(model, dataset.model_spec),
        dataset.x_train[rows],
        dataset.y_train[rows],
        seed=client_seed(seed, index),
        augmentation=dataset.augmentation,
    )


def client_seed(seed: int, index: int) -> int:
    """Client ``index``'s batch-order seed in a run seeded ``seed``."""
    return seed * 1000 + index
