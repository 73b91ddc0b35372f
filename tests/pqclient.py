"""A real client that offers the post-quantum hybrid by default: pyOpenSSL, over the OpenSSL that its
``cryptography`` wheel bundles (3.5 or later), which sends X25519MLKEM768 and X25519 key shares.

Python's ``ssl`` links the system's OpenSSL (3.0 here), which knows no hybrid; this is the client the
hybrid tests drive instead, in memory against the engine (tests/unit) and over TCP against the daemon pair
(tests/integration). ``groups`` takes OpenSSL's group-list syntax: ``*`` marks the groups a key share is
sent for, so ``"*X25519:X25519MLKEM768"`` lists the hybrid without sharing it.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from cryptography import x509
from OpenSSL import SSL
from OpenSSL._util import lib as _lib  # pyOpenSSL has no set_groups; its binding has the call
from OpenSSL.crypto import X509

HYBRID = "X25519MLKEM768"


def client_context(ca: x509.Certificate, *, groups: str | None = None, suite: str | None = None) -> SSL.Context:
    """TLS 1.3 only, verifying the server's chain to ``ca``; OpenSSL's own group list unless ``groups``."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    store = ctx.get_cert_store()
    assert store is not None
    store.add_cert(X509.from_cryptography(ca))
    ctx.set_verify(SSL.VERIFY_PEER)
    if groups is not None and _lib.SSL_CTX_set1_curves_list(ctx._context, groups.encode()) != 1:
        raise ValueError(f"OpenSSL refused the group list {groups!r}")
    if suite is not None:
        ctx.set_tls13_ciphersuites(suite.encode())
    return ctx


def reused(conn: SSL.Connection) -> bool:
    return bool(_lib.SSL_session_reused(conn._ssl))


@dataclass
class Result:
    group: str  # the group OpenSSL says was negotiated (SSL_get0_group_name)
    cipher: str
    reused: bool
    echoed: bytes
    session: SSL.Session


def echo_over_tcp(host: str, port: int, ctx: SSL.Context, data: bytes, *, session: SSL.Session | None = None,
                  timeout: float = 10.0) -> Result:
    """One connection: handshake, ``data`` out, as much back, a session for the next one (tickets read)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        # pyOpenSSL wants a blocking socket; a kernel receive timeout still turns a silent server into an error.
        sock.settimeout(None)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(timeout), 0))
        conn = SSL.Connection(ctx, sock)
        conn.set_tlsext_host_name(b"localhost")
        if session is not None:
            conn.set_session(session)
        conn.set_connect_state()
        conn.do_handshake()
        conn.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
        result = Result(conn.get_group_name() or "", conn.get_cipher_name() or "", reused(conn), got,
                        conn.get_session())
        conn.shutdown()
        return result
