"""``secured``: the privileged daemon. It never opens a network socket."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import replace

import trio

from tls_privsep.secured.daemon import Secured, open_listener
from tls_privsep.secured.driver import Limits
from tls_privsep.secured.handshake import ServerConfig, TicketSealer
from tls_privsep.secured.setup import server_config, unavailable_groups
from tls_privsep.secured.tickets import TicketKeys
from tls_privsep.shared import cli, hardening, preload, systemd, workers
from tls_privsep.shared import log as logging_setup
from tls_privsep.shared.config import CertPair, SecuredSettings, Settings, tls12_left_out
from tls_privsep.shared.errors import ConfigError


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="secured", description="tls-privsep privileged daemon: keys and handshakes")
    cli.add_common(p)
    p.add_argument("--ipc-fd", type=int, metavar="N", help="serve one inherited channel socket instead of --socket")
    p.add_argument("--user", metavar="USER", help="user to drop to after reading the keys (required as root)")
    p.add_argument("--allow-uid", type=int, action="append", default=[], metavar="UID",
                   help="uid allowed to connect to the channel (repeatable; own uid always allowed)")
    p.add_argument("--appd-user", metavar="USER", help="appd's user: allowed on the channel, owns its socket group")
    p.add_argument("--check", action="store_true", help="load and check the configuration and keys, then exit")
    return p


async def run(args: argparse.Namespace, daemon: Secured, listener: trio.socket.SocketType | None,
              path: str | None = None) -> None:
    """Serve the channel listener (or the one inherited channel) until a stop signal; ``path`` is the socket's
    name for the log (ours was bound under a staging name, so the socket itself would tell another)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_signals, nursery.cancel_scope, daemon, lambda old: reload_config(args, old, daemon.log))
        nursery.start_soon(_heartbeat, daemon)
        if args.ipc_fd is not None:
            sock = trio.socket.fromfd(args.ipc_fd, socket.AF_UNIX, socket.SOCK_SEQPACKET)
            os.close(args.ipc_fd)
            systemd.notify(f"READY=1\nSTATUS={_status(daemon)}")
            await daemon.serve_channel(sock)
            daemon.log.info("stopping", reason="inherited channel closed")
            systemd.notify("STOPPING=1\nSTATUS=stopping: inherited channel closed")
            nursery.cancel_scope.cancel()
        else:
            assert listener is not None
            daemon.log.info("ready", socket=path or daemon_socket_name(listener))
            workers.report_ready()
            systemd.notify(f"READY=1\nSTATUS={_status(daemon)}")
            await daemon.serve_listener(listener)


def daemon_socket_name(sock: trio.socket.SocketType) -> str:
    name = sock.getsockname()
    return name if isinstance(name, str) else repr(name)


async def _signals(scope: trio.CancelScope, daemon: Secured, load: Callable[[ServerConfig], ServerConfig]) -> None:
    """SIGTERM/SIGINT stop; SIGHUP reloads the certificates (one reload at a time, in arrival order)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                await daemon.reload(load)
                continue
            daemon.log.info("stopping", signal=signal.Signals(signum).name)
            systemd.notify("STOPPING=1\nSTATUS=stopping")
            scope.cancel()
            return


def secured_settings(args: argparse.Namespace) -> tuple[Settings, SecuredSettings]:
    """The settings from the file and flags, with credential names resolved ($CREDENTIALS_DIRECTORY)."""
    settings = cli.settings_from(args)
    sec = replace(settings.secured, certificates=_from_credentials(settings.secured.certificates))
    if sec.client_ca:
        sec = replace(sec, client_ca=systemd.resolve_credential(sec.client_ca))
    return settings, sec


def load_config(sec: SecuredSettings, log: logging_setup.Logger,
                ticket_keys: TicketSealer | None = None) -> ServerConfig:
    """server_config(), with a warning naming the configured groups it had to leave out (the hybrids, when
    this cryptography has no ML-KEM): otherwise a server meant to be post-quantum turns classical unseen."""
    config = server_config(sec, ticket_keys=ticket_keys)
    why = tls12_left_out(sec)
    if why is not None:
        log.warning("tls 1.2 not served", reason=why)
    dropped = unavailable_groups(sec)
    if dropped:
        log.warning("groups unavailable", groups=dropped,
                    reason="this cryptography has no ML-KEM (it needs OpenSSL 3.5 or later)")
    return config


def reload_config(args: argparse.Namespace, old: ServerConfig, log: logging_setup.Logger) -> ServerConfig:
    """Re-read the configuration file and every certificate and key; ConfigError leaves ``old`` in place.

    Ticket keys carry over, so tickets issued before the reload still resume.
    """
    _, sec = secured_settings(args)
    return load_config(sec, log, ticket_keys=old.ticket_keys)


def _status(daemon: Secured) -> str:
    s = daemon.stats
    return f"{s.channels} channels, {s.handshakes} handshakes done, {s.in_flight} in flight, {s.failures} failed"


async def _heartbeat(daemon: Secured) -> None:
    """Live counts for `systemctl status`, the watchdog ping when WatchdogSec= asks for one, and the
    ticket-key ratchet moved on even when no handshake comes."""
    while True:
        await trio.sleep(min(systemd.heartbeat_period(), 10.0))
        if isinstance(daemon.config.ticket_keys, TicketKeys):
            daemon.config.ticket_keys.advance()
        systemd.beat(_status(daemon))


def reload_reads(args: argparse.Namespace, sec: SecuredSettings) -> list[str]:
    """The files a reload (SIGHUP) reads again, after the drop: the configuration, certificates, keys."""
    paths = [args.config] if args.config else []
    for pair in sec.certificates:
        paths += [pair.cert, pair.key]
    if sec.client_ca:
        paths.append(sec.client_ca)
    return paths


def _from_credentials(pairs: tuple[CertPair, ...]) -> tuple[CertPair, ...]:
    """Relative cert/key paths name files in $CREDENTIALS_DIRECTORY (systemd LoadCredential=)."""
    return tuple(CertPair(systemd.resolve_credential(p.cert), systemd.resolve_credential(p.key)) for p in pairs)


def main(argv: list[str] | None = None) -> int:
    return cli.daemon_main("secured", parser(), _main, argv)


def _main(args: argparse.Namespace) -> int:
    # Before the drop, before a byte from the channel: all the code this process will ever run.
    if args.ipc_fd is not None:
        cli.check_channel_fd(args.ipc_fd)
    preload.preload("secured", ("tls_privsep.shared", "tls_privsep.secured"))
    try:
        settings, sec = secured_settings(args)
        log = logging_setup.setup(settings.log_format, settings.log_level, daemon="secured")
        user = args.user or sec.user
        if os.geteuid() == 0 and not user and not args.check:
            raise ConfigError("secured refuses to run as root: give it a user to drop to (--user)")
        config = load_config(sec, log)  # reads the keys, while we may still be root
        allowed = {os.getuid(), *sec.allowed_uids, *args.allow_uid}
        if user and args.ipc_fd is None:
            # On the listening socket, root is not a peer we expect once we drop to a user. (An inherited
            # socketpair reports its creator, our parent, which started us and is trusted as such.)
            allowed.discard(0)
        appd_user = args.appd_user or settings.appd.user
        if appd_user:
            allowed.add(hardening.uid_of(appd_user))
        if user:
            allowed.add(hardening.uid_of(user))
    except ConfigError as exc:
        print(f"secured: error: {exc}", file=sys.stderr)
        return cli.EX_CONFIG
    if args.check:
        for cred in config.credentials.credentials:
            print(f"secured: certificate {cred.fingerprint[:16]} for {', '.join(cred.names) or '(no names)'}: OK")
        return cli.EX_OK

    try:
        listener, socket_path = _listen(args, sec, user, appd_user)
        hardening.drop_privileges(user, daemon="secured")
    except ConfigError as exc:
        print(f"secured: error: {exc}", file=sys.stderr)
        return cli.EX_CONFIG
    preload.watch_late_imports(lambda module: log.warning("late import", module=module), hardening.user_name())
    for path in reload_reads(args, sec):
        problem = hardening.unreadable(path)
        if problem:
            log.warning("certificate reload will fail", path=path, problem=problem,
                        fix=f"make it readable by user {hardening.user_name()}")
    for cred in config.credentials.credentials:
        log.info("certificate loaded", fingerprint=cred.fingerprint[:16], names=list(cred.names),
                 schemes=[f"{s:#06x}" for s in cred.schemes])
    limits = Limits(sec.max_handshakes_per_channel, sec.handshake_timeout, sec.max_handshakes_total)

    def work(index: int, instance: int = 0) -> int:
        wlog = log.bind(worker=index) if sec.workers > 1 else log
        if sec.workers > 1:
            os.environ.pop("NOTIFY_SOCKET", None)  # the supervisor speaks to systemd for all workers
        if isinstance(config.ticket_keys, TicketKeys):
            config.ticket_keys.for_instance(instance)  # ticket nonces unique across workers
        sock = trio.socket.from_stdlib_socket(listener) if listener is not None else None
        daemon = Secured(config, limits, wlog, frozenset(allowed), accept_stagger=0.1 if sec.workers > 1 else 0.0)
        return cli.run_daemon("secured", lambda: trio.run(run, args, daemon, sock, socket_path))

    if sec.workers == 1:
        return work(0)

    def reload() -> bool:
        nonlocal config
        try:
            config = reload_config(args, config, log)  # workers forked later start from it
        except Exception as exc:  # a reload must never take down the supervisor
            log.error("reload refused", error=str(exc) if isinstance(exc, ConfigError)
                      else f"unexpected {type(exc).__name__} while loading")
            return False
        return True

    def tick() -> None:
        if isinstance(config.ticket_keys, TicketKeys):
            config.ticket_keys.advance()  # workers forked later start from the current epoch, not the first

    return workers.supervise(sec.workers, work, log=log, status=f"{sec.workers} workers", on_reload=reload,
                             on_tick=tick)


def _listen(args: argparse.Namespace, sec: SecuredSettings, user: str | None,
            appd_user: str | None) -> tuple[socket.socket | None, str | None]:
    """The channel listener (inherited from systemd, or bound at ``sec.socket``; None with --ipc-fd) and the path
    it answers on."""
    if args.ipc_fd is not None:
        if sec.workers > 1:
            raise ConfigError("--workers needs a channel socket path (--socket), not one inherited --ipc-fd")
        return None, None
    inherited = systemd.inherited_sockets(("secured", "channel"), socket.SOCK_SEQPACKET)
    if inherited:
        # socket activation: systemd made, owns and permissions the path (tls-privsep-secured.socket)
        for extra in inherited[1:]:
            extra.close()
        name = inherited[0].getsockname()
        return inherited[0], name if isinstance(name, str) else None
    # As root, secured's user owns the socket and appd reaches it through its group (mode 0660).
    owner = (hardening.uid_of(user), hardening.gid_of(appd_user)) if os.geteuid() == 0 and user and appd_user else None
    try:
        return open_listener(sec.socket, sec.socket_mode, owner), sec.socket
    except OSError as exc:
        raise ConfigError(f"cannot listen on {sec.socket}: {exc.strerror or exc}") from None


if __name__ == "__main__":
    sys.exit(main())
