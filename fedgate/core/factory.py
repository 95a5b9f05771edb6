"""Build a federation (server side) from names: dataset, model, run config; resume one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fedgate.core.config import EVALUATE_IN, RunConfig
from fedgate.core.data import Dataset
from fedgate.core.evaluation_process import EvaluationProcess
from fedgate.core.federation import Federation
from fedgate.core.models import build_model
from fedgate.core.ports import StoredRun
from fedgate.core.scheduler import Evaluator
from fedgate.core.training import EvalResult, evaluate, state_dict_copy
from fedgate.errors import ConfigError


def build_federation(
    dataset: Dataset,
    model: str,
    config: RunConfig,
    *,
    resume: StoredRun | None = None,
    evaluate_in: str = "thread",
    **options: Any,
) -> Federation:
    """A federation on a model seeded with ``config.seed`` that evaluates on the test split,
    or the run ``resume`` carried on (with its own config and model).

    ``evaluate_in``: "thread" (a worker thread of this process) or "process" (a forked
    worker at the lowest CPU priority, `fedgate.core.evaluation_process`: what `fedgate
    serve` does). ``options`` go to `Federation`: enrolment ("open", the default, for
    in-process runs; "key" for `fedgate serve`), upload limits, the run store and the
    keys/accounts stores."""
    eval_model = build_model(model, dataset.model_spec)
    # the test split only: the training split (600 MB of CIFAR-10) need not outlive this
    x_test, y_test = dataset.x_test, dataset.y_test

    def evaluate_here(weights: Mapping[str, torch.Tensor]) -> EvalResult:
        return evaluate(eval_model, weights, x_test, y_test)

    evaluator = evaluator_in(evaluate_in, evaluate_here)

    if resume is not None:
        return Federation.resumed(resume, evaluator=evaluator, **options)
    initial = build_model(model, dataset.model_spec, seed=config.seed)
    return Federation(state_dict_copy(initial), config, evaluator=evaluator, **options)


def evaluator_in(where: str, evaluate_here: Evaluator) -> Evaluator:
    """``evaluate_here``, run where ``where`` says (one of `EVALUATE_IN`)."""
    if where == "thread":
        return evaluate_here
    if where == "process":
        return EvaluationProcess(evaluate_here)
    raise ConfigError(f"evaluate_in is one of {', '.join(EVALUATE_IN)}, not {where!r}")
