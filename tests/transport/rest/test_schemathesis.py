"""schemathesis against the live REST API: whatever its OpenAPI document admits, and
whatever it does not, no request may get a 5xx.

A real `fedgate serve` process on loopback; requests carry the admin token half the time
(so operator routes are reached past authentication too) and nothing the other half.
Bounded here; `make fuzz` (FEDGATE_FUZZ=1) runs many more examples per operation.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok

from fedgate.run.launch import ServerProcess, start_server

EXAMPLES = 600 if os.environ.get("FEDGATE_FUZZ") else 30
SERVE_ARGS = ["--min-clients", "1", "--rounds", "1000", "--deadline", "600"]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(SERVE_ARGS, Path(tmp_path_factory.mktemp("schemathesis")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def live_schema(live_server: ServerProcess) -> schemathesis.BaseSchema:
    # the status stream never ends by design: it is exercised by its own tests
    return schemathesis.openapi.from_url(f"{live_server.http_url}/openapi.json").exclude(
        path="/api/v1/status/watch"
    )


def test_no_request_gets_a_server_error(
    live_schema: schemathesis.BaseSchema, live_server: ServerProcess
) -> None:
    # schemathesis' own pytest plugin does not run under pytest 9 (it rewrites node ids
    # through a private attribute pytest dropped): drive its strategies with hypothesis
    results = list(live_schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the OpenAPI document has invalid operations"
    assert len(operations) >= 10
    seen: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy(), admin=st.booleans())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case: schemathesis.Case[Any], admin: bool) -> None:
            seen[check_no_server_error(case, live_server, admin)] += 1

        no_server_error()
    # the requests got past authentication and validation too, not only refused at the door
    assert {200, 400, 401, 404} <= set(seen), seen


def check_no_server_error(
    case: schemathesis.Case[Any], live_server: ServerProcess, admin: bool
) -> int:
    if admin:  # replaces whatever the generator put in the header
        case.headers["Authorization"] = f"Bearer {live_server.admin_token}"
    response = case.call(base_url=live_server.http_url, timeout=40)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    )
    assert live_server.process.poll() is None
    return response.status_code
