"""fedgate's one error table: each error's HTTP status and gRPC status code, both ways.

Both adapters read it. A server turns a raised error into its row's status (`row_for`);
a client turns a reply back into an error by the fedgate code it carries (the problem
body's ``code``, the ``fedgate-error-code`` trailer) or, for a reply without one (a
proxy's, the gRPC channel's own), by its status alone (`error_for_http`,
`error_for_grpc`). README.md's errors table is rendered from here (`markdown_table`):
``python tools/errors_table.py`` writes it, a test fails when it differs.

The gRPC column holds status-code *names*: a REST client process must not load grpc, and
this module is all of the table it needs. The gRPC adapter maps names to `grpc.StatusCode`
(and fails at import on a name grpc does not have).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from fedgate import errors


@dataclass(frozen=True)
class ErrorRow:
    """One error class on both wires."""

    error: type[errors.FedgateError]
    http: int
    grpc: str  # a grpc.StatusCode name
    retry: bool  # "retry later?": the same call may succeed, unchanged, after a pause
    meaning: str  # README.md's words for it


_E = errors
# Most specific first: the first row whose class an error is an instance of decides its
# statuses, so a subclass's row comes before its base's. Among the rows of one status the
# *last* one is what that status means without a fedgate code (`ERROR_BY_HTTP`,
# `ERROR_BY_GRPC`): the broadest class of each status comes last. A test pins both.
# fmt: off
ROWS: tuple[ErrorRow, ...] = (
    #        error                      HTTP  gRPC status code       retry later?
    ErrorRow(_E.NotFound,               404, "NOT_FOUND",           False,
             "an enrolment key or user that does not exist"),
    ErrorRow(_E.UnknownClient,          404, "NOT_FOUND",           False,
             "a client unknown, left or failed: join again"),
    ErrorRow(_E.Unauthorized,           401, "UNAUTHENTICATED",     False,
             "a wrong or missing token, key or login"),
    ErrorRow(_E.Forbidden,              403, "PERMISSION_DENIED",   False,
             "the caller's role or key does not allow it"),
    ErrorRow(_E.RateLimited,            429, "RESOURCE_EXHAUSTED",  True,
             "too many joins or logins from one peer or key"),
    ErrorRow(_E.Conflict,               409, "FAILED_PRECONDITION", False,
             "the call does not fit the run's state (its round, its run, the model deployed)"),
    ErrorRow(_E.UnsupportedMediaType,   415, "INVALID_ARGUMENT",    False,
             "a body in a media type the route does not take"),
    ErrorRow(_E.UnknownCodec,           415, "INVALID_ARGUMENT",    False,
             "a codec not in the registry, or a parameter it refuses"),
    ErrorRow(_E.DecodedSizeExceeded,    413, "RESOURCE_EXHAUSTED",  False,
             "a payload that would decode past the cap (a zstd bomb)"),
    ErrorRow(_E.PayloadTooLarge,        413, "RESOURCE_EXHAUSTED",  False,
             "a body over the size limit"),
    ErrorRow(_E.CodecError,             400, "INVALID_ARGUMENT",    False,
             "a malformed, truncated or garbage payload"),
    ErrorRow(_E.InvalidUpdate,          422, "INVALID_ARGUMENT",    False,
             "an update that is not the model's: names, shapes, dtypes, NaN"),
    ErrorRow(_E.ConfigError,            400, "INVALID_ARGUMENT",    False,
             "an invalid setting, spec string or data set"),
    ErrorRow(_E.BadRequest,             400, "INVALID_ARGUMENT",    False,
             "malformed before any fedgate rule applies, or an input the model cannot take"),
    ErrorRow(_E.Overloaded,             503, "UNAVAILABLE",         True,
             "too many uploads or predictions at once"),
    ErrorRow(_E.TlsError,               503, "UNAVAILABLE",         False,
             "the client's own: the server's certificate is not trusted"),
    ErrorRow(_E.StoreError,             503, "UNAVAILABLE",         True,
             "the run store is unreachable, or a model read back fails its hash"),
    ErrorRow(_E.TransportError,         503, "UNAVAILABLE",         True,
             "the server cannot be reached, or the connection was lost"),
    ErrorRow(_E.ServerError,            500, "INTERNAL",            True,
             "a fault of the server's: only an error id, named in its log"),
)
# fmt: on
# What an error no row names gets; a test fails naming any FedgateError subclass that
# falls through to it, unless `INTERNAL_ONLY` says why it never crosses a wire.
CATCH_ALL = ErrorRow(
    _E.FedgateError, 500, "INTERNAL", True, "no row of its own, or a code this side does not know"
)
INTERNAL_ONLY: Mapping[str, str] = {}  # none today: every fedgate error may cross a wire

# Statuses only the network sends, never a fedgate server: a proxy's bad gateway and
# gateway timeout, the channel's passed deadline and cancelled call. No row may use them.
NETWORK_HTTP: frozenset[int] = frozenset({502, 504})
NETWORK_GRPC: frozenset[str] = frozenset({"DEADLINE_EXCEEDED", "CANCELLED"})
# The fallbacks, the same on both sides: a network status is a TransportError (retry
# later); a status that no row has and the network does not send is a ServerError.
NETWORK_ERROR: type[errors.FedgateError] = errors.TransportError
UNKNOWN_STATUS_ERROR: type[errors.FedgateError] = errors.ServerError

# status -> the error a reply with that status and no fedgate code stands for
ERROR_BY_HTTP: Mapping[int, type[errors.FedgateError]] = {
    **dict.fromkeys(sorted(NETWORK_HTTP), NETWORK_ERROR),
    **{row.http: row.error for row in ROWS},  # a later row of a status replaces an earlier
}
ERROR_BY_GRPC: Mapping[str, type[errors.FedgateError]] = {
    **dict.fromkeys(sorted(NETWORK_GRPC), NETWORK_ERROR),
    **{row.grpc: row.error for row in ROWS},
}


def row_for(error: errors.FedgateError | type[errors.FedgateError]) -> ErrorRow:
    """The row of ``error`` (an instance or a class): its first matching row."""
    cls = error if isinstance(error, type) else type(error)
    return next((row for row in ROWS if issubclass(cls, row.error)), CATCH_ALL)


def error_for_http(status: int) -> type[errors.FedgateError]:
    """What an HTTP error reply without a fedgate code stands for."""
    return ERROR_BY_HTTP.get(status, UNKNOWN_STATUS_ERROR)


def error_for_grpc(name: str) -> type[errors.FedgateError]:
    """What a failed gRPC call without a fedgate code stands for (by status-code name)."""
    return ERROR_BY_GRPC.get(name, UNKNOWN_STATUS_ERROR)


def error_classes(
    root: type[errors.FedgateError] = errors.FedgateError,
) -> Iterator[type[errors.FedgateError]]:
    """``root`` and every subclass of it imported so far, each once, parents first."""
    seen: dict[type[errors.FedgateError], None] = {}
    stack = [root]
    while stack:
        cls = stack.pop()
        if cls not in seen:
            seen[cls] = None
            stack.extend(reversed(cls.__subclasses__()))  # in definition order
    yield from seen


def members(row: ErrorRow) -> list[type[errors.FedgateError]]:
    """The classes of fedgate/errors.py that take ``row``: its own first."""
    others = [
        cls
        for cls in error_classes()
        if cls.__module__ == errors.__name__ and cls is not row.error and row_for(cls) == row
    ]
    return [row.error, *others]


def markdown_table() -> str:
    """README.md's errors block: the table, then what a status alone stands for."""
    lines = [
        "| fedgate error | what it means | HTTP | gRPC | retry later? |",
        "|---|---|---|---|---|",
    ]
    for row in (*ROWS, CATCH_ALL):
        classes = ", ".join(f"`{cls.__name__}`" for cls in members(row))
        retry = "yes" if row.retry else "no"
        lines.append(f"| {classes} | {row.meaning} | {row.http} | `{row.grpc}` | {retry} |")
    lines += [
        "",
        "A reply without a fedgate code (a proxy's, the gRPC channel's own) stands for an",
        "error by its status alone, the same on both transports:",
        "",
        "| a status alone is | HTTP | gRPC |",
        "|---|---|---|",
        *_status_alone_rows(),
    ]
    return "\n".join(lines) + "\n"


def _status_alone_rows() -> Iterator[str]:
    """One line per error a status alone stands for, in the table's order."""
    meant = {*ERROR_BY_HTTP.values(), *ERROR_BY_GRPC.values()}
    order = (*ROWS, CATCH_ALL)
    for cls in sorted(meant, key=lambda cls: order.index(row_for(cls))):
        https = [str(s) for s, c in sorted(ERROR_BY_HTTP.items()) if c is cls]
        names = [f"`{n}`" for n, c in sorted(ERROR_BY_GRPC.items()) if c is cls]
        if cls is UNKNOWN_STATUS_ERROR:
            https, names = [*https, "any other"], [*names, "any other"]
        yield f"| `{cls.__name__}` | {', '.join(https) or '—'} | {', '.join(names) or '—'} |"
