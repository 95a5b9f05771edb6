"""Differences between state dicts, and adding them back.

Lossy codecs lose precision relative to what they encode; sent as differences, updates
lose it on the small change rather than on the weight (bf16 alone cannot represent a
change below ~0.4% of a weight). Both sides compute ``apply(base, delta)`` with the same
fp32 operations, so client and server hold bit-identical reconstructions.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedgate.codecs import TensorDict


def difference(new: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> TensorDict:
    """new - base per tensor, in the tensor's own dtype; bool tensors travel as they are."""
    return {
        name: tensor if tensor.dtype == torch.bool else torch.sub(tensor, base[name])
        for name, tensor in new.items()
    }


def apply(base: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> TensorDict:
    """base + delta per tensor; the inverse of `difference`."""
    return {
        name: change if change.dtype == torch.bool else torch.add(base[name], change)
        for name, change in delta.items()
    }
