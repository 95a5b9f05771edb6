"""An unplanned failure leaves either edge as a bare error id, never its internals.

The federation below fails the way a bug would (a plain exception whose message holds a
path and an address); both adapters must answer 500 / INTERNAL with an id that the
server log also names, and the server must go on serving.
"""

from __future__ import annotations

import logging
import re

import grpc
import httpx
import pytest

from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import HeartbeatAck, JoinRequest
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.grpc.proto import fedgate_pb2_grpc as pb_grpc
from fedgate.transport.grpc.status import ERROR_CODE_KEY
from tests.conftest import tiny_model
from tests.transport.conftest import ADMIN_TOKEN

SECRET = "/usr/lib/python3/site-packages/secret.py at 0x7f3a2b1c"
ERROR_ID = re.compile(r"id ([0-9a-f]{16})")


class BuggyFederation(Federation):
    async def heartbeat(self, client_id: str, token: str) -> HeartbeatAck:
        self.authenticate(client_id, token)
        raise RuntimeError(f"bug in {SECRET}")


def logged_ids(caplog: pytest.LogCaptureFixture) -> set[str]:
    logged = (re.search(r"internal error ([0-9a-f]{16})", r.getMessage()) for r in caplog.records)
    return {found.group(1) for found in logged if found}


async def test_a_bug_leaves_both_edges_as_an_error_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="fedgate.internal")
    federation = BuggyFederation(tiny_model(), RunConfig(rounds=1, min_clients=1))
    settings = GatewaySettings(grpc_port=0, http_port=0, admin_token=ADMIN_TOKEN)
    async with Gateway(federation, settings) as gateway:
        ack = await federation.join(JoinRequest("c", "raw", 1))
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            response = await http.post(
                f"/api/v1/clients/{ack.client_id}/heartbeat",
                headers={"Authorization": f"Bearer {ack.token}"},
            )
            assert response.status_code == 500
            problem = response.json()
            assert problem["code"] == "server_error"
            assert SECRET not in response.text and "Traceback" not in response.text
            rest_id = ERROR_ID.search(problem["detail"])
            assert rest_id is not None
            assert (await http.get("/healthz")).status_code == 200  # still serving

        async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
            stub = pb_grpc.FederationStub(channel)
            meta = (("fedgate-client-id", ack.client_id), ("authorization", f"Bearer {ack.token}"))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Heartbeat(pb.HeartbeatRequest(), metadata=meta)
            error = caught.value
            assert error.code() is grpc.StatusCode.INTERNAL
            details = error.details() or ""
            assert SECRET not in details and "Traceback" not in details
            codes = [v for k, v in error.trailing_metadata() or () if k == ERROR_CODE_KEY]
            assert codes == ["server_error"]
            grpc_id = ERROR_ID.search(details)
            assert grpc_id is not None

    assert {rest_id.group(1), grpc_id.group(1)} <= logged_ids(caplog)
    assert any(SECRET in (r.exc_text or str(r.exc_info)) for r in caplog.records)
