"""Clients' momentum SGD is torch.optim.SGD's arithmetic, bit for bit, and imports no
torch._dynamo (which torch.optim loads on first use)."""

from __future__ import annotations

import subprocess
import sys
from typing import Protocol

import torch
from torch import nn

from fedgate.core.data import load_dataset
from fedgate.core.models import build_model
from fedgate.core.sgd import MomentumSGD


class Optimiser(Protocol):
    def zero_grad(self) -> None: ...

    def step(self) -> None: ...


def steps(model: nn.Module, optimiser: Optimiser, x: torch.Tensor, y: torch.Tensor) -> None:
    loss_fn = nn.CrossEntropyLoss()
    for batch in torch.split(
        torch.randperm(len(x), generator=torch.Generator().manual_seed(0)), 16
    ):
        optimiser.zero_grad()
        loss_fn(model(x[batch]), y[batch]).backward()
        optimiser.step()


def test_momentum_sgd_gives_torch_optim_sgds_weights_exactly() -> None:
    data = load_dataset("digits", 0)
    x, y = data.x_train[:256], data.y_train[:256]
    ours, theirs = build_model("cnn", seed=0), build_model("cnn", seed=0)
    steps(ours, MomentumSGD(ours.parameters(), lr=0.1, momentum=0.9), x, y)
    steps(theirs, torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9), x, y)
    for (name, a), (_, b) in zip(
        ours.state_dict().items(), theirs.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    start = build_model("cnn", seed=0).state_dict()["classifier.3.weight"]
    assert not torch.equal(ours.state_dict()["classifier.3.weight"], start)  # it did train


def test_a_clients_training_imports_no_dynamo() -> None:
    script = (
        "import sys, torch\n"
        "from fedgate.core.messages import TrainConfig\n"
        "from fedgate.core.models import build_model\n"
        "from fedgate.core.training import LocalTrainer\n"
        "model = build_model('cnn', seed=0)\n"
        "x, y = torch.zeros(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)\n"
        "weights = {k: v.clone() for k, v in model.state_dict().items()}\n"
        "LocalTrainer(model, x, y).train(weights, TrainConfig(0.1, 1, 4))\n"
        "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo'))[:3])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
