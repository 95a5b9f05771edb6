"""Local training on a client's examples, and evaluation on held-out data.

A trainer's batch order depends only on its seed and the round it trains
(`TrainConfig.round`), not on how many rounds it trained before: a round retried, or run
again after a server restart, trains exactly as its first try did, and a client that
missed rounds trains the next one as one that took part in all of them would.

With ``TrainConfig.proximal_mu`` > 0 (FedProx, Li et al. 2020) each batch's loss gets
(mu/2)*||w - w_global||^2 over the model's parameters (buffers are not trained): local
steps are pulled back towards the model the round started from. With 0 the loss, the
gradients and so the weights are exactly plain SGD's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from fedgate.core.augment import Augmentation
from fedgate.core.messages import TrainConfig
from fedgate.core.sgd import MomentumSGD

if TYPE_CHECKING:
    # Annotations only: importing the codecs (zstandard, msgpack) at run time would keep
    # this module out of environments that train without them (the flower bench suite).
    from fedgate.codecs import TensorDict

EVAL_BATCH = 512
AUGMENT_SALT = 0x5EED_A06  # apart from the batch order's: augmenting leaves the order as it is


@dataclass(frozen=True)
class TrainResult:
    weights: TensorDict
    num_examples: int
    loss: float
    accuracy: float


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    num_examples: int


def state_dict_copy(model: nn.Module) -> TensorDict:
    """Detached CPU copies of a model's parameters and buffers."""
    return {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}


class Trainer(Protocol):
    """What the client loop needs of local training."""

    @property
    def num_examples(self) -> int: ...

    def train(self, weights: Mapping[str, torch.Tensor], config: TrainConfig) -> TrainResult: ...


class LocalTrainer:
    """Trains one model on one client's examples; call from a worker thread.

    With an ``augmentation`` each batch is augmented as it is drawn, from a generator of
    its own seeded by the trainer's seed and the round: the same round augments the same
    way, and the batch order is the one it would be without."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        seed: int = 0,
        augmentation: Augmentation | None = None,
    ) -> None:
        if len(x) != len(y) or len(x) == 0:
            raise ValueError("a client needs a non-empty set of examples with one label each")
        self.model = model
        self.x, self.y = x, y
        self.seed = seed
        self.augmentation = augmentation

    @property
    def num_examples(self) -> int:
        return len(self.x)

    def train(self, weights: Mapping[str, torch.Tensor], config: TrainConfig) -> TrainResult:
        """Load ``weights``, run SGD for the configured epochs, return the new weights.

        The reported loss is the data loss alone (without the proximal term), so runs
        with and without FedProx report comparable figures."""
        self.model.load_state_dict(dict(weights))
        self.model.train()
        optimiser = MomentumSGD(self.model.parameters(), lr=config.learning_rate, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        seed = batch_seed(self.seed, config.round)
        generator = torch.Generator().manual_seed(seed)
        augmenting = torch.Generator().manual_seed(seed ^ AUGMENT_SALT)
        anchor = ProximalTerm(self.model, config.proximal_mu) if config.proximal_mu > 0 else None
        seen = correct = 0
        loss_sum = 0.0
        for _ in range(config.local_epochs):
            order = torch.randperm(len(self.x), generator=generator)
            for batch in torch.split(order, config.batch_size):
                x, y = self.x[batch], self.y[batch]
                if self.augmentation is not None:
                    x = self.augmentation(x, augmenting)
                optimiser.zero_grad()
                logits = self.model(x)
                loss = loss_fn(logits, y)
                (loss if anchor is None else loss + anchor.penalty()).backward()
                optimiser.step()
                seen += len(y)
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
        return TrainResult(
            weights=state_dict_copy(self.model),
            num_examples=self.num_examples,
            loss=loss_sum / max(seen, 1),
            accuracy=correct / max(seen, 1),
        )


class ProximalTerm:
    """FedProx's (mu/2)*||w - w_global||^2 over ``model``'s parameters, w_global being their
    values when this is made (the round's global model, just loaded)."""

    def __init__(self, model: nn.Module, mu: float) -> None:
        self.mu = mu
        self._pairs = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]

    def penalty(self) -> torch.Tensor:
        total = sum(((p - start) ** 2).sum() for p, start in self._pairs)
        return (self.mu / 2) * torch.as_tensor(total)


def batch_seed(seed: int, round_number: int) -> int:
    """The seed of the batch order a trainer seeded ``seed`` uses in round ``round_number``.

    A hash of both, not a sum: client seeds are ``run_seed * 1000 + index``, so
    seed + round would give client 0 in round 1 client 1's order in round 0."""
    digest = hashlib.blake2b(f"{seed}/{round_number}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # 63 bits: torch seeds are 64-bit


def evaluate(
    model: nn.Module, weights: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> EvalResult:
    """Cross-entropy loss and accuracy of ``weights`` on (x, y)."""
    model.load_state_dict(dict(weights))
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loss_sum, correct = 0.0, 0
    with torch.inference_mode():
        batches = zip(torch.split(x, EVAL_BATCH), torch.split(y, EVAL_BATCH), strict=True)
        for xb, yb in batches:
            logits = model(xb)
            loss_sum += float(loss_fn(logits, yb))
            correct += int((logits.argmax(1) == yb).sum())
    n = len(y)
    return EvalResult(
        loss=loss_sum / n if n else math.nan,
        accuracy=correct / n if n else math.nan,
        num_examples=n,
    )
