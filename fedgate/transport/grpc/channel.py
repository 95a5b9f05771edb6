"""What both ends of a gRPC channel agree on: chunk size and message limits (the client
imports this, not the server module)."""

from __future__ import annotations

CHUNK_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 16 << 20  # a chunk plus headroom; status replies stay far below it
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
