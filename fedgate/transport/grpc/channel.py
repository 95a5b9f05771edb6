"""What both ends of a gRPC channel agree on: chunk size and message limits (the client
imports this, not the server module)."""

from __future__ import annotations

# 4 MiB: measured on loopback with ResNet-50 in raw (100 MB), 1 MiB chunks moved ~600 MB/s
# and 4 MiB ~750 MB/s each way (fewer messages through grpc's per-message machinery);
# 8 MiB gained nothing more.
CHUNK_BYTES = 4 << 20
MAX_MESSAGE_BYTES = 16 << 20  # a chunk plus headroom; status replies stay far below it
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
