"""Memory client: open TLS connections and keep them idle, in stages, so the bench can read appd's RSS.

trio with non-blocking ``ssl`` (``trio.SSLStream``) holds ten thousand connections in one process;
handshakes run a few dozen at a time so the server is never asked for more than it can queue.
After each stage it prints ``{"held": N, ...}`` and waits for a line on stdin; the last line on stdin
ends the process, which closes everything at once.

    python -m bench.hold --port P --stages 1000,10000
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time

import trio

from bench.hsclient import client_context

CONCURRENCY = 32


async def open_one(ctx: ssl.SSLContext, port: int, limit: trio.CapacityLimiter,
                   held: list[trio.SSLStream[trio.SocketStream]], errors: list[str]) -> None:
    async with limit:
        try:
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            stream = trio.SSLStream(tcp, ctx, server_hostname="localhost")
            await stream.do_handshake()
            held.append(stream)
        except (OSError, trio.BrokenResourceError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")


async def main(port: int, stages: list[int]) -> None:
    ctx = client_context()
    limit = trio.CapacityLimiter(CONCURRENCY)
    held: list[trio.SSLStream[trio.SocketStream]] = []
    errors: list[str] = []
    for target in stages:
        t0 = time.monotonic()
        while len(held) < target:
            if len(errors) > max(100, target // 10):
                raise SystemExit(f"too many failed connections: {errors[-1]}")
            async with trio.open_nursery() as nursery:
                for _ in range(target - len(held)):
                    nursery.start_soon(open_one, ctx, port, limit, held, errors)
        print(json.dumps({"held": len(held), "errors": len(errors), "seconds": time.monotonic() - t0}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--stages", default="1000,10000")
    args = ap.parse_args()
    trio.run(main, args.port, [int(s) for s in args.stages.split(",")])
    os._exit(0)
