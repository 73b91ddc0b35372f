"""``tls-privsep``: run both daemons in the foreground or background, check a configuration.

The launcher never reads a key. It validates the settings, starts ``secured`` (listening on a
private Unix socket in the runtime directory) and ``appd`` (connecting to it) as child processes,
prints one ready line, restarts a child that dies, forwards SIGTERM/SIGINT, and passes SIGHUP to
secured (a certificate reload). Exit codes follow sysexits: 64 usage, 78 configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tls_privsep.shared import cli
from tls_privsep.shared.config import Settings
from tls_privsep.shared.errors import ConfigError

READY_TIMEOUT = 20.0
RELOAD_TIMEOUT = 15.0
_CONSOLE_EVENT = re.compile(r"^\S+ \[\w+\s*\] (certificates reloaded|reload refused)(?:\s|$)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tls-privsep", description="privilege-separated TLS 1.3 server")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run secured and appd in the foreground"),
        ("start", "run them in the background (pid file in the runtime directory)"),
        ("check-config", "validate the configuration, keys and certificates, then exit"),
    ):
        sp = sub.add_parser(name, help=text)
        cli.add_common(sp)
        sp.add_argument("--secured-user", metavar="USER", help="user secured drops to (required as root)")
        sp.add_argument("--appd-user", metavar="USER", help="user appd drops to (required as root)")
    for name, text in (("stop", "stop a background instance"), ("status", "LSB status: 0 running, 3 stopped"),
                       ("reload", "reload the certificates of a background instance (SIGHUP)")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--runtime-dir", metavar="DIR")
    sub.add_parser("demo-certs", help="make a self-signed RSA-2048 and ECDSA P-256 pair").add_argument("dir")
    return p


def runtime_dir(explicit: str | None, settings: Settings | None = None) -> Path:
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path(settings.runtime_dir if settings else "/run/tls-privsep")
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"tls-privsep-{os.getuid()}" if base == tempfile.gettempdir() else Path(base) / "tls-privsep"


def private_dir(path: Path) -> None:
    """Create (or adopt) the runtime directory, refusing one we do not own.

    Another local user could create /tmp/tls-privsep-UID first and plant a socket that poses as
    secured, or a pid file that points stop at another process. The directory must be ours, a real
    directory, and closed to others (0700; 0711 as root, so appd's user can reach secured's socket).
    """
    mode = 0o711 if os.geteuid() == 0 else 0o700
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"runtime directory {path} is not a plain directory")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"runtime directory {path} belongs to uid {info.st_uid}, not to us")
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)


def passthrough(args: argparse.Namespace) -> list[str]:
    """The common options, as flags for the daemons (same parser, same meaning)."""
    out: list[str] = []
    if args.config:
        out += ["-c", args.config]
    for addr in args.listen or []:
        out += ["--listen", addr]
    for cert, key in zip(args.cert or [], args.key or [], strict=False):
        out += ["--cert", cert, "--key", key]
    for flag in ("backend", "tickets", "alpn", "client_ca", "client_auth", "log_format", "log_level", "workers"):
        value = getattr(args, flag)
        if value is not None:
            out += ["--" + flag.replace("_", "-"), str(value)]
    return out


class Child:
    def __init__(self, name: str, argv: list[str], *, ready_fd: bool = False) -> None:
        self.name = name
        self.argv = argv
        self.ready_fd = ready_fd
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.started_at = 0.0

    def start(self) -> int | None:
        """Start the child; returns the read end of its ready pipe when it has one."""
        read_end = None
        argv = list(self.argv)
        pass_fds: tuple[int, ...] = ()
        if self.ready_fd:
            read_end, write_end = os.pipe()
            argv += ["--ready-fd", str(write_end)]
            pass_fds = (write_end,)
        self.proc = subprocess.Popen(argv, pass_fds=pass_fds)
        self.started_at = time.monotonic()
        if self.ready_fd:
            os.close(pass_fds[0])
        return read_end


def _read_ready(fd: int, proc: subprocess.Popen[bytes]) -> str | None:
    deadline = time.monotonic() + READY_TIMEOUT
    data = b""
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
                if data.endswith(b"\n"):
                    return data.decode().strip()
    finally:
        os.close(fd)
    return None


def _settings(args: argparse.Namespace) -> Settings | None:
    """The validated settings, or None after printing the one-line reason."""
    try:
        settings = cli.settings_from(args)
        if os.geteuid() == 0 and args.command != "check-config" and not (args.secured_user and args.appd_user):
            raise ConfigError("as root, give --secured-user and --appd-user (the daemons refuse to keep root)")
    except ConfigError as exc:
        print(f"tls-privsep: error: {exc}", file=sys.stderr)
        return None
    return settings


def _prepare(args: argparse.Namespace) -> tuple[Settings, Path] | None:
    """Settings and a private runtime directory, or None after printing the one-line reason."""
    settings = _settings(args)
    if settings is None:
        return None
    rundir = runtime_dir(args.runtime_dir, settings)
    try:
        private_dir(rundir)
    except ConfigError as exc:
        print(f"tls-privsep: error: {exc}", file=sys.stderr)
        return None
    return settings, rundir


def check(args: argparse.Namespace) -> int:
    if _settings(args) is None:
        return cli.EX_CONFIG
    result = subprocess.run([*cli.daemon_argv("secured"), "--check", *passthrough(args)], check=False)
    if result.returncode != 0:
        return result.returncode
    result = subprocess.run([*cli.daemon_argv("appd"), "--check", *passthrough(args)], check=False)
    if result.returncode == 0:
        print("tls-privsep: configuration OK")
    return result.returncode


def run(args: argparse.Namespace) -> int:
    prepared = _prepare(args)
    if prepared is None:
        return cli.EX_CONFIG
    settings, rundir = prepared
    sock = str(rundir / "secured.sock")
    common = passthrough(args)
    secured_argv = [*cli.daemon_argv("secured"), *common, "--socket", sock]
    appd_argv = [*cli.daemon_argv("appd"), *common, "--socket", sock]
    if args.secured_user:
        secured_argv += ["--user", args.secured_user]
        if args.appd_user:
            secured_argv += ["--appd-user", args.appd_user]
    if args.appd_user:
        appd_argv += ["--user", args.appd_user]
    secured = Child("secured", secured_argv)
    appd = Child("appd", appd_argv, ready_fd=True)

    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    def on_hangup(_signum: int, _frame: object) -> None:
        # secured re-reads its certificates; appd has nothing to reload.
        if secured.proc is not None and secured.proc.poll() is None:
            secured.proc.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    secured.start()
    ready_fd = appd.start()
    assert ready_fd is not None and appd.proc is not None
    bound = _read_ready(ready_fd, appd.proc)
    if bound is None:
        print("tls-privsep: error: appd did not become ready (see its log above)", file=sys.stderr)
        _stop_all([secured, appd], signal.SIGTERM)
        code = appd.proc.poll()
        return code if code in (cli.EX_CONFIG, cli.EX_USAGE) else cli.EX_SOFTWARE
    urls = " ".join(f"https://{b}/" for b in bound.split())
    print(f"tls-privsep: ready on {urls} (backend {settings.appd.backend})", flush=True)
    return _supervise([secured, appd], stopping)


def _supervise(children: list[Child], stopping: list[int]) -> int:
    while not stopping:
        time.sleep(0.1)
        for child in children:
            assert child.proc is not None
            code = child.proc.poll()
            if code is None or stopping:
                continue
            if code in (cli.EX_CONFIG, cli.EX_USAGE):
                print(f"tls-privsep: {child.name} refused its configuration (exit {code}); stopping", file=sys.stderr)
                _stop_all(children, signal.SIGTERM)
                return code
            quick = time.monotonic() - child.started_at < 1.0
            child.restarts += 1
            print(f"tls-privsep: {child.name} exited ({_describe(code)}); restarting", file=sys.stderr, flush=True)
            if quick:
                time.sleep(min(0.2 * child.restarts, 2.0))
            fd = child.start()
            if fd is not None:
                assert child.proc is not None
                _read_ready(fd, child.proc)
    _stop_all(children, signal.SIGTERM)
    return cli.EX_OK


def _describe(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"


def _stop_all(children: list[Child], signum: int, timeout: float = 15.0) -> None:
    for child in reversed(children):  # appd first: it drains its connections
        if child.proc is not None and child.proc.poll() is None:
            child.proc.send_signal(signum)
    deadline = time.monotonic() + timeout
    for child in children:
        if child.proc is None:
            continue
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()


# ---- background use ----------------------------------------------------------------------------


def _pidfile(rundir: Path) -> Path:
    return rundir / "tls-privsep.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(rundir: Path) -> int | None:
    """The pid in our pid file; a file someone else wrote is not ours to act on."""
    try:
        if _pidfile(rundir).lstat().st_uid != os.geteuid():
            return None
        return int(_pidfile(rundir).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def start(args: argparse.Namespace) -> int:
    prepared = _prepare(args)
    if prepared is None:
        return cli.EX_CONFIG
    _, rundir = prepared
    pid = _read_pid(rundir)
    if pid is not None and _alive(pid):
        print(f"tls-privsep: already running (pid {pid})")
        return cli.EX_OK
    logfile = rundir / "tls-privsep.log"
    argv = [*cli.daemon_argv("launcher"), "run", "--runtime-dir", str(rundir), *passthrough(args)]
    for flag in ("secured_user", "appd_user"):
        if getattr(args, flag):
            argv += ["--" + flag.replace("_", "-"), getattr(args, flag)]
    with open(logfile, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(argv, stdin=devnull, stdout=log, stderr=log, start_new_session=True)
    _pidfile(rundir).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + READY_TIMEOUT
    offset = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _pidfile(rundir).unlink(missing_ok=True)
            print(f"tls-privsep: failed to start (exit {proc.returncode}); see {logfile}", file=sys.stderr)
            return proc.returncode or cli.EX_SOFTWARE
        text = logfile.read_text(errors="replace")
        for line in text[offset:].splitlines():
            if line.startswith("tls-privsep: ready"):
                print(f"{line} (pid {proc.pid}, log {logfile})")
                return cli.EX_OK
        time.sleep(0.1)
    print(f"tls-privsep: not ready after {READY_TIMEOUT:.0f}s; see {logfile}", file=sys.stderr)
    return cli.EX_SOFTWARE


def stop(args: argparse.Namespace) -> int:
    rundir = runtime_dir(args.runtime_dir)
    pid = _read_pid(rundir)
    if pid is None or not _alive(pid):
        _pidfile(rundir).unlink(missing_ok=True)
        print("tls-privsep: not running")
        return cli.EX_OK
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:
            pass
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    _pidfile(rundir).unlink(missing_ok=True)
    print("tls-privsep: stopped")
    return cli.EX_OK


def status(args: argparse.Namespace) -> int:
    rundir = runtime_dir(args.runtime_dir)
    pid = _read_pid(rundir)
    if pid is None:
        print("tls-privsep: not running")
        return 3  # LSB: program is not running
    if not _alive(pid):
        print(f"tls-privsep: dead, but pid file {_pidfile(rundir)} remains")
        return 1  # LSB: program is dead and /var/run pid file exists
    print(f"tls-privsep: running (pid {pid})")
    return cli.EX_OK


def reload(args: argparse.Namespace) -> int:
    """SIGHUP the background instance, then report secured's verdict from its log.

    Exit 0 when the new certificates are in use; 78 when secured refused them (it keeps serving the
    previous ones); 7 (LSB: not running) when there is nothing to reload.
    """
    rundir = runtime_dir(args.runtime_dir)
    pid = _read_pid(rundir)
    if pid is None or not _alive(pid):
        print("tls-privsep: not running")
        return 7
    logfile = rundir / "tls-privsep.log"
    offset = logfile.stat().st_size if logfile.exists() else None
    os.kill(pid, signal.SIGHUP)
    if offset is None:
        print(f"tls-privsep: reload signalled (pid {pid}); secured's log has the outcome")
        return cli.EX_OK
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while time.monotonic() < deadline:
        with open(logfile, "rb") as f:
            f.seek(offset)
            for line in f.read().decode(errors="replace").splitlines():
                verdict = _reload_verdict(line)
                if verdict is not None:
                    ok, detail = verdict
                    if ok:
                        print(f"tls-privsep: reloaded: {detail}")
                        return cli.EX_OK
                    print(f"tls-privsep: reload refused, previous certificates kept: {detail}", file=sys.stderr)
                    return cli.EX_CONFIG
        time.sleep(0.1)
    print(f"tls-privsep: no reload outcome after {RELOAD_TIMEOUT:.0f}s; see {logfile}", file=sys.stderr)
    return cli.EX_SOFTWARE


def _reload_verdict(line: str) -> tuple[bool, str] | None:
    """(ok, detail) from one of secured's log lines about a reload, in JSON or console format."""
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if isinstance(entry, dict):
        if entry.get("daemon") != "secured":
            return None
        if entry.get("event") == "certificates reloaded":
            return True, "; ".join(map(str, entry.get("certificates", [])))
        if entry.get("event") == "reload refused":
            return False, str(entry.get("error", ""))
        return None
    # Console format: the event is the text right after the level; a client-chosen SNI later on the line of
    # another event cannot pose as a verdict.
    match = _CONSOLE_EVENT.match(line)
    if match is None:
        return None
    return match.group(1) == "certificates reloaded", line.strip()


def demo_certs(directory: str) -> int:
    from tls_privsep.launcher.demo import make_demo_certs

    for cert, key in make_demo_certs(Path(directory)):
        print(f"--cert {cert} --key {key}")
    return cli.EX_OK


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "run":
        return run(args)
    if args.command == "start":
        return start(args)
    if args.command == "stop":
        return stop(args)
    if args.command == "status":
        return status(args)
    if args.command == "reload":
        return reload(args)
    if args.command == "check-config":
        return check(args)
    return demo_certs(args.dir)


if __name__ == "__main__":
    sys.exit(main())
