"""``appd``: the unprivileged daemon that owns the TCP sockets and the bulk record layer."""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import socket
import sys

import trio

from tls_privsep.appd.apps import Backend, parse_backend
from tls_privsep.appd.daemon import Appd, bind_listeners, listener_address_of
from tls_privsep.appd.link import SecuredLink, StartupCheck, fd_connector, unix_connector
from tls_privsep.appd.session import Limits
from tls_privsep.shared import cli, hardening, preload, systemd, workers
from tls_privsep.shared import log as logging_setup
from tls_privsep.shared.config import parse_address
from tls_privsep.shared.errors import ConfigError
from tls_privsep.shared.log import Logger


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="appd", description="tls-privsep unprivileged daemon: sockets and records")
    cli.add_common(p)
    p.add_argument("--ipc-fd", type=int, metavar="N", help="use an inherited channel socket instead of --socket")
    p.add_argument("--user", metavar="USER", help="user to drop to after binding (required as root)")
    p.add_argument("--secured-user", metavar="USER",
                   help="secured's user: the only one (besides root) appd accepts on the channel socket")
    p.add_argument("--ready-fd", type=int, metavar="N", help="write the bound addresses to this fd, then close it")
    p.add_argument("--check", action="store_true", help="check the configuration, then exit")
    return p



def listening_sockets(addresses: tuple[tuple[str, int], ...], listen: tuple[str, ...], workers: int,
                      log: Logger) -> list[list[socket.socket]]:
    """One list of listening sockets per worker: systemd's (FileDescriptorName=https, else every stream socket
    it passed; shared by all workers), or our own (one SO_REUSEPORT copy per worker)."""
    inherited = systemd.inherited_sockets(("https",), socket.SOCK_STREAM)
    if inherited:
        log.info("socket activation", sockets=len(inherited), ignored_listen=list(listen))
        return [inherited] * workers
    try:
        return bind_listeners(addresses, workers)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {', '.join(listen)}: {exc.strerror}") from None


_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 32 << 20


def tune_allocator() -> bool:
    """Keep bulk buffers on the heap (glibc only; elsewhere a silent no-op). True if applied.

    The record loop allocates and frees buffers of half a megabyte or more per transport read and
    write. glibc serves those with mmap and hands them back with munmap (or trims the heap top as soon
    as they are freed), so every batch pays for fresh zeroed pages. Raising the mmap threshold above
    the batch size and the trim threshold well above it lets freed batches be reused; the cost is up
    to TRIM_THRESHOLD of freed memory kept by the process rather than returned to the system.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # TRIM first: setting it also stops glibc from moving the thresholds on its own.
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def raise_fd_limit(max_connections: int, log: Logger) -> None:
    """Lift the soft RLIMIT_NOFILE as far as max_connections needs (two descriptors each with a proxied
    backend, plus a few of our own), within the hard limit. The usual soft default, 1024, is far below
    the default max_connections; past the limit accept fails and clients wait in the listen backlog."""
    want = 2 * max_connections + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the file descriptor limit", error=str(exc), limit=soft)
    if soft != resource.RLIM_INFINITY and soft < want:
        log.warning("file descriptor limit below what max_connections needs", limit=soft, wanted=want,
                    max_connections=max_connections)


def _status(daemon: Appd, stopping: trio.Event) -> str:
    if stopping.is_set():
        return f"draining {daemon.active} connections"
    channel = "channel up" if daemon.link.is_up else "secured unreachable, retrying"
    return f"{daemon.active} active, {daemon.accepted} accepted, {channel}"


async def _notify_ready(daemon: Appd, stopping: trio.Event) -> None:
    """READY=1 (the channel to secured is up: serve() starts only then), then the watchdog's beat."""
    if not stopping.is_set():  # READY=1 after STOPPING=1 would confuse systemd
        systemd.notify(f"READY=1\nSTATUS={_status(daemon, stopping)}")
    while True:  # the watchdog keeps beating while draining
        await trio.sleep(systemd.heartbeat_period())
        systemd.beat(_status(daemon, stopping))


def main(argv: list[str] | None = None) -> int:
    return cli.daemon_main("appd", parser(), _main, argv)


def backend_reachable(backend: Backend) -> None:
    """After the drop: a unix: backend whose socket this user may not reach is a configuration error that
    no retry will fix. (One that does not exist yet is fine: backends may start after us.)"""
    if backend.kind != "unix" or backend.path is None:
        return
    problem = hardening.unreachable_socket(backend.path)
    if problem is not None:
        raise cli.StartupFailure(f"cannot reach the backend {backend} as user {hardening.user_name()} ({problem}): "
                                 "let that user enter its directories and write to the socket", cli.EX_NOPERM)


def _main(args: argparse.Namespace) -> int:
    # Before the drop, before a byte from the network: all the code this process will ever run.
    if args.ipc_fd is not None:
        cli.check_channel_fd(args.ipc_fd)
    preload.preload("appd", ("tls_privsep.shared", "tls_privsep.appd"))
    try:
        settings = cli.settings_from(args)
        app = settings.appd
        backend = parse_backend(app.backend, proxy_protocol=app.proxy_protocol)
        addresses = tuple(parse_address(a, "--listen") for a in app.listen)
        user = args.user or app.user
        if os.geteuid() == 0 and not user and not args.check:
            raise ConfigError("appd refuses to run as root: give it a user to drop to (--user)")
        secured_user = args.secured_user or app.secured_user
        # Users are looked up when the daemon runs, not by --check (which may run where they do not exist yet).
        secured_uids = frozenset({hardening.uid_of(secured_user)}) if secured_user and not args.check else None
    except ConfigError as exc:
        print(f"appd: error: {exc}", file=sys.stderr)
        return cli.EX_CONFIG
    if args.check:
        print(f"appd: listen {', '.join(app.listen)}, backend {app.backend}: OK")
        return cli.EX_OK
    log = logging_setup.setup(settings.log_format, settings.log_level, daemon="appd")
    tune_allocator()
    raise_fd_limit(app.max_connections, log)
    try:
        if args.ipc_fd is not None and app.workers > 1:
            raise ConfigError("--workers needs secured's socket path (--socket), not one inherited --ipc-fd")
        socket_sets = listening_sockets(addresses, app.listen, app.workers, log)
        hardening.drop_privileges(user, daemon="appd")
    except ConfigError as exc:
        print(f"appd: error: {exc}", file=sys.stderr)
        return cli.EX_CONFIG
    preload.watch_late_imports(lambda module: log.warning("late import", module=module), hardening.user_name())
    backend_reachable(backend)
    startup = StartupCheck(app.secured_socket if args.ipc_fd is None else "the inherited channel",
                           hardening.user_name(), app.startup_timeout, inherited=args.ipc_fd is not None)
    allowed = secured_uids if secured_uids is not None else frozenset({os.getuid()})

    def work(index: int, instance: int = 0) -> int:
        mine = socket_sets[index]
        for other in socket_sets:
            if other is not mine:
                for sock in other:
                    if sock not in mine:
                        sock.close()  # a worker holds only its own copy (the supervisor keeps all, for restarts)
        if app.workers > 1:
            os.environ.pop("NOTIFY_SOCKET", None)  # the supervisor speaks to systemd for all workers
        wlog = log.bind(worker=index) if app.workers > 1 else log
        return cli.run_daemon("appd", lambda: trio.run(start, mine, wlog, args.ready_fd if app.workers == 1 else None))

    async def start(socks: list[socket.socket], log: Logger, ready_fd: int | None) -> None:
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in socks]
        connector = (fd_connector(args.ipc_fd) if args.ipc_fd is not None
                     else unix_connector(app.secured_socket, allowed))
        link = SecuredLink(connector, log)
        limits = Limits(app.handshake_timeout, app.idle_timeout, app.key_update_after, app.max_empty_records,
                        app.max_key_updates, app.max_warning_alerts)
        daemon = Appd(link, backend, limits, log,
                      max_connections=app.max_connections, drain_timeout=app.drain_timeout, startup=startup)
        async with trio.open_nursery() as nursery:

            async def serve(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
                await daemon.serve(listeners, task_status=task_status)
                nursery.cancel_scope.cancel()  # drained: the heartbeat ends too

            bound = await nursery.start(serve)
            stopping = trio.Event()
            nursery.start_soon(_notify_ready, daemon, stopping)
            log.info("ready", listen=bound, backend=app.backend)
            workers.report_ready()  # with --workers: the supervisor says ready once every worker has
            if ready_fd is not None:
                os.write(ready_fd, (" ".join(bound) + "\n").encode())
                os.close(ready_fd)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        # Certificates live in secured; a reload aimed at the whole service must not kill appd.
                        log.info("reload ignored", reason="appd holds no certificates; listen/backend need a restart")
                        continue
                    log.info("stopping", signal=signal.Signals(signum).name)
                    stopping.set()
                    systemd.notify(f"STOPPING=1\nSTATUS={_status(daemon, stopping)}")
                    daemon.drain()
                    break

    if app.workers == 1:
        return work(0)

    def all_ready() -> None:
        """Every worker has its channel to secured: the daemon is ready (its listeners were bound before)."""
        if args.ready_fd is not None:
            bound = [listener_address_of(sock) for sock in socket_sets[0]]
            os.write(args.ready_fd, (" ".join(bound) + "\n").encode())
            os.close(args.ready_fd)

    def stop_listening() -> None:
        for copy in socket_sets:
            for sock in copy:
                sock.close()

    return workers.supervise(app.workers, work, log=log, status=f"{app.workers} workers", on_stop=stop_listening,
                             on_ready=all_ready)


if __name__ == "__main__":
    sys.exit(main())
