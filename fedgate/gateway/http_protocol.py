"""Moved: the HTTP protocol with a request-head deadline is the REST adapter's,
`fedgate.transport.rest.http_protocol`. Kept so that older imports still work."""

from __future__ import annotations

from fedgate.transport.rest.http_protocol import HeadTimeoutH11Protocol, protocol_with_head_timeout

__all__ = ["HeadTimeoutH11Protocol", "protocol_with_head_timeout"]
