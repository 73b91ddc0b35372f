"""CPU time of the server engine per full handshake, in memory (no sockets, no daemons).

A real OpenSSL client (Python's ssl over MemoryBIO) drives ``ServerHandshake``; only the time spent
inside the engine's calls (receive_data, data_to_send, export) is counted, as thread CPU time. The
crypto floor is the same handshake's ``cryptography`` calls alone (ephemeral keygen + ECDH + the
signature), so "overhead" is what our Python adds.

    .venv/bin/python -m bench.engine [--n 200] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import pstats
import ssl
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519

from bench.pki import KINDS, in_memory
from tls_privsep.launcher.testing import new_key
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared.config import GROUP_NAMES
from tls_privsep.shared.state import TLS13


def one_handshake(config: object, ctx: ssl.SSLContext) -> float:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    spent = 0.0
    server = None
    done = False
    while True:
        if not done:
            try:
                client.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                pass
        data = outgoing.read()
        t0 = time.thread_time()
        if server is None:
            server = ServerHandshake(config)  # type: ignore[arg-type]
        if data:
            server.receive_data(data)
        reply = server.data_to_send()
        if server.complete:
            server.export()
        spent += time.thread_time() - t0
        if reply:
            incoming.write(reply)
        if done and server.complete:
            return spent


def pq_engine_us(group: str, n: int) -> float:
    """µs of engine CPU per full ECDSA handshake with a client that offers X25519MLKEM768 and X25519 shares
    (pyOpenSSL over memory BIOs), the engine offering ``group`` only: the in-memory half of the bench's
    post-quantum phase."""
    from OpenSSL import SSL

    # TLS 1.3 only: the client offers nothing else, and a hybrid-only group list leaves TLS 1.2 no key exchange.
    config = dataclasses.replace(in_memory().server_config("ecdsa"), groups=(GROUP_NAMES[group.lower()],),
                                 versions=frozenset({TLS13}))
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)

    def one() -> float:
        client = SSL.Connection(ctx, None)
        client.set_connect_state()
        server, spent = None, 0.0
        for _ in range(10):
            with contextlib.suppress(SSL.WantReadError):
                client.do_handshake()
            data = b""
            with contextlib.suppress(SSL.WantReadError):
                data = client.bio_read(1 << 20)
            t0 = time.thread_time()
            if server is None:
                server = ServerHandshake(config)
            if data:
                server.receive_data(data)
            reply = server.data_to_send()
            done = server.complete
            if done:
                server.export()
            spent += time.thread_time() - t0
            if reply:
                client.bio_write(reply)
            if done:
                return spent
        raise RuntimeError("handshake did not finish")

    for _ in range(10):
        one()
    return sum(one() for _ in range(n)) / n * 1e6


def crypto_floor(kind: str | None, n: int) -> float:
    """CPU of one handshake's public-key work: an ephemeral X25519 key and exchange, plus the signature
    with ``kind``'s key (None: no signature, as in a resumed handshake)."""
    key = new_key(KINDS[kind]) if kind else None  # signing costs the same with any key of the kind
    peer = x25519.X25519PrivateKey.generate().public_key()
    t0 = time.thread_time()
    for _ in range(n):
        eph = x25519.X25519PrivateKey.generate()
        eph.exchange(peer)
        eph.public_key().public_bytes_raw()
        if kind is None:
            continue
        if kind == "ecdsa":
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            key.sign(b"x" * 130, ec.ECDSA(hashes.SHA256()))
        else:
            assert isinstance(key, rsa.RSAPrivateKey)
            key.sign(b"x" * 130, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    return (time.thread_time() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile of the ECDSA run")
    args = ap.parse_args()
    setup = in_memory()
    ctx = setup.client_context()
    print(f"{'certificate':<12} {'engine µs/hs':>13} {'crypto floor µs':>16} {'overhead µs':>12} {'x floor':>7}")
    for kind in ("ecdsa", "rsa2048"):
        config = setup.server_config(kind)
        for _ in range(10):
            one_handshake(config, ctx)
        prof = cProfile.Profile() if args.profile and kind == "ecdsa" else None
        if prof:
            prof.enable()
        total = sum(one_handshake(config, ctx) for _ in range(args.n))
        if prof:
            prof.disable()
        per = total / args.n * 1e6
        floor = crypto_floor(kind, args.n) * 1e6
        print(f"{kind:<12} {per:>13.0f} {floor:>16.0f} {per - floor:>12.0f} {per / floor:>7.2f}")
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
