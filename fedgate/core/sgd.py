"""SGD with momentum, as clients train: the arithmetic of ``torch.optim.SGD(params, lr,
momentum)`` (no dampening, weight decay or Nesterov), without torch.optim.

torch.optim's optimisers mark their methods not to be compiled, and the first call of
such a method imports ``torch._dynamo``: ~900 modules, about a second of CPU and tens of
MB in every client process, before its first step. fedgate compiles nothing, so its
clients step their parameters themselves (tests/core/test_sgd.py holds the two to the
same bits).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class MomentumSGD:
    """``buf = grad`` on the first step, then ``buf = momentum * buf + grad``;
    ``param -= lr * buf`` (torch.optim.SGD's single-tensor path, step for step)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr
        self.momentum = momentum
        self._buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, param in enumerate(self.params):
            grad = param.grad
            if grad is None:
                continue
            buffer = self._buffers[i]
            if buffer is None:
                buffer = self._buffers[i] = torch.clone(grad).detach()
            else:
                buffer.mul_(self.momentum).add_(grad)
            param.add_(buffer, alpha=-self.lr)
