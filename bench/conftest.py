"""Options and models shared by every bench suite (see bench/README.md).

``fedgate bench <suite>`` runs ``pytest bench/test_<suite>.py --benchmark-json=…`` with the
two options below; every suite must accept them, so they live here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from benchkit import MODEL_SPECS, BenchServer
from torch import nn

from fedgate.core.models import ModelSpec, build_model

QUICK_MODELS = ["cnn"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fedgate", "fedgate bench suites")
    group.addoption(
        "--fedgate-quick",
        action="store_true",
        default=False,
        help="smoke run: only the cnn model (unless --fedgate-models says otherwise), "
        "short time budgets",
    )
    group.addoption(
        "--fedgate-models",
        default="",
        help=f"comma-separated models to benchmark; available: {', '.join(MODEL_SPECS)}",
    )


def selected_models(config: pytest.Config) -> list[str]:
    """The models a run covers: ``--fedgate-models``, else cnn alone when quick, else all."""
    raw: str = config.getoption("fedgate_models")
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODEL_SPECS]
    if unknown:
        raise pytest.UsageError(
            f"unknown model(s) {', '.join(unknown)}; available: {', '.join(MODEL_SPECS)}"
        )
    if names:
        return names
    return list(QUICK_MODELS if config.getoption("fedgate_quick") else MODEL_SPECS)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "model_name" in metafunc.fixturenames:
        metafunc.parametrize("model_name", selected_models(metafunc.config))


@pytest.fixture(scope="session")
def quick(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("fedgate_quick"))


@pytest.fixture(scope="session")
def make_model() -> Callable[[str], tuple[nn.Module, ModelSpec]]:
    """Builds a model by name with seed 0, so every suite and every run starts alike."""

    def make(name: str) -> tuple[nn.Module, ModelSpec]:
        spec = MODEL_SPECS[name]
        return build_model(name, spec, seed=0), spec

    return make


@pytest.fixture(scope="session")
def bench_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchServer]:
    """The fedgate server process the suites' clients talk to (see bench_server.py)."""
    server = BenchServer(tmp_path_factory.mktemp("bench-server") / "server.log")
    try:
        yield server
    finally:
        server.close()
