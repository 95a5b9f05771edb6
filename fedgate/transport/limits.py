"""Edge limits both server adapters apply the same way: how long an upload may take.

Sizes come from the federation (an upload's body limit follows from the model and the
codec); times are set here, once, so gRPC and REST refuse a slow or endless upload alike.
Connection-level limits (request heads, keep-alive, HTTP/2) are in `connection_limits`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UploadTimeouts:
    """An upload may pause at most ``idle_s`` between two pieces of its body, and take at
    most ``total_s`` from its first byte to its last; past either it is refused."""

    idle_s: float = 20.0
    total_s: float = 300.0


DEFAULT_UPLOAD_TIMEOUTS = UploadTimeouts()
