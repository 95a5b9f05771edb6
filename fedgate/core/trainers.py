"""A client's trainer on its share of the data: what a client process builds (no server code)."""

from __future__ import annotations

import torch

from fedgate.core.data import Dataset
from fedgate.core.models import build_model
from fedgate.core.partition import partition
from fedgate.core.training import LocalTrainer


def build_trainer(
    dataset: Dataset, model: str, *, spec: str, index: int, of: int, seed: int
) -> LocalTrainer:
    """Client ``index`` of ``of``: a trainer on its part of the training split.

    Every client computes the same split from (spec, of, seed) and takes its own part, so
    clients in separate processes need no coordination to get disjoint data.
    """
    if not 0 <= index < of:
        raise ValueError(f"client index {index} is outside 0..{of - 1}")
    parts = partition(dataset.y_train.numpy(), of, spec, seed)
    rows = torch.from_numpy(parts[index])
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
