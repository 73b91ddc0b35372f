"""Open-loop handshake latency: Poisson arrivals at a fixed rate, each a new connection and full handshake.

Open loop, so a slow server cannot slow the arrivals down and hide its own queueing: each latency
runs from the connection's *scheduled* start to the end of its handshake, whether or not the client
got round to it on time. trio with non-blocking ``ssl``; one JSON line of percentiles at the end.

    python -m bench.latency --port P --rate R --seconds S
"""

from __future__ import annotations

import argparse
import json
import os
import random
import ssl
import statistics
import time

import trio

from bench.hsclient import client_context

MAX_IN_FLIGHT = 2000


async def one(ctx: ssl.SSLContext, port: int, scheduled: float, out: list[float], errors: list[str]) -> None:
    try:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        async with tcp:
            stream = trio.SSLStream(tcp, ctx, server_hostname="localhost")
            await stream.do_handshake()
            out.append(trio.current_time() - scheduled)
    except (OSError, trio.BrokenResourceError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(port: int, rate: float, seconds: float) -> dict[str, object]:
    ctx = client_context()
    warm: list[float] = []
    errors: list[str] = []
    for _ in range(5):
        await one(ctx, port, trio.current_time(), warm, errors)
    latencies: list[float] = []
    skipped = 0
    cpu0 = time.process_time()
    rng = random.Random(1)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        at = start
        while (at := at + rng.expovariate(rate)) < start + seconds:
            await trio.sleep_until(at)
            if len(nursery.child_tasks) >= MAX_IN_FLIGHT:
                skipped += 1
                continue
            nursery.start_soon(one, ctx, port, at, latencies, errors)
        sent_for = trio.current_time() - start
    ms = [x * 1000 for x in latencies] or [float("nan")]
    return {
        "rate": rate, "n": len(latencies), "achieved_rate": len(latencies) / sent_for, "errors": len(errors),
        "skipped": skipped, "p50_ms": percentile(ms, 0.50), "p90_ms": percentile(ms, 0.90),
        "p99_ms": percentile(ms, 0.99), "max_ms": max(ms), "mean_ms": statistics.fmean(ms),
        "cpu": time.process_time() - cpu0, "wall": sent_for,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    print(json.dumps(trio.run(main, args.port, args.rate, args.seconds)), flush=True)
    os._exit(0)
