"""Training-time augmentation for photographs: random crop with padding and horizontal flip.

The standard CIFAR recipe (pad 4 pixels of black, crop back to the original size at a
random offset, flip half the images left to right), done on a whole batch at once with
tensor indexing, its randomness drawn from a generator the caller seeds: the same seed
gives the same crops and flips. Images stay in [0, 1]; per-channel normalisation is the
model's (`fedgate.core.models.ModelSpec.mean`), so that training, evaluation and inference
all feed a model the same kind of input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention


@dataclass(frozen=True)
class Augmentation:
    """Random crop of a ``padding``-padded image back to its size, and a horizontal flip
    with probability one half when ``flip``."""

    padding: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        if self.padding < 0:
            raise ValueError("the crop padding cannot be negative")

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``images`` (N, C, H, W) augmented; ``images`` itself is left as it was."""
        out = self.crop(images, generator) if self.padding else images
        return self.flip_half(out, generator) if self.flip else out

    def crop(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, height, width = images.shape
        pad = self.padding
        padded = F.pad(images, (pad, pad, pad, pad))  # zeros: black, as the recipe pads
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
        rows = offsets[:, 0, None] + torch.arange(height)  # (N, H): each image's rows
        cols = offsets[:, 1, None] + torch.arange(width)  # (N, W)
        batch = torch.arange(n)[:, None, None, None]
        channel = torch.arange(images.shape[1])[None, :, None, None]
        return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]

    def flip_half(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        flipped = torch.rand(len(images), generator=generator) < 0.5
        return torch.where(flipped[:, None, None, None], images.flip(-1), images)
