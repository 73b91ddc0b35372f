"""The reference our pair is measured against: one trio process terminating TLS with Python's ``ssl``.

Same shape as appd with the handshake done in-process (``trio.SSLStream``, OpenSSL underneath) and
the same backends: ``echo`` answers each read with the same bytes, ``tcp://HOST:PORT`` proxies both
ways with 64 KiB reads and half-close towards the backend. Suites and groups come from the
``OPENSSL_CONF`` the bench sets (Python's ``ssl`` has no API for TLS 1.3 suites).

    python -m bench.trio_ssl_server --port P --cert C --key K [--backend echo|tcp://H:P] [--tickets N]
"""

from __future__ import annotations

import argparse
import contextlib
import ssl
import sys
import urllib.parse
from functools import partial

import trio

READ_SIZE = 65536  # appd's BACKEND_READ_SIZE: the same read size on both sides of both proxies


def context(cert: str, key: str, tickets: int) -> ssl.SSLContext:
    """TLS 1.2 and 1.3, as our pair: each client gets the version the bench's client asks for."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.num_tickets = tickets
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET  # TLS 1.2's tickets, which num_tickets does not govern
    return ctx


async def _echo(stream: trio.SSLStream[trio.SocketStream]) -> None:
    while data := await stream.receive_some(READ_SIZE):
        await stream.send_all(data)


async def _proxy(stream: trio.SSLStream[trio.SocketStream], host: str, port: int) -> None:
    backend = await trio.open_tcp_stream(host, port)
    async with backend, trio.open_nursery() as nursery:

        async def up() -> None:
            with contextlib.suppress(trio.BrokenResourceError):
                while data := await stream.receive_some(READ_SIZE):
                    await backend.send_all(data)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await backend.send_eof()

        async def down() -> None:
            with contextlib.suppress(trio.BrokenResourceError):
                while data := await backend.receive_some(READ_SIZE):
                    await stream.send_all(data)
            nursery.cancel_scope.cancel()  # TLS via SSLStream has no half-close: the backend's EOF ends it

        nursery.start_soon(up)
        nursery.start_soon(down)


async def handle(ctx: ssl.SSLContext, backend: str, tcp: trio.SocketStream) -> None:
    stream = trio.SSLStream(tcp, ctx, server_side=True)
    try:
        await stream.do_handshake()
        if backend == "echo":
            await _echo(stream)
        else:
            url = urllib.parse.urlsplit(backend)
            assert url.hostname is not None and url.port is not None
            await _proxy(stream, url.hostname, url.port)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # load clients hang up abruptly; nothing to report
    finally:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await stream.aclose()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--backend", default="echo")
    ap.add_argument("--tickets", type=int, default=0)
    args = ap.parse_args()
    ctx = context(args.cert, args.key, args.tickets)
    listeners = await trio.open_tcp_listeners(args.port, host=args.host, backlog=4096)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, partial(handle, ctx, args.backend), listeners))
        print("ready", flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main)
    sys.exit(0)
