"""Codeless inference against a real `fedgate serve` with real client processes, over REST
and gRPC: nothing is served before a round completes; then the best version by held-out
accuracy answers images, JSON, CSV and NPY exactly as the downloaded weights do locally;
an operator pins a version and goes back to the best; downloads come in every codec."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from fedgate.codecs import CODECS, get_codec
from fedgate.core.data import load_dataset
from fedgate.core.inference import InputSpec
from fedgate.core.models import build_model
from fedgate.core.ports import weights_hash
from fedgate.run.launch import ServerProcess, start_client, stop_process
from fedgate.web.inputs import image_input
from tests.hostile_wire import Outcome
from tests.web.images import digit_png
from tests.web.inference_wire import Wires, predictions, serving, wait_until

DIGITS = load_dataset("digits")
SPEC = InputSpec.of(DIGITS)
SERVE_ARGS = ["--min-clients", "2", "--clients-per-round", "2", "--rounds", "2"]
CLIENTS = ("grpc", "rest")


@dataclass
class Served:
    server: ServerProcess
    admin: Wires
    anonymous: Wires
    before: dict[str, Outcome]  # asked before any round completed
    history: list[dict[str, Any]]  # the completed rounds, from the operator status


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("inference")
    with serving(SERVE_ARGS, workdir) as server:
        admin, anonymous = Wires(server, server.admin_token), Wires(server, None)
        try:
            before = {
                "rest": admin.predict(
                    json.dumps(DIGITS.x_test[0].tolist()).encode(), "application/json"
                ),
                "grpc": admin.grpc_tensor(DIGITS.x_test[0]),
                "deployed": admin.get("/api/v1/models/deployed"),
                "grpc deployed": admin.grpc_deployed(),
            }
            clients = [
                start_client(
                    server, transport, ["--index", str(i), "--of", "2"], workdir / f"{i}.log"
                )
                for i, transport in enumerate(CLIENTS)
            ]
            try:
                wait_until(lambda: server.status()["state"] == "finished", "the run to finish")
            finally:
                for client in clients:
                    stop_process(client)
            history = [r for r in server.status()["history"] if r["outcome"] == "completed"]
            yield Served(server, admin, anonymous, before, history)
        finally:
            admin.close()
            anonymous.close()


def local_probabilities(served: Served, version: int, batch: torch.Tensor) -> np.ndarray:
    """What the version's weights, downloaded and run here, say of ``batch``."""
    download = served.admin.http.get(f"/api/v1/models/{version}", params={"codec": "raw"})
    download.raise_for_status()
    model = build_model("cnn", SPEC.model_spec)
    model.load_state_dict(get_codec("raw").decode(download.content))
    model.eval()
    with torch.inference_mode():
        return torch.softmax(model(batch), dim=1).numpy()


def test_nothing_is_served_before_a_round_completes(served: Served) -> None:
    before = served.before
    assert (before["rest"].status, before["rest"].code) == ("409", "no_model_deployed")
    assert (before["deployed"].status, before["deployed"].code) == ("409", "no_model_deployed")
    for name in ("grpc", "grpc deployed"):
        assert (before[name].status, before[name].code) == (
            "FAILED_PRECONDITION",
            "no_model_deployed",
        )


def test_the_models_are_the_runs_versions_and_the_best_is_deployed(served: Served) -> None:
    listed = served.admin.get("/api/v1/models")
    assert listed.ok
    body = listed.body
    assert [m["version"] for m in body["models"]] == [0, 1, 2]
    accuracies = [r["accuracy"] for r in served.history]
    assert [m["accuracy"] for m in body["models"]] == [None, *accuracies]
    assert [m["round"] for m in body["models"]] == [0, 1, 2]
    best = 1 + max(range(2), key=lambda i: (accuracies[i], i))
    assert (body["deployed"], body["pinned"]) == (best, False)
    assert [m["deployed"] for m in body["models"]] == [v == best for v in (0, 1, 2)]
    assert body["codecs"] == list(CODECS)
    deployed = served.admin.get("/api/v1/models/deployed").body
    assert deployed == {k: body["models"][best][k] for k in deployed if k != "pinned"} | {
        "pinned": False
    }
    over_grpc = served.admin.grpc_deployed()
    assert over_grpc.ok
    assert (over_grpc.body.version, over_grpc.body.round, over_grpc.body.sha256) == (
        best,
        best,
        deployed["sha256"],
    )
    assert over_grpc.body.accuracy == deployed["accuracy"] and not over_grpc.body.pinned


def test_predictions_are_the_deployed_weights_as_run_locally(served: Served) -> None:
    batch = DIGITS.x_test[:8]
    version, classes, probabilities = predictions(
        served.admin.predict(json.dumps(batch.tolist()).encode(), "application/json")
    )
    expected = local_probabilities(served, version, batch)
    assert version == served.admin.get("/api/v1/models/deployed").body["version"]
    assert classes == expected.argmax(1).tolist()
    assert np.allclose(probabilities, expected, atol=1e-6)
    assert np.allclose(probabilities.sum(1), 1.0, atol=1e-5)
    # the whole held-out split, in two batches: the accuracy the server measured for it
    answered = [
        predictions(served.admin.predict(json.dumps(part.tolist()).encode(), "application/json"))
        for part in torch.split(DIGITS.x_test, 200)
    ]
    labels = [label for _, part, _ in answered for label in part]
    accuracy = sum(a == y for a, y in zip(labels, DIGITS.y_test.tolist(), strict=True)) / len(
        labels
    )
    assert accuracy == served.admin.get("/api/v1/models/deployed").body["accuracy"]
    grpc_version, grpc_classes, grpc_probabilities = predictions(served.admin.grpc_tensor(batch))
    assert (grpc_version, grpc_classes) == (version, classes)
    assert np.allclose(grpc_probabilities, probabilities, atol=1e-6)


def test_pictures_and_batch_files_get_predictions(served: Served) -> None:
    digit = DIGITS.x_test[3]
    picture = digit_png(digit, dark_on_white=True)
    version, classes, probabilities = predictions(served.admin.predict(picture, "image/png"))
    local = local_probabilities(served, version, torch.from_numpy(image_input(picture, SPEC)))
    assert classes == local.argmax(1).tolist() and np.allclose(probabilities, local, atol=1e-6)
    for outcome in (
        served.admin.predict_file(picture, "image/png", "digit.png"),
        served.admin.predict_file(picture, "application/octet-stream", "digit"),
        served.admin.grpc_image(picture),
    ):
        assert predictions(outcome)[:2] == (version, classes), outcome
    rows = DIGITS.x_test[:3].reshape(3, 64).numpy()
    table = "\n".join(",".join(f"{v:g}" for v in row) for row in rows).encode()
    npy = io.BytesIO()
    np.save(npy, DIGITS.x_test[:3].numpy())
    expected = local_probabilities(served, version, DIGITS.x_test[:3]).argmax(1).tolist()
    for outcome in (
        served.admin.predict(table, "text/csv"),
        served.admin.predict(npy.getvalue(), "application/x-npy"),
        served.admin.predict_file(table, "text/csv", "batch.csv"),
    ):
        assert outcome.ok, outcome
        answer = list(csv.DictReader(io.StringIO(outcome.body)))
        assert [int(r["class"]) for r in answer] == expected
        assert {int(r["model_version"]) for r in answer} == {version}
        assert list(answer[0]) == ["row", "model_version", "class", *(f"p{k}" for k in range(10))]
    as_json = served.admin.predict(table, "text/csv", accept="application/json")
    assert predictions(as_json)[1] == expected
    as_csv = served.admin.predict(picture, "image/png", accept="text/csv")
    assert as_csv.ok and as_csv.body.startswith("row,model_version,class,p0")


def test_an_operator_pins_a_version_and_goes_back_to_the_best(served: Served) -> None:
    best = served.admin.get("/api/v1/models/deployed").body["version"]
    other = 3 - best  # the other trained version
    pinned = served.admin.post(f"/api/v1/models/{other}/deploy")
    assert pinned.ok and (pinned.body["version"], pinned.body["pinned"]) == (other, True)
    one = json.dumps(DIGITS.x_test[0].tolist()).encode()
    assert predictions(served.admin.predict(one, "application/json"))[0] == other
    assert predictions(served.admin.grpc_tensor(DIGITS.x_test[0]))[0] == other
    assert served.admin.get("/api/v1/models").body["pinned"] is True
    back = served.admin.post("/api/v1/models/best/deploy")
    assert back.ok and (back.body["version"], back.body["pinned"]) == (best, False)
    assert predictions(served.admin.predict(one, "application/json"))[0] == best
    refusals = {
        "/api/v1/models/9/deploy": ("404", "not_found"),
        "/api/v1/models/latest/deploy": ("400", "bad_request"),
        "/api/v1/models/%C2%B2/deploy": ("400", "bad_request"),  # "²": a digit, no number
    }
    for path, expected in refusals.items():
        outcome = served.admin.post(path)
        assert (outcome.status, outcome.code) == expected, path
    assert served.anonymous.post("/api/v1/models/best/deploy").status == "401"


def test_every_version_downloads_in_every_codec(served: Served) -> None:
    listed = {m["version"]: m["sha256"] for m in served.admin.get("/api/v1/models").body["models"]}
    for name, codec in CODECS.items():
        response = served.admin.http.get("/api/v1/models/2", params={"codec": name})
        assert response.status_code == 200, (name, response.text)
        assert response.headers["content-type"] == codec.media_type
        disposition = response.headers["content-disposition"]
        assert disposition == f'attachment; filename="fedgate-{served.server.run_id}-v2.{name}"'
        assert response.headers["x-fedgate-model-sha256"] == listed[2]
        decoded = codec.decode(response.content)
        if not codec.lossy:
            assert weights_hash(decoded) == listed[2], name
    unknown = served.admin.get("/api/v1/models/2", codec="gzip")
    assert (unknown.status, unknown.code) == ("415", "unknown_codec")
    missing = served.admin.get("/api/v1/models/7")
    assert (missing.status, missing.code) == ("404", "not_found")
    # a client's call to the same path still reaches the clients' route
    client = served.admin.http.get(
        "/api/v1/models/0", headers={"X-Fedgate-Client-Id": "nobody", "Authorization": "Bearer x"}
    )
    assert (client.status_code, client.json()["code"]) == (404, "unknown_client")


def test_nothing_without_a_token(served: Served) -> None:
    one = json.dumps(DIGITS.x_test[0].tolist()).encode()
    for outcome in (
        served.anonymous.predict(one, "application/json"),
        served.anonymous.get("/api/v1/models"),
        served.anonymous.get("/api/v1/models/deployed"),
        served.anonymous.get("/api/v1/models/1"),
    ):
        assert (outcome.status, outcome.code) == ("401", "unauthorized"), outcome
    for outcome in (
        served.anonymous.grpc_tensor(DIGITS.x_test[0]),
        served.anonymous.grpc_deployed(),
    ):
        assert (outcome.status, outcome.code) == ("UNAUTHENTICATED", "unauthorized"), outcome
    stranger = Wires(served.server, "not-a-token")
    try:
        assert stranger.predict(one, "application/json").status == "401"
    finally:
        stranger.close()
