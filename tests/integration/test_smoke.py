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
