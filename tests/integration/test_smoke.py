"""The pair fixture itself: both daemons up, a real TLS client through the split."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

from tests.integration.conftest import Pki, Server


def test_python_ssl_echo(pair: Callable[..., Server], pki: Pki) -> None:
    server = pair("--backend", "echo")
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    with socket.create_connection((server.host, server.port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.3"
        tls.sendall(b"through the split")
        assert tls.recv(100) == b"through the split"
    server.wait_log("secured", '"handshake done"')
    server.wait_log("appd", '"connection"')


def test_ipv4_and_ipv6_listeners_at_once(pair: Callable[..., Server], pki: Pki) -> None:
    """Two --listen addresses, one per family; appd reports both and serves on each."""
    with socket.socket(socket.AF_INET) as s4, socket.socket(socket.AF_INET6) as s6:
        s4.bind(("127.0.0.1", 0))
        s6.bind(("::1", 0))
        p4, p6 = s4.getsockname()[1], s6.getsockname()[1]
    server = pair("--backend", "echo", "--listen", f"127.0.0.1:{p4}", "--listen", f"[::1]:{p6}")
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    for host, port in (("127.0.0.1", p4), ("::1", p6)):
        with socket.create_connection((host, port)) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(host.encode())
            assert tls.recv(100) == host.encode()
    server.wait_log("appd", f"[::1]:{p6}")
