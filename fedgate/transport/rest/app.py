"""The REST adapter's FastAPI application: client, operator and admin routes, health,
OpenAPI at /docs. `fedgate.transport.rest.server` serves it; tests may build one around
any `FederationService` and drive it in-process."""

from __future__ import annotations

from fastapi import FastAPI

import fedgate
from fedgate.core.service import FederationService
from fedgate.transport.limits import DEFAULT_UPLOAD_TIMEOUTS, UploadTimeouts
from fedgate.transport.rest import admin, operator, router
from fedgate.transport.rest.context import RestContext, install_context
from fedgate.transport.rest.problem_handlers import install_problem_handlers


def create_app(
    federation: FederationService,
    *,
    admin_token: str,
    max_update_bytes: int,
    upload_timeouts: UploadTimeouts = DEFAULT_UPLOAD_TIMEOUTS,
) -> FastAPI:
    app = FastAPI(
        title="fedgate",
        version=fedgate.__version__,
        description=(
            "Federated learning over REST. Every operation mirrors the gRPC services "
            "`fedgate.v1.Federation` and `fedgate.v1.Operator`. Errors are "
            "`application/problem+json` with a stable `code`."
        ),
    )
    install_problem_handlers(app)
    install_context(app, RestContext(federation, admin_token, max_update_bytes, upload_timeouts))
    app.include_router(router.router)
    app.include_router(operator.router)
    app.include_router(admin.router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process is up and serving."""
        return {"status": "ok", "run_id": federation.run_id, "state": federation.state.value}

    return app
