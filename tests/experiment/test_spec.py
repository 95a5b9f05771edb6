"""Experiment specs: what a TOML spec expands to, and what it is refused for."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from fedgate.errors import ConfigError
from fedgate.experiment import load_spec, parse_spec
from fedgate.experiment.spec import CENTRALIZED, FEDERATED, MAX_CELLS
from fedgate.run.sim_config import SimConfig
from fedgate.run.train_spec import TrainSpec

EXPERIMENTS = Path(__file__).resolve().parents[2] / "bench" / "experiments"


def source(**sections: Any) -> dict[str, Any]:
    """A small valid spec, with ``sections`` replacing its parts."""
    spec: dict[str, Any] = {
        "name": "small",
        "fixed": {"rounds": 3, "learning_rate": 0.05},
        "grid": {"clients": [2, 3], "partition": ["iid", "dirichlet:0.5"], "seeds": [0, 1]},
        "centralized": {"epochs": 4},
    }
    spec.update(sections)
    return spec


def test_the_grid_expands_baselines_first_then_every_combination_seeds_innermost() -> None:
    cells = parse_spec(source()).cells()
    assert [(c.kind, dict(c.params)) for c in cells] == [
        (CENTRALIZED, {"seed": 0}),
        (CENTRALIZED, {"seed": 1}),
        *(
            (FEDERATED, {"clients": clients, "partition": partition, "seed": seed})
            for clients in (2, 3)
            for partition in ("iid", "dirichlet:0.5")
            for seed in (0, 1)
        ),
    ]
    assert cells[0].config == TrainSpec(epochs=4, learning_rate=0.05, seed=0)
    assert cells[-1].config == SimConfig(
        clients=3, partition="dirichlet:0.5", seed=1, rounds=3, learning_rate=0.05
    )
    assert len({cell.id for cell in cells}) == len(cells)
    assert cells[-1].id.startswith("clients3-dirichlet_0.5-seed1-")
    assert cells[0].id.startswith("centralized-seed0-")


def test_the_committed_specs_have_the_reference_shape() -> None:
    for name, seeds, model in (("digits-small", 2, "cnn"), ("cifar10-resnet18", 1, "resnet18")):
        spec = load_spec(EXPERIMENTS / f"{name}.toml")
        cells = spec.cells()
        federated = [c for c in cells if c.kind == FEDERATED]
        assert spec.name == name
        assert spec.target_accuracy is not None
        assert {dict(c.params)["clients"] for c in federated} == {2, 3, 5}
        assert {dict(c.params)["partition"] for c in federated} == {"iid", "dirichlet:0.5"}
        assert len(federated) == 3 * 2 * seeds
        assert [c.kind for c in cells[:seeds]] == [CENTRALIZED] * seeds
        assert all(c.config.model == model for c in cells)
    cifar = load_spec(EXPERIMENTS / "cifar10-resnet18.toml")
    assert cifar.fixed["rounds"] == 50 and cifar.centralized is not None
    assert cifar.centralized.epochs == 50 and cifar.fixed["dataset"] == "cifar10"


def test_a_cells_id_follows_its_parameters_and_nothing_else() -> None:
    base = parse_spec(source()).cells()
    # stating a default changes nothing; where the data is changes nothing
    same = parse_spec(source(fixed={"rounds": 3, "learning_rate": 0.05, "codec": "raw"}))
    moved = parse_spec(source(fixed={"rounds": 3, "learning_rate": 0.05, "data_dir": "/d"}))
    assert [c.id for c in same.cells()] == [c.id for c in base]
    assert [c.id for c in moved.cells()] == [c.id for c in base]
    longer = parse_spec(source(fixed={"rounds": 4, "learning_rate": 0.05}))
    ids = [c.id for c in longer.cells()]
    assert all(a != b for a, b in zip(ids[2:], [c.id for c in base][2:], strict=True))
    assert ids[:2] == [c.id for c in base][:2]  # the baseline does not run rounds


def test_scalars_become_one_value_axes_and_whole_numbers_pass_for_floats() -> None:
    spec = parse_spec(
        {"fixed": {"learning_rate": 1, "rounds": 2}, "grid": {"clients": 4, "seeds": 7}}
    )
    (cell,) = spec.cells()
    assert isinstance(cell.config, SimConfig)
    assert cell.config.learning_rate == 1.0 and isinstance(cell.config.learning_rate, float)
    assert (cell.config.clients, cell.config.seed, cell.config.rounds) == (4, 7, 2)
    assert spec.centralized is None and spec.name == "experiment"


def test_the_baseline_takes_the_federated_recipe_unless_told_otherwise() -> None:
    spec = parse_spec(source(centralized={"epochs": 2, "batch_size": 8}))
    assert spec.centralized is not None
    assert (spec.centralized.learning_rate, spec.centralized.batch_size) == (0.05, 8)
    baseline = spec.cells()[0].config
    assert baseline == TrainSpec(epochs=2, learning_rate=0.05, batch_size=8, seed=0)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"rounds": 3}, "unknown keys rounds"),
        ({"fixed": {"round": 3}}, "[fixed] round: unknown parameter"),
        ({"fixed": {"seed": 3}}, "[fixed] seed: unknown parameter"),
        ({"fixed": {"rounds": "3"}}, "rounds must be int, not '3'"),
        ({"fixed": {"rounds": True}}, "rounds must be int, not True"),
        ({"fixed": {"rounds": 2.5}}, "rounds must be int, not 2.5"),
        ({"fixed": {"rounds": 0}}, "rounds must be > 0"),
        ({"fixed": {"clients": 2}}, "clients is both fixed and an axis"),
        ({"fixed": []}, "[fixed] must be a table"),
        ({"grid": {"clients": []}}, "[grid] clients has no values"),
        ({"grid": {"clients": [2, 2]}}, "[grid] clients repeats a value"),
        ({"grid": {"colour": ["red"]}}, "[grid] colour: unknown parameter"),
        ({"grid": {"seeds": [-1]}}, "seeds must be >= 0"),
        ({"grid": {"partition": ["dirichlet"]}}, "partition 'dirichlet' needs a number"),
        ({"grid": {"codec": ["gzip"]}}, "unknown codec 'gzip'"),
        ({"grid": {"transport": ["carrier-pigeon"]}}, "unknown transport 'carrier-pigeon'"),
        ({"grid": {"strategy": ["fedmagic"]}}, "unknown strategy 'fedmagic'"),
        ({"fixed": {"dataset": "mnist"}}, "unknown dataset 'mnist'"),
        ({"fixed": {"model": "vgg"}}, "unknown model 'vgg'"),
        ({"centralized": {}}, "[centralized] needs epochs"),
        ({"centralized": {"epochs": 0}}, "epochs must be 1 to"),
        ({"centralized": {"epochs": 2, "momentum": 0.9}}, "[centralized] momentum: unknown"),
        ({"grid": {"model": ["cnn", "resnet18"]}}, "model must be fixed, not an axis"),
        ({"target_accuracy": 1.5}, "target_accuracy must be a number in (0, 1]"),
        ({"name": 3}, "name must be text"),
    ],
)
def test_a_faulty_spec_is_refused_before_anything_runs(
    sections: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_spec(source(**sections))
    assert message in raised.value.message


def test_a_refused_cell_is_named() -> None:
    with pytest.raises(ConfigError, match=r"cell clients=2, partition=iid, codec=gzip, seed=0"):
        parse_spec(source(grid={"clients": [2], "partition": ["iid"], "codec": ["gzip"]}))


def test_a_grid_too_large_to_be_meant_is_refused() -> None:
    seeds = list(range(MAX_CELLS + 1))
    with pytest.raises(ConfigError, match="the grid has"):
        parse_spec({"grid": {"seeds": seeds}})


def test_spec_files_name_themselves_in_their_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(ConfigError, match=r"broken.toml is not valid TOML"):
        load_spec(broken)
    with pytest.raises(ConfigError, match=r"cannot read experiment spec .*absent.toml"):
        load_spec(tmp_path / "absent.toml")
    faulty = tmp_path / "faulty.toml"
    faulty.write_text('[fixed]\nrounds = "many"\n')
    with pytest.raises(ConfigError, match=r"faulty.toml: rounds must be int"):
        load_spec(faulty)
    named = tmp_path / "my-grid.toml"
    named.write_text("[grid]\nclients = [2]\n")
    spec = load_spec(named)
    assert spec.name == "my-grid"
    assert dataclasses.asdict(spec.cells()[0].config)["clients"] == 2
