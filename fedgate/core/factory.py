"""Build a federation (server side) from names: dataset, model, run config; resume one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fedgate.core.config import RunConfig
from fedgate.core.data import Dataset
from fedgate.core.federation import Federation
from fedgate.core.models import build_model
from fedgate.core.ports import StoredRun
from fedgate.core.training import EvalResult, evaluate, state_dict_copy


def build_federation(
    dataset: Dataset,
    model: str,
    config: RunConfig,
    *,
    resume: StoredRun | None = None,
    **options: Any,
) -> Federation:
    """A federation on a model seeded with ``config.seed`` that evaluates on the test split,
    or the run ``resume`` carried on (with its own config and model).

    ``options`` go to `Federation`: enrolment ("open", the default, for in-process runs;
    "key" for `fedgate serve`), upload limits, the run store and the keys/accounts stores."""
    eval_model = build_model(model, dataset.model_spec)
    # the test split only: the training split (600 MB of CIFAR-10) need not outlive this
    x_test, y_test = dataset.x_test, dataset.y_test

    def evaluator(weights: Mapping[str, torch.Tensor]) -> EvalResult:
        return evaluate(eval_model, weights, x_test, y_test)

    if resume is not None:
        return Federation.resumed(resume, evaluator=evaluator, **options)
    initial = build_model(model, dataset.model_spec, seed=config.seed)
    return Federation(state_dict_copy(initial), config, evaluator=evaluator, **options)
