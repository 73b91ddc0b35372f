"""Closed-loop handshake load from Python's ``ssl``: one process, one connection at a time.

The bench starts several of these on the client core. ``resume`` is why this exists beside
``openssl s_time``: s_time's ``-reuse`` never resumes a TLS 1.3 session (it does not read the
NewSessionTicket). Each connection sends one short line and reads the answer, which both proves
the server finished the handshake and lets the client take in the tickets for the next one.

Protocol with the bench: prints ``ready`` once warmed up, waits for a line on stdin, runs for
``--seconds``, prints one JSON line of counts and its own CPU time.

    python -m bench.hsclient --port P --mode full|resume --seconds S
    python -m bench.hsclient --port P --check       (one handshake; prints version and suite)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
import time

PING = b"ping\n"


def client_context() -> ssl.SSLContext:
    """TLS 1.3 only, no chain check (as s_time): the CertificateVerify signature is still verified."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def connect(ctx: ssl.SSLContext, port: int, session: ssl.SSLSession | None, ping: bool) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    tls = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    if ping:
        tls.sendall(PING)
        if not tls.recv(64):
            raise ConnectionError("server closed instead of answering")
    return tls


def run(port: int, mode: str, seconds: float) -> dict[str, float]:
    ctx = client_context()
    resume = mode == "resume"
    first = connect(ctx, port, None, ping=True)
    session = first.session if resume else None
    first.close()
    for _ in range(3):  # warm-up
        connect(ctx, port, session, ping=resume).close()
    print("ready", flush=True)
    sys.stdin.readline()
    n = reused = errors = 0
    t0, cpu0 = time.monotonic(), time.process_time()
    deadline = t0 + seconds
    while time.monotonic() < deadline:
        try:
            tls = connect(ctx, port, session, ping=resume)
        except (OSError, ssl.SSLError):
            errors += 1
            continue
        n += 1
        if resume:
            reused += bool(tls.session_reused)
            session = tls.session or session
        tls.close()
    return {"n": n, "reused": reused, "errors": errors, "wall": time.monotonic() - t0,
            "cpu": time.process_time() - cpu0}


def check(port: int) -> dict[str, object]:
    tls = connect(client_context(), port, None, ping=False)
    try:
        return {"version": tls.version(), "cipher": (tls.cipher() or ("?",))[0]}
    finally:
        tls.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=("full", "resume"), default="full")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    result = check(args.port) if args.check else run(args.port, args.mode, args.seconds)
    print(json.dumps(result), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
