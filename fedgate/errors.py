"""fedgate's one exception hierarchy.

Every layer raises these; wire adapters translate them to status codes at their edges
(one table for both, `fedgate/transport/errors_table.py`) and client adapters translate
status codes back, so callers only ever see `FedgateError` subclasses, whichever
transport carried the call. A new subclass needs a row there (a test says so).
"""

from __future__ import annotations


class FedgateError(Exception):
    """Base of all fedgate errors. `code` is a stable slug used on the wire."""

    code = "fedgate_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(FedgateError, ValueError):
    """A configuration value or spec string is invalid."""

    code = "invalid_config"


class DataError(ConfigError):
    """A data set cannot be read: its files are missing, malformed, too large, or (a pickle)
    ask for more than plain data."""

    code = "invalid_data"


class BadRequest(FedgateError):
    """A wire request that is malformed before any fedgate rule applies (missing field...)."""

    code = "bad_request"


class InvalidInput(BadRequest):
    """An inference input the model cannot take: not an image or a broken one, the wrong
    shape, values that are not finite numbers."""

    code = "invalid_input"


class UnsupportedMediaType(BadRequest):
    """A body in a media type the route does not take (the message lists those it does)."""

    code = "unsupported_media_type"


class CodecError(FedgateError):
    """A payload could not be encoded or decoded by a codec."""

    code = "codec_error"

    def __init__(self, codec: str, reason: str) -> None:
        super().__init__(f"codec {codec!r}: {reason}")
        self.codec = codec
        self.reason = reason


class UnknownCodec(CodecError):
    """A codec name that is not in the registry."""

    code = "unknown_codec"

    def __init__(self, name: str, available: list[str]) -> None:
        FedgateError.__init__(
            self, f"unknown codec {name!r}; available: {', '.join(sorted(available))}"
        )
        self.codec = name
        self.reason = "unknown codec"
        self.available = sorted(available)


class DecodedSizeExceeded(CodecError):
    """Decoding would produce more bytes than the configured cap (e.g. a zstd bomb)."""

    code = "decoded_size_exceeded"


class PayloadTooLarge(FedgateError):
    """A request body is over the configured size limit."""

    code = "payload_too_large"


class UnknownClient(FedgateError):
    """A client id the federation does not know (or no longer knows)."""

    code = "unknown_client"


class Unauthorized(FedgateError):
    """A call carried a wrong or missing credential (client token, enrolment key, login)."""

    code = "unauthorized"


class Forbidden(FedgateError):
    """The caller is known, but its role (or enrolment key) does not allow the call."""

    code = "forbidden"


class NotFound(FedgateError):
    """A named thing an operator asked for (enrolment key, user) does not exist."""

    code = "not_found"


class Conflict(FedgateError):
    """The call is well-formed but does not fit the federation's current state."""

    code = "conflict"


class NoModelDeployed(Conflict):
    """Inference was asked for while no model version is deployed (no round has completed
    and none was deployed by hand)."""

    code = "no_model_deployed"


class RoundClosed(Conflict):
    """An update names a round that is not open (already closed, retried or not begun)."""

    code = "round_closed"


class NotSelected(Conflict):
    """An update from a client that was not selected for the open round."""

    code = "not_selected"


class DuplicateUpdate(Conflict):
    """A second update from the same client for the same round."""

    code = "duplicate_update"


class RunNotActive(Conflict):
    """A control operation that does not apply in the run's current state."""

    code = "run_not_active"


class InvalidUpdate(FedgateError):
    """An update whose tensors do not match the global model (names, shapes, dtypes)."""

    code = "invalid_update"


class UpdateLayoutMismatch(InvalidUpdate):
    """An update whose tensors (names, shapes, dtypes) are not the model's, found by the
    decoder from the payload's header before it decompresses or allocates anything."""

    code = "update_layout_mismatch"


class NonFiniteUpdate(InvalidUpdate):
    """An update holding NaN or infinite values."""

    code = "non_finite_update"


class TransportError(FedgateError):
    """The transport could not reach the server or lost the connection."""

    code = "transport_error"


class Overloaded(TransportError):
    """The server is at a capacity limit (concurrent uploads...); the call may be retried."""

    code = "overloaded"


class RateLimited(TransportError):
    """Too many calls of one kind (joins, logins) from one peer address or enrolment key;
    like any transient failure, the call may be retried after a pause."""

    code = "rate_limited"


class TlsError(TransportError):
    """A TLS handshake failed: the peer's certificate is not trusted, or none was presented."""

    code = "tls_error"


class ServerError(FedgateError):
    """The server failed while handling a call (its own fault, not the caller's)."""

    code = "server_error"


class StoreError(FedgateError):
    """The run store cannot be used: unreachable, or its schema is not the current one."""

    code = "store_error"


class StoreCorrupt(StoreError):
    """Bytes read back from the run store fail their check (a model's hash, its format)."""

    code = "store_corrupt"


ERRORS_BY_CODE: dict[str, type[FedgateError]] = {
    cls.code: cls
    for cls in (
        FedgateError,
        ConfigError,
        DataError,
        BadRequest,
        InvalidInput,
        UnsupportedMediaType,
        CodecError,
        UnknownCodec,
        DecodedSizeExceeded,
        PayloadTooLarge,
        UnknownClient,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        NoModelDeployed,
        RoundClosed,
        NotSelected,
        DuplicateUpdate,
        RunNotActive,
        InvalidUpdate,
        UpdateLayoutMismatch,
        NonFiniteUpdate,
        TransportError,
        Overloaded,
        RateLimited,
        TlsError,
        ServerError,
        StoreError,
        StoreCorrupt,
    )
}


def error_from_code(code: str, message: str) -> FedgateError:
    """Rebuild a fedgate error received over a wire from its code and message."""
    cls = ERRORS_BY_CODE.get(code, FedgateError)
    err = cls.__new__(cls)
    FedgateError.__init__(err, message)
    if isinstance(err, CodecError):
        err.codec = ""
        err.reason = message
    if isinstance(err, UnknownCodec):
        err.available = []
    return err
