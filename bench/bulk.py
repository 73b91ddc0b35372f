"""Bulk client: one TLS connection through a proxy, 256 KiB writes (upload) or reads (download).

Blocking Python ``ssl`` in one process: OpenSSL does the record work in C, so the client is cheap
next to the server. It reports its own CPU time so the bench can tell when it was the bottleneck.
Same stdin/stdout protocol as :mod:`bench.hsclient`.

    python -m bench.bulk --port P --direction up|down --seconds S
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench.hsclient import client_context, connect

BLOCK = 256 * 1024


def run(port: int, direction: str, seconds: float) -> dict[str, float]:
    tls = connect(client_context(), port, None, ping=False)
    payload = os.urandom(BLOCK)
    buf = bytearray(BLOCK)
    warm_until = time.monotonic() + 0.3
    while time.monotonic() < warm_until:
        if direction == "up":
            tls.sendall(payload)
        else:
            tls.recv_into(buf)
    print("ready", flush=True)
    sys.stdin.readline()
    moved = 0
    t0, cpu0 = time.monotonic(), time.process_time()
    deadline = t0 + seconds
    if direction == "up":
        while time.monotonic() < deadline:
            tls.sendall(payload)
            moved += BLOCK
    else:
        while time.monotonic() < deadline:
            got = tls.recv_into(buf)
            if not got:
                raise ConnectionError("proxy closed the download early")
            moved += got
    result = {"bytes": moved, "wall": time.monotonic() - t0, "cpu": time.process_time() - cpu0}
    tls.close()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--direction", choices=("up", "down"), required=True)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    print(json.dumps(run(args.port, args.direction, args.seconds)), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
