"""The issue's "done when": a generated CIFAR-10 directory, one federated round of ResNet-18
on it, a real `fedgate serve` and two `fedgate client` processes, one over gRPC and one over
REST (`fedgate sim --transport mixed --data-dir DIR`), as small as a round can be."""

from __future__ import annotations

from pathlib import Path

from fedgate.core.models import ModelSpec, build_model
from fedgate.core.training import state_dict_copy
from fedgate.run.sim_config import SimConfig
from fedgate.run.simulation import run_simulation
from tests.core.cifar_files import write_cifar10


def model_bytes() -> int:
    model = build_model("resnet18", ModelSpec(in_channels=3, num_classes=10, image_size=32))
    return sum(t.numel() * t.element_size() for t in state_dict_copy(model).values())


def test_one_round_of_resnet18_on_cifar10_over_grpc_and_rest(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "data", per_batch=4, test=10)  # 20 training images, 10 test
    config = SimConfig(
        clients=2,
        rounds=1,
        transport="mixed",  # client 0 over gRPC, client 1 over REST
        dataset="cifar10",
        model="resnet18",
        data_dir=str(tmp_path / "data"),
        batch_size=8,
        local_epochs=1,
    )
    document = run_simulation(config)
    (round_,) = document["rounds"]
    assert (round_["outcome"], round_["participants"], round_["num_examples"]) == (
        "completed",
        2,
        20,
    )
    assert round_["accuracy"] is not None and round_["loss"] is not None
    traffic = document["bytes_by_transport"]
    assert set(traffic) == {"grpc", "rest"}
    # the whole model went down and came back up once on each transport (raw codec: its
    # float32 bytes plus framing)
    size = model_bytes()
    assert all(
        size <= t["up"] < size * 1.01 and size <= t["down"] < size * 1.01 for t in traffic.values()
    )
    assert sorted(c["transport"] for c in document["clients"]) == ["grpc", "rest"]
    assert all(c["rounds_completed"] == 1 for c in document["clients"])
    assert [c["examples"] for c in document["partition"]["per_client"]] == [10, 10]
    assert document["partition"]["classes"][0] == "airplane"
