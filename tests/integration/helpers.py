"""Plain helpers the integration tests share: the certificates, the pair, the launcher, processes, traffic,
and the interop modules' shared servers (:class:`Pool`) and real clients (s_client, gnutls-cli, curl, …).

The fixtures built on them (``pki``, ``pair``, ``pool``, ``rundir``, ``keydir``, ``notify_socket``, ``backend_factory``)
are in conftest.py; a test module imports from here and from no other test module.

Pairs are started by :mod:`launcher.testing` (the engine of the pytest plugin) with two additions for this
suite: ``$TLS_PRIVSEP_TEST_PYTHON`` names another install to start the daemons from
(tests/integration/test_first_contact.py), and stopping a pair fails the test if a daemon imported anything
after dropping privileges (it logs ``late import``; see tls_privsep/shared/preload.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding
from tlslite.api import HandshakeSettings, TLSConnection

from tls_privsep.launcher.testing import DaemonName, Daemons, IssuedCert, NotifySocket, ThrowawayCA, spawn
from tls_privsep.shared import cli

ROOT = Path(__file__).resolve().parents[2]
# Another install of tls_privsep to start the pairs' daemons from (test_first_contact's sealed virtualenv).
DAEMON_PYTHON = os.environ.get("TLS_PRIVSEP_TEST_PYTHON")
AS_ROOT = os.geteuid() == 0
USERS = ["--secured-user", "nobody", "--appd-user", "nobody"] if AS_ROOT else []  # the launcher's, as root
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
MIB = 1 << 20
CHUNK = 256 * 1024

CertKind = Literal["rsa", "ecdsa"]
# The server certificates a pair is given, by name: ``pair(certs=...)``, test_interop's pool.
CERTS: dict[str, tuple[CertKind, ...]] = {"both": ("rsa", "ecdsa"), "rsa": ("rsa",), "ecdsa": ("ecdsa",), "none": ()}


def require_binary(name: str) -> str:
    """The path of a real client; under CI a missing one fails the test instead of skipping it."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; CI must install it (make sysdeps)")
        pytest.skip(f"{name} not installed")
    return path


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM every process still running (in the order given), then wait for each; SIGKILL what hangs."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- certificates ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """The suite's certificates, from two :class:`~launcher.testing.ThrowawayCA`: RSA-2048 and ECDSA P-256
    server certificates (localhost, 127.0.0.1, ::1), and a client certificate from another CA."""

    ca: ThrowawayCA
    client_ca: ThrowawayCA
    rsa: IssuedCert
    ecdsa: IssuedCert
    client: IssuedCert

    @classmethod
    def make(cls, directory: Path) -> Pki:
        ca = ThrowawayCA(directory, "tls-privsep integration CA")
        client_ca = ThrowawayCA(directory / "client-ca", "tls-privsep client CA")
        return cls(ca, client_ca, ca.server_cert("rsa"), ca.server_cert("ecdsa"), client_ca.issue(client=True))

    @property
    def dir(self) -> Path:
        """Where the server certificates and keys are (ca.pem, server*-rsa.pem, …)."""
        return self.ca.directory

    @property
    def ca_file(self) -> Path:
        return self.ca.ca_file

    @property
    def client_ca_file(self) -> Path:
        return self.client_ca.ca_file

    def cert_args(self, *kinds: CertKind) -> list[str]:
        """``--cert``/``--key`` for the server certificates of ``kinds``, in that order."""
        return [arg for kind in kinds for arg in ("--cert", str(getattr(self, kind).cert_file),
                                                  "--key", str(getattr(self, kind).key_file))]


# ---- the pair -------------------------------------------------------------------------------------------------


class Pair(Daemons):
    """A secured + appd pair (:func:`launcher.testing.spawn`) whose ``stop()`` fails the test if either
    daemon imported a module after dropping privileges: from an install only root can read, that import
    would fail."""

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        daemons: tuple[DaemonName, ...] = ("secured", "appd")
        for name in daemons:
            late = [line for line in self.log_text(name).splitlines() if '"event": "late import"' in line]
            assert not late, f"{name} imported after dropping privileges (add it to shared/preload.py): {late}"


def start_pair(log_dir: Path, args: Sequence[str], *, secured_args: Sequence[str] = (), appd_args: Sequence[str] = (),
               notify: NotifySocket | None = None) -> Pair:
    """secured and appd with ``args`` (appd on 127.0.0.1:0 unless ``args`` has ``--listen``), their logs in
    ``log_dir``, from ``$TLS_PRIVSEP_TEST_PYTHON``'s install when set; returns once both are ready."""
    d = spawn(log_dir, args, secured_args=secured_args, appd_args=appd_args, python=DAEMON_PYTHON, notify=notify)
    return Pair(d.host, d.port, d.secured, d.appd, d.log_dir, d.addresses)


# ---- the launcher and processes -------------------------------------------------------------------------------


def launcher(*args: str) -> subprocess.CompletedProcess[str]:
    """``tls-privsep ARGS`` to completion (start, stop, status, reload, check-config)."""
    return subprocess.run([*cli.daemon_argv("launcher"), *args], capture_output=True, text=True, env=ENV,
                          timeout=60, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if result := condition():
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def children(pid: int) -> dict[str, int]:
    """The launcher's live children, by daemon name (from /proc)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        state = stat.rpartition(")")[2].split()[0]
        if ppid != pid or state == "Z":
            continue
        for name in ("secured", "appd"):
            if f"tls_privsep.{name}".encode() in cmdline:
                found[name] = int(entry.name)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def echo(ctx: ssl.SSLContext, port: int, message: bytes = b"ping") -> bool:
    """One echo exchange with a clean close; False on any failure (for polling)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(message)
            ok = tls.recv(100) == message
            tls.unwrap()
            return ok
    except (OSError, ssl.SSLError):
        return False


# ---- traffic: deterministic bulk data, a TCP backend, a full-duplex TLS client ----------------------------------


def keystream(seed: int, total: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """``total`` deterministic pseudo-random bytes (AES-128-CTR keystream), in chunks."""
    enc = Cipher(algorithms.AES(seed.to_bytes(16, "big")), modes.CTR(bytes(16))).encryptor()
    zeros = bytes(chunk)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield enc.update(zeros[:n])
        sent += n


def expected_digest(seed: int, total: int) -> str:
    h = hashlib.sha256()
    for block in keystream(seed, total):
        h.update(block)
    return h.hexdigest()


class TcpBackend:
    """Listens on 127.0.0.1:0 and runs ``handler(sock, results)`` in a thread for every accepted connection."""

    def __init__(self, handler: Callable[[socket.socket, dict[str, object]], None],
                 listener: socket.socket | None = None) -> None:
        self.handler = handler
        self.listener = listener if listener is not None else socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1] if self.listener.family != socket.AF_UNIX else 0
        self.results: list[dict[str, object]] = []
        self.errors: list[BaseException] = []
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock: socket.socket) -> None:
        result: dict[str, object] = {}
        try:
            with sock:
                self.handler(sock, result)
        except BaseException as exc:  # reported by wait()
            self.errors.append(exc)
        with self._done:
            self.results.append(result)
            self._done.notify_all()

    def wait(self, count: int = 1, timeout: float = 30.0) -> list[dict[str, object]]:
        """Wait until ``count`` connections have finished; returns their results."""
        with self._done:
            assert self._done.wait_for(lambda: len(self.results) >= count or self.errors, timeout), "backend stuck"
        if self.errors:
            raise self.errors[0]
        return self.results

    def close(self) -> None:
        self.listener.close()


class PeerClosed(Exception):
    """The server's close_notify arrived (a clean end of its direction)."""


@dataclass
class BioClient:
    """One TLS 1.3 connection driven in a single thread: write, read and close each direction independently.

    An ``SSLSocket`` must not be read and written from two threads, and a blocking ``unwrap()`` cannot keep
    reading application data after our close_notify: this drives an ``SSLObject`` over memory BIOs and a
    non-blocking socket instead.
    """

    host: str
    port: int
    ctx: ssl.SSLContext
    timeout: float = 30.0
    sock: socket.socket = field(init=False)
    obj: ssl.SSLObject = field(init=False)
    eof_received: bool = False
    eof_received_at: float = 0.0
    eof_sent: bool = False

    def __post_init__(self) -> None:
        self.sock = socket.create_connection((self.host, self.port))
        self.sock.setblocking(False)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = self.ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self._raw_out = bytearray()
        self.deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._pump(want_read=True)
        self._flush()

    def close(self) -> None:
        self.sock.close()

    def _flush(self) -> None:
        """Move what OpenSSL produced to the socket, as far as it takes it without blocking."""
        self._raw_out += self.outgoing.read()
        while self._raw_out:
            try:
                n = self.sock.send(self._raw_out)
            except BlockingIOError:
                return
            del self._raw_out[:n]

    def _pump(self, *, want_read: bool, want_write: bool = False) -> None:
        """One select round: send pending bytes, feed received bytes to OpenSSL."""
        self._flush()
        remaining = self.deadline - time.monotonic()
        assert remaining > 0, "transfer timed out"
        r, w, _ = select.select([self.sock] if want_read else [], [self.sock] if self._raw_out or want_write else [],
                                [], min(remaining, 1.0))
        if w:
            self._flush()
        if r:
            data = self.sock.recv(MIB)
            if data:
                self.incoming.write(data)
            else:
                self.incoming.write_eof()

    def read_some(self) -> bytes:
        """Plaintext already decrypted (b"" when none yet); raises PeerClosed at the server's close_notify."""
        out = bytearray()
        while True:
            try:
                data = self.obj.read(MIB)
            except ssl.SSLWantReadError:
                return bytes(out)
            except ssl.SSLZeroReturnError:  # close_notify after ours
                data = b""
            if not data:  # CPython returns b"" for a close_notify that comes before ours
                self.eof_received, self.eof_received_at = True, time.monotonic()
                if out:
                    return bytes(out)
                raise PeerClosed
            out += data

    def send_eof(self) -> bytes:
        """Our close_notify; our read side stays open (TLS 1.3 half-close). Returns the plaintext read first.

        CPython's ``unwrap()`` calls SSL_shutdown twice, and the second call fails with
        APPLICATION_DATA_AFTER_CLOSE_NOTIFY if a whole application record is waiting: drain those first.
        """
        data = b""
        if not self.eof_received:
            with contextlib.suppress(PeerClosed):
                data = self.read_some()
        with contextlib.suppress(ssl.SSLWantReadError):
            self.obj.unwrap()
        self.eof_sent = True
        self._flush()
        return data

    def transfer(self, upload: Iterator[bytes], on_data: Callable[[bytes], None], *, close_after_upload: bool = True,
                 until_peer_closed: bool = True) -> None:
        """Upload everything from ``upload`` while handing every received byte to ``on_data``."""
        pending = next(upload, None)
        uploaded = False
        while True:
            # Keep a bounded amount of ciphertext queued, so reading is never starved by writing.
            while pending is not None and len(self._raw_out) < 4 * CHUNK:
                self.obj.write(pending)
                self._raw_out += self.outgoing.read()
                pending = next(upload, None)
            if pending is None and not uploaded and not self._raw_out:
                uploaded = True
                if close_after_upload and (data := self.send_eof()):
                    on_data(data)
            if not self.eof_received:
                with contextlib.suppress(PeerClosed):
                    if data := self.read_some():
                        on_data(data)
            if uploaded and not self._raw_out and (self.eof_received or not until_peer_closed):
                return
            self._pump(want_read=not self.eof_received, want_write=pending is not None)


# ---- interop: shared servers, the logs' handshake and connection lines, real clients ----------------------------
# test_interop.py (TLS 1.3) and test_interop12.py (TLS 1.2) drive the same clients the same way.

TIMEOUT = 8.0  # one real client's run


class Pool:
    """Pairs started on first use and shared by the module's tests, keyed by their configuration."""

    def __init__(self, tmp: Path, pki: Pki) -> None:
        self.tmp, self.pki = tmp, pki
        self.servers: dict[tuple[str, tuple[str, ...]], Pair] = {}

    def get(self, certs: str, *args: str) -> Pair:
        key = (certs, args)
        if key not in self.servers:
            self.servers[key] = start_pair(self.tmp / f"server{len(self.servers)}",
                                           [*self.pki.cert_args(*CERTS[certs]), *args])
        server = self.servers[key]
        daemons: tuple[DaemonName, ...] = ("secured", "appd")
        for name in daemons:
            proc = server.secured if name == "secured" else server.appd
            assert proc.poll() is None, f"{name} died in an earlier test:\n{server.log_text(name)[-3000:]}"
        return server

    def config(self, toml: str) -> str:
        """A configuration file with ``toml`` (pass it as ``"-c", path``: flags still override it), for the
        settings that have no flag (``secured.versions``, …); one file per distinct text."""
        path = self.tmp / f"config-{hashlib.sha256(toml.encode()).hexdigest()[:12]}.toml"
        if not path.exists():
            path.write_text(toml)
        return str(path)

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()


def echo_server(pool: Pool, certs: str = "both", *args: str) -> Pair:
    return pool.get(certs, "--backend", "echo", *args)


def handshakes(server: Pair) -> list[dict[str, Any]]:
    """secured's "handshake done" log entries, oldest first."""
    entries = []
    for line in server.log_text("secured").splitlines():
        if line.startswith("{") and '"handshake done"' in line:
            entries.append(json.loads(line))
    return entries


def new_handshakes(server: Pair, before: int, count: int = 1) -> list[dict[str, Any]]:
    """Wait for ``count`` handshakes logged after the first ``before``; return them."""
    deadline = time.monotonic() + 5
    while len(entries := handshakes(server)) < before + count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(entries) >= before + count, f"secured logged {len(entries) - before} new handshakes, wanted {count}"
    return entries[before:]


def leaf_der(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)


@dataclass
class Step:
    """Bytes to type into the client, then what to wait for in its stdout or stderr (if anything)."""

    send: bytes
    wait_for: bytes | None = None
    pause: float = 0.0


@dataclass
class Run:
    out: str
    err: str
    rc: int | None

    @property
    def text(self) -> str:
        return self.out + self.err

    def lines(self) -> list[str]:
        return self.out.splitlines()


def converse(cmd: Sequence[str], steps: Sequence[Step], timeout: float = TIMEOUT) -> Run:
    """Run ``cmd``, feed it ``steps`` one by one, then close stdin and collect its output.

    openssl s_client closes the connection as soon as stdin ends, so each step waits for its answer
    (or gives the client a moment) before the next one; a client that exits early ends the dialogue.
    """
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()
    lock = threading.Lock()

    def pump(src: Any, dst: bytearray) -> None:
        for chunk in iter(lambda: src.read1(65536), b""):
            with lock:
                dst.extend(chunk)

    readers = [threading.Thread(target=pump, args=(s, b), daemon=True) for s, b in ((proc.stdout, out), (proc.stderr, err))]
    for r in readers:
        r.start()
    deadline = time.monotonic() + timeout
    try:
        for step in steps:
            if proc.poll() is not None:
                break
            with lock:
                marks = len(out), len(err)
            time.sleep(step.pause)
            try:
                proc.stdin.write(step.send)
                proc.stdin.flush()
            except BrokenPipeError:
                break
            while step.wait_for is not None and proc.poll() is None and time.monotonic() < deadline:
                with lock:
                    if step.wait_for in out[marks[0]:] or step.wait_for in err[marks[1]:]:
                        break
                time.sleep(0.01)
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        proc.wait(max(0.5, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    finally:
        for r in readers:
            r.join(2)
    return Run(out.decode(errors="replace"), err.decode(errors="replace"), proc.returncode)


def s_client_cmd(server: Pair, pki: Pki, *args: str) -> list[str]:
    """``openssl s_client`` to ``server`` for "localhost", verifying against the suite's CA; add the version flag."""
    return [require_binary("openssl"), "s_client", "-connect", f"{server.host}:{server.port}", "-servername",
            "localhost", "-CAfile", str(pki.ca_file), "-verify_return_error", *args]


def echo_steps(*lines: bytes) -> list[Step]:
    return [Step(line, wait_for=line) for line in lines]


def mtls_server(pool: Pool, pki: Pki) -> Pair:
    return echo_server(pool, "both", "--client-ca", str(pki.client_ca_file), "--client-auth", "required")


def gnutls_cli(server: Pair, pki: Pki, priority: str, *args: str, data: bytes = b"",
               timeout: float = TIMEOUT) -> str:
    """gnutls-cli half-closes at the end of stdin and waits for the server's close: plain input works."""
    cmd = [require_binary("gnutls-cli"), server.host, "-p", str(server.port), "--sni-hostname", "localhost",
           "--verify-hostname", "localhost", "--x509cafile", str(pki.ca_file), "--priority", priority, *args]
    proc = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout)
    return (proc.stdout + proc.stderr).decode(errors="replace")


def gnutls_description(out: str) -> str | None:
    m = re.search(r"^- Description: (.*)$", out, re.M)
    return m.group(1) if m else None


def http_server(pool: Pool) -> Pair:
    return pool.get("both", "--backend", "http")


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("curl"), "-sS", "--max-time", "5", "-w", "\nstatus=%{http_code}\n", *args],
                          capture_output=True, text=True, timeout=TIMEOUT)


def py_echo(server: Pair, ctx: ssl.SSLContext, data: bytes,
            session: ssl.SSLSession | None = None) -> tuple[bytes, ssl.SSLSocket]:
    """Send ``data``, read it all back, close cleanly; returns what came back and the (closed) socket."""
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        tls = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        tls.sendall(data)
        got = bytearray()
        while len(got) < len(data) and (chunk := tls.recv(65536)):
            got += chunk
        tls.unwrap()
        return bytes(got), tls


def tlslite_connect(server: Pair, settings: HandshakeSettings, session: Any = None) -> TLSConnection:
    conn = TLSConnection(socket.create_connection((server.host, server.port), timeout=5))
    conn.handshakeClientCert(settings=settings, serverName="localhost", session=session)
    return conn


def tlslite_echo(conn: TLSConnection, data: bytes) -> bytes:
    conn.write(data)
    got = b""
    while len(got) < len(data):
        got += conn.read()
    return got


def connections(server: Pair) -> list[dict[str, Any]]:
    """appd's summary lines ("connection"), oldest first."""
    out = []
    for line in server.log_text("appd").splitlines():
        if line.startswith("{") and '"connection"' in line:
            entry = json.loads(line)
            if entry.get("event") == "connection":
                out.append(entry)
    return out


def new_connections(server: Pair, before: int, count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while len(entries := connections(server)) < before + count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(entries) >= before + count, f"appd logged {len(entries) - before} new connections, wanted {count}"
    return entries[before:]

