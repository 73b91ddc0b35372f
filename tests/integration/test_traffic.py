"""Traffic through the real pair: bulk both ways over the tcp:// proxy, many connections, half-close, backend down.

The clients are Python's ``ssl`` (OpenSSL). Full-duplex transfers use :class:`BioClient`, one thread driving an
``SSLObject`` over memory BIOs and a non-blocking socket: an ``SSLSocket`` must not be read and written from two
threads, and a blocking ``unwrap()`` cannot keep reading application data after our close_notify.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.helpers import MIB, BioClient, Pair, PeerClosed, Pki, TcpBackend, expected_digest, keystream

BULK = 100 * MIB


def read_to_eof(sock: socket.socket, result: dict[str, object], key: str = "received") -> None:
    """Read until EOF; store the byte count, SHA-256 and the instant EOF came."""
    h = hashlib.sha256()
    n = 0
    while data := sock.recv(MIB):
        h.update(data)
        n += len(data)
    result[key + "_bytes"], result[key + "_sha256"], result[key + "_eof_at"] = n, h.hexdigest(), time.monotonic()


@pytest.fixture
def client_ctx(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


# ---- tests --------------------------------------------------------------------------------------------------------


def test_bulk_100_mib_each_way_through_the_tcp_proxy(pair: Callable[..., Pair], client_ctx: ssl.SSLContext,
                                                     backend_factory: Callable[..., TcpBackend]) -> None:
    """One connection: 100 MiB up and 100 MiB down at the same time, both compared by SHA-256."""
    up_seed, down_seed = 1, 2

    def handler(sock: socket.socket, result: dict[str, object]) -> None:
        def send() -> None:
            for block in keystream(down_seed, BULK):
                sock.sendall(block)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        read_to_eof(sock, result)
        sender.join()

    backend = backend_factory(handler)
    server = pair("--backend", f"tcp://127.0.0.1:{backend.port}")
    down = hashlib.sha256()
    got = 0

    def on_data(data: bytes) -> None:
        nonlocal got
        down.update(data)
        got += len(data)

    client = BioClient(server.host, server.port, client_ctx, timeout=120)
    start = time.monotonic()
    try:
        client.transfer(keystream(up_seed, BULK), on_data)
    finally:
        client.close()
    (result,) = backend.wait()
    up_s = float(result["received_eof_at"]) - start  # type: ignore[arg-type]
    down_s = client.eof_received_at - start
    print(f"\nbulk through tcp:// proxy, concurrently: up {BULK / MIB / up_s:.1f} MiB/s ({up_s:.2f} s), "
          f"down {BULK / MIB / down_s:.1f} MiB/s ({down_s:.2f} s)")
    assert result["received_bytes"] == BULK
    assert result["received_sha256"] == expected_digest(up_seed, BULK)
    assert got == BULK
    assert down.hexdigest() == expected_digest(down_seed, BULK)
    (conn,) = server.wait_events("appd", "connection", 1)
    assert conn["outcome"] == "closed"
    assert conn["bytes_in"] == BULK and conn["bytes_out"] == BULK


def test_200_concurrent_connections(pair: Callable[..., Pair], client_ctx: ssl.SSLContext) -> None:
    """200 TLS connections open at the same time, each echoing its own message, all closed cleanly."""
    n = 200
    server = pair("--backend", "echo")
    all_open = threading.Barrier(n, timeout=60)

    def one(i: int) -> bytes:
        message = f"connection {i:03d} ".encode() * 10
        with socket.create_connection((server.host, server.port), timeout=60) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            all_open.wait()
            tls.sendall(message)
            got = b""
            while len(got) < len(message):
                chunk = tls.recv(65536)
                assert chunk, "server closed early"
                got += chunk
            tls.unwrap()
        assert got == message
        return got

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    assert len(set(results)) == n
    conns = server.wait_events("appd", "connection", n)
    assert len(conns) == n
    assert [c for c in conns if c["outcome"] != "closed"] == []
    assert server.appd.poll() is None


def test_half_close_client_first_while_backend_still_sends(
        pair: Callable[..., Pair], client_ctx: ssl.SSLContext, backend_factory: Callable[..., TcpBackend]) -> None:
    """Client close_notify -> backend sees EOF; the backend's answer after that EOF still reaches the client."""
    after = 3 * MIB

    def handler(sock: socket.socket, result: dict[str, object]) -> None:
        sock.sendall(b"before ")
        read_to_eof(sock, result)
        for block in keystream(7, after):  # everything here is sent after the client's direction closed
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)

    backend = backend_factory(handler)
    server = pair("--backend", f"tcp://127.0.0.1:{backend.port}")
    client = BioClient(server.host, server.port, client_ctx)
    received = bytearray()
    try:
        client.transfer(iter([b"request body"]), received.extend)
    finally:
        client.close()
    (result,) = backend.wait()
    assert result["received_bytes"] == len(b"request body")
    assert result["received_sha256"] == hashlib.sha256(b"request body").hexdigest()
    assert received[:7] == b"before "
    assert hashlib.sha256(received[7:]).hexdigest() == expected_digest(7, after)
    assert client.eof_received and client.eof_sent
    (conn,) = server.wait_events("appd", "connection", 1)
    assert conn["outcome"] == "closed"


def test_unix_backend_with_a_proxy_header(
        pair: Callable[..., Pair], client_ctx: ssl.SSLContext, tmp_path: Path) -> None:
    """unix: backend with appd.proxy_protocol: the backend reads a PROXY v2 header, then the client's bytes,
    and its answer reaches the client (as root, appd reaches the socket as nobody)."""
    base = Path(tempfile.mkdtemp(prefix="tls-privsep-unix-backend-"))
    os.chmod(base, 0o711)
    path = base / "app.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o666)
    listener.listen()

    def handler(sock: socket.socket, result: dict[str, object]) -> None:
        data = b""
        while chunk := sock.recv(65536):  # the client closes its side after its bytes
            data += chunk
        result["signature"] = data[:12]
        length = int.from_bytes(data[14:16], "big")
        result["payload"] = data[16 + length:]
        sock.sendall(b"unix says " + data[16 + length:])
        sock.shutdown(socket.SHUT_WR)

    backend = TcpBackend(handler, listener)
    (tmp_path / "proxy.toml").write_text("[appd]\nproxy_protocol = true\n")
    try:
        server = pair("-c", str(tmp_path / "proxy.toml"), "--backend", f"unix:{path}")
        client = BioClient(server.host, server.port, client_ctx)
        received = bytearray()
        try:
            client.transfer(iter([b"hello"]), received.extend)
        finally:
            client.close()
        (result,) = backend.wait()
    finally:
        backend.close()
        shutil.rmtree(base)
    assert result["signature"] == b"\r\n\r\n\x00\r\nQUIT\n"
    assert result["payload"] == b"hello"
    assert bytes(received) == b"unix says hello"


def test_half_close_backend_first_while_client_still_sends(
        pair: Callable[..., Pair], client_ctx: ssl.SSLContext, backend_factory: Callable[..., TcpBackend]) -> None:
    """Backend EOF -> client gets close_notify; the client keeps sending, and the backend gets all of it."""
    later = 3 * MIB

    def handler(sock: socket.socket, result: dict[str, object]) -> None:
        sock.sendall(b"goodbye")
        sock.shutdown(socket.SHUT_WR)
        read_to_eof(sock, result)

    backend = backend_factory(handler)
    server = pair("--backend", f"tcp://127.0.0.1:{backend.port}")
    client = BioClient(server.host, server.port, client_ctx)
    received = bytearray()
    try:
        # First only read, until the backend's direction is closed.
        client.transfer(iter([b"hello "]), received.extend, close_after_upload=False)
        assert received == b"goodbye" and client.eof_received
        # Then send a lot more on the still-open client -> backend direction, and close it.
        client.transfer(keystream(9, later), received.extend, until_peer_closed=False)
    finally:
        results = backend.wait()
        client.close()
    (result,) = results
    h = hashlib.sha256(b"hello ")
    for block in keystream(9, later):
        h.update(block)
    assert result["received_bytes"] == len(b"hello ") + later
    assert result["received_sha256"] == h.hexdigest()
    (conn,) = server.wait_events("appd", "connection", 1)
    assert conn["outcome"] == "closed"


def test_backend_down_gives_a_clean_close_and_appd_keeps_serving(
        pair: Callable[..., Pair], client_ctx: ssl.SSLContext) -> None:
    """Nothing at the tcp:// port: the client gets close_notify (not an alert, not a reset); appd stays up."""
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = pair("--backend", f"tcp://127.0.0.1:{port}")

    def attempt() -> bytes:
        with socket.create_connection((server.host, server.port), timeout=10) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as tls:
            tls.sendall(b"anyone there?")
            return tls.recv(100)  # b"" only on close_notify; a bare EOF would raise SSLEOFError

    assert attempt() == b""
    assert server.wait_events("appd", "backend unavailable", 1)
    assert server.appd.poll() is None
    assert attempt() == b""  # and again: appd serves the next connection the same way
    conns = server.wait_events("appd", "connection", 2)
    assert [c["outcome"] for c in conns] == ["closed", "closed"]

    # Once something listens there, the very same appd proxies to it.
    with socket.create_server(("127.0.0.1", port)) as listener:
        def serve_one() -> None:
            sock, _ = listener.accept()
            with sock:
                sock.sendall(sock.recv(100))
        t = threading.Thread(target=serve_one, daemon=True)
        t.start()
        with socket.create_connection((server.host, server.port), timeout=10) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"now?")
            assert tls.recv(100) == b"now?"
        t.join(10)


def test_tls12_close_notify_is_answered_at_once_and_ends_the_connection(
        pair: Callable[..., Pair], pki: Pki, backend_factory: Callable[..., TcpBackend]) -> None:
    """TLS 1.2 has no half-close: the client's close_notify gets ours at once and the connection ends, whatever
    the backend still does (RFC 5246 §7.2.1: "respond with a close_notify alert of its own and close down the
    connection immediately, discarding any pending writes"). TLS 1.3's half-close is the test above."""
    released = threading.Event()

    def handler(sock: socket.socket, result: dict[str, object]) -> None:
        sock.sendall(b"before ")
        read_to_eof(sock, result)
        released.wait(10)  # a backend that answers late: none of this may reach the client
        with contextlib.suppress(OSError):
            sock.sendall(b"too late")
        sock.close()

    backend = backend_factory(handler)
    server = pair("--backend", f"tcp://127.0.0.1:{backend.port}")
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client = BioClient(server.host, server.port, ctx, timeout=10)
    try:
        got = b""
        while len(got) < len(b"before "):
            with contextlib.suppress(PeerClosed):
                got += client.read_some()
            client._pump(want_read=True)
        client.obj.write(b"request")
        started = time.monotonic()
        got += client.send_eof()
        while not client.eof_received:
            client._pump(want_read=True)
            with contextlib.suppress(PeerClosed):
                got += client.read_some()
        assert time.monotonic() - started < 3, "our close_notify waited for the backend"
        assert got == b"before "
        client.sock.settimeout(3)  # EOF comes at once (and stays): no "too late" bytes, no waiting for the backend
        assert client.sock.recv(100) == b"", "the connection did not end after the close_notify exchange"
    finally:
        released.set()
        client.close()
    (result,) = backend.wait()
    assert result["received_bytes"] == len(b"request")
    (conn,) = server.wait_events("appd", "connection", 1)
    assert conn["version"] == "TLSv1.2" and conn["outcome"] == "closed"
