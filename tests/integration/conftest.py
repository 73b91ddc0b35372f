"""Socket fixtures: the two daemons as real processes, joined by a socketpair, on a 127.0.0.1:0 port."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests import certs
from tls_privsep.shared import cli, hardening

ROOT = Path(__file__).resolve().parents[2]
# Another install of tls_privsep to start the daemons from (test_first_contact's sealed virtualenv).
DAEMON_PYTHON = os.environ.get("TLS_PRIVSEP_TEST_PYTHON")
CLIENT_BINARIES = ("openssl", "gnutls-cli", "curl")


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


@dataclass
class Pki:
    dir: Path
    ca_file: Path
    rsa: tuple[Path, Path]
    ecdsa: tuple[Path, Path]
    client_ca_file: Path
    client: tuple[Path, Path]
    ca: x509.Certificate


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = certs.make_ca("tls-privsep integration CA")
    ca_file = d / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    rsa_leaf, rsa_key = certs.make_leaf(ca, ca_key, "rsa2048", names=("localhost",))
    ec_leaf, ec_key = certs.make_leaf(ca, ca_key, "ecdsa", names=("localhost",))
    client_ca, client_ca_key = certs.make_ca("tls-privsep client CA")
    client_ca_file = d / "client-ca.pem"
    client_ca_file.write_bytes(client_ca.public_bytes(serialization.Encoding.PEM))
    cl_leaf, cl_key = certs.make_leaf(client_ca, client_ca_key, "ecdsa", names=("client",), client=True)
    return Pki(d, ca_file, certs.write_pair(d, rsa_leaf, rsa_key), certs.write_pair(d, ec_leaf, ec_key),
               client_ca_file, certs.write_pair(d, cl_leaf, cl_key), ca)


@dataclass
class Server:
    """A running secured + appd pair."""

    host: str
    port: int
    secured: subprocess.Popen[bytes]
    appd: subprocess.Popen[bytes]
    logs: Path
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def log_text(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def wait_log(self, name: str, text: str, timeout: float = 5.0) -> str:
        """Wait until ``text`` appears in a daemon's log; returns the log."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text(name)
            if text in log or time.monotonic() > deadline:
                assert text in log, f"{text!r} not in {name}'s log:\n{log[-3000:]}"
                return log
            time.sleep(0.05)

    def stop(self) -> None:
        stop_processes((self.appd, self.secured))
        for name in ("secured", "appd"):
            late = [line for line in self.log_text(name).splitlines() if '"event": "late import"' in line]
            assert not late, f"{name} imported after dropping privileges (add it to shared/preload.py): {late}"


def start_pair(tmp: Path, args: list[str], *, secured_args: list[str] = (), appd_args: list[str] = ()) -> Server:
    """Start secured and appd on a fresh socketpair; appd listens on 127.0.0.1:0 unless told otherwise.

    Both stop when this process dies (``$TLS_PRIVSEP_PARENT_PID``), and a pair that fails to start is killed."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ready_r, ready_w = os.pipe()
    env = {**os.environ, "PYTHONPATH": str(ROOT), hardening.PARENT_PID_VARIABLE: str(os.getpid())}
    logs = tmp
    listen = [] if "--listen" in args else ["--listen", "127.0.0.1:0"]
    # As root (CI), the daemons refuse to keep root: let them drop to nobody.
    as_user = ["--user", "nobody"] if os.geteuid() == 0 else []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with open(logs / "secured.log", "wb") as slog, open(logs / "appd.log", "wb") as alog:
            procs.append(subprocess.Popen(
                [*cli.daemon_argv("secured", DAEMON_PYTHON), "--ipc-fd", str(a.fileno()), "--log-format", "json", *as_user, *args,
                 *secured_args],
                pass_fds=(a.fileno(),), stdout=slog, stderr=slog, env=env,
            ))
            procs.append(subprocess.Popen(
                [*cli.daemon_argv("appd", DAEMON_PYTHON), "--ipc-fd", str(b.fileno()), "--ready-fd", str(ready_w),
                 "--log-format", "json", *as_user, *listen, *args, *appd_args],
                pass_fds=(b.fileno(), ready_w), stdout=alog, stderr=alog, env=env,
            ))
        a.close()
        b.close()
        os.close(ready_w)
        ready_w = -1
        deadline = time.monotonic() + 20
        line = b""
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            ready, _, _ = select.select([ready_r], [], [], 0.2)
            if ready:
                chunk = os.read(ready_r, 1024)
                if not chunk:
                    break
                line += chunk
        if not line.endswith(b"\n"):
            raise RuntimeError(
                "daemons did not start:\n" + (logs / "secured.log").read_text() + (logs / "appd.log").read_text()
            )
        host, _, port = line.decode().split()[0].rpartition(":")
    except BaseException:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        raise
    finally:
        a.close()
        b.close()
        os.close(ready_r)
        if ready_w >= 0:
            os.close(ready_w)
    secured, appd = procs
    return Server(host.strip("[]"), int(port), secured, appd, logs)


@pytest.fixture
def pair(tmp_path: Path, pki: Pki) -> Iterator[callable]:  # type: ignore[valid-type]
    """``pair(*args)`` starts a secured + appd pair with the RSA and ECDSA certificates loaded."""
    started: list[Server] = []

    def start(*args: str, certs: str = "both", **kw: list[str]) -> Server:
        cert_args: list[str] = []
        chosen = {"both": [pki.rsa, pki.ecdsa], "rsa": [pki.rsa], "ecdsa": [pki.ecdsa], "none": []}[certs]
        for cert, key in chosen:
            cert_args += ["--cert", str(cert), "--key", str(key)]
        d = tmp_path / f"server{len(started)}"
        d.mkdir()
        server = start_pair(d, [*cert_args, *args], **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
