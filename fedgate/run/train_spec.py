"""What `fedgate train` trains (the centralized baseline), light enough for the CLI and the
experiment specs to build on without torch (`fedgate.run.centralized` trains it)."""

from __future__ import annotations

from dataclasses import dataclass

from fedgate.core.config import RunConfig
from fedgate.errors import ConfigError

MAX_EPOCHS = 100_000
_RECIPE = RunConfig()  # the federated defaults: the same learning rate and batch size


@dataclass(frozen=True)
class TrainSpec:
    """What `fedgate train` trains, as its flags name it."""

    dataset: str = "digits"
    model: str = "cnn"
    epochs: int = 20
    learning_rate: float = _RECIPE.learning_rate
    batch_size: int = _RECIPE.batch_size
    seed: int = 0
    data_dir: str = ""  # "": $FEDGATE_DATA_DIR (data sets read from files only)

    def validate(self) -> None:
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise ConfigError(f"epochs must be 1 to {MAX_EPOCHS}, not {self.epochs}")
        if not self.learning_rate > 0 or self.batch_size < 1:
            raise ConfigError("the learning rate must be positive and the batch size >= 1")
        from fedgate.core.models import MODELS  # noqa: PLC0415 - torch: not at parse time

        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; available: {', '.join(MODELS)}")
