"""The command-line options the launcher and both daemons share, mapped onto :mod:`shared.config`.

One parser for all three programs keeps flags identical everywhere, and lets the launcher hand its
own arguments to the daemons unchanged.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import NoReturn

from tls_privsep.shared import config
from tls_privsep.shared.errors import ConfigError

# sysexits.h
EX_OK, EX_USAGE, EX_UNAVAILABLE, EX_SOFTWARE, EX_OSERR, EX_NOPERM, EX_CONFIG = 0, 64, 69, 70, 71, 77, 78


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exits 64 (EX_USAGE), which the launcher and systemd treat
    as final, instead of argparse's usage block and 2, which they would take for a crash and restart."""

    def error(self, message: str) -> NoReturn:
        self.exit(EX_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def daemon_argv(program: str, python: str | None = None) -> list[str]:
    """The command that starts one of our programs (``secured``, ``appd``, ``launcher``) with this
    interpreter, or with ``python`` (another install of ours).

    ``-E -P``: neither PYTHONPATH nor the caller's working directory comes before our own install,
    so a user's package named like one of ours can never stand in for it.
    """
    return [python or sys.executable, "-E", "-P", "-m", f"tls_privsep.{program}"]


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE", help="TOML configuration (flags override it)")
    p.add_argument("--listen", action="append", metavar="HOST:PORT", help="address appd listens on (repeatable)")
    p.add_argument("--cert", action="append", metavar="FILE", help="certificate chain, PEM (repeatable)")
    p.add_argument("--key", action="append", metavar="FILE", help="private key for the preceding --cert")
    p.add_argument("--backend", metavar="SPEC", help="echo | http | tcp://HOST:PORT | unix:PATH")
    p.add_argument("--tickets", type=int, metavar="N", help="session tickets per handshake (0 disables)")
    p.add_argument("--alpn", metavar="LIST", help="comma-separated ALPN protocols, in preference order")
    p.add_argument("--client-ca", metavar="FILE", help="CA bundle for client certificates")
    p.add_argument("--client-auth", choices=config.CLIENT_AUTH, help="default with --client-ca: required")
    p.add_argument("--versions", metavar="LIST", help="TLS versions served: 1.2,1.3 (default), 1.3 or 1.2")
    p.add_argument("--post-quantum", choices=config.POST_QUANTUM,
                   help="the hybrid groups (X25519MLKEM768): prefer (default), require, off")
    p.add_argument("--socket", metavar="PATH", help="secured's channel socket path")
    p.add_argument("--runtime-dir", metavar="DIR")
    p.add_argument("--log-format", choices=config.LOG_FORMATS)
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes per daemon, one core each (secured.workers and appd.workers)")


def settings_from(args: argparse.Namespace) -> config.Settings:
    """Load the file (or defaults) and apply the flags; ConfigError on anything wrong."""
    s = config.load(args.config)
    sec, app = s.secured, s.appd
    certs, keys = args.cert or [], args.key or []
    if len(certs) != len(keys):
        raise ConfigError("each --cert needs a --key (and the other way round)")
    if certs:
        sec = replace(sec, certificates=tuple(config.CertPair(c, k) for c, k in zip(certs, keys, strict=True)))
    if args.tickets is not None:
        sec = replace(sec, tickets=args.tickets)
    if args.alpn is not None:
        sec = replace(sec, alpn=tuple(a.strip() for a in args.alpn.split(",") if a.strip()))
    if args.client_ca is not None:
        sec = replace(sec, client_ca=args.client_ca, client_auth=args.client_auth or "required")
    elif args.client_auth is not None:
        sec = replace(sec, client_auth=args.client_auth)
    if args.post_quantum is not None:
        sec = replace(sec, post_quantum=args.post_quantum)
    if args.versions is not None:
        sec = replace(sec, versions=tuple(v.strip() for v in args.versions.split(",") if v.strip()))
    if args.socket is not None:
        sec = replace(sec, socket=args.socket)
        app = replace(app, secured_socket=args.socket)
    if args.listen:
        app = replace(app, listen=tuple(args.listen))
    if args.workers is not None:
        sec, app = replace(sec, workers=args.workers), replace(app, workers=args.workers)
    if args.backend is not None:
        app = replace(app, backend=args.backend)
    s = replace(s, secured=sec, appd=app)
    if args.runtime_dir is not None:
        s = replace(s, runtime_dir=args.runtime_dir)
    if args.log_format is not None:
        s = replace(s, log_format=args.log_format)
    if args.log_level is not None:
        s = replace(s, log_level=args.log_level)
    return config.validate(s)


def harden(name: str) -> int | None:
    """Gone with the launcher that started us (if one did); no core file, no ptrace attach — before any secret
    exists. An exit status on failure."""
    from tls_privsep.shared import hardening

    try:
        hardening.die_with_launcher(name)
    except ValueError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EX_USAGE
    except OSError as exc:
        print(f"{name}: error: cannot ask for a signal at the launcher's death: {exc.strerror}", file=sys.stderr)
        return EX_OSERR
    try:
        hardening.no_core_dumps()
    except OSError as exc:
        print(f"{name}: error: cannot disable core dumps: {exc.strerror}", file=sys.stderr)
        return EX_OSERR
    return None


def check_channel_fd(fd: int) -> None:
    """``--ipc-fd``: the descriptor must be an open Unix SEQPACKET socket (a socketpair end from our starter)."""
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError as exc:
        raise StartupFailure(f"--ipc-fd {fd}: {exc.strerror or exc}: it must be the channel socket our starter "
                             "passed", EX_USAGE) from None
    try:
        if probe.family != socket.AF_UNIX or probe.type != socket.SOCK_SEQPACKET:
            raise StartupFailure(f"--ipc-fd {fd}: not a Unix SEQPACKET socket (the channel is one end of a "
                                 "socketpair(AF_UNIX, SOCK_SEQPACKET))", EX_USAGE)
    finally:
        probe.close()


class StartupFailure(Exception):
    """A daemon cannot do its job and says why in one line; ``status`` is its sysexits code."""

    def __init__(self, message: str, status: int = EX_CONFIG) -> None:
        super().__init__(message)
        self.status = status


def daemon_main(name: str, parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int],
                argv: list[str] | None = None) -> int:
    """A daemon's whole life: parse, harden (first thing: before any secret exists in the process), then
    ``body(args)`` under :func:`run_daemon`."""
    args = parser.parse_args(argv)
    failed = harden(name)
    if failed is not None:
        return failed
    return run_daemon(name, lambda: body(args))


def run_daemon(name: str, body: Callable[[], int | None]) -> int:
    """Run a daemon's event loop. Whatever ends it early is one line on stderr and a sysexits status,
    never a traceback: an operator reads the line, a supervisor reads the status."""
    try:
        status = body()
    except KeyboardInterrupt:
        return EX_OK
    except SystemExit:
        raise
    except BaseException as exc:  # the last word of the process
        if all(isinstance(leaf, KeyboardInterrupt) for leaf in _leaves(exc)):
            return EX_OK  # Ctrl-C before the signal handlers were in place (trio groups it): a stop like SIGINT
        line, status = failure_line(exc)
        print(f"{name}: error: {line}", file=sys.stderr, flush=True)
        return status
    return EX_OK if status is None else status


def failure_line(exc: BaseException) -> tuple[str, int]:
    """The message and status for an exception that ended a daemon (the first one that says why,
    inside exception groups); anything unexpected is named by its type."""
    from tls_privsep.shared.preload import InstallUnreadable

    leaves = list(_leaves(exc))
    for kind, status in ((StartupFailure, -1), (InstallUnreadable, EX_NOPERM), (ConfigError, EX_CONFIG)):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return one_line(str(leaf)), leaf.status if isinstance(leaf, StartupFailure) else status
    leaf = leaves[0] if leaves else exc
    return one_line(f"unexpected {type(leaf).__name__}: {leaf}"), EX_SOFTWARE


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def one_line(text: str) -> str:
    """``text`` on one printable line (control characters escaped), for a terminal or a log."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
