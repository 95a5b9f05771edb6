"""fedgate errors <-> gRPC status codes: the gRPC column of `fedgate.transport.errors_table`.

The server also sends the precise error code in trailing metadata, so the client raises
the same exception class the federation raised, whichever transport carried it.
"""

from __future__ import annotations

import grpc

from fedgate import errors
from fedgate.transport import errors_table

ERROR_CODE_KEY = "fedgate-error-code"

# The table names status codes (so a REST client need not load grpc); a name grpc does
# not have fails here, at import, not on the first error sent with it.
_STATUS_BY_ROW = {row: grpc.StatusCode[row.grpc] for row in errors_table.ROWS}
_CATCH_ALL = grpc.StatusCode[errors_table.CATCH_ALL.grpc]


def status_for(error: errors.FedgateError) -> grpc.StatusCode:
    """The status code ``error`` leaves a server with: its row's."""
    return _STATUS_BY_ROW.get(errors_table.row_for(error), _CATCH_ALL)


def error_from_rpc(error: grpc.aio.AioRpcError) -> errors.FedgateError:
    """The fedgate error a failed call stands for: the one named in its trailer, else the
    one its status code stands for alone (the table's fallbacks)."""
    details = error.details() or error.code().name
    for key, value in error.trailing_metadata() or ():
        if key == ERROR_CODE_KEY and isinstance(value, str):
            return errors.error_from_code(value, details)
    name = error.code().name
    cls = errors_table.error_for_grpc(name)
    return errors.error_from_code(cls.code, f"gRPC {name}: {details}")
