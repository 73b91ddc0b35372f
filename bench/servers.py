"""Start and stop the servers on the server core: our pair, ``openssl s_server``, the trio+ssl reference, nginx's
stream proxy and hitch (the proxied phase's references, Debian's packages), and for the post-quantum phase our pair
and a pyOpenSSL server with the hybrid X25519MLKEM768 or X25519.

Every server gets the same certificate, TLS 1.3 with TLS_AES_128_GCM_SHA256 and X25519 only (the hybrid
where its phase says so), and the same ticket count; each runs with its default logging and writes it to a
file in the bench's work directory. A server is a process tree; :meth:`Server.cpu` sums the whole tree.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench import proc
from tls_privsep.shared import cli

ROOT = Path(__file__).resolve().parent.parent
SUITE = "TLS_AES_128_GCM_SHA256"
SUITE12 = "ECDHE-ECDSA-AES128-GCM-SHA256"  # the TLS 1.2 phase's, with the same ECDSA certificate and X25519
READY_TIMEOUT = 30.0
OPENSSL_CNF = f"""\
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
Ciphersuites = {SUITE}
Groups = X25519
"""
# TLS 1.2's load clients also offer P-256: there the client's groups name the curves it can verify ECDSA on
# (RFC 8422 §5.1.1), and the certificate is P-256. Every server still picks X25519 for the key exchange.
OPENSSL_CNF_TLS12 = OPENSSL_CNF.replace("Groups = X25519", "Groups = X25519:P-256")
# For servers configured through OpenSSL's own configuration only (hitch has no ticket setting): no tickets.
OPENSSL_CNF_NO_TICKETS = OPENSSL_CNF + "NumTickets = 0\n"
NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")  # Debian's libnginx-mod-stream
NGINX_CONF = """\
load_module {module};
daemon off;
master_process on;
worker_processes 1;
pid {pid};
error_log {error_log};
{user}
events {{
    worker_connections 4096;
}}
stream {{
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_ecdh_curve X25519;
        ssl_conf_command Ciphersuites {suite};
        ssl_session_tickets off;
        ssl_conf_command NumTickets 0;
        proxy_pass {backend};
    }}
}}
"""
# hitch 1.7's command line has no flag for the TLS 1.3 suites or the curve: its configuration file has both.
HITCH_CONF = """\
frontend = "[127.0.0.1]:{port}"
backend = "[{host}]:{backend_port}"
workers = 1
backlog = 4096
tls-protos = TLSv1.3
ciphersuites = "{suite}"
ecdh-curve = "X25519"
pem-file = "{pem}"
daemon = off
"""
OURS_TOML = """\
[secured]
cipher_suites = ["TLS_AES_128_GCM_SHA256"]
tls12_cipher_suites = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"]
groups = {groups}

[appd]
max_connections = {max_connections}
"""


@dataclass
class Workdir:
    """Everything a run shares: its directory, certificates by kind, the env for Python peers."""

    path: Path
    certs: dict[str, tuple[Path, Path]]
    server_core: int
    client_core: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def openssl_conf(self) -> Path:
        return self.path / "openssl.cnf"


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def cpu(self) -> float:
        return proc.tree_cpu(self.proc.pid)

    def pids(self) -> list[int]:
        return proc.tree(self.proc.pid)

    def find(self, module: str) -> list[int]:
        """The pids in the tree running ``python -m module`` (a supervisor and its workers, if forked)."""
        found = []
        for pid in self.pids():
            with contextlib.suppress(FileNotFoundError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"-m" in argv and argv[argv.index(b"-m") + 1] == module.encode():
                    found.append(pid)
        if not found:
            raise LookupError(f"no {module} process under {self.name}")
        return found

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole tree if it has not gone within 20 s."""
        pids = self.pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(work: Workdir, name: str, port: int, argv: list[str], env: dict[str, str] | None = None,
           cores: Iterable[int] | None = None) -> Server:
    log = work.path / f"{name}-{port}.log"
    with open(log, "wb") as out:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             preexec_fn=proc.pinned(work.server_core if cores is None else cores),
                             env={**os.environ, **(env or {})}, cwd=ROOT)
    return Server(name, p, port, log)


def _wait_line(server: Server, marker: bytes) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if marker in server.log.read_bytes():
            return
        if server.proc.poll() is not None:
            break
        time.sleep(0.05)
    server.stop()
    tail = server.log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{server.name} did not start:\n{tail}")


def _wait_port(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and server.proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{server.name} did not start:\n{server.log.read_text(errors='replace')[-2000:]}")


def ours(work: Workdir, kind: str, *, tickets: int, backend: str, max_connections: int = 10000, workers: int = 1,
         cores: Iterable[int] | None = None, group: str = "x25519") -> Server:
    """The launcher, as an operator runs it (default logging), with a config pinning suite and group.

    ``workers`` is passed on as ``--workers``; ``cores`` replaces the server core (the whole tree may run there).
    """
    port = proc.free_port()
    cfg = work.path / f"ours-{port}.toml"
    cfg.write_text(OURS_TOML.format(max_connections=max_connections, groups=json.dumps([group])))
    rundir = work.path / f"run-{port}"
    cert, key = work.certs[kind]
    argv = [*cli.daemon_argv("launcher"), "run", "-c", str(cfg), "--listen", f"127.0.0.1:{port}",
            "--cert", str(cert), "--key", str(key), "--backend", backend, "--tickets", str(tickets),
            "--runtime-dir", str(rundir), "--workers", str(workers)]
    if os.geteuid() == 0:
        argv += ["--secured-user", "nobody", "--appd-user", "nobody"]
    server = _spawn(work, "ours", port, argv, cores=cores)
    _wait_line(server, b"tls-privsep: ready")
    return server


def openssl(work: Workdir, kind: str, *, tickets: int, tls12: bool = False) -> Server:
    """``s_server -rev``: serves connections one after another for ever, never reads stdin. With ``tls12``
    ``-tls1_2`` and its suite; tickets are TLS 1.2's then (``-no_ticket`` for none)."""
    port = proc.free_port()
    cert, key = work.certs[kind]
    version = ["-tls1_2", "-cipher", SUITE12] + ([] if tickets else ["-no_ticket"]) if tls12 else \
        ["-tls1_3", "-ciphersuites", SUITE, "-num_tickets", str(tickets)]
    argv = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key),
            *version, "-groups", "X25519", "-rev", "-quiet"]
    server = _spawn(work, "openssl", port, argv)
    _wait_port(server)
    return server


def trio_ssl(work: Workdir, kind: str, *, tickets: int, backend: str) -> Server:
    port = proc.free_port()
    cert, key = work.certs[kind]
    argv = [sys.executable, "-m", "bench.trio_ssl_server", "--port", str(port), "--cert", str(cert),
            "--key", str(key), "--backend", backend, "--tickets", str(tickets)]
    server = _spawn(work, "trio-ssl", port, argv, env=work.env)
    _wait_line(server, b"ready")
    return server


def pyopenssl(work: Workdir, kind: str, *, group: str) -> Server:
    """bench/pyopenssl_server.py: the OpenSSL of cryptography's wheels, offering ``group`` only."""
    port = proc.free_port()
    cert, key = work.certs[kind]
    argv = [sys.executable, "-m", "bench.pyopenssl_server", "--port", str(port), "--cert", str(cert),
            "--key", str(key), "--groups", group]
    server = _spawn(work, f"pyopenssl-{group}", port, argv, env=work.env)
    _wait_line(server, b"ready")
    return server


def _tcp_backend(spec: str) -> tuple[str, int]:
    url = urlsplit(spec)
    if url.scheme != "tcp" or url.hostname is None or url.port is None:
        raise ValueError(f"not a tcp://HOST:PORT backend: {spec!r}")
    return url.hostname, url.port


def _nobody() -> tuple[str, str]:
    """The unprivileged user and its group, for the references' workers when the bench runs as root."""
    entry = pwd.getpwnam("nobody")
    return entry.pw_name, grp.getgrgid(entry.pw_gid).gr_name


def nginx_missing() -> str | None:
    """Why nginx's stream proxy cannot run here, or None."""
    if shutil.which("nginx") is None:
        return "no nginx binary (Debian package nginx)"
    if not NGINX_STREAM_MODULE.exists():
        return f"no {NGINX_STREAM_MODULE} (Debian package libnginx-mod-stream)"
    return None


def hitch_missing() -> str | None:
    return "no hitch binary (Debian package hitch)" if shutil.which("hitch") is None else None


def nginx(work: Workdir, kind: str, *, backend: str) -> Server:
    """nginx's stream module terminating TLS and proxying to ``backend`` (``tcp://HOST:PORT``): a master and one
    worker, the configuration generated in the work directory; the whole tree's CPU is the server's."""
    missing = nginx_missing()
    if missing:
        raise RuntimeError(missing)
    port = proc.free_port()
    host, backend_port = _tcp_backend(backend)
    cert, key = work.certs[kind]
    error_log = work.path / f"nginx-{port}-error.log"
    user = "user {} {};".format(*_nobody()) if os.geteuid() == 0 else ""
    conf = work.path / f"nginx-{port}.conf"
    conf.write_text(NGINX_CONF.format(module=NGINX_STREAM_MODULE, pid=work.path / f"nginx-{port}.pid",
                                      error_log=error_log, user=user, port=port, cert=cert, key=key, suite=SUITE,
                                      backend=f"{host}:{backend_port}"))
    argv = ["nginx", "-c", str(conf), "-p", str(work.path), "-e", str(error_log)]
    server = _spawn(work, "nginx", port, argv)
    _wait_port(server)
    return server


def hitch(work: Workdir, kind: str, *, backend: str) -> Server:
    """hitch with one worker (and its manager process), proxying to ``backend``. It refuses to run its workers as
    root, so as root they drop to nobody. Tickets are off through OpenSSL's configuration (hitch has no setting)."""
    missing = hitch_missing()
    if missing:
        raise RuntimeError(missing)
    port = proc.free_port()
    host, backend_port = _tcp_backend(backend)
    cert, key = work.certs[kind]
    pem = work.path / f"hitch-{kind}.pem"  # key and certificate in one file, as hitch wants them
    pem.write_bytes(key.read_bytes() + cert.read_bytes())
    conf = work.path / f"hitch-{port}.conf"
    conf.write_text(HITCH_CONF.format(port=port, host=host, backend_port=backend_port, suite=SUITE, pem=pem))
    cnf = work.path / "openssl-no-tickets.cnf"
    cnf.write_text(OPENSSL_CNF_NO_TICKETS)
    argv = ["hitch", f"--config={conf}"]
    if os.geteuid() == 0:
        user, group = _nobody()
        argv += [f"--user={user}", f"--group={group}"]
    server = _spawn(work, "hitch", port, argv, env={"OPENSSL_CONF": str(cnf)})
    _wait_port(server)
    return server


def worker_counts(log: Path) -> dict[str, dict[str, int]]:
    """Per worker, from our pair's JSON log lines: appd's connections and bytes sent, secured's handshakes and
    the appd channels it accepted (each appd worker holds one channel, served by whichever secured worker took it).

    With more than one worker each daemon names the worker in every line (``"worker": 0``); with one it
    names none, and its lines count for worker 0. Lines that are not JSON (the launcher's own) are skipped.
    """
    out: dict[str, dict[str, int]] = {"appd_connections": {}, "appd_bytes_out": {}, "secured_handshakes": {},
                                      "secured_channels": {}}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        worker, daemon, event = str(entry.get("worker", 0)), entry.get("daemon"), entry.get("event")
        if daemon == "appd" and event == "connection":
            out["appd_connections"][worker] = out["appd_connections"].get(worker, 0) + 1
            out["appd_bytes_out"][worker] = out["appd_bytes_out"].get(worker, 0) + int(entry.get("bytes_out") or 0)
        elif daemon == "secured" and event in ("handshake done", "channel up"):
            key = "secured_handshakes" if event == "handshake done" else "secured_channels"
            out[key][worker] = out[key].get(worker, 0) + 1
    return out
