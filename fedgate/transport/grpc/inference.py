"""The gRPC ``fedgate.v1.Inference`` service: predictions from a run's deployed model
version, as REST's ``POST /api/v1/predict`` gives them (see the .proto for who may call).

The servicer is thin: it checks the caller from metadata, takes a rate token for the
peer, and hands the input to the `fedgate.core.inference.Deployment` (decoded on the
deployment's thread). Images are decoded by the function it is given (the web layer's,
with Pillow): the transport decodes no pictures itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedgate.core.accounts import Principal, Role
from fedgate.core.inference import Deployed, Deployment, PredictionResult, as_batch
from fedgate.core.service import FederationService
from fedgate.errors import InvalidInput, NoModelDeployed
from fedgate.transport.grpc import access
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.proto import fedgate_pb2_grpc as pb_grpc
from fedgate.transport.grpc.server import mapped

ImageDecoder = Callable[[bytes], np.ndarray]  # a PNG or JPEG to (1, C, H, W) in [0, 1]
ANONYMOUS = Principal("anonymous", Role.VIEWER)
MAX_DIMENSIONS = 4  # (N, C, H, W)


class InferenceServicer(pb_grpc.InferenceServicer):
    def __init__(
        self,
        deployment: Deployment,
        federation: FederationService,
        *,
        admin_token: str,
        decode_image: ImageDecoder,
        public_predict: bool = False,
        public_read: bool = False,
    ) -> None:
        self.deployment = deployment
        self.federation = federation
        self.admin_token = admin_token
        self.decode_image = decode_image
        self.public_predict = public_predict
        self.public_read = public_read

    def _allow(self, context: Any, public: bool) -> Principal:
        """Anyone on a public server (a credential given is still checked), else a viewer."""
        if public and not access.bearer(context):
            return ANONYMOUS
        return access.authorise(self.federation, context, Role.VIEWER, self.admin_token)

    @mapped
    async def Predict(self, request: pb.PredictRequest, context: Any) -> pb.PredictReply:  # noqa: N802
        self._allow(context, self.public_predict)
        self.deployment.admit(access.peer_host(context))
        spec = self.deployment.spec
        which = request.WhichOneof("input")
        if which == "image":
            image = request.image
            result = await self.deployment.predict(lambda: as_batch(self.decode_image(image), spec))
        elif which == "tensor":
            tensor = request.tensor
            if len(tensor.values) > spec.max_batch * spec.numel:  # before any conversion
                raise InvalidInput(f"a batch holds at most {spec.max_batch} inputs")
            result = await self.deployment.predict(
                lambda: as_batch(tensor_from_proto(tensor), spec)
            )
        else:
            raise InvalidInput("a PredictRequest carries an image or a tensor")
        return result_to_proto(result)

    @mapped
    async def GetDeployed(  # noqa: N802 - named by the .proto
        self, request: pb.GetDeployedRequest, context: Any
    ) -> pb.DeployedModel:
        self._allow(context, self.public_read)
        deployed = await self.deployment.deployed()
        if deployed is None:
            raise NoModelDeployed("no model is deployed yet: no round has completed")
        return deployed_to_proto(deployed)


def tensor_from_proto(tensor: pb.InputTensor) -> torch.Tensor:
    """The values in their shape; a shape that does not hold exactly the values sent is
    refused before anything is reshaped."""
    shape = list(tensor.shape[: MAX_DIMENSIONS + 1])
    if (
        not 1 <= len(shape) <= MAX_DIMENSIONS
        or any(n < 1 for n in shape)
        or math.prod(shape) != len(tensor.values)
    ):
        raise InvalidInput(
            f"an input tensor of shape {shape[:8]} cannot hold its {len(tensor.values)} values"
        )
    values = np.asarray(tensor.values, dtype=np.float32)
    return torch.from_numpy(values.reshape(shape))


def result_to_proto(result: PredictionResult) -> pb.PredictReply:
    return pb.PredictReply(
        model_version=result.model.version,
        predictions=[
            pb.Prediction(label=p.label, probabilities=p.probabilities) for p in result.predictions
        ],
    )


def deployed_to_proto(deployed: Deployed) -> pb.DeployedModel:
    info = deployed.model
    reply = pb.DeployedModel(
        version=info.version, round=info.round, sha256=info.sha256, pinned=deployed.pinned
    )
    if math.isfinite(info.accuracy):
        reply.accuracy = info.accuracy
    if math.isfinite(info.loss):
        reply.loss = info.loss
    return reply


def add_inference_servicer(
    server: Any,
    deployment: Deployment,
    federation: FederationService,
    **options: Any,
) -> None:
    """Serve ``fedgate.v1.Inference`` on ``server`` (a `grpc.aio.Server` not yet started);
    ``options`` go to `InferenceServicer`."""
    servicer = InferenceServicer(deployment, federation, **options)
    pb_grpc.add_InferenceServicer_to_server(servicer, server)
