"""``appd``: the unprivileged daemon that owns the TCP sockets and the bulk record layer."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import sys
from typing import Any

import trio

from appd.apps import parse_backend
from appd.daemon import Appd, open_listeners
from appd.link import SecuredLink, fd_connector, unix_connector
from appd.session import Limits
from shared import cli, hardening, systemd
from shared import log as logging_setup
from shared.config import parse_address
from shared.errors import ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="appd", description="tls-privsep unprivileged daemon: sockets and records")
    cli.add_common(p)
    p.add_argument("--ipc-fd", type=int, metavar="N", help="use an inherited channel socket instead of --socket")
    p.add_argument("--user", metavar="USER", help="user to drop to after binding (required as root)")
    p.add_argument("--ready-fd", type=int, metavar="N", help="write the bound addresses to this fd, then close it")
    p.add_argument("--check", action="store_true", help="check the configuration, then exit")
    return p


READY_GRACE = 2.0  # seconds READY=1 waits for the channel; appd serves (and retries secured) meanwhile


def activated_listeners() -> list[trio.SocketListener]:
    """TCP listeners systemd passed us (FileDescriptorName=https, else every stream socket); [] if none."""
    return [trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            for sock in systemd.inherited_sockets(("https",), socket.SOCK_STREAM)]


def raise_fd_limit(max_connections: int, log: Any) -> None:
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
    """READY=1 once the channel to secured is up, or after READY_GRACE saying it is not: appd is useful
    (and restartable) without secured, and systemd must not hold up the boot on it."""
    with trio.move_on_after(READY_GRACE):
        await daemon.link.up.wait()
    if not stopping.is_set():  # READY=1 after STOPPING=1 would confuse systemd
        systemd.notify(f"READY=1\nSTATUS={_status(daemon, stopping)}")
    while True:  # the watchdog keeps beating while draining
        await trio.sleep(systemd.heartbeat_period())
        systemd.beat(_status(daemon, stopping))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    failed = cli.harden("appd")  # first thing: before any secret exists in this process
    if failed is not None:
        return failed
    try:
        settings = cli.settings_from(args)
        app = settings.appd
        backend = parse_backend(app.backend, proxy_protocol=app.proxy_protocol)
        addresses = tuple(parse_address(a, "--listen") for a in app.listen)
        user = args.user or app.user
        if os.geteuid() == 0 and not user and not args.check:
            raise ConfigError("appd refuses to run as root: give it a user to drop to (--user)")
    except ConfigError as exc:
        print(f"appd: error: {exc}", file=sys.stderr)
        return cli.EX_CONFIG
    if args.check:
        print(f"appd: listen {', '.join(app.listen)}, backend {app.backend}: OK")
        return cli.EX_OK
    log = logging_setup.setup(settings.log_format, settings.log_level, daemon="appd")
    raise_fd_limit(app.max_connections, log)

    async def start() -> None:
        listeners = activated_listeners()
        if listeners:
            log.info("socket activation", sockets=len(listeners), ignored_listen=list(app.listen))
        else:
            try:
                listeners = await open_listeners(addresses)
            except OSError as exc:
                raise ConfigError(f"cannot listen on {', '.join(app.listen)}: {exc.strerror}") from None
        hardening.drop_privileges(user, daemon="appd")
        connector = fd_connector(args.ipc_fd) if args.ipc_fd is not None else unix_connector(app.secured_socket)
        link = SecuredLink(connector, log)
        limits = Limits(app.handshake_timeout, app.idle_timeout, app.key_update_after, app.max_empty_records,
                        app.max_key_updates, app.max_warning_alerts)
        daemon = Appd(link, backend, limits, log,
                      max_connections=app.max_connections, drain_timeout=app.drain_timeout)
        async with trio.open_nursery() as nursery:

            async def serve(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
                await daemon.serve(listeners, task_status=task_status)
                nursery.cancel_scope.cancel()  # drained: the heartbeat ends too

            bound = await nursery.start(serve)
            stopping = trio.Event()
            nursery.start_soon(_notify_ready, daemon, stopping)
            log.info("ready", listen=bound, backend=app.backend)
            if args.ready_fd is not None:
                os.write(args.ready_fd, (" ".join(bound) + "\n").encode())
                os.close(args.ready_fd)
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

    return cli.run_daemon("appd", lambda: trio.run(start))


if __name__ == "__main__":
    sys.exit(main())
