"""The reference server for the post-quantum hybrid: TLS 1.3 on pyOpenSSL, handshakes only.

Debian's ``openssl`` (3.0) knows no X25519MLKEM768; the OpenSSL inside cryptography's wheels (3.5 and
later) does, and pyOpenSSL drives it. Like ``openssl s_server -rev`` this serves one connection at a
time: accept, handshake, close_notify, close. OpenSSL does the handshake in C; Python only accepts
and loops, so the CPU it adds per connection is small and the same for both groups.

    python -m bench.pyopenssl_server --port P --cert C --key K --groups X25519MLKEM768
"""

from __future__ import annotations

import argparse
import contextlib
import socket

from OpenSSL import SSL
from OpenSSL._util import lib  # pyOpenSSL has no set_groups; its binding has the call

from bench.servers import SUITE


def context(cert: str, key: str, groups: str) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.use_certificate_chain_file(cert)
    ctx.use_privatekey_file(key)
    ctx.set_tls13_ciphersuites(SUITE.encode())
    if lib.SSL_CTX_set1_curves_list(ctx._context, groups.encode()) != 1:
        raise SystemExit(f"OpenSSL refused the groups {groups!r}")
    ctx.set_options(SSL.OP_NO_TICKET)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    return ctx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--groups", required=True, help="OpenSSL group list, e.g. X25519MLKEM768 or X25519")
    args = ap.parse_args()
    ctx = context(args.cert, args.key, args.groups)
    listener = socket.create_server(("127.0.0.1", args.port), backlog=1024)
    print("ready", flush=True)
    while True:
        sock, _ = listener.accept()
        with sock, contextlib.suppress(SSL.Error, OSError):
            conn = SSL.Connection(ctx, sock)
            conn.set_accept_state()
            conn.do_handshake()
            conn.shutdown()


if __name__ == "__main__":
    main()
