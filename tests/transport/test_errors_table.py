"""The one error table: every fedgate error has a row, both adapters read it, and the
README's errors table is what it renders."""

from __future__ import annotations

import ast
import asyncio
import difflib
import functools
import importlib
import runpy
import sys
from http import HTTPStatus
from pathlib import Path

import grpc
import httpx
import pytest

from fedgate import errors
from fedgate.core.config import RunConfig
from fedgate.core.federation import Federation
from fedgate.core.messages import JoinRequest
from fedgate.gateway.server import Gateway, GatewaySettings
from fedgate.transport import errors_table as table
from fedgate.transport.connect import connect
from fedgate.transport.connection_limits import ConnectionLimits
from fedgate.transport.grpc import status as grpc_status
from fedgate.transport.rest import problems
from tests.conftest import tiny_model

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fedgate"
TOOL = runpy.run_path(str(ROOT / "tools" / "errors_table.py"))
E = errors


def base_names(node: ast.ClassDef) -> set[str]:
    return {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}


def import_every_error_module() -> None:
    """Import each fedgate module whose source defines a FedgateError subclass, however
    indirect, so `FedgateError.__subclasses__()` sees every one (not only those some
    earlier test happened to import)."""
    names = {cls.__name__ for cls in table.error_classes()}
    classes: list[tuple[str, ast.ClassDef]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        tree = ast.parse(path.read_text())
        classes += [(module, n) for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    modules: set[str] = set()
    while found := [(m, n) for m, n in classes if n.name not in names and base_names(n) & names]:
        names.update(n.name for _, n in found)
        modules.update(m for m, _ in found)
    for module in sorted(modules):
        importlib.import_module(module)


@functools.cache
def all_error_classes() -> list[type[errors.FedgateError]]:
    import_every_error_module()
    # the package's own: a checkout's tools (bench/benchrun.py's BenchFailed) never cross a wire
    return [c for c in table.error_classes() if c.__module__.split(".")[0] == "fedgate"]


def instance(cls: type[errors.FedgateError]) -> errors.FedgateError:
    """An error of class ``cls`` as a client would rebuild it (any constructor)."""
    error = cls.__new__(cls)
    errors.FedgateError.__init__(error, "message")
    return error


def test_every_fedgate_error_resolves_to_a_row() -> None:
    classes = all_error_classes()
    assert {cls.__name__ for cls in classes} >= set(table.INTERNAL_ONLY)  # no stale entry
    silent = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in classes
        if cls is not errors.FedgateError
        and table.row_for(cls) is table.CATCH_ALL
        and cls.__name__ not in table.INTERNAL_ONLY
    ]
    assert silent == [], f"no row in fedgate/transport/errors_table.py for {silent}"
    internal = [c for c in classes if c.__name__ in table.INTERNAL_ONLY]
    assert all(table.row_for(c) is table.CATCH_ALL for c in internal)


def test_every_wire_error_comes_back_as_a_class_of_its_row() -> None:
    """A client rebuilds an error from its code: that class must have the same statuses
    (a subclass defined outside errors.py travels as the errors.py class it inherits from)."""
    for cls in all_error_classes():
        if cls.__name__ in table.INTERNAL_ONLY:
            continue
        assert cls.code in errors.ERRORS_BY_CODE, f"{cls.__qualname__}: {cls.code!r}"
        rebuilt = type(errors.error_from_code(cls.code, "message"))
        assert table.row_for(rebuilt) == table.row_for(cls), cls.__qualname__
        if cls.__module__ == errors.__name__:
            assert rebuilt is cls, f"{cls.__qualname__} shares its code with {rebuilt}"


def test_rows_go_most_specific_first_each_reachable() -> None:
    rows = table.ROWS
    assert len({row.error for row in rows}) == len(rows)
    for i, row in enumerate(rows):
        shadowing = [r.error for r in rows[:i] if issubclass(row.error, r.error)]
        assert shadowing == [], f"{row.error.__name__} is taken by the earlier {shadowing}"
    assert table.CATCH_ALL.error is errors.FedgateError


def test_columns_name_real_statuses_and_the_network_ones_no_row_uses() -> None:
    for row in (*table.ROWS, table.CATCH_ALL):
        assert HTTPStatus(row.http).value >= 400
        assert grpc.StatusCode[row.grpc] is not grpc.StatusCode.OK
    for status in table.NETWORK_HTTP:
        assert HTTPStatus(status).value >= 500
    for name in table.NETWORK_GRPC:
        assert grpc.StatusCode[name] is not grpc.StatusCode.OK
    assert not table.NETWORK_HTTP & {row.http for row in table.ROWS}
    assert not table.NETWORK_GRPC & {row.grpc for row in table.ROWS}


def test_a_status_alone_stands_for_the_same_error_on_both_sides() -> None:
    assert dict(table.ERROR_BY_HTTP) == {
        400: E.BadRequest,
        401: E.Unauthorized,
        403: E.Forbidden,
        404: E.UnknownClient,
        409: E.Conflict,
        413: E.PayloadTooLarge,
        415: E.UnknownCodec,
        422: E.InvalidUpdate,
        429: E.RateLimited,
        500: E.ServerError,
        502: E.TransportError,
        503: E.TransportError,
        504: E.TransportError,
    }
    assert dict(table.ERROR_BY_GRPC) == {
        "INVALID_ARGUMENT": E.BadRequest,
        "UNAUTHENTICATED": E.Unauthorized,
        "PERMISSION_DENIED": E.Forbidden,
        "NOT_FOUND": E.UnknownClient,
        "FAILED_PRECONDITION": E.Conflict,
        "RESOURCE_EXHAUSTED": E.PayloadTooLarge,
        "INTERNAL": E.ServerError,
        "CANCELLED": E.TransportError,
        "DEADLINE_EXCEEDED": E.TransportError,
        "UNAVAILABLE": E.TransportError,
    }
    # HTTP has finer statuses than gRPC; whatever a gRPC code alone means, the HTTP status
    # of that error's row alone means too
    for name, cls in table.ERROR_BY_GRPC.items():
        assert table.error_for_http(table.row_for(cls).http) is cls, name
    assert table.error_for_http(418) is table.error_for_grpc("UNIMPLEMENTED") is E.ServerError


def test_both_adapters_send_each_error_with_its_rows_statuses() -> None:
    for cls in all_error_classes():
        row, error = table.row_for(cls), instance(cls)
        assert problems.status_for(error) == row.http, cls.__qualname__
        assert grpc_status.status_for(error).name == row.grpc, cls.__qualname__


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_the_grpc_client_reads_a_bare_status_by_the_table(code: grpc.StatusCode) -> None:
    bare = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "from a proxy")
    error = grpc_status.error_from_rpc(bare)
    assert type(error) is table.error_for_grpc(code.name)
    assert error.message == f"gRPC {code.name}: from a proxy"
    coded = grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata((grpc_status.ERROR_CODE_KEY, "round_closed"))
    )
    assert type(grpc_status.error_from_rpc(coded)) is E.RoundClosed  # the trailer decides


def response(status: int, content: bytes) -> httpx.Response:
    return httpx.Response(status, content=content, request=httpx.Request("GET", "http://h/"))


def test_the_rest_client_reads_a_bare_status_by_the_table() -> None:
    for status in range(400, 600):
        error = problems.error_from_response(response(status, b"<html>a proxy's page</html>"))
        assert type(error) is table.error_for_http(status), status
    coded = response(503, b'{"code": "store_error", "detail": "down"}')
    assert type(problems.error_from_response(coded)) is E.StoreError  # the body decides
    # uvicorn's own refusal of a call over its concurrency limit, and only that, is busy
    assert type(problems.error_from_response(response(503, b"Service Unavailable"))) is (
        E.Overloaded
    )


async def test_a_rest_server_over_its_concurrency_limit_is_overloaded_to_the_client() -> None:
    federation = Federation(tiny_model(), RunConfig(rounds=1, min_clients=1))
    limits = ConnectionLimits(http_max_concurrency=2)
    settings = GatewaySettings(grpc_port=0, http_port=0, limits=limits)
    async with Gateway(federation, settings) as gateway:
        idle = [await asyncio.open_connection("127.0.0.1", gateway.http_port) for _ in range(2)]
        client = connect("rest", gateway.addresses["rest"])
        try:
            with pytest.raises(E.Overloaded):
                await client.join(JoinRequest(name="a", codec="raw", num_examples=10))
        finally:
            await client.close()
            for _, writer in idle:
                writer.close()


def test_the_readme_errors_block_is_the_rendered_table() -> None:
    readme = (ROOT / "README.md").read_text()
    wanted = TOOL["spliced"](readme, table.markdown_table())
    diff = "\n".join(difflib.unified_diff(readme.splitlines(), wanted.splitlines(), lineterm=""))
    assert readme == wanted, f"run python tools/errors_table.py:\n{diff}"
    for cls in table.error_classes():  # the README names every class of errors.py
        assert cls.__module__ != errors.__name__ or f"`{cls.__name__}`" in readme


def test_the_tool_checks_and_rewrites_a_stale_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# fedgate\n\n<!-- errors:start -->\n| old |\n<!-- errors:end -->\n\nend\n")
    monkeypatch.setattr(sys, "argv", ["errors_table.py", "--check", "--readme", str(readme)])
    assert TOOL["main"]() == 1
    monkeypatch.setattr(sys, "argv", ["errors_table.py", "--readme", str(readme)])
    assert TOOL["main"]() == 0
    block = f"<!-- errors:start -->\n{table.markdown_table()}<!-- errors:end -->"
    assert readme.read_text() == f"# fedgate\n\n{block}\n\nend\n"
    monkeypatch.setattr(sys, "argv", ["errors_table.py", "--check", "--readme", str(readme)])
    assert TOOL["main"]() == 0
