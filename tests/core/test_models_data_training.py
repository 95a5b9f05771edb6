"""Models build offline with 10 classes, data ships with the package, training learns."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch

from fedgate.core import bundled
from fedgate.core.aggregation import distance
from fedgate.core.data import load_dataset
from fedgate.core.messages import TrainConfig
from fedgate.core.models import ModelSpec, build_model
from fedgate.core.training import LocalTrainer, TrainResult, batch_seed, evaluate, state_dict_copy
from fedgate.errors import ConfigError


def test_digits_ship_with_the_package_and_split_stratified() -> None:
    data = load_dataset("digits")
    assert data.x_train.shape[1:] == (1, 8, 8) and data.x_train.dtype == torch.float32
    assert len(data.x_train) + len(data.x_test) == 1797
    assert float(data.x_train.min()) >= 0.0 and float(data.x_train.max()) <= 1.0
    assert set(data.y_test.tolist()) == set(range(10))
    assert 0.18 < len(data.x_test) / 1797 < 0.22


def test_digits_are_scikit_learns_own_read_without_importing_it() -> None:
    from sklearn.datasets import load_digits  # noqa: PLC0415

    bunch = load_digits()
    data = load_dataset("digits", 0)
    images = torch.cat([data.x_train, data.x_test]).flatten(1).sort(dim=0).values
    expected = torch.from_numpy(bunch.data.astype("float32") / 16.0).sort(dim=0).values
    assert torch.equal(images, expected)  # the same pixels, split into train and test
    assert torch.cat([data.y_train, data.y_test]).bincount().tolist() == (
        torch.from_numpy(bunch.target).bincount().tolist()
    )
    # In a fresh process: loading digits does not pay scikit-learn's import.
    probe = "import sys; from fedgate.core.data import load_dataset; load_dataset('digits')"
    probe += "; sys.exit('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


def test_digits_fall_back_to_scikit_learn_where_its_file_is_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read = load_dataset("digits", 0)
    monkeypatch.setattr(bundled, "DIGITS_FILE", bundled.DIGITS_FILE.with_name("gone"))
    loaded = load_dataset("digits", 0)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(loaded, name), getattr(read, name)), name


def test_synthetic_data_is_seeded() -> None:
    assert torch.equal(load_dataset("synthetic", 1).x_train, load_dataset("synthetic", 1).x_train)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnets_have_ten_classes_and_a_cifar_stem_option(name: str) -> None:
    cifar = build_model(name, ModelSpec(in_channels=3, image_size=32, cifar_stem=True))
    imagenet = build_model(name, ModelSpec(in_channels=3, image_size=32, cifar_stem=False))
    with torch.inference_mode():
        assert cifar.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
        assert imagenet.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert "bn1.num_batches_tracked" in cifar.state_dict()
    assert isinstance(cifar.conv1, torch.nn.Conv2d) and isinstance(imagenet.conv1, torch.nn.Conv2d)
    assert cifar.conv1.kernel_size == (3, 3) and imagenet.conv1.kernel_size == (7, 7)


def test_models_are_seeded_and_unknown_names_refused() -> None:
    a, b = build_model("cnn", seed=4).state_dict(), build_model("cnn", seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="cnn"):
        build_model("vgg")


def test_local_training_improves_the_model_on_its_data() -> None:
    data = load_dataset("digits")
    model = build_model("cnn", data.model_spec, seed=0)
    start = state_dict_copy(model)
    before = evaluate(build_model("cnn", data.model_spec), start, data.x_test, data.y_test)
    trainer = LocalTrainer(model, data.x_train[:600], data.y_train[:600], seed=0)
    result = trainer.train(start, TrainConfig(learning_rate=0.1, local_epochs=3, batch_size=32))
    after = evaluate(build_model("cnn", data.model_spec), result.weights, data.x_test, data.y_test)
    assert result.num_examples == 600
    assert after.loss < before.loss and after.accuracy > 0.6 > 0.2 > before.accuracy
    assert not torch.equal(result.weights["classifier.3.weight"], start["classifier.3.weight"])


# ---- FedProx's proximal term, and batch orders seeded per round -----------------------------

RECIPE = TrainConfig(learning_rate=0.1, local_epochs=2, batch_size=32, round=3)


def digits_part(seed: int = 0) -> tuple[torch.nn.Module, dict[str, torch.Tensor], LocalTrainer]:
    """A fresh CNN, its starting weights, and a trainer on 300 digits seeded 5."""
    data = load_dataset("digits")
    model = build_model("cnn", data.model_spec, seed=seed)
    return (
        model,
        state_dict_copy(model),
        LocalTrainer(model, data.x_train[:300], data.y_train[:300], seed=5),
    )


def plain_sgd(
    trainer: LocalTrainer, start: dict[str, torch.Tensor], config: TrainConfig
) -> TrainResult:
    """LocalTrainer.train as it was before FedProx: SGD with momentum on the data loss only,
    its batch order drawn from ``batch_seed(seed, round)``."""
    model = trainer.model
    model.load_state_dict(start)
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(batch_seed(trainer.seed, config.round))
    seen = correct = 0
    loss_sum = 0.0
    for _ in range(config.local_epochs):
        for batch in torch.split(
            torch.randperm(len(trainer.x), generator=generator), config.batch_size
        ):
            x, y = trainer.x[batch], trainer.y[batch]
            optimiser.zero_grad(set_to_none=True)
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimiser.step()
            seen += len(y)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
    return TrainResult(state_dict_copy(model), len(trainer.x), loss_sum / seen, correct / seen)


def assert_same(a: TrainResult, b: TrainResult) -> None:
    assert (a.num_examples, a.loss, a.accuracy) == (b.num_examples, b.loss, b.accuracy)
    assert a.weights.keys() == b.weights.keys()
    for name, tensor in a.weights.items():
        assert torch.equal(tensor, b.weights[name]), name


def test_without_a_proximal_term_training_is_plain_sgd_to_the_bit() -> None:
    _, start, trainer = digits_part()
    assert_same(trainer.train(start, RECIPE), plain_sgd(trainer, start, RECIPE))


def test_the_proximal_term_keeps_the_weights_closer_to_the_global_model() -> None:
    _, start, trainer = digits_part()
    free = trainer.train(start, RECIPE)
    distances = [distance(free.weights, start)]
    for mu in (0.1, 1.0):
        held = trainer.train(start, dataclasses.replace(RECIPE, proximal_mu=mu))
        distances.append(distance(held.weights, start))
        assert math.isfinite(held.loss) and held.num_examples == free.num_examples
    assert distances[0] > distances[1] > distances[2] > 0  # the larger mu, the closer
    again = trainer.train(start, dataclasses.replace(RECIPE, proximal_mu=1.0))
    assert distance(again.weights, start) == distances[2]  # deterministic


def test_a_round_trains_the_same_whatever_rounds_came_before() -> None:
    # one trainer trains rounds 1 and 2, another only round 2, from the same weights:
    # the batch order depends on (seed, round), not on calls made before
    _, start, first = digits_part()
    _, _, second = digits_part()
    round_1 = first.train(start, dataclasses.replace(RECIPE, round=1))
    round_2 = first.train(start, dataclasses.replace(RECIPE, round=2))
    assert_same(second.train(start, dataclasses.replace(RECIPE, round=2)), round_2)
    assert not torch.equal(
        round_1.weights["classifier.3.weight"], round_2.weights["classifier.3.weight"]
    )
    assert_same(first.train(start, dataclasses.replace(RECIPE, round=1)), round_1)  # a retry


def test_batch_seeds_differ_across_clients_and_rounds() -> None:
    # client seeds are run_seed * 1000 + index: a sum of seed and round would collide
    seeds = {
        batch_seed(run * 1000 + index, r)
        for run in range(3)
        for index in range(4)
        for r in range(50)
    }
    assert len(seeds) == 3 * 4 * 50
    assert all(0 <= s < 2**63 for s in seeds)
    assert batch_seed(7, 3) == batch_seed(7, 3)
