"""The web side of `fedgate serve`, composed: what the gateway hands its adapters.

`web_extensions` collects each web module's installers into a
`fedgate.transport.servers.Extensions`. The modules are found by name and imported when
the extensions are built, each on its own: one that is missing (not written yet, or left
out of a slim install) is skipped with a log line and the others are served all the same.
Agreed names: ``install(app, context)`` for REST routes, ``add_grpc(server, context)`` for
gRPC servicers, ``grpc_interceptors(context)`` for interceptors (metrics).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

from fedgate.transport.servers import Extensions
from fedgate.web.context import WebContext, install_web_context

log = logging.getLogger("fedgate.web")

# the order routes go in: the dashboard's catch-nothing pages first, metrics last
WEB_MODULES = (
    "fedgate.web.dashboard",
    "fedgate.web.inference",
    "fedgate.web.runs_api",
    "fedgate.web.metrics",
)


def web_modules(names: tuple[str, ...] = WEB_MODULES) -> list[ModuleType]:
    """The web modules that import; a missing one is logged and left out."""
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as error:
            if error.name != name:
                raise  # the module is there but something it needs is not: a real fault
            log.info("web: %s is not installed; serving without it", name)
    return modules


def web_extensions(context: WebContext, names: tuple[str, ...] = WEB_MODULES) -> Extensions:
    """Every web module's REST installer (after the context is on the app), gRPC
    servicers and interceptors, over ``context``."""
    modules = web_modules(names)
    rest: list[Callable[[Any], None]] = [bound(install_web_context, context)]
    grpc: list[Callable[[Any], None]] = []
    interceptors: list[Any] = []
    for module in modules:
        if callable(install := getattr(module, "install", None)):
            rest.append(bound(install, context))
        if callable(add_grpc := getattr(module, "add_grpc", None)):
            grpc.append(bound(add_grpc, context))
        if callable(make_interceptors := getattr(module, "grpc_interceptors", None)):
            interceptors.extend(make_interceptors(context))
    return Extensions(rest=tuple(rest), grpc=tuple(grpc), grpc_interceptors=tuple(interceptors))


def bound(
    installer: Callable[[Any, WebContext], None], context: WebContext
) -> Callable[[Any], None]:
    """``installer`` with the context as its second argument: what an adapter calls."""

    def install(target: Any) -> None:
        installer(target, context)

    install.__name__ = f"{getattr(installer, '__module__', '')}.{installer.__name__}"
    return install
