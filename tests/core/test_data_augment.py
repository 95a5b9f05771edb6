"""Training-time augmentation (seeded crop + flip) and the model's own input normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedgate.core.augment import Augmentation
from fedgate.core.data import CROP_AND_FLIP, load_dataset
from fedgate.core.messages import TrainConfig
from fedgate.core.models import ModelSpec, build_model
from fedgate.core.training import LocalTrainer, state_dict_copy

SPEC = ModelSpec(3, 10, image_size=8, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))


def distinct_images(n: int = 16, side: int = 8) -> torch.Tensor:
    """Images whose every pixel is a different positive value, so a crop's origin shows."""
    return (torch.arange(n * 3 * side * side, dtype=torch.float32) + 1).reshape(n, 3, side, side)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_same_seed_gives_the_same_crops_and_flips() -> None:
    images = distinct_images()
    first = CROP_AND_FLIP(images, generator(7))
    assert torch.equal(first, CROP_AND_FLIP(images, generator(7)))
    assert not torch.equal(first, CROP_AND_FLIP(images, generator(8)))
    assert first.shape == images.shape and torch.equal(images, distinct_images())  # untouched


def test_each_image_is_a_window_of_itself_padded_with_black_maybe_flipped() -> None:
    images = distinct_images()
    out = CROP_AND_FLIP(images, generator(3))
    padded = F.pad(images, (4, 4, 4, 4))
    windows = {(dy, dx) for dy in range(9) for dx in range(9)}
    flips = 0
    for image, result in zip(padded, out, strict=True):
        matches = [
            flipped
            for dy, dx in windows
            for flipped in (False, True)
            if torch.equal(
                result.flip(-1) if flipped else result, image[:, dy : dy + 8, dx : dx + 8]
            )
        ]
        assert len(matches) == 1  # exactly one offset and orientation
        flips += matches[0]
    assert 0 < flips < len(images)  # some flipped, some not (seeded, so always so)


def test_flip_alone_mirrors_about_half_and_crop_alone_never_flips() -> None:
    images = distinct_images(64)
    flipped = Augmentation(padding=0, flip=True)(images, generator(1))
    mirrored = [torch.equal(f, i.flip(-1)) for f, i in zip(flipped, images, strict=True)]
    assert all(m or torch.equal(f, i) for m, f, i in zip(mirrored, flipped, images, strict=True))
    assert 16 < sum(mirrored) < 48
    assert torch.equal(Augmentation(padding=0, flip=False)(images, generator(1)), images)


def test_augmented_training_is_deterministic_per_seed_and_round() -> None:
    x, y = torch.rand(24, 3, 8, 8, generator=generator(0)), torch.arange(24) % 10
    start = state_dict_copy(build_model("cnn", SPEC, seed=0))

    def train(round_number: int, augmentation: Augmentation | None) -> dict[str, torch.Tensor]:
        trainer = LocalTrainer(build_model("cnn", SPEC), x, y, seed=5, augmentation=augmentation)
        config = TrainConfig(learning_rate=0.1, local_epochs=1, batch_size=8, round=round_number)
        return dict(trainer.train(start, config).weights)

    once, again = train(2, CROP_AND_FLIP), train(2, CROP_AND_FLIP)
    assert all(torch.equal(once[k], again[k]) for k in once)
    other_round, plain = train(3, CROP_AND_FLIP), train(2, None)
    assert not torch.equal(once["classifier.3.weight"], other_round["classifier.3.weight"])
    assert not torch.equal(once["classifier.3.weight"], plain["classifier.3.weight"])


def test_digits_train_without_augmentation_or_normalisation() -> None:
    data = load_dataset("digits")
    assert data.augmentation is None and (data.mean, data.std) == ((), ())
    model = build_model("cnn", data.model_spec)
    assert not model._forward_pre_hooks and "input_mean" not in dict(model.named_buffers())


def test_the_model_normalises_its_input_without_changing_its_weights() -> None:
    normalising = build_model("resnet18", SPEC, seed=1).eval()
    plain_spec = ModelSpec(in_channels=3, num_classes=10, image_size=8)
    plain = build_model("resnet18", plain_spec, seed=1).eval()
    assert normalising.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in normalising.state_dict().items())
    x = torch.rand(2, 3, 8, 8, generator=generator(2))
    mean = torch.tensor(SPEC.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(SPEC.std).reshape(1, 3, 1, 1)
    with torch.inference_mode():
        assert torch.allclose(normalising(x), plain((x - mean) / std), atol=1e-6)
    # the weights of one load into the other: clients and servers exchange only those
    plain.load_state_dict(normalising.state_dict())
