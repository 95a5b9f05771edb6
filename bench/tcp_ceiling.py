"""Plain TCP on loopback: the ceiling the transports suite measures gRPC and REST against.

The same bytes a model moves in the raw codec, sent over one kept-open TCP connection to a
server in a process of its own (as the fedgate server is), with no framing beyond a
9-byte request header and no copies the kernel does not make: the sender sends from one
buffer (``sendall`` of a ``memoryview``), the receiver reads straight into fresh memory the
size of the model (``recv_into`` a new ``bytearray``), which it then holds, as a transport
hands over the model it received. (Receiving into one reused buffer instead, memory no
one could keep, is about three times faster here: a bound of the kernel's copy, not of
moving a model.) A transfer is timed like a transport call: from the request until the
answer (``up``: the server's one-byte receipt after the last byte; ``down``: the last byte
of the model).

Run as a script it is the server: it prints its port on stdout and serves until stdin
closes.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

HEADER = struct.Struct("!cQ")  # b"U" (the client sends n bytes) or b"D" (the server does)
UP, DOWN, RECEIPT = b"U", b"D", b"k"
SCRIPT = Path(__file__)


def _receive_into(connection: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from the connection (a request header, a receipt, a model)."""
    got = 0
    while got < len(view):
        n = connection.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("the peer closed the connection mid-transfer")
        got += n


def _receive_fresh(connection: socket.socket, size: int) -> bytearray:
    """``size`` bytes read straight into memory of their own (the model a receiver holds)."""
    received = bytearray(size)
    _receive_into(connection, memoryview(received))
    return received


def _serve_connection(connection: socket.socket) -> None:
    payload = memoryview(b"")
    with connection:
        header = memoryview(bytearray(HEADER.size))
        while True:
            try:
                _receive_into(connection, header)
            except ConnectionError:
                return
            op, size = HEADER.unpack(header)
            if op == UP:
                _receive_fresh(connection, size)
                connection.sendall(RECEIPT)
            else:
                if len(payload) != size:
                    payload = memoryview(bytes(size))
                connection.sendall(payload)


def serve() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)

    def accept() -> None:
        while True:
            connection, _ = listener.accept()
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_serve_connection, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    sys.stdin.read()  # serve until the suite closes our stdin


class TcpCeiling:
    """The suite's side: the server process and one kept-open connection to it."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.process.stdout is not None
        port = int(self.process.stdout.readline())
        self.connection = socket.create_connection(("127.0.0.1", port))
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._receipt = memoryview(bytearray(len(RECEIPT)))

    def up(self, payload: memoryview) -> None:
        self.connection.sendall(HEADER.pack(UP, len(payload)))
        self.connection.sendall(payload)
        _receive_into(self.connection, self._receipt)

    def down(self, size: int) -> None:
        self.connection.sendall(HEADER.pack(DOWN, size))
        _receive_fresh(self.connection, size)

    def close(self) -> None:
        self.connection.close()
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    serve()
