"""Who may ask for predictions and see the models, over a real gateway on loopback (REST and
gRPC): a viewer by default; anyone with ``--public-predict`` (predictions only) or
``--public-dashboard`` (predictions and the models list); deploying needs an operator
always."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
import httpx
import pytest

from fedgate.core.config import RunConfig
from fedgate.core.data import load_dataset
from fedgate.core.federation import Federation
from fedgate.core.inference import Deployment, InputSpec, Predictor
from fedgate.core.memory_store import InMemoryRunStore
from fedgate.core.models import build_model
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.proto import fedgate_pb2_grpc as pb_grpc
from fedgate.web.app import web_extensions
from fedgate.web.context import WebContext

TOKEN = "inference-access-test-admin-token"
DIGITS = load_dataset("digits")
SPEC = InputSpec.of(DIGITS)
INFERENCE_ONLY = ("fedgate.web.inference",)
ONE = json.dumps(DIGITS.x_test[0].tolist()).encode()
PASSWORD = "a long enough password"


@dataclass
class Served:
    http: httpx.AsyncClient
    stub: pb_grpc.InferenceAsyncStub
    viewer: str  # a viewer's session token


@asynccontextmanager
async def inference(public_predict: bool, public_dashboard: bool) -> AsyncIterator[Served]:
    weights = dict(build_model("cnn", SPEC.model_spec, seed=0).state_dict())
    store = InMemoryRunStore()
    federation = Federation(weights, RunConfig(rounds=1), store=store)
    await federation.recorder.flush()
    deployment = Deployment(
        store,
        federation.run_id,
        Predictor("cnn", SPEC),
        published=lambda: federation.models.version,
    )
    await deployment.deploy(0)  # the initial model, so that every call can be answered
    await federation.accounts.add_user("vera", PASSWORD, "viewer")
    viewer = (await federation.accounts.login("vera", PASSWORD)).token
    context = WebContext(
        federation,
        runs=store,
        admin_token=TOKEN,
        public_dashboard=public_dashboard,
        deployment=deployment,
        public_predict=public_predict,
    )
    settings = GatewaySettings(
        grpc_port=0,
        http_port=0,
        admin_token=TOKEN,
        extensions=web_extensions(context, INFERENCE_ONLY),
    )
    async with (
        Gateway(federation, settings) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=10.0) as http,
        grpc.aio.insecure_channel(gateway.grpc_target) as channel,
    ):
        yield Served(http, pb_grpc.InferenceStub(channel), viewer)
    deployment.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def rest_status(served: Served, what: str, token: str) -> int:
    headers = bearer(token)
    if what == "predict":
        headers["Content-Type"] = "application/json"
        response = await served.http.post("/api/v1/predict", content=ONE, headers=headers)
    elif what == "deploy":
        response = await served.http.post("/api/v1/models/0/deploy", headers=headers)
    else:
        response = await served.http.get(f"/api/v1/models{what}", headers=headers)
    return response.status_code


async def grpc_status(served: Served, what: str, token: str) -> str:
    metadata = tuple((k.lower(), v) for k, v in bearer(token).items())
    try:
        if what == "predict":
            tensor = pb.InputTensor(shape=[1, 1, 8, 8], values=DIGITS.x_test[0].flatten().tolist())
            await served.stub.Predict(pb.PredictRequest(tensor=tensor), metadata=metadata)
        else:
            await served.stub.GetDeployed(pb.GetDeployedRequest(), metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return "OK"


# (public_predict, public_dashboard) -> what an anonymous caller gets
ANONYMOUS = {
    (False, False): {"predict": 401, "": 401, "/deployed": 401, "/0": 401},
    (True, False): {"predict": 200, "": 401, "/deployed": 401, "/0": 401},
    (False, True): {"predict": 200, "": 200, "/deployed": 200, "/0": 200},
}


@pytest.mark.parametrize(("public_predict", "public_dashboard"), list(ANONYMOUS))
async def test_who_may_predict_and_read_the_models(
    public_predict: bool, public_dashboard: bool
) -> None:
    async with inference(public_predict, public_dashboard) as served:
        for what, status in ANONYMOUS[public_predict, public_dashboard].items():
            assert await rest_status(served, what, "") == status, what
            assert await rest_status(served, what, served.viewer) == 200, what
            assert await rest_status(served, what, "wrong") == 401, what  # never ignored
        assert await rest_status(served, "deploy", "") == 401
        assert await rest_status(served, "deploy", served.viewer) == 403
        assert await rest_status(served, "deploy", TOKEN) == 200
        anonymous_grpc = {
            "predict": "OK" if public_predict or public_dashboard else "UNAUTHENTICATED",
            "deployed": "OK" if public_dashboard else "UNAUTHENTICATED",
        }
        for call, code in anonymous_grpc.items():
            assert await grpc_status(served, call, "") == code, call
            assert await grpc_status(served, call, served.viewer) == "OK", call
            assert await grpc_status(served, call, "wrong") == "UNAUTHENTICATED", call
