"""``tls-privsep``: run both daemons in the foreground or background, check a configuration.

The launcher never reads a key. It validates the settings, starts ``secured`` (listening on a
private Unix socket in the runtime directory) and ``appd`` (connecting to it) as child processes,
prints one ready line, restarts a child that dies, forwards SIGTERM/SIGINT, and passes SIGHUP to
secured (a certificate reload). Exit codes follow sysexits: 64 usage, 78 configuration, 70 when a
daemon keeps dying.

The children's stderr goes through the launcher: every line is passed on unchanged as it arrives,
and the last one is kept as the child's last error. A child that dies is restarted after a delay
from 0.1 s doubling to 5 s (back to 0.1 s once it has been up a minute); one that dies 5 times
within 60 s (``--restart-limit``, ``--restart-window``) stops everything: one line naming it and
its last error, exit 70. The state file (``tls-privsep.state`` in the runtime directory, JSON) holds
each daemon's pid, restarts, last exit and last error line for ``tls-privsep status``. The children
get ``$TLS_PRIVSEP_PARENT_PID`` and ask the kernel for SIGTERM when the launcher dies, however it dies.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tls_privsep.shared import cli, hardening, restarts
from tls_privsep.shared.config import Settings
from tls_privsep.shared.errors import ConfigError
from tls_privsep.shared.restarts import CrashLoop, RestartPolicy

READY_TIMEOUT = 20.0
RELOAD_TIMEOUT = 15.0
LAST_LINE_MAX = 300  # characters of a child's last stderr line kept as its last error
_CONSOLE_EVENT = re.compile(r"^\S+ \[\w+\s*\] (certificates reloaded|reload refused)(?:\s|$)")


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="tls-privsep", description="privilege-separated TLS server (TLS 1.3 and 1.2)")
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
        if name != "check-config":
            sp.add_argument("--restart-limit", type=_positive(int), default=restarts.LIMIT, metavar="N",
                            help=f"give up when a daemon dies N times within the window (default {restarts.LIMIT})")
            sp.add_argument("--restart-window", type=_positive(float), default=restarts.WINDOW, metavar="SECONDS",
                            help=f"the window for --restart-limit (default {restarts.WINDOW:g})")
    for name, text in (("stop", "stop a background instance"), ("status", "LSB status: 0 running, 3 stopped"),
                       ("reload", "reload the certificates of a background instance (SIGHUP)")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--runtime-dir", metavar="DIR")
    sub.add_parser("demo-certs", help="make a self-signed RSA-2048 and ECDSA P-256 pair").add_argument("dir")
    return p


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"not a positive {'whole ' if kind is int else ''}number: {text!r}")
        return value

    return convert


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
    for flag in ("backend", "tickets", "alpn", "client_ca", "client_auth", "post_quantum", "versions", "log_format",
                 "log_level", "workers"):
        value = getattr(args, flag)
        if value is not None:
            out += ["--" + flag.replace("_", "-"), str(value)]
    return out


class _Stream:
    """A pipe from a child, read without blocking: its stderr (each line forwarded unchanged to ours as it arrives,
    the last non-empty one remembered) or its ready pipe (one line, kept)."""

    def __init__(self, fd: int, *, forward: bool) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.forward = forward
        self.buffer = b""
        self.last_line = ""
        self.first_line: str | None = None

    @property
    def open(self) -> bool:
        return self.fd >= 0

    def pump(self) -> bool:
        """Read what is there (True if anything was); at end of file, pass on a last unterminated line and close."""
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return False
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")
        for line in lines:
            self._line(line + b"\n")
        if len(self.buffer) > 65536:  # no newline in sight: pass it on as it is
            self._line(self.buffer)
            self.buffer = b""
        return True

    def _line(self, line: bytes) -> None:
        if self.forward:
            _forward(line)
        text = line.decode(errors="replace").strip()
        if text:
            self.last_line = text[:LAST_LINE_MAX]
            if self.first_line is None:
                self.first_line = text

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.buffer and self.forward:  # (a ready line counts only with its newline)
            self._line(self.buffer + b"\n")
            self.buffer = b""
        os.close(self.fd)
        self.fd = -1


_forwarding = [True]


def _forward(data: bytes) -> None:
    """Write a child's line to our stderr; a stderr that went away (a closed pipe) drops the rest silently."""
    if not _forwarding[0]:
        return
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(2, view):]
    except BlockingIOError:
        select.select([], [2], [], 1.0)  # a slow reader: wait a little, then drop the rest of this line
    except OSError:
        _forwarding[0] = False


def _say(line: str) -> None:
    """One line of ours on stderr (never a traceback for a stderr that went away)."""
    try:
        print(f"tls-privsep: {line}", file=sys.stderr, flush=True)
    except OSError:
        pass


class Child:
    """One daemon under the launcher: its process, its stderr, its ready pipe (appd), its crash-loop record."""

    def __init__(self, name: str, argv: list[str], *, ready_fd: bool = False,
                 policy: RestartPolicy | None = None) -> None:
        self.name = name
        self.argv = argv
        self.ready_fd = ready_fd
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr: _Stream | None = None
        self.ready: _Stream | None = None
        self.loop = CrashLoop(policy or RestartPolicy())
        self.restart_at: float | None = None  # waiting to be started again
        self.last_exit: int | None = None  # of its last death, as Popen.returncode: negative for a signal
        self.exit_code: int | None = None  # of its last exit, asked for or not
        self.last_error = ""

    @property
    def restarts(self) -> int:
        return self.loop.restarts

    def start(self) -> None:
        """Start the child, its stderr piped to us (and, for appd, a ready pipe)."""
        argv = list(self.argv)
        err_r, err_w = os.pipe()
        ready_r = ready_w = -1
        pass_fds: tuple[int, ...] = ()
        try:
            if self.ready_fd:
                ready_r, ready_w = os.pipe()
                argv += ["--ready-fd", str(ready_w)]
                pass_fds = (ready_w,)
            # Its own process group: a Ctrl-C at the terminal reaches the launcher alone, which stops the
            # daemons in order (appd drains first) rather than interrupting them mid-start.
            self.proc = subprocess.Popen(argv, pass_fds=pass_fds, stdin=subprocess.DEVNULL, stderr=err_w,
                                         process_group=0, env=_child_env())
        except BaseException:
            for fd in (err_r, ready_r):
                if fd >= 0:
                    os.close(fd)
            raise
        finally:
            os.close(err_w)
            if ready_w >= 0:
                os.close(ready_w)
        self.stderr = _Stream(err_r, forward=True)
        self.ready = _Stream(ready_r, forward=False) if ready_r >= 0 else None
        self.restart_at = None
        self.loop.started()

    def reaped(self, code: int, *, died: bool = True) -> _Stream | None:
        """Note its exit (``died``: not one we asked for): its last error line is the last one it wrote. Returns its
        stderr if descendants (workers on their way out) still hold it open, to go on forwarding."""
        self.proc = None
        self.exit_code = code
        pipe, self.stderr = self.stderr, None
        if self.ready is not None:
            self.ready.close()
            self.ready = None
        if pipe is not None:
            for _ in range(64):  # whatever it wrote last (it is dead: this does not wait)
                if not pipe.pump():
                    break
        if died:
            self.last_exit, self.last_error = code, pipe.last_line if pipe is not None else ""
        return pipe if pipe is not None and pipe.open else None


def _state_file(rundir: Path) -> Path:
    return rundir / "tls-privsep.state"


class Supervisor:
    """The launcher's loop: forward the children's stderr, restart a child that dies (with backoff), give up on a
    crash loop, and keep the state file that ``tls-privsep status`` reads."""

    def __init__(self, children: list[Child], stopping: list[int], rundir: Path | None = None) -> None:
        self.children = children
        self.stopping = stopping
        self.state_path = _state_file(rundir) if rundir is not None else None
        self.draining: list[_Stream] = []  # the stderr of dead children that something still holds open
        self.outcome = "running"
        self.message = ""
        self._state_failed = False

    def pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for output from any child, and pass it on."""
        streams = [s for c in self.children for s in (c.stderr, c.ready) if s is not None and s.open]
        streams += [s for s in self.draining if s.open]
        if not streams:
            time.sleep(timeout)
            return
        readable, _, _ = select.select([s.fd for s in streams], [], [], timeout)
        for stream in streams:
            if stream.fd in readable:
                stream.pump()
        self.draining = [s for s in self.draining if s.open]

    def reap(self, child: Child, code: int, *, died: bool = True) -> None:
        pipe = child.reaped(code, died=died)
        if pipe is not None:
            self.draining.append(pipe)

    def wait_ready(self, child: Child, timeout: float) -> str | None:
        """``child``'s ready line, forwarding every child's stderr meanwhile; None if it exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not self.stopping and child.ready is not None and child.proc is not None:
            self.pump(0.1)
            ready = child.ready
            if ready.first_line is not None:
                ready.close()
                return ready.first_line
            if not ready.open or child.proc.poll() is not None or time.monotonic() > deadline:
                break
            if any(other.proc is not None and other.proc.poll() in _FINAL for other in self.children):
                break  # another daemon refused to run (secured's key, say): appd will never be ready
        return None

    def run(self) -> int:
        """Until a stop signal, a configuration refusal or a crash loop; the launcher's exit status."""
        while not self.stopping:
            self.pump(0.1)
            for child in self.children:
                if child.ready is not None and child.ready.first_line is not None:
                    child.ready.close()  # a restarted appd's ready line: nothing to announce
                    child.ready = None
                if self.stopping:
                    break
                if child.proc is None:
                    due = child.restart_at is not None and time.monotonic() >= child.restart_at
                    if due and not self.start_child(child):
                        return cli.EX_OSERR
                    continue
                code = child.proc.poll()
                if code is None:
                    continue
                self.reap(child, code)
                if code in _FINAL:
                    return self.finish(f"{child.name} {_FINAL[code]} (exit {code}); stopping", code, "stopped")
                delay = child.loop.died()
                if delay is None:
                    return self.finish(
                        f"{child.name} {child.loop.describe()} (last exit: {_describe(code)}); "
                        f"last error: {child.last_error or 'none'}; giving up", restarts.EX_GAVE_UP, "gave up")
                _say(f"{child.name} exited ({_describe(code)}); restarting in {delay:g} s")
                child.restart_at = time.monotonic() + delay
                self.save()
        return self.finish("", cli.EX_OK, "stopped")

    def start_child(self, child: Child) -> bool:
        """Start (or restart) ``child``; False after saying why it could not be and stopping the others."""
        try:
            child.start()
        except OSError as exc:
            self.finish(f"error: cannot start {child.name}: {exc.strerror or exc}", cli.EX_OSERR, "stopped")
            return False
        self.save()
        return True

    def finish(self, line: str, code: int, outcome: str) -> int:
        """Say ``line`` (if any), stop every child, note the outcome in the state file; returns ``code``."""
        if line:
            _say(line)
        self.outcome, self.message = outcome, line
        self.stop_all(signal.SIGTERM)
        self.save()
        return code

    def stop_all(self, signum: int, timeout: float = 15.0) -> None:
        """Signal every child (appd first: it drains its connections), wait, forwarding their last words; SIGKILL
        what is still there after ``timeout``."""
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signum)
        deadline = time.monotonic() + timeout
        while any(c.proc is not None and c.proc.poll() is None for c in self.children):
            if time.monotonic() > deadline:
                for child in self.children:
                    if child.proc is not None and child.proc.poll() is None:
                        child.proc.kill()
                break
            self.pump(0.1)
        for child in self.children:
            child.restart_at = None
            if child.proc is not None:
                self.reap(child, child.proc.wait(), died=False)
        # Their descendants (workers) exit with them: take what they still write, briefly.
        deadline = time.monotonic() + 2.0
        while self.draining and time.monotonic() < deadline:
            self.pump(0.1)
        for stream in self.draining:
            stream.close()
        self.draining = []

    def save(self) -> None:
        """Write the state file atomically (write a temporary file, then rename); a failure is said once."""
        if self.state_path is None:
            return
        state = {
            "launcher": {"pid": os.getpid(), "state": self.outcome, "message": self.message or None},
            "daemons": {c.name: {"pid": c.proc.pid if c.proc is not None else None, "restarts": c.restarts,
                                 "last_exit": c.last_exit, "last_error": c.last_error or None}
                        for c in self.children},
        }
        try:
            fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=".tls-privsep.state.")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(state, f)
                    f.write("\n")
                os.replace(tmp, self.state_path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            if not self._state_failed:
                self._state_failed = True
                _say(f"warning: cannot write {self.state_path}: {exc.strerror or exc}")


def _settings(args: argparse.Namespace) -> Settings | None:
    """The validated settings, or None after printing the one-line reason."""
    try:
        settings = cli.settings_from(args)
        if os.geteuid() == 0 and args.command != "check-config" and not (args.secured_user and args.appd_user):
            raise ConfigError("as root, give --secured-user and --appd-user (the daemons refuse to keep root)")
        for user in (args.secured_user, args.appd_user):
            if user:
                hardening.uid_of(user)  # one line now, rather than from each daemon later
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
        if os.geteuid() == 0 and args.appd_user:
            # secured makes its socket afresh (owner, group and mode for appd): only the directories count.
            problem = hardening.unreachable_for(rundir / "secured.sock", args.appd_user, socket_too=False)
            if problem:
                raise ConfigError(f"appd runs as {args.appd_user} and {problem}: it could never reach secured's "
                                  f"socket in {rundir}; choose a --runtime-dir that user can reach")
    except ConfigError as exc:
        print(f"tls-privsep: error: {exc}", file=sys.stderr)
        return None
    except OSError as exc:
        print(f"tls-privsep: error: runtime directory {cli.one_line(str(rundir))}: {exc.strerror or exc}",
              file=sys.stderr)
        return None
    return settings, rundir


def _child_env() -> dict[str, str]:
    return {**os.environ, hardening.PARENT_PID_VARIABLE: str(os.getpid())}


def check(args: argparse.Namespace) -> int:
    if _settings(args) is None:
        return cli.EX_CONFIG
    result = subprocess.run([*cli.daemon_argv("secured"), "--check", *passthrough(args)], check=False,
                            env=_child_env())
    if result.returncode != 0:
        return result.returncode
    result = subprocess.run([*cli.daemon_argv("appd"), "--check", *passthrough(args)], check=False, env=_child_env())
    if result.returncode == 0:
        print("tls-privsep: configuration OK")
    return result.returncode


def _policy(args: argparse.Namespace) -> RestartPolicy:
    return RestartPolicy(limit=args.restart_limit, window=args.restart_window)


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
    if args.secured_user:
        appd_argv += ["--secured-user", args.secured_user]  # the only uid (besides root) appd accepts as secured
    policy = _policy(args)
    secured = Child("secured", secured_argv, policy=policy)
    appd = Child("appd", appd_argv, ready_fd=True, policy=policy)

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
    supervisor = Supervisor([secured, appd], stopping, rundir)
    for child in (secured, appd):
        if not supervisor.start_child(child):
            return cli.EX_OSERR
    bound = supervisor.wait_ready(appd, READY_TIMEOUT)
    if bound is None:
        if stopping:
            return supervisor.finish("", cli.EX_OK, "stopped")
        refused = [c.proc.poll() for c in (secured,) if c.proc is not None and c.proc.poll() in _FINAL]
        code = refused[0] if refused else _exit_status(appd)  # None: still running
        if code in _SAYS_WHY:
            # The daemon's own line (forwarded above) names the cause and the fix; ours would only repeat it.
            return supervisor.finish("", code, "stopped")
        why = f"exited ({_describe(code)})" if code is not None else f"not ready after {READY_TIMEOUT:g} s"
        return supervisor.finish(f"error: appd {why}; see its log above", cli.EX_SOFTWARE, "stopped")
    urls = " ".join(f"https://{b}/" for b in bound.split())
    print(f"tls-privsep: ready on {urls} (backend {settings.appd.backend})", flush=True)
    return supervisor.run()


def _exit_status(child: Child, grace: float = 2.0) -> int | None:
    """``child``'s exit status, waiting a moment for one whose ready pipe just closed (it is on its way out);
    None when it is still running."""
    if child.proc is None:
        return child.exit_code
    try:
        return child.proc.wait(grace)
    except subprocess.TimeoutExpired:
        return None


# A child that exits with one of these said why in one line, and a restart would meet the same wall.
_FINAL = {cli.EX_CONFIG: "refused its configuration", cli.EX_USAGE: "refused its arguments",
          cli.EX_NOPERM: "lacks a permission it needs"}
# Statuses whose line says everything (the final ones, and secured not reachable in time).
_SAYS_WHY = frozenset((*_FINAL, cli.EX_UNAVAILABLE))


def _describe(code: int | None) -> str:
    if code is None:
        return "still running"
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"


# ---- background use ----------------------------------------------------------------------------


def _pidfile(rundir: Path) -> Path:
    return rundir / "tls-privsep.pid"


def _alive(pid: int) -> bool:
    """Running: a zombie (exited, not reaped yet by whoever adopted it) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        return True


def _read_pid(rundir: Path) -> int | None:
    """The pid in our pid file; a file someone else wrote is not ours to act on."""
    try:
        if _pidfile(rundir).lstat().st_uid != os.geteuid():
            return None
        return int(_pidfile(rundir).read_text().strip())
    except (OSError, ValueError):  # no pid file, or no such directory at all: nothing of ours runs there
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
    argv += ["--restart-limit", str(args.restart_limit), "--restart-window", f"{args.restart_window:g}"]
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
        with contextlib.suppress(OSError):  # a stale pid file, if there is a directory to hold one
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
        _print_state(rundir, pid)
        return 1  # LSB: program is dead and /var/run pid file exists
    print(f"tls-privsep: running (pid {pid})")
    _print_state(rundir, pid)
    return cli.EX_OK


def _read_state(rundir: Path, pid: int) -> dict[str, Any] | None:
    """The state file the launcher ``pid`` wrote, or None (missing, someone else's, another launcher's, garbled)."""
    path = _state_file(rundir)
    try:
        if path.lstat().st_uid != os.geteuid():
            return None
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("launcher"), dict) \
            or state["launcher"].get("pid") != pid or not isinstance(state.get("daemons"), dict):
        return None
    return state


def _print_state(rundir: Path, pid: int) -> None:
    """Under status's first line: each daemon's pid, restarts, last exit and last error; how the launcher ended."""
    state = _read_state(rundir, pid)
    if state is None:
        return
    for name, daemon in state["daemons"].items():
        if not isinstance(daemon, dict):
            continue
        parts = [f"pid {daemon.get('pid') or '-'}", f"{daemon.get('restarts', 0)} restarts"]
        if isinstance(daemon.get("last_exit"), int):
            parts.append(f"last exit {_describe(daemon['last_exit'])}")
        if daemon.get("last_error"):
            parts.append(f"last error: {daemon['last_error']}")
        print(f"  {name}: {', '.join(parts)}")
    if state["launcher"].get("message"):
        print(f"  launcher: {state['launcher']['message']}")


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
    try:
        return _command(args)
    except KeyboardInterrupt:
        return 130  # interrupted before the signal handlers were in place: nothing to say
    except OSError as exc:  # the last resort: one line, never a traceback
        where = f": {cli.one_line(str(exc.filename))}" if exc.filename else ""
        print(f"tls-privsep: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return cli.EX_OSERR


def _command(args: argparse.Namespace) -> int:
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
