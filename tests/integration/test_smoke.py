"""The pair fixture itself: both daemons up, a real TLS client through the split."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable

import pytest

from tests.integration.helpers import Pair, Pki


def test_python_ssl_echo(pair: Callable[..., Pair], pki: Pki) -> None:
    server = pair("--backend", "echo")
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    with socket.create_connection((server.host, server.port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.3"
        tls.sendall(b"through the split")
        assert tls.recv(100) == b"through the split"
    server.wait_log("secured", '"handshake done"')
    server.wait_log("appd", '"connection"')


def test_ipv4_and_ipv6_listeners_at_once(pair: Callable[..., Pair], pki: Pki) -> None:
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


def test_one_summary_line_per_connection_failed_handshakes_included(pair: Callable[..., Pair], pki: Pki) -> None:
    """Operators grep one line per connection: the same keys whether the handshake worked or not."""
    server = pair("--backend", "echo", "--alpn", "h2")
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((server.host, server.port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"counted")
        assert tls.recv(100) == b"counted"
        tls.unwrap()  # our close_notify: a clean close
    # A client that just hangs up is served too, and its line says how it ended.
    with socket.create_connection((server.host, server.port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"gone")
        assert tls.recv(100) == b"gone"
    bad = ssl.create_default_context(cafile=str(pki.ca_file))
    bad.set_alpn_protocols(["http/1.1"])
    with socket.create_connection((server.host, server.port)) as raw, \
            pytest.raises(ssl.SSLError, match="no application protocol"):
        bad.wrap_socket(raw, server_hostname="localhost")
    server.wait_log("appd", "handshake failed")
    deadline = time.monotonic() + 5
    while server.log_text("appd").count('"event": "connection"') < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [json.loads(line) for line in server.log_text("appd").splitlines() if '"connection"' in line]
    lines = [e for e in lines if e.get("event") == "connection"]
    assert len(lines) == 3, lines
    good, hung_up, failed = sorted(lines, key=lambda e: e["conn"])
    assert "without close_notify" in hung_up["outcome"] and hung_up["bytes_in"] == len(b"gone"), hung_up
    keys = {"conn", "peer", "outcome", "handshake_ms", "duration_ms", "suite", "group", "group_name", "sni", "alpn",
            "resumed", "bytes_in", "bytes_out"}
    assert keys <= good.keys() and keys <= failed.keys(), (good, failed)
    assert (good["outcome"], good["sni"], good["alpn"], good["suite"]) == ("closed", "localhost", "h2", "0x1301")
    assert (good["group"], good["group_name"]) == ("0x001d", "x25519")  # from the ServerHello appd relayed
    assert (failed["group"], failed["group_name"]) == (None, None)  # refused before any ServerHello
    assert good["bytes_in"] == good["bytes_out"] == len(b"counted")
    assert failed["outcome"] == "handshake failed: no_application_protocol", failed
    assert failed["peer"].startswith("127.0.0.1:") and failed["handshake_ms"] is None
