"""How long and how much a peer may hold of the server, on both transports.

These bound what a connection costs before anything on it is authenticated: a peer that
opens connections and sends nothing, sends its request head a byte at a time, pings
without end or piles up calls. Per-request body timeouts and the upload caps are the
request handlers' business, not these.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from fedgate.errors import ConfigError


@dataclass(frozen=True)
class ConnectionLimits:
    # HTTP (uvicorn + httptools, `fedgate.transport.rest.http_protocol`)
    http_head_timeout_s: float = 10.0
    """A request head (request line and headers) must be complete this long after the
    connection opens or its first byte arrives; else the connection is closed. uvicorn
    itself never times out a slow head."""
    http_keep_alive_s: int = 5
    """An idle keep-alive connection is closed this long after its last response."""
    http_max_head_bytes: int = 8 * 1024
    """Largest request head; a longer one gets 431 and the connection is closed."""
    http_max_concurrency: int = 1000
    """Open connections plus running requests; a request beyond gets 503."""

    # gRPC (grpc core channel arguments)
    grpc_handshake_timeout_s: float = 10.0
    """TLS and HTTP/2 handshakes must be done in this long, or the connection is closed."""
    grpc_max_concurrent_rpcs: int = 1000
    """Calls in progress over all connections; one beyond gets RESOURCE_EXHAUSTED. Each
    client holds one (its Work call) for as long as it takes part, and another now and
    then (a heartbeat): raise this above twice the clients a federation is to hold."""
    grpc_max_streams_per_connection: int = 100
    """Calls in progress on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)."""
    grpc_max_metadata_bytes: int = 8 * 1024
    """Largest metadata (headers) of a call; larger calls are refused."""
    grpc_idle_s: float = 300.0
    """A connection with no call in progress for this long is closed (GOAWAY); the
    client's channel reconnects by itself on its next call."""
    grpc_max_age_s: float = 3600.0
    """Any connection is asked to go away (GOAWAY) after this long (grpc adds ±10% jitter)..."""
    grpc_age_grace_s: float = 900.0
    """... and its calls still open are cut this much later (the clients' transfer deadline)."""
    grpc_keepalive_s: float = 60.0
    """The server pings a connection that has been quiet this long..."""
    grpc_keepalive_timeout_s: float = 20.0
    """... and closes it if the ping is not answered in this long (a vanished peer)."""
    grpc_min_client_ping_s: float = 60.0
    """Clients may ping no more often than this while no data flows (and never without a
    call in progress); each ping sooner is a strike..."""
    grpc_max_ping_strikes: int = 2
    """... and a connection with more strikes than this is closed (GOAWAY too_many_pings)."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"connection limit {spec.name} must be positive, not {value!r}")


def grpc_server_options(limits: ConnectionLimits) -> list[tuple[str, int]]:
    """The limits as grpc core channel arguments for a server."""
    return [
        ("grpc.server_handshake_timeout_ms", _ms(limits.grpc_handshake_timeout_s)),
        ("grpc.max_concurrent_streams", limits.grpc_max_streams_per_connection),
        ("grpc.max_metadata_size", limits.grpc_max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", limits.grpc_max_metadata_bytes),
        ("grpc.max_connection_idle_ms", _ms(limits.grpc_idle_s)),
        ("grpc.max_connection_age_ms", _ms(limits.grpc_max_age_s)),
        ("grpc.max_connection_age_grace_ms", _ms(limits.grpc_age_grace_s)),
        ("grpc.keepalive_time_ms", _ms(limits.grpc_keepalive_s)),
        ("grpc.keepalive_timeout_ms", _ms(limits.grpc_keepalive_timeout_s)),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(limits.grpc_min_client_ping_s)),
        ("grpc.http2.max_ping_strikes", limits.grpc_max_ping_strikes),
    ]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
