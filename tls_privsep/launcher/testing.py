"""Test helpers: certificates (a throwaway CA, and ``make_certificate`` for what it would not issue), and a real
secured + appd pair in front of a backend.

This is the engine of the pytest plugin (:mod:`launcher.pytest_plugin`) and of the project's own
integration fixtures; it does not import pytest. Importing it is cheap: ``cryptography`` is loaded
when a CA is made, and no key exists before that.

The pair is started the way the launcher would, minus the launcher: ``secured`` and ``appd`` as two
child processes joined by a ``socketpair()`` (``--ipc-fd``), appd bound to ``127.0.0.1:0`` and
reporting the port on ``--ready-fd``. As root both drop to ``nobody`` (they refuse to keep root).
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import json
import os
import secrets
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeAlias

from tls_privsep.shared import cli, hardening

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

KeyType = Literal["ecdsa", "rsa", "ed25519"]
DaemonName = Literal["secured", "appd"]
Backend: TypeAlias = str | os.PathLike[str] | tuple[str, int]
PrivateKey: TypeAlias = "rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey"

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
STARTUP_TIMEOUT = 20.0  # the launcher's own READY_TIMEOUT
STOP_TIMEOUT = 5.0
LOG_TAIL = 4000  # characters of each daemon's log in an error message

# Inherited from a parent running under systemd, these would make the daemons take the parent's
# sockets, credentials or watchdog for their own.
_SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC",
                      "WATCHDOG_PID", "CREDENTIALS_DIRECTORY")


class StartupError(RuntimeError):
    """The pair did not come up; the message ends with both daemons' log tails."""


# --- certificates -------------------------------------------------------------------------------------------------


class IssuedCert(NamedTuple):
    """A certificate (PEM, leaf then CA) and its private key (PEM, PKCS#8), as files."""

    cert_file: Path
    key_file: Path


def new_key(key_type: KeyType = "ecdsa") -> PrivateKey:
    """A fresh private key: ECDSA P-256, RSA-2048 or Ed25519."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"key_type must be 'ecdsa', 'rsa' or 'ed25519', not {key_type!r}")


def make_certificate(
    key: PrivateKey,
    names: Sequence[str] = (),
    *,
    issuer: tuple[x509.Certificate, PrivateKey] | None = None,
    common_name: str | None = None,
    ca: bool = False,
    path_length: int | None = None,
    client: bool = False,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    """A certificate for ``key``, signed by ``issuer`` (certificate, key) or, without one, by ``key`` itself.

    Every certificate :class:`ThrowawayCA` makes comes from here; call it for the ones it would not
    issue: expired or not yet valid, without a subjectAltName, an intermediate CA, a key of your own.
    ``names`` (DNS names or IP addresses) go in the subjectAltName, the first one in the subject too
    (or ``common_name``). A leaf is for a server (serverAuth) or, with ``client=True``, a client
    (clientAuth); ``ca=True`` makes a CA, limited to ``path_length`` CAs below it when given. Valid
    from a day ago (``not_before``) for 30 days (``not_after``).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    cn = common_name or (names[0] if names else "tls-privsep test")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    if issuer is None:
        issuer_name, signing_key = subject, key
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    else:
        issuer_name, signing_key = issuer[0].subject, issuer[1]
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - _days(1))
        .not_valid_after(not_after or now + _days(30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(_key_usage(cert_sign=True), critical=True)
    else:
        from cryptography.hazmat.primitives.asymmetric import rsa

        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (builder.add_extension(_key_usage(encipher=isinstance(key, rsa.RSAPrivateKey)), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                                        critical=False)
    builder = builder.add_extension(ski, critical=False).add_extension(aki, critical=False)
    plain_signature = isinstance(signing_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    return builder.sign(signing_key, None if plain_signature else hashes.SHA256())


class ThrowawayCA:
    """A self-signed ECDSA P-256 CA that lives in ``directory`` for one test run.

    ``issue()`` makes server or client certificates; ``client_context()`` is an ``ssl.SSLContext``
    that trusts this CA and nothing else.
    """

    def __init__(self, directory: str | os.PathLike[str], name: str = "tls-privsep throwaway CA") -> None:
        from cryptography.hazmat.primitives import serialization

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._key = new_key("ecdsa")
        self.cert: x509.Certificate = make_certificate(self._key, common_name=name, ca=True, path_length=0)
        self.cert_pem: bytes = self.cert.public_bytes(serialization.Encoding.PEM)
        self.ca_file = self.directory / "ca.pem"
        self.ca_file.write_bytes(self.cert_pem)
        self._serial = itertools.count(1)
        self._server_certs: dict[KeyType, IssuedCert] = {}

    def __repr__(self) -> str:
        return f"ThrowawayCA(ca_file={str(self.ca_file)!r})"

    @property
    def key(self) -> PrivateKey:
        """The CA's private key: ``make_certificate(..., issuer=(ca.cert, ca.key))`` signs with it."""
        return self._key

    def issue(self, *names: str, key_type: KeyType = "ecdsa", client: bool = False) -> IssuedCert:
        """A fresh key and a certificate for ``names`` (DNS names or IP addresses; default: localhost,
        127.0.0.1 and ::1), for a server (serverAuth) or, with ``client=True``, a client (clientAuth)."""
        from cryptography.hazmat.primitives import serialization

        names = names or (("client",) if client else LOCAL_NAMES)
        key = new_key(key_type)
        cert = make_certificate(key, names, issuer=(self.cert, self._key), client=client)
        n = next(self._serial)
        stem = f"{'client' if client else 'server'}{n}-{key_type}"
        issued = IssuedCert(self.directory / f"{stem}.pem", self.directory / f"{stem}.key")
        issued.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem)
        issued.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
        issued.key_file.chmod(0o600)
        return issued

    def server_cert(self, key_type: KeyType = "ecdsa") -> IssuedCert:
        """The certificate for localhost, 127.0.0.1 and ::1: issued on first use, then reused."""
        if key_type not in self._server_certs:
            self._server_certs[key_type] = self.issue(key_type=key_type)
        return self._server_certs[key_type]

    def client_context(self, cert: IssuedCert | None = None, *,
                       version: Literal["1.2", "1.3"] = "1.3") -> ssl.SSLContext:
        """A client context for one TLS version (1.3 by default) that trusts this CA only and checks the host
        name; with ``cert``, it presents that (client) certificate when the server asks for one."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname already
        ctx.minimum_version = ctx.maximum_version = (
            ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3)
        ctx.load_verify_locations(cadata=self.cert_pem.decode())
        if cert is not None:
            ctx.load_cert_chain(cert.cert_file, cert.key_file)
        return ctx


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _days(n: int) -> datetime.timedelta:
    return datetime.timedelta(days=n)


def _key_usage(*, cert_sign: bool = False, encipher: bool = False) -> x509.KeyUsage:
    from cryptography import x509

    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False, key_encipherment=encipher,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def _general_name(name: str) -> x509.GeneralName:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


# --- the pair ---------------------------------------------------------------------------------------------------


class NotifySocket:
    """A stand-in for systemd's ``$NOTIFY_SOCKET``: an abstract datagram socket that records every sd_notify
    message with its sender's pid, as systemd sees them (``SO_PASSCRED``).

    Pass it to :func:`spawn` (``notify=``) to hear both daemons (``READY=1``, ``STATUS=…``, ``RELOADING=1``,
    ``STOPPING=1``); with ``watchdog`` (seconds) the daemons are also told to send ``WATCHDOG=1`` within that
    time, as ``WatchdogSec=`` does. Close it (or use it as a context manager) when done.
    """

    def __init__(self, watchdog: float | None = None) -> None:
        self.name = f"tls-privsep-test-{os.getpid()}-{secrets.token_hex(8)}"
        self.watchdog = watchdog
        self.messages: list[tuple[int, str]] = []
        # Abstract: no path for nobody to be refused, gone with the last reference.
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.bind("\0" + self.name)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        """The value for ``NOTIFY_SOCKET`` (``@`` for the abstract namespace)."""
        return "@" + self.name

    @property
    def environment(self) -> dict[str, str]:
        """What systemd puts in a notify service's environment: ``NOTIFY_SOCKET``, and ``WATCHDOG_USEC``."""
        env = {"NOTIFY_SOCKET": self.address}
        if self.watchdog is not None:
            env["WATCHDOG_USEC"] = str(round(self.watchdog * 1_000_000))
        return env

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, timeout: float = 0.0) -> bool:
        """Record one message if one arrives within ``timeout`` seconds; False if none did."""
        readable, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        if not readable:
            return False
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = int.from_bytes(payload[:4], sys.byteorder, signed=True)
        self.messages.append((pid, data.decode(errors="replace")))
        return True

    def collect(self, until: Callable[[list[tuple[int, str]]], object], timeout: float = 10.0) -> list[tuple[int, str]]:
        """Record messages until ``until(messages)`` holds or ``timeout`` seconds pass; returns them all."""
        deadline = time.monotonic() + timeout
        while not until(self.messages):
            left = deadline - time.monotonic()
            if left <= 0 or not self.receive(left):
                break
        return self.messages

    def lines(self, pid: int) -> list[str]:
        """Every line ``pid`` has sent so far (of the messages recorded)."""
        return [line for sender, text in self.messages if sender == pid for line in text.split("\n")]

    def close(self) -> None:
        self.sock.close()


@dataclass
class Daemons:
    """A running secured + appd pair: the two processes, appd's first address, and their log files."""

    host: str
    port: int
    secured: subprocess.Popen[bytes]
    appd: subprocess.Popen[bytes]
    log_dir: Path
    addresses: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        """``HOST:PORT`` as appd reported it (``[::1]:PORT`` for IPv6)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.secured.poll() is None and self.appd.poll() is None

    def log_file(self, daemon: DaemonName) -> Path:
        return self.log_dir / f"{daemon}.log"

    def log_text(self, daemon: DaemonName) -> str:
        try:
            return self.log_file(daemon).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def events(self, daemon: DaemonName, event: str) -> list[dict[str, Any]]:
        """The daemon's log entries (JSON lines) for ``event``, oldest first."""
        found = []
        for line in self.log_text(daemon).splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == event:
                found.append(entry)
        return found

    def wait_log(self, daemon: DaemonName, text: str, timeout: float = 5.0) -> str:
        """Wait until ``text`` appears in the daemon's log and return the log; an ``AssertionError`` with the
        log's tail if it has not within ``timeout`` seconds, or the daemon exited without writing it."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self._proc(daemon).poll() is not None
            log = self.log_text(daemon)
            if text in log:
                return log
            if exited or time.monotonic() > deadline:
                why = f"{daemon} exited ({self._proc(daemon).returncode})" if exited else f"after {timeout:g} s"
                raise AssertionError(f"{text!r} not in {daemon}'s log ({why}):\n{log[-LOG_TAIL:]}")
            time.sleep(0.05)

    def wait_events(self, daemon: DaemonName, event: str, count: int = 1,
                    timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until the daemon has logged ``event`` at least ``count`` times; returns those entries. An
        ``AssertionError`` with the log's tail if it has not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(found := self.events(daemon, event)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} {event!r} lines in {daemon}'s log, expected {count}:\n"
                                     f"{self.log_text(daemon)[-LOG_TAIL:]}")
            time.sleep(0.05)
        return found

    def _proc(self, daemon: DaemonName) -> subprocess.Popen[bytes]:
        return self.secured if daemon == "secured" else self.appd

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to appd (it drains its connections) and secured; SIGKILL for one still there after ``timeout``."""
        for proc in (self.appd, self.secured):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        try:
            for proc in (self.appd, self.secured):
                try:
                    proc.wait(max(deadline - time.monotonic(), 0.01))
                except subprocess.TimeoutExpired:
                    _kill(proc)
        finally:  # interrupted while waiting: none of them outlives us
            for proc in (self.appd, self.secured):
                if proc.returncode is None:
                    _kill(proc)


def daemon_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the daemons: ``base`` (default: ours) without systemd's variables. (They run with
    ``python -E``: PYTHONPATH and the like do not reach them; the interpreter's own install does.)"""
    return {k: v for k, v in (os.environ if base is None else base).items() if k not in _SYSTEMD_VARIABLES}


def spawn(
    log_dir: str | os.PathLike[str],
    args: Sequence[str],
    *,
    secured_args: Sequence[str] = (),
    appd_args: Sequence[str] = (),
    user: str | None = None,
    timeout: float = STARTUP_TIMEOUT,
    env: Mapping[str, str] | None = None,
    python: str | os.PathLike[str] | None = None,
    notify: NotifySocket | None = None,
) -> Daemons:
    """Start secured and appd on a fresh socketpair, both with ``args`` (the common flags).

    appd listens on 127.0.0.1:0 unless ``args`` has ``--listen``. As root both drop to ``user``
    (default ``nobody``). Returns once appd has bound its port and secured has loaded its keys and
    serves the channel (its sd_notify ``READY=1``, sent to a socket of ours, or to ``notify``); a daemon
    that exits first, or ``timeout`` seconds without both, is a :class:`StartupError` carrying their logs.
    Whatever goes wrong, neither daemon is left running.

    ``python`` starts the daemons with another interpreter (another install of tls-privsep). With
    ``notify`` (a :class:`NotifySocket`), both daemons speak sd_notify to it for as long as they run.

    Called from the main thread, the daemons also get ``$TLS_PRIVSEP_PARENT_PID``: they stop (SIGTERM) when
    this process dies, even by SIGKILL. (The kernel ties that to the thread that started them, so a pair
    started from another thread, which may end first, does without.)
    """
    logs = Path(log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    listen = [] if any(a == "--listen" or a.startswith("--listen=") for a in args) else ["--listen", "127.0.0.1:0"]
    as_user = ["--user", user or "nobody"] if os.geteuid() == 0 else []
    interpreter = None if python is None else os.fspath(python)
    base_env = daemon_env(env)
    if threading.current_thread() is threading.main_thread():
        base_env[hardening.PARENT_PID_VARIABLE] = str(os.getpid())
    listener = notify if notify is not None else NotifySocket()  # ours: for secured's READY=1 alone
    secured_env = {**base_env, **listener.environment}
    appd_env = secured_env if notify is not None else base_env
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ready_r, ready_w = os.pipe()
    secured: subprocess.Popen[bytes] | None = None
    appd: subprocess.Popen[bytes] | None = None
    try:
        with open(logs / "secured.log", "wb") as slog, open(logs / "appd.log", "wb") as alog:
            secured = subprocess.Popen(
                [*cli.daemon_argv("secured", interpreter), "--ipc-fd", str(a.fileno()), "--log-format", "json",
                 *as_user, *args, *secured_args],
                pass_fds=(a.fileno(),), stdin=subprocess.DEVNULL, stdout=slog, stderr=slog, env=secured_env,
            )
            appd = subprocess.Popen(
                [*cli.daemon_argv("appd", interpreter), "--ipc-fd", str(b.fileno()), "--ready-fd", str(ready_w),
                 "--log-format", "json", *as_user, *listen, *args, *appd_args],
                pass_fds=(b.fileno(), ready_w), stdin=subprocess.DEVNULL, stdout=alog, stderr=alog, env=appd_env,
            )
        a.close()
        b.close()
        os.close(ready_w)
        ready_w = -1
        line = _wait_ready(ready_r, listener, secured, appd, timeout)
        addresses = tuple(line.split())
        host, _, port = addresses[0].rpartition(":") if addresses else ("", "", "")
        if not port.isdigit():
            raise _NotReady(f"appd's ready line is not HOST:PORT …: {line[:200]!r}")
    except BaseException as exc:
        for proc in (appd, secured):
            if proc is not None:
                _kill(proc)
        if isinstance(exc, _NotReady):
            raise StartupError(f"tls-privsep test pair did not start: {exc}\n" + _tails(logs)) from None
        raise
    finally:
        a.close()
        b.close()
        if listener is not notify:
            listener.close()
        os.close(ready_r)
        if ready_w >= 0:
            os.close(ready_w)
    return Daemons(host.strip("[]"), int(port), secured, appd, logs, addresses)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap, even when interrupted while waiting (a second Ctrl-C)."""
    if proc.poll() is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    while True:
        try:
            proc.wait()
            return
        except KeyboardInterrupt:
            continue


class _NotReady(Exception):
    pass


def _wait_ready(ready_fd: int, notify: NotifySocket, secured: subprocess.Popen[bytes],
                appd: subprocess.Popen[bytes], timeout: float) -> str:
    """appd's ready line once secured has said READY=1 too; _NotReady on an exit or at the deadline."""
    deadline = time.monotonic() + timeout
    line = b""
    line_done = secured_ready = False
    waiting: list[int] = [ready_fd, notify.fileno()]
    while not (line_done and secured_ready):
        for name, proc in (("secured", secured), ("appd", appd)):
            code = proc.poll()
            if code is not None:
                raise _NotReady(f"{name} exited with status {code}")
        left = deadline - time.monotonic()
        if left <= 0:
            missing = [what for what, done in (("appd's ready line", line_done), ("secured's READY=1", secured_ready))
                       if not done]
            raise _NotReady(f"no {' nor '.join(missing)} within {timeout:g} s")
        readable, _, _ = select.select(waiting, [], [], min(left, 0.1))
        if ready_fd in readable:
            chunk = os.read(ready_fd, 1024)
            line += chunk
            if not chunk or line.endswith(b"\n"):
                waiting.remove(ready_fd)
                if not line.endswith(b"\n"):
                    continue  # closed without a line: appd is exiting; the poll above reports it
                line_done = True
        if notify.fileno() in readable:
            notify.receive()
            secured_ready = "READY=1" in notify.lines(secured.pid)
    return line.decode().strip()


def _tails(log_dir: Path) -> str:
    parts = []
    for name in ("secured", "appd"):
        try:
            text = (log_dir / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        cut = len(text) > LOG_TAIL
        parts.append(f"--- {name} log{' (tail)' if cut else ''} ---\n{text[-LOG_TAIL:] if cut else text or '(empty)'}")
    return "\n".join(parts)


# --- a pair in front of a backend, with a client --------------------------------------------------------------


@dataclass
class Server(Daemons):
    """A running pair with a certificate from a :class:`ThrowawayCA`, and what a client needs to reach it."""

    backend: str = ""
    client_context: ssl.SSLContext = field(default_factory=lambda: ssl.create_default_context())

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def connect(self, *, server_hostname: str = "localhost", timeout: float | None = 10.0,
                context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
        """A TCP connection to appd with the TLS handshake done (SNI ``server_hostname``)."""
        raw = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            return (context or self.client_context).wrap_socket(raw, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise

    def logs(self, daemon: DaemonName | None = None) -> str:
        """One daemon's log, or both (each under a ``--- name log ---`` heading)."""
        if daemon is not None:
            return self.log_text(daemon)
        return "\n".join(f"--- {name} log ---\n{self.log_text(name)}" for name in ("secured", "appd"))


def backend_spec(backend: Backend) -> str:
    """``--backend`` text for a spec string, a ``(host, port)`` pair or a Unix socket path."""
    if isinstance(backend, tuple):
        host, port = backend
        return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
    if isinstance(backend, os.PathLike):
        return f"unix:{os.fspath(backend)}"
    if backend.startswith("/"):
        return f"unix:{backend}"
    return backend


def start_server(
    ca: ThrowawayCA,
    log_dir: str | os.PathLike[str],
    backend: Backend = "echo",
    *,
    alpn: Sequence[str] | str | None = None,
    tickets: int | None = None,
    client_ca: ThrowawayCA | str | os.PathLike[str] | None = None,
    client_auth: Literal["none", "optional", "required"] | None = None,
    certs: Sequence[IssuedCert | tuple[str | os.PathLike[str], str | os.PathLike[str]]] | None = None,
    key_type: KeyType = "ecdsa",
    listen: str | Sequence[str] = "127.0.0.1:0",
    versions: Sequence[Literal["1.2", "1.3"]] | None = None,
    args: Sequence[str] = (),
    secured_args: Sequence[str] = (),
    appd_args: Sequence[str] = (),
    user: str | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> Server:
    """Start a pair serving ``ca``'s localhost certificate in front of ``backend``; see docs/pytest-plugin.md."""
    spec = backend_spec(backend)
    common: list[str] = ["--backend", spec]
    for cert, key in certs if certs is not None else [ca.server_cert(key_type)]:
        common += ["--cert", os.fspath(cert), "--key", os.fspath(key)]
    for address in [listen] if isinstance(listen, str) else listen:
        common += ["--listen", address]
    if alpn is not None:
        common += ["--alpn", alpn if isinstance(alpn, str) else ",".join(alpn)]
    if tickets is not None:
        common += ["--tickets", str(tickets)]
    if versions is not None:
        common += ["--versions", ",".join(versions)]
    # The ready-made client speaks the newest version the pair serves.
    version: Literal["1.2", "1.3"] = "1.2" if versions is not None and "1.3" not in versions else "1.3"
    context = ca.client_context(version=version)
    if client_ca is not None:
        common += ["--client-ca", os.fspath(client_ca.ca_file if isinstance(client_ca, ThrowawayCA) else client_ca)]
        if isinstance(client_ca, ThrowawayCA):
            context = ca.client_context(client_ca.issue(client=True), version=version)
    if client_auth is not None:
        common += ["--client-auth", client_auth]
    if os.geteuid() == 0 and spec.startswith("unix:"):
        path = spec[len("unix:"):]
        problem = hardening.unreachable_for(path[1:] if path.startswith("//") else path, user or "nobody")
        if problem:
            raise StartupError(f"backend {spec}: appd runs as {user or 'nobody'} (started as root) and {problem}; "
                               "put the socket in a directory others can enter and make it writable by others")
    daemons = spawn(log_dir, [*common, *args], secured_args=secured_args, appd_args=appd_args, user=user,
                    timeout=startup_timeout)
    return Server(daemons.host, daemons.port, daemons.secured, daemons.appd, daemons.log_dir, daemons.addresses,
                  backend=spec, client_context=context)
