"""secured's trio shell: serve channels, run one ServerHandshake per connection, export blobs.

secured has no network access. It serves an inherited socket (``--ipc-fd``) or accepts channels on a
Unix SEQPACKET path; each channel is checked with SO_PEERCRED, keyed by the hello exchange, and
served in its own nursery. Handshakes are CPU work without I/O, so they run inline in the channel's
receive loop: one channel is one ordered conversation, and blobs leave in counter order.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import tempfile
from collections.abc import Callable

import trio

from tls_privsep.secured.driver import ChannelDriver, Limits, Stats
from tls_privsep.secured.handshake import ServerConfig
from tls_privsep.shared import channel as ch
from tls_privsep.shared import systemd
from tls_privsep.shared.dgram import Datagrams
from tls_privsep.shared.errors import (
    ChannelError,
    ConfigError,
)
from tls_privsep.shared.log import Logger

_PEERCRED = struct.Struct("3i")


def peer_uid(sock: socket.socket | trio.socket.SocketType) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket."""
    pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid


class Secured:
    """Everything one secured process serves; ``config`` is swapped whole on reload."""

    def __init__(self, config: ServerConfig, limits: Limits, log: Logger, allowed_uids: frozenset[int], *,
                 accept_stagger: float = 0.0) -> None:
        self.config = config
        self.limits = limits
        self.log = log
        self.allowed_uids = allowed_uids
        self.stats = Stats()
        self._channel_ids = 0
        self.accept_stagger = accept_stagger

    # ---- reload --------------------------------------------------------------------------------

    async def reload(self, load: Callable[[ServerConfig], ServerConfig]) -> bool:
        """Build a new configuration with ``load(old)`` and swap it in whole, or keep the old one.

        ``load`` reads and checks every certificate and key (a key must match its certificate) off the
        event loop, so handshakes keep flowing meanwhile. A handshake in flight keeps the configuration
        it started with; established sessions live in appd and never notice.
        """
        systemd.reloading()
        try:
            config = await trio.to_thread.run_sync(load, self.config)
        except Exception as exc:  # a reload must never take down a serving daemon
            error = str(exc) if isinstance(exc, ConfigError) else f"unexpected {type(exc).__name__} while loading"
            self.log.error("reload refused", error=error, kept=_fingerprints(self.config))
            ok = False
        else:
            self.config = config
            self.stats.reloads += 1
            self.log.info("certificates reloaded", certificates=_fingerprints(config))
            ok = True
        systemd.notify(f"READY=1\nSTATUS={'reloaded' if ok else 'reload refused, old certificates kept'}")
        return ok

    # ---- channels ------------------------------------------------------------------------------

    async def serve_listener(self, listener: trio.socket.SocketType) -> None:
        """Accept channels. Forked workers share one listener, and the kernel would let whichever is awake
        take every channel: a worker that already serves k channels waits ``k * accept_stagger`` before
        its next accept, so an idle sibling takes the next appd worker's channel."""
        held = 0

        async def serve(sock: trio.socket.SocketType) -> None:
            nonlocal held
            try:
                await self.serve_channel(sock)
            finally:
                held -= 1

        async with trio.open_nursery() as nursery:
            while True:
                if self.accept_stagger and held:
                    await trio.sleep(self.accept_stagger * held)
                sock, _ = await listener.accept()
                held += 1  # counted now: the task that serves it has not run yet
                nursery.start_soon(serve, sock)

    async def serve_channel(self, sock: trio.socket.SocketType) -> None:
        self._channel_ids += 1
        log = self.log.bind(channel=self._channel_ids)
        with Datagrams.adopt(sock) as dg:
            try:
                pid, uid = peer_uid(dg.sock)
            except OSError as exc:
                log.warning("channel refused", reason="no peer credentials", error=str(exc))
                return
            if uid not in self.allowed_uids:
                log.warning("channel refused", reason="peer uid not allowed", peer_pid=pid, peer_uid=uid)
                return
            log = log.bind(peer_pid=pid, peer_uid=uid)
            chan = _Channel(self, dg, log)
            self.stats.channels += 1
            try:
                await chan.run()
            finally:
                self.stats.channels -= 1
                chan.drop_all()


class _Channel:
    """Pumps one channel: datagrams in, through the order check and the driver, datagrams out."""

    def __init__(self, owner: Secured, dg: Datagrams, log: Logger) -> None:
        self.owner = owner
        self.dg = dg
        self.log = log
        self.state = ch.ChannelState("secured")
        self.driver: ChannelDriver | None = None

    async def send(self, msgs: list[ch.Message]) -> None:
        # All counted before the first await: a batch retires its connections at once in the order checker
        # (the driver already has), so an hs from appd that crosses a fail still waiting for room on the
        # socket is dropped as crossing, not taken for an unknown connection. Each connection's messages
        # still leave in their order; across connections the order carries no meaning.
        for msg in msgs:
            self.state.send(msg)
        for msg in msgs:
            # Not shielded: a send here is only cancelled when the channel is torn down, and its order
            # checker goes with it, so a counted datagram that never leaves wrongs nobody.
            await self.dg.send(msg.encode)

    async def recv(self) -> ch.Message | None:
        datagram = await self.dg.recv(ch.MAX_MESSAGE + 1)
        if not datagram:
            return None
        return ch.decode(datagram)

    async def run(self) -> None:
        """Serve until the peer closes or breaks the protocol; every handshake on it ends with it."""
        try:
            with trio.fail_after(self.owner.limits.handshake_timeout):  # a silent peer does not pin a channel
                await self._hello()
            self.log.info("channel up")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reaper, nursery.cancel_scope)
                reason = await self._serve()
                nursery.cancel_scope.cancel()
        except ChannelError as exc:
            reason = self._protocol_error(exc)
        except OSError as exc:
            reason = f"socket error: {exc.strerror}"
        except trio.TooSlowError:
            reason = "no hello in time"
        self.log.info("channel down", reason=reason, failed_in_flight=self.driver.in_flight if self.driver else 0)

    async def _serve(self) -> str:
        """The receive loop; protocol errors are answered here, inside the nursery."""
        assert self.driver is not None
        try:
            while True:
                msg = await self.recv()
                if msg is None:
                    return "peer closed"
                if self.state.receive(msg):
                    await self.send(self.driver.receive(msg))
        except ChannelError as exc:
            return self._protocol_error(exc)
        except OSError as exc:
            return f"socket error: {exc.strerror}"

    def _protocol_error(self, exc: ChannelError) -> str:
        self.log.warning("channel protocol error", reason=exc.reason, detail=str(exc))
        self.dg.send_nowait(ch.Error(exc.reason).encode())
        return exc.reason

    async def _hello(self) -> None:
        exchange = ch.HelloExchange("secured")
        await self.dg.send(lambda: exchange.datagram)
        keys = exchange.finish(await self.dg.recv(ch.MAX_MESSAGE + 1))
        self.state = exchange.state
        owner = self.owner
        self.driver = ChannelDriver(lambda: owner.config, keys.sealer(), owner.limits, owner.stats, self.log)

    def drop_all(self) -> None:
        if self.driver is not None:
            self.driver.close()

    async def _reaper(self, scope: trio.CancelScope) -> None:
        """Ask the driver for expired handshakes a few times per deadline."""
        assert self.driver is not None
        timeout = self.owner.limits.handshake_timeout
        try:
            while True:
                await trio.sleep(min(1.0, timeout / 4))
                await self.send(self.driver.expire())
        except (ChannelError, OSError):
            scope.cancel()  # the receive loop sees the broken socket too and reports it


def _fingerprints(config: ServerConfig) -> list[str]:
    """Which certificates are served, for the log: fingerprint prefix and names, never key material."""
    return [f"{c.fingerprint[:16]} {','.join(c.names) or '-'}" for c in config.credentials.credentials]


_SUN_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path) on Linux, the terminating NUL included


def open_listener(path: str, mode: int, owner: tuple[int, int] | None = None) -> socket.socket:
    """A listening SEQPACKET socket at ``path`` with ``mode`` (and ``owner``, uid and gid), replacing a stale one.

    The socket is made in a fresh private directory next to ``path`` (0700, ours: nobody can connect to
    it there or swap it for a symlink) and renamed into place once its mode and owner are final, so a
    peer that finds the path can connect at once, never while its mode or owner still refuses it.
    Synchronous, before any event loop: workers are forked with it already listening.
    """
    if len(os.fsencode(path)) >= _SUN_PATH_MAX:  # the rename below has no such limit; appd's connect would
        raise OSError(errno.ENAMETOOLONG, f"a Unix socket path has at most {_SUN_PATH_MAX - 1} bytes")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    staging_dir = tempfile.mkdtemp(prefix=".s", dir=os.path.dirname(os.path.abspath(path)))
    staging = os.path.join(staging_dir, "s")
    try:
        try:
            sock.bind(staging)
        except OSError:
            if len(os.fsencode(staging)) <= len(os.fsencode(os.path.abspath(path))):
                raise
            # The staging name is longer than the path and too long for a socket: make it in place.
            _close_quietly(sock, staging)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            staging = path
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            old = os.umask(0o777 & ~mode)
            try:
                sock.bind(path)
            finally:
                os.umask(old)
        os.chmod(staging, mode)
        if owner is not None:
            os.chown(staging, *owner)
        sock.listen(128)
        if staging != path:
            os.rename(staging, path)
    except BaseException:
        _close_quietly(sock, staging if staging != path else None)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(staging_dir)
    return sock


def _close_quietly(sock: socket.socket, leftover: str | None) -> None:
    sock.close()
    if leftover is not None:
        with contextlib.suppress(OSError):
            os.unlink(leftover)
