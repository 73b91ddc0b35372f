"""The fixed, fast backend behind every proxy: a discard port, a source port and a byte port, one epoll loop.

It must cost little so the bulk figures measure the proxy: the discard side reads into one 1 MiB
buffer and throws it away, the source side writes the same 1 MiB buffer for as long as the peer
reads. The memory bench parks its idle proxied connections on the discard port, so the loop holds
tens of thousands of sockets without a thread each. The byte side is the proxied phase's: it reads
one byte, writes one byte and closes, so a connection through a proxy costs the proxy its accept,
handshake, backend connect, one byte each way and two closes.

    python -m bench.backend      (prints "DISCARD_PORT SOURCE_PORT BYTE_PORT", then serves until killed)
"""

from __future__ import annotations

import contextlib
import selectors
import signal
import socket
import sys

CHUNK = 1 << 20
ANSWER = b"\x01"  # what the byte port writes back


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def serve() -> None:
    sel = selectors.DefaultSelector()
    discard, source, byte = _listener(), _listener(), _listener()
    sel.register(discard, selectors.EVENT_READ, "accept-discard")
    sel.register(source, selectors.EVENT_READ, "accept-source")
    sel.register(byte, selectors.EVENT_READ, "accept-byte")
    print(discard.getsockname()[1], source.getsockname()[1], byte.getsockname()[1], flush=True)
    sink = bytearray(CHUNK)
    payload = memoryview(b"\xa5" * CHUNK)
    offsets: dict[socket.socket, int] = {}

    def close(sock: socket.socket) -> None:
        sel.unregister(sock)
        offsets.pop(sock, None)
        sock.close()

    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data in ("accept-discard", "accept-source", "accept-byte"):
                with contextlib.suppress(BlockingIOError):
                    while True:
                        conn, _ = sock.accept()
                        conn.setblocking(False)
                        if key.data == "accept-discard":
                            sel.register(conn, selectors.EVENT_READ, "discard")
                        elif key.data == "accept-byte":
                            sel.register(conn, selectors.EVENT_READ, "byte")
                        else:
                            offsets[conn] = 0
                            sel.register(conn, selectors.EVENT_WRITE, "source")
            elif key.data == "byte":
                # One byte in (or the peer's EOF), one byte out into an empty send buffer, then close:
                # nothing is left unread, so the close is a FIN, not a reset.
                try:
                    if sock.recv(1):
                        sock.send(ANSWER)
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                close(sock)
            elif key.data == "discard":
                try:
                    if sock.recv_into(sink) == 0:
                        close(sock)
                except BlockingIOError:
                    pass
                except OSError:
                    close(sock)
            else:
                try:
                    offsets[sock] = (offsets[sock] + sock.send(payload[offsets[sock] :])) % CHUNK
                except BlockingIOError:
                    pass
                except OSError:
                    close(sock)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        serve()
