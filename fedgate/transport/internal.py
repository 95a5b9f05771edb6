"""What a caller sees when the server fails in a way nobody planned for: an error id.

Both adapters turn any exception that is not a `FedgateError` into a `ServerError` whose
message is a fresh id and nothing else — no stack, path, library name or load address
reaches the wire — and log the exception with that id, so an operator can find it.
"""

from __future__ import annotations

import logging
import secrets

from fedgate.errors import ServerError

log = logging.getLogger("fedgate.internal")


def internal_error(error: BaseException, where: str) -> ServerError:
    """Log ``error`` under a new id; the `ServerError` to send instead of it."""
    error_id = secrets.token_hex(8)
    log.error("internal error %s in %s", error_id, where, exc_info=error)
    return ServerError(f"internal server error (id {error_id}); the server log has the details")
