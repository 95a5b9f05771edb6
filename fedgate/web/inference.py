"""Codeless inference and the run's model versions, over REST (and the gRPC servicer's
hookup): what the dashboard's models panel and its /predict page call.

- ``POST /api/v1/predict``: an image (PNG, JPEG), a JSON array, a CSV or an NPY file, as
  the body or as a multipart form's ``file`` field; answers the deployed version's classes
  and probabilities (JSON; a CSV for CSV and NPY uploads, or when ``Accept: text/csv``).
  A viewer's credential, or none with ``--public-predict`` / ``--public-dashboard``;
  rate-limited per peer address. Refusals are problems: 415 unknown media type, 413 too
  large a body or image, 400 not decodable or the wrong shape (``invalid_input``), 409
  nothing deployed, 429 too many calls.
- ``GET /api/v1/models``, ``GET /api/v1/models/deployed``, ``GET
  /api/v1/models/{version}?codec=NAME`` (a download): a reader's (see
  `fedgate.web.context.Reader`); ``POST /api/v1/models/{version}/deploy``: an operator's.

``/api/v1/models/{version}`` is also the federation clients' model route: a call that
carries ``X-Fedgate-Client-Id`` passes these routes by, to that one (`ClientsPassBy`).
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Message, Scope

from fedgate.codecs import codec_names, get_codec
from fedgate.core.accounts import Principal, Role, audit
from fedgate.core.inference import Deployed, Deployment, PredictionResult, as_batch
from fedgate.core.ports import ModelInfo
from fedgate.errors import BadRequest, InvalidInput, NoModelDeployed
from fedgate.transport.grpc.inference import add_inference_servicer
from fedgate.transport.rest.access import Credential, Operator, peer_host
from fedgate.transport.rest.context import current_context
from fedgate.transport.rest.headers import CLIENT_HEADER, CODEC_HEADER, MODEL_VERSION_HEADER
from fedgate.transport.rest.router import read_body
from fedgate.web.context import ANONYMOUS, CurrentWeb, Reader, WebContext, current_web
from fedgate.web.inputs import (
    MEDIA_TYPES,
    MULTIPART,
    Body,
    Kind,
    body_limit,
    decode,
    image_input,
    kind_of,
    media_type_of,
    sniff,
)

log = logging.getLogger("fedgate.web")
SHA256_HEADER = "X-Fedgate-Model-Sha256"
MAX_FORM_FIELD_BYTES = 64 << 10  # a multipart form's fields other than the file
MAX_INT64 = 2**63 - 1


class ClientsPassBy(APIRoute):
    """A route that a federation client's call (it carries ``X-Fedgate-Client-Id``) does
    not match, so that it reaches the client route of the same path behind it."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        client_header = CLIENT_HEADER.lower().encode()
        if match is not Match.NONE and any(k == client_header for k, _ in scope["headers"]):
            return Match.NONE, {}
        return match, child


router = APIRouter(prefix="/api/v1", tags=["inference"])
downloads = APIRouter(prefix="/api/v1", tags=["inference"], route_class=ClientsPassBy)


# ---- JSON ----------------------------------------------------------------------------------


class PredictionJson(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    label: int = Field(alias="class", description="the most probable class")
    probabilities: list[float] = Field(description="one per class, summing to 1")


class PredictReply(BaseModel):
    model_version: int
    predictions: list[PredictionJson]


class ModelJson(BaseModel):
    version: int
    round: int = Field(description="the round that published it (0: the initial model)")
    accuracy: float | None = Field(description="held-out accuracy (null: not evaluated)")
    loss: float | None
    sha256: str
    deployed: bool


class ModelList(BaseModel):
    run_id: str
    deployed: int | None = Field(description="the version predictions come from (null: none)")
    pinned: bool = Field(description="deployed by an operator; false: the best so far")
    codecs: list[str] = Field(description="what GET /api/v1/models/{version}?codec= takes")
    models: list[ModelJson]


class DeployedJson(BaseModel):
    version: int
    round: int
    accuracy: float | None
    loss: float | None
    sha256: str
    pinned: bool = Field(description="deployed by an operator; false: the best so far")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _model_json(info: ModelInfo, deployed: Deployed | None) -> ModelJson:
    on = deployed is not None and deployed.model.version == info.version
    return ModelJson(
        version=info.version,
        round=info.round,
        accuracy=_finite(info.accuracy),
        loss=_finite(info.loss),
        sha256=info.sha256,
        deployed=on,
    )


def _deployed_json(deployed: Deployed) -> DeployedJson:
    info = deployed.model
    return DeployedJson(
        version=info.version,
        round=info.round,
        accuracy=_finite(info.accuracy),
        loss=_finite(info.loss),
        sha256=info.sha256,
        pinned=deployed.pinned,
    )


# ---- who may predict -----------------------------------------------------------------------


async def predictor(request: Request, token: Credential) -> Principal:
    """Anyone when the server says so (``--public-predict`` or ``--public-dashboard``;
    a credential given is still checked), else a viewer or above."""
    web = current_web(request)
    if (web.public_predict or web.public_dashboard) and not token:
        return ANONYMOUS
    return web.federation.accounts.authorise(token, Role.VIEWER, bootstrap=web.admin_token)


Predictor = Annotated[Principal, Depends(predictor)]


def deployment_of(web: WebContext) -> Deployment:
    if web.deployment is None:
        raise NoModelDeployed("this server serves no inference (it runs without a store)")
    return web.deployment


# ---- predict -------------------------------------------------------------------------------

PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            **{media: {"schema": {"type": "string", "format": "binary"}} for media in MEDIA_TYPES},
            "application/json": {
                "schema": {"type": "array", "items": {}, "description": "an input or a batch"}
            },
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}
PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "Predictions (JSON, or CSV)."}
}


@router.post(
    "/predict",
    response_model=PredictReply,
    openapi_extra=PREDICT_BODY,
    responses=PREDICT_RESPONSES,
)
async def predict(
    request: Request,
    response: Response,
    caller: Predictor,
    web: CurrentWeb,
    accept: Annotated[str, Header()] = "",
) -> PredictReply | Response:
    """The deployed model's class and probabilities for each input sent: an image
    (``image/png``, ``image/jpeg``: resized and normalised as the data set's images), a
    JSON array of the model's input shape or a batch of them, a CSV of flattened inputs
    (``text/csv``) or an NPY array (``application/x-npy``); or any of them as the ``file``
    field of a ``multipart/form-data`` upload."""
    deployment = deployment_of(web)
    deployment.admit(peer_host(request))  # before a byte of the body is read
    media_type = media_type_of(request.headers.get("content-type", ""))
    limit = body_limit(media_type, deployment.spec)  # 415 for what is not taken
    data = await read_body(request, limit, current_context(request).upload_timeouts)
    body = Body(data, media_type)
    if media_type == MULTIPART:
        body = await file_part(request, data)
    kind = sniff(body) if media_type == MULTIPART else kind_of(media_type)
    spec = deployment.spec
    result = await deployment.predict(lambda: as_batch(decode(body.data, kind, spec), spec))
    version = str(result.model.version)
    if wants_csv(accept, kind):
        return Response(
            predictions_csv(result), media_type="text/csv", headers={MODEL_VERSION_HEADER: version}
        )
    response.headers[MODEL_VERSION_HEADER] = version
    return PredictReply(
        model_version=result.model.version,
        predictions=[
            PredictionJson.model_validate({"class": p.label, "probabilities": p.probabilities})
            for p in result.predictions
        ],
    )


async def file_part(request: Request, data: bytes) -> Body:
    """The ``file`` field of a multipart form already read (``data``), and its type."""

    async def replay() -> Message:
        return {"type": "http.request", "body": data, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=1, max_fields=8, max_part_size=MAX_FORM_FIELD_BYTES
        )
    except HTTPException as error:  # Starlette's word for a malformed form
        raise InvalidInput(f"the multipart form cannot be read: {error.detail}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("a multipart upload carries its input as a file field 'file'")
        content = await upload.read()
        return Body(content, media_type_of(upload.content_type or ""), upload.filename or "")
    finally:
        await form.close()


def wants_csv(accept: str, kind: Kind) -> bool:
    """CSV if asked for it alone, JSON if asked for it alone, else by what was sent."""
    wanted = {part.partition(";")[0].strip().lower() for part in accept.split(",")} - {""}
    if wanted == {"text/csv"}:
        return True
    if wanted == {"application/json"}:
        return False
    return kind.batch


def predictions_csv(result: PredictionResult) -> str:
    """One row per input: its index, the model version, the class, each probability."""
    classes = len(result.predictions[0].probabilities) if result.predictions else 0
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["row", "model_version", "class", *(f"p{k}" for k in range(classes))])
    for row, prediction in enumerate(result.predictions):
        probabilities = (f"{p:.6g}" for p in prediction.probabilities)
        writer.writerow([row, result.model.version, prediction.label, *probabilities])
    return out.getvalue()


# ---- model versions ------------------------------------------------------------------------


@router.get("/models", response_model=ModelList)
async def list_models(reader: Reader, web: CurrentWeb) -> ModelList:
    """The versions the run has published (oldest first), with the round that published
    each and its held-out accuracy and loss, and which one predictions come from. Download
    one with ``GET /api/v1/models/{version}?codec=NAME`` (a reader's credential, no
    client id): the weights in that codec's media type, as a file."""
    deployment = deployment_of(web)
    models, deployed = await deployment.models(), await deployment.deployed()
    return ModelList(
        run_id=deployment.run_id,
        deployed=None if deployed is None else deployed.model.version,
        pinned=deployed is not None and deployed.pinned,
        codecs=codec_names(),
        models=[_model_json(info, deployed) for info in models],
    )


@router.get("/models/deployed", response_model=DeployedJson)
async def get_deployed(reader: Reader, web: CurrentWeb) -> DeployedJson:
    """The version predictions come from: the one an operator deployed, else the best by
    held-out accuracy so far (followed as rounds complete). 409 while there is none."""
    deployed = await deployment_of(web).deployed()
    if deployed is None:
        raise NoModelDeployed("no model is deployed yet: no round has completed")
    return _deployed_json(deployed)


@router.post("/models/{version}/deploy", response_model=DeployedJson)
async def deploy(
    operator: Operator,
    web: CurrentWeb,
    version: Annotated[str, Path(max_length=20, description="a version, or 'best'")],
) -> DeployedJson:
    """Serve predictions from ``version`` until told otherwise; ``best`` goes back to
    the best by held-out accuracy, followed as rounds complete."""
    chosen = None if version == "best" else _version(version)
    deployed = await deployment_of(web).deploy(chosen)
    what = "the best version" if chosen is None else f"version {chosen}"
    audit(operator, f"deployed {what} (model version {deployed.model.version}) for inference")
    return _deployed_json(deployed)


def _version(text: str) -> int:
    # isdecimal, not isdigit: "²" is a digit that int() refuses (a 500, found by schemathesis)
    if not (text.isascii() and text.isdecimal()) or int(text) > MAX_INT64:
        raise BadRequest(f"a model version is a number or 'best', not {text[:20]!r}")
    return int(text)


@downloads.get("/models/{version}", response_class=Response, include_in_schema=False)
async def download_model(
    reader: Reader,
    web: CurrentWeb,
    version: Annotated[int, Path(ge=0, le=MAX_INT64)],
    codec: Annotated[str, Query(max_length=64)] = "raw",
) -> Response:
    """A version's weights in ``codec`` (see `list_models`), as a file to save."""
    deployment, chosen = deployment_of(web), get_codec(codec)  # an unknown codec is 415
    model = await deployment.load(version)
    payload = await deployment.offload(chosen.encode, model.weights)
    filename = f"fedgate-{deployment.run_id}-v{version}.{chosen.name.replace(':', '-')}"
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        MODEL_VERSION_HEADER: str(version),
        CODEC_HEADER: chosen.name,
        SHA256_HEADER: model.sha256,
    }
    return Response(payload, media_type=chosen.media_type, headers=headers)


# ---- installers (the names `fedgate.web.app` looks for) ------------------------------------


def install(app: FastAPI, context: WebContext) -> None:
    """The routes above, ahead of the app's own: ``/models/deployed`` and the operators'
    downloads share their path with the clients' ``/models/{version}``."""
    before = len(app.router.routes)
    app.include_router(router)
    app.include_router(downloads)
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[0:0] = added


def add_grpc(server: Any, context: WebContext) -> None:
    """The gRPC ``fedgate.v1.Inference`` service, on the same deployment."""
    if context.deployment is None:
        log.info("gRPC: no inference service (the server runs without a store)")
        return
    add_inference_servicer(
        server,
        context.deployment,
        context.federation,
        admin_token=context.admin_token,
        decode_image=functools.partial(image_input, spec=context.deployment.spec),
        public_predict=context.public_predict or context.public_dashboard,
        public_read=context.public_dashboard,
    )
