"""Closed-loop handshake load from Python's ``ssl``: one process, one connection at a time.

The bench starts several of these on the client core. ``resume`` is why this exists beside
``openssl s_time``: s_time's ``-reuse`` never resumes a TLS 1.3 session (it does not read the
NewSessionTicket). Each connection sends one short line and reads the answer, which both proves
the server finished the handshake and lets the client take in the tickets for the next one.

``--mode byte`` is the proxied phase's connection: a full handshake, one byte sent, one byte read back
from the backend behind the proxy, close.

``--client pyopenssl`` makes full handshakes through pyOpenSSL instead, on the OpenSSL of
cryptography's wheels, which offers X25519MLKEM768 and X25519 shares (the post-quantum phase):
Python's ``ssl`` links the system's OpenSSL 3.0, which knows no hybrid.

Protocol with the bench: prints ``ready`` once warmed up, waits for a line on stdin, runs for
``--seconds``, prints one JSON line of counts and its own CPU time.

    python -m bench.hsclient --port P --mode full|resume|byte --seconds S [--client ssl|pyopenssl] [--tls12]
    python -m bench.hsclient --port P --check [--tls12]    (one handshake; prints version, suite and group)
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
BYTE = b"\x00"  # the proxied phase's one byte each way (the backend answers b"\x01")
PQ_GROUPS = b"*X25519MLKEM768:*X25519:secp256r1:X448:secp384r1"  # shares for the first two, as OpenSSL 3.5


def client_context(tls12: bool = False) -> ssl.SSLContext:
    """TLS 1.3 only (or TLS 1.2 only, ECDHE-ECDSA-AES128-GCM-SHA256), no chain check (as s_time): the
    handshake signature is still verified."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    version = ssl.TLSVersion.TLSv1_2 if tls12 else ssl.TLSVersion.TLSv1_3
    ctx.minimum_version = ctx.maximum_version = version
    if tls12:
        ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
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


def exchange_byte(tls: ssl.SSLSocket) -> None:
    """The proxied connection's payload: one byte out, one byte back (through the proxy, from the backend)."""
    tls.sendall(BYTE)
    if not tls.recv(1):
        raise ConnectionError("the proxy closed instead of relaying the backend's byte")


def pq_connect(port: int, groups: bytes = PQ_GROUPS) -> dict[str, object]:
    """One full handshake through pyOpenSSL (no chain check, as above); what was negotiated. ``groups`` in
    OpenSSL's syntax, a ``*`` before each group the client sends a key share for."""
    from OpenSSL import SSL
    from OpenSSL._util import lib

    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    # OpenSSL 3.5's own default, spelled out: the bench's OPENSSL_CONF pins X25519 for the other peers.
    lib.SSL_CTX_set1_curves_list(ctx._context, groups)
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = SSL.Connection(ctx, raw)
        conn.set_tlsext_host_name(b"localhost")
        conn.set_connect_state()
        conn.do_handshake()
        return {"version": conn.get_protocol_version_name(), "cipher": conn.get_cipher_name(),
                "group": conn.get_group_name()}


def run_pq(port: int, seconds: float) -> dict[str, float]:
    for _ in range(3):  # warm-up
        pq_connect(port)
    print("ready", flush=True)
    sys.stdin.readline()
    n = errors = 0
    t0, cpu0 = time.monotonic(), time.process_time()
    deadline = t0 + seconds
    while time.monotonic() < deadline:
        try:
            pq_connect(port)
        except Exception:  # pyOpenSSL's errors and OSError alike: counted, never fatal
            errors += 1
            continue
        n += 1
    return {"n": n, "reused": 0, "errors": errors, "wall": time.monotonic() - t0, "cpu": time.process_time() - cpu0}


def run(port: int, mode: str, seconds: float, tls12: bool = False) -> dict[str, float]:
    ctx = client_context(tls12)
    resume, byte = mode == "resume", mode == "byte"
    first = connect(ctx, port, None, ping=not byte)
    if byte:
        exchange_byte(first)
    session = first.session if resume else None
    first.close()
    for _ in range(3):  # warm-up
        tls = connect(ctx, port, session, ping=resume)
        if byte:
            exchange_byte(tls)
        tls.close()
    print("ready", flush=True)
    sys.stdin.readline()
    n = reused = errors = 0
    t0, cpu0 = time.monotonic(), time.process_time()
    deadline = t0 + seconds
    while time.monotonic() < deadline:
        try:
            tls = connect(ctx, port, session, ping=resume)
            if byte:
                try:
                    exchange_byte(tls)
                except BaseException:
                    tls.close()
                    raise
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


def check(port: int, tls12: bool = False) -> dict[str, object]:
    tls = connect(client_context(tls12), port, None, ping=False)
    try:
        return {"version": tls.version(), "cipher": (tls.cipher() or ("?",))[0]}
    finally:
        tls.close()


def check_byte(port: int) -> dict[str, object]:
    """One proxied connection as the load makes it: what was negotiated, whether the byte came back, and
    whether a session ticket came with it (the tickets precede the byte, so reading it takes them in)."""
    tls = connect(client_context(), port, None, ping=False)
    try:
        exchange_byte(tls)
        session = tls.session
        return {"version": tls.version(), "cipher": (tls.cipher() or ("?",))[0],
                "ticket": bool(session is not None and session.has_ticket)}
    finally:
        tls.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=("full", "resume", "byte"), default="full")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--client", choices=("ssl", "pyopenssl"), default="ssl")
    ap.add_argument("--tls12", action="store_true", help="TLS 1.2 (ssl client only)")
    args = ap.parse_args()
    if args.client == "pyopenssl":
        result = pq_connect(args.port) if args.check else run_pq(args.port, args.seconds)
    else:
        result = check(args.port, args.tls12) if args.check else run(args.port, args.mode, args.seconds, args.tls12)
    print(json.dumps(result), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
