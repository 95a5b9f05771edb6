"""fedgate errors <-> gRPC status codes: the adapter's one table, used in both directions.

The server also sends the precise error code in trailing metadata, so the client raises
the same exception class the federation raised, whichever transport carried it.
"""

from __future__ import annotations

import grpc

from fedgate import errors

ERROR_CODE_KEY = "fedgate-error-code"

# Most specific first: the first matching class decides the status.
STATUS_BY_ERROR: tuple[tuple[type[errors.FedgateError], grpc.StatusCode], ...] = (
    (errors.UnknownClient, grpc.StatusCode.NOT_FOUND),
    (errors.Unauthorized, grpc.StatusCode.UNAUTHENTICATED),
    (errors.Forbidden, grpc.StatusCode.PERMISSION_DENIED),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.UnknownCodec, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.DecodedSizeExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.CodecError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.InvalidUpdate, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.TransportError, grpc.StatusCode.UNAVAILABLE),
    (errors.StoreError, grpc.StatusCode.UNAVAILABLE),
    (errors.FedgateError, grpc.StatusCode.INTERNAL),
)

# Status codes from the network itself (no fedgate code attached) that mean "retry later".
TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
_ERROR_BY_STATUS: dict[grpc.StatusCode, type[errors.FedgateError]] = {
    grpc.StatusCode.NOT_FOUND: errors.UnknownClient,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthorized,
    grpc.StatusCode.PERMISSION_DENIED: errors.Forbidden,
    grpc.StatusCode.FAILED_PRECONDITION: errors.Conflict,
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidUpdate,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.PayloadTooLarge,
}


def status_for(error: errors.FedgateError) -> grpc.StatusCode:
    for cls, code in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def error_from_rpc(error: grpc.aio.AioRpcError) -> errors.FedgateError:
    """The fedgate error a failed call stands for."""
    details = error.details() or error.code().name
    for key, value in error.trailing_metadata() or ():
        if key == ERROR_CODE_KEY and isinstance(value, str):
            return errors.error_from_code(value, details)
    code = error.code()
    if code in TRANSIENT:
        return errors.TransportError(f"gRPC {code.name}: {details}")
    cls = _ERROR_BY_STATUS.get(code, errors.ServerError)
    return errors.error_from_code(cls.code, f"gRPC {code.name}: {details}")
