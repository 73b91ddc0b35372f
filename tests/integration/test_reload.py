"""SIGHUP reload under load: secured swaps its certificates without dropping a session or a handshake in flight.

The files are re-read by secured's own user (it dropped root long before), so as root they are handed to
``nobody``, as an operator hands them to ``tls-secured``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.integration.helpers import MIB, USERS, BioClient, Pair, TcpBackend, free_port, keystream, launcher
from tls_privsep.launcher.testing import IssuedCert, NotifySocket, ThrowawayCA

STREAM = 48 * MIB


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return ThrowawayCA(tmp_path_factory.mktemp("reload-ca"), "tls-privsep reload CA")


def install(keydir: Path, cert: IssuedCert, key: IssuedCert | bytes) -> tuple[Path, Path]:
    """Write cert.pem (``cert``'s chain) and key.pem (``key``'s key, or these bytes) the way a certificate tool
    does: a new file renamed over the old."""
    key_pem = key if isinstance(key, bytes) else key.key_file.read_bytes()
    paths = []
    for name, data, mode in (("cert.pem", cert.cert_file.read_bytes(), 0o644), ("key.pem", key_pem, 0o600)):
        tmp = keydir / f".{name}.new"
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        if os.geteuid() == 0:
            os.chown(tmp, pwd.getpwnam("nobody").pw_uid, -1)
        os.replace(tmp, keydir / name)
        paths.append(keydir / name)
    return paths[0], paths[1]


def client_ctx(ca: ThrowawayCA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def served_cert(port: int, ctx: ssl.SSLContext) -> bytes:
    """The DER of the certificate a fresh handshake on 127.0.0.1:``port`` presents."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def der(cert: IssuedCert) -> bytes:
    """The leaf's DER, as a client sees it."""
    return x509.load_pem_x509_certificate(cert.cert_file.read_bytes()).public_bytes(serialization.Encoding.DER)


def sighup_and_wait(server: Pair, event: str, count: int) -> None:
    """SIGHUP secured and wait for its ``count``-th ``event`` log line."""
    server.secured.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while server.log_text("secured").count(f'"{event}"') < count:
        assert time.monotonic() < deadline, f"no {event!r} in secured's log:\n{server.log_text('secured')[-3000:]}"
        assert server.secured.poll() is None, "secured died on SIGHUP"
        time.sleep(0.05)


def echo_handler(sock: socket.socket, result: dict[str, object]) -> None:
    while data := sock.recv(MIB):
        sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


def test_reload_under_load(pair: Callable[..., Pair], ca: ThrowawayCA, keydir: Path,
                           backend_factory: Callable[..., TcpBackend], notify_socket: NotifySocket) -> None:
    """A 48 MiB echo stream through the tcp:// proxy keeps flowing while SIGHUP swaps the certificate; the next
    handshake presents the new one; a handshake in flight across the reload completes; a broken key is refused
    and the certificate before it stays; systemd hears RELOADING=1 (with MONOTONIC_USEC) then READY=1."""
    old_cert = ca.issue("localhost", key_type="ecdsa")
    new_cert = ca.issue("localhost", "reloaded.example", key_type="rsa")
    cert_path, key_path = install(keydir, old_cert, old_cert)
    backend = backend_factory(echo_handler)
    server = pair("--backend", f"tcp://127.0.0.1:{backend.port}", certs="none",
                  secured_args=["--cert", str(cert_path), "--key", str(key_path)], notify=notify_socket)
    ctx = client_ctx(ca)
    assert served_cert(server.port, ctx) == der(old_cert)

    streamed = 0
    reloaded = threading.Event()
    after_reload: list[bytes] = []
    inflight_result: list[tuple[bytes, bytes]] = []
    errors: list[BaseException] = []

    def reload_midstream() -> None:
        try:
            while streamed < STREAM // 4:
                time.sleep(0.01)
            # A handshake in flight: our Finished is ready but not yet sent when the reload happens.
            inflight = InFlight(server, ctx)
            install(keydir, new_cert, new_cert)
            sighup_and_wait(server, "certificates reloaded", 1)
            inflight_result.append(inflight.finish())
            after_reload.append(served_cert(server.port, ctx))
            reloaded.set()
        except BaseException as exc:
            errors.append(exc)
            reloaded.set()

    def upload() -> Iterator[bytes]:
        nonlocal streamed
        for block in keystream(7, STREAM):
            streamed += len(block)
            yield block

    digest = hashlib.sha256()
    got = 0

    def on_data(data: bytes) -> None:
        nonlocal got
        digest.update(data)
        got += len(data)

    reloader = threading.Thread(target=reload_midstream)
    reloader.start()
    stream = BioClient(server.host, server.port, ctx, timeout=120)
    with contextlib.closing(stream):
        stream.transfer(upload(), on_data)
    reloader.join(30)
    assert not errors, errors
    assert reloaded.is_set()
    assert streamed == STREAM and got == STREAM, (streamed, got)
    assert digest.hexdigest() == hashlib.sha256(b"".join(keystream(7, STREAM))).hexdigest()
    assert after_reload == [der(new_cert)]
    assert served_cert(server.port, ctx) == der(new_cert)
    assert inflight_result == [(der(old_cert), b"finished after the reload")]

    # A key that does not belong to the certificate: refused, the current certificate stays.
    other_cert = ca.issue("localhost", "broken.example", key_type="ecdsa")
    install(keydir, other_cert, new_cert)
    sighup_and_wait(server, "reload refused", 1)
    assert "private key does not match the certificate" in server.log_text("secured")
    assert served_cert(server.port, ctx) == der(new_cert)
    # Not a key at all: refused too.
    install(keydir, new_cert, b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    sighup_and_wait(server, "reload refused", 2)
    assert served_cert(server.port, ctx) == der(new_cert)
    assert server.secured.poll() is None and server.appd.poll() is None
    assert key_path.read_bytes() not in server.log_text("secured").encode()

    pid = server.secured.pid
    notify_socket.collect(lambda m: sum(1 for line in notify_socket.lines(pid) if line == "READY=1") >= 4)
    lines = notify_socket.lines(pid)
    reloads = [i for i, line in enumerate(lines) if line == "RELOADING=1"]
    assert len(reloads) == 3, lines
    for i in reloads:
        assert lines[i + 1].startswith("MONOTONIC_USEC=") and int(lines[i + 1].split("=")[1]) > 0
        assert "READY=1" in lines[i + 2:], lines
    assert any(line.startswith("STATUS=reload refused") for line in lines), lines


class InFlight:
    """A client handshake paused just before its Finished leaves: the server side is still in flight."""

    def __init__(self, server: Pair, ctx: ssl.SSLContext) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        while True:
            try:
                self.obj.do_handshake()
                break  # the client is done; its Finished sits in ``outgoing``
            except ssl.SSLWantReadError:
                if out := self.outgoing.read():
                    self.sock.sendall(out)
                data = self.sock.recv(65536)
                assert data, "server closed during the handshake"
                self.incoming.write(data)

    def finish(self) -> tuple[bytes, bytes]:
        """Send our Finished and one message; return the certificate we saw and the echo."""
        payload = b"finished after the reload"
        self.obj.write(payload)
        self.sock.sendall(self.outgoing.read())
        echoed = b""
        while len(echoed) < len(payload):
            try:
                echoed += self.obj.read(65536)
            except ssl.SSLWantReadError:
                data = self.sock.recv(65536)
                assert data, "server closed the in-flight connection"
                self.incoming.write(data)
        cert = self.obj.getpeercert(binary_form=True)
        self.sock.close()
        assert cert is not None
        return cert, echoed


def test_tls_privsep_reload_reports_the_outcome(ca: ThrowawayCA, keydir: Path) -> None:
    """``tls-privsep reload`` on a background instance: 0 and the new fingerprint when secured took the new
    certificate, 78 and secured's reason when it refused it (still serving the previous one), 7 when stopped."""
    first = ca.issue("localhost", key_type="ecdsa")
    second = ca.issue("localhost", key_type="rsa")
    cert_path, key_path = install(keydir, first, first)
    rundir = Path(tempfile.mkdtemp(prefix="tls-privsep-reload-run-"))
    os.chmod(rundir, 0o711)
    port = free_port()
    common = ["--runtime-dir", str(rundir / "run")]
    started = launcher("start", "--listen", f"127.0.0.1:{port}", "--cert", str(cert_path), "--key", str(key_path),
                       "--backend", "echo", *common, *USERS)
    try:
        assert started.returncode == 0, started.stderr
        ctx = client_ctx(ca)
        deadline = time.monotonic() + 5
        while True:  # the first connection may wait for the channel (see test_lifecycle)
            try:
                assert served_cert(port, ctx) == der(first)
                break
            except (OSError, ssl.SSLError):
                assert time.monotonic() < deadline
                time.sleep(0.05)

        install(keydir, second, second)
        result = launcher("reload", *common)
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert result.stdout.startswith("tls-privsep: reloaded: "), result.stdout
        assert served_cert(port, ctx) == der(second)

        install(keydir, first, second)  # the key of the other certificate
        result = launcher("reload", *common)
        assert result.returncode == 78, (result.stdout, result.stderr)
        assert result.stderr.startswith("tls-privsep: reload refused, previous certificates kept: "), result.stderr
        assert "private key does not match the certificate" in result.stderr
        assert result.stderr.count("\n") == 1
        assert served_cert(port, ctx) == der(second)
    finally:
        launcher("stop", *common)
        shutil.rmtree(rundir, ignore_errors=True)
    stopped = launcher("reload", *common)
    assert (stopped.returncode, stopped.stdout.strip()) == (7, "tls-privsep: not running")
