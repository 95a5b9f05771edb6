"""Every REST route of `fedgate serve` (the adapter's and the web side's) runs on the
event loop: FastAPI runs a plain ``def`` endpoint or dependency on a worker thread, a hop
per request that cost a 10-client REST server 8 % of its loop's time (py-spy, see
bench/README.md); nothing they do blocks."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.memory_store import InMemoryRunStore
from fedgate.transport.rest.app import create_app
from fedgate.web.app import web_extensions
from fedgate.web.context import WebContext
from tests.conftest import tiny_model


def runs_on_the_loop(call: Any) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one (FastAPI's security
    schemes)."""
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None)  # noqa: B004 - the method, not callability
    )


def calls(dependant: Dependant) -> Iterator[tuple[str, Any]]:
    for dependency in dependant.dependencies:
        yield getattr(dependency.call, "__qualname__", repr(dependency.call)), dependency.call
        yield from calls(dependency)


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """The API routes, through the routers included in the app (and in each other)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:
            yield from api_routes(router.routes)
        elif isinstance(inner := getattr(route, "routes", None), list):
            yield from api_routes(inner)


def test_no_route_runs_an_endpoint_or_dependency_on_a_worker_thread() -> None:
    federation = Federation(tiny_model(), RunConfig(rounds=1))
    app = create_app(federation, admin_token="t", max_update_bytes=1 << 20)
    context = WebContext(federation, runs=InMemoryRunStore(), admin_token="t")
    for install in web_extensions(context).rest:
        install(app)
    routes = list(api_routes(app.routes))
    assert len(routes) > 30  # the client, operator, admin, dashboard and runs routes
    on_threads = {
        f"{route.path}: {name}"
        for route in routes
        for name, call in [(route.name, route.endpoint), *calls(route.dependant)]
        if call is not None and not runs_on_the_loop(call)
    }
    assert not on_threads, sorted(on_threads)
