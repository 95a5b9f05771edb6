"""Models by name: a small CNN for digits, and torchvision's ResNet-18/50 (10 classes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fedgate.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model for a data set's inputs."""

    in_channels: int = 1
    num_classes: int = 10
    image_size: int = 8
    cifar_stem: bool = True  # 3x3 stride-1 first conv, no max-pool: small images keep detail
    # Per-channel input normalisation, (x - mean) / std, done by the model itself (empty:
    # none): every caller (training, evaluation, inference) feeds images in [0, 1].
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions and two dense layers: ~40k parameters, 98% on digits centrally."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(spec.in_channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = spec.image_size // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * side * side, 64),
            nn.ReLU(),
            nn.Linear(64, spec.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.features(x))
        return out


def _resnet(name: str) -> Callable[[ModelSpec], nn.Module]:
    def build(spec: ModelSpec) -> nn.Module:
        # imported here: torchvision costs seconds to import, and most runs use the CNN
        from torchvision import models as tv_models  # noqa: PLC0415

        model: nn.Module = getattr(tv_models, name)(weights=None, num_classes=spec.num_classes)
        if spec.cifar_stem or spec.in_channels != 3:
            stride = 1 if spec.cifar_stem else 2
            kernel = 3 if spec.cifar_stem else 7
            model.conv1 = nn.Conv2d(
                spec.in_channels, 64, kernel, stride=stride, padding=kernel // 2, bias=False
            )
        if spec.cifar_stem:
            model.maxpool = nn.Identity()
        return model

    return build


MODELS: dict[str, Callable[[ModelSpec], nn.Module]] = {
    "cnn": DigitsCNN,
    "resnet18": _resnet("resnet18"),
    "resnet50": _resnet("resnet50"),
}


def build_model(name: str, spec: ModelSpec | None = None, seed: int | None = None) -> nn.Module:
    """A freshly initialised model; the same ``seed`` gives the same weights."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(MODELS)}") from None
    spec = spec or ModelSpec()
    if seed is None:
        return normalising(builder(spec), spec)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return normalising(builder(spec), spec)


def normalising(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """``model`` normalising its input by ``spec``'s mean and std first, if it has them.

    A forward pre-hook with non-persistent buffers: the state dict (the weights clients
    exchange) has the same names and tensors as without, and the constants, which no
    round may change, never travel or get averaged."""
    if not spec.mean and not spec.std:
        return model
    if not (len(spec.mean) == len(spec.std) == spec.in_channels) or min(spec.std) <= 0:
        raise ConfigError("a normalisation needs a mean and a positive std per input channel")
    shape = (1, spec.in_channels, 1, 1)
    model.register_buffer("input_mean", torch.tensor(spec.mean).reshape(shape), persistent=False)
    model.register_buffer("input_std", torch.tensor(spec.std).reshape(shape), persistent=False)
    model.register_forward_pre_hook(_normalise_input)
    return model


def _normalise_input(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
    mean, std = model.get_buffer("input_mean"), model.get_buffer("input_std")
    return ((inputs[0] - mean) / std,)
