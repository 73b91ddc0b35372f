"""Test helpers: a throwaway CA, and a real secured + appd pair in front of a backend.

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
import os
import secrets
import select
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple, TypeAlias

from tls_privsep.shared import cli, hardening

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

KeyType = Literal["ecdsa", "rsa"]
DaemonName = Literal["secured", "appd"]
Backend: TypeAlias = str | os.PathLike[str] | tuple[str, int]

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


class IssuedCert(NamedTuple):
    """A certificate (PEM, leaf then CA) and its private key (PEM, PKCS#8), as files."""

    cert_file: Path
    key_file: Path


class ThrowawayCA:
    """A self-signed ECDSA P-256 CA that lives in ``directory`` for one test run.

    ``issue()`` makes server or client certificates; ``client_context()`` is an ``ssl.SSLContext``
    that trusts this CA and nothing else.
    """

    def __init__(self, directory: str | os.PathLike[str], name: str = "tls-privsep throwaway CA") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        self.cert: x509.Certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _days(1))
            .not_valid_after(now + _days(30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem: bytes = self.cert.public_bytes(serialization.Encoding.PEM)
        self.ca_file = self.directory / "ca.pem"
        self.ca_file.write_bytes(self.cert_pem)
        self._serial = itertools.count(1)
        self._server_certs: dict[KeyType, IssuedCert] = {}

    def __repr__(self) -> str:
        return f"ThrowawayCA(ca_file={str(self.ca_file)!r})"

    def issue(self, *names: str, key_type: KeyType = "ecdsa", client: bool = False) -> IssuedCert:
        """A fresh key and a certificate for ``names`` (DNS names or IP addresses; default: localhost,
        127.0.0.1 and ::1), for a server (serverAuth) or, with ``client=True``, a client (clientAuth)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        names = names or (("client",) if client else LOCAL_NAMES)
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if key_type == "ecdsa":
            key = ec.generate_private_key(ec.SECP256R1())
        elif key_type == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            raise ValueError(f"key_type must be 'ecdsa' or 'rsa', not {key_type!r}")
        now = _now()
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _days(1))
            .not_valid_after(now + _days(30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(encipher=key_type == "rsa"), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
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

    def client_context(self, cert: IssuedCert | None = None) -> ssl.SSLContext:
        """A TLS 1.3 client context that trusts this CA only and checks the host name; with ``cert``,
        it presents that (client) certificate when the server asks for one."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname already
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
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
    """The environment for the daemons: ``base`` (default: ours) without systemd's variables, and with
    the directory holding ``secured``/``appd`` first on PYTHONPATH (a source checkout works too)."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _SYSTEMD_VARIABLES}
    spec = find_spec("secured")
    if spec is not None and spec.origin:
        root = str(Path(spec.origin).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def spawn(
    log_dir: str | os.PathLike[str],
    args: Sequence[str],
    *,
    secured_args: Sequence[str] = (),
    appd_args: Sequence[str] = (),
    user: str | None = None,
    timeout: float = STARTUP_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> Daemons:
    """Start secured and appd on a fresh socketpair, both with ``args`` (the common flags).

    appd listens on 127.0.0.1:0 unless ``args`` has ``--listen``. As root both drop to ``user``
    (default ``nobody``). Returns once appd has bound its port and secured has loaded its keys and
    serves the channel (its sd_notify ``READY=1``, sent to a socket of ours); a daemon that exits first,
    or ``timeout`` seconds without both, is a :class:`StartupError` carrying their logs. Whatever goes
    wrong, neither daemon is left running.

    Called from the main thread, the daemons also get ``$TLS_PRIVSEP_PARENT_PID``: they stop (SIGTERM) when
    this process dies, even by SIGKILL. (The kernel ties that to the thread that started them, so a pair
    started from another thread, which may end first, does without.)
    """
    logs = Path(log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    listen = [] if any(a == "--listen" or a.startswith("--listen=") for a in args) else ["--listen", "127.0.0.1:0"]
    as_user = ["--user", user or "nobody"] if os.geteuid() == 0 else []
    base_env = daemon_env(env)
    if threading.current_thread() is threading.main_thread():
        base_env[hardening.PARENT_PID_VARIABLE] = str(os.getpid())
    # An abstract socket: no path for nobody to be refused, gone with the last reference.
    notify_name = f"tls-privsep-test-{os.getpid()}-{secrets.token_hex(8)}"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    notify.bind("\0" + notify_name)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ready_r, ready_w = os.pipe()
    secured: subprocess.Popen[bytes] | None = None
    appd: subprocess.Popen[bytes] | None = None
    try:
        with open(logs / "secured.log", "wb") as slog, open(logs / "appd.log", "wb") as alog:
            secured = subprocess.Popen(
                [*cli.daemon_argv("secured"), "--ipc-fd", str(a.fileno()), "--log-format", "json",
                 *as_user,
                 *args, *secured_args],
                pass_fds=(a.fileno(),), stdin=subprocess.DEVNULL, stdout=slog, stderr=slog,
                env={**base_env, "NOTIFY_SOCKET": "@" + notify_name},
            )
            appd = subprocess.Popen(
                [*cli.daemon_argv("appd"), "--ipc-fd", str(b.fileno()), "--ready-fd", str(ready_w),
                 "--log-format", "json", *as_user, *listen, *args, *appd_args],
                pass_fds=(b.fileno(), ready_w), stdin=subprocess.DEVNULL, stdout=alog, stderr=alog, env=base_env,
            )
        a.close()
        b.close()
        os.close(ready_w)
        ready_w = -1
        line = _wait_ready(ready_r, notify, secured, appd, timeout)
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
        notify.close()
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


def _wait_ready(ready_fd: int, notify: socket.socket, secured: subprocess.Popen[bytes],
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
            message = notify.recv(4096).decode(errors="replace")
            secured_ready = secured_ready or "READY=1" in message.splitlines()
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
    context = ca.client_context()
    if client_ca is not None:
        common += ["--client-ca", os.fspath(client_ca.ca_file if isinstance(client_ca, ThrowawayCA) else client_ca)]
        if isinstance(client_ca, ThrowawayCA):
            context = ca.client_context(client_ca.issue(client=True))
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
