"""secured's trio shell: serve channels, run one ServerHandshake per connection, export blobs.

secured has no network access. It serves an inherited socket (``--ipc-fd``) or accepts channels on a
Unix SEQPACKET path; each channel is checked with SO_PEERCRED, keyed by the hello exchange, and
served in its own nursery. Handshakes are CPU work without I/O, so they run inline in the channel's
receive loop: one channel is one ordered conversation, and blobs leave in counter order.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from tls_privsep.secured.handshake import ServerConfig, ServerHandshake
from tls_privsep.shared import channel as ch
from tls_privsep.shared import systemd
from tls_privsep.shared.blob import BlobSealer
from tls_privsep.shared.dgram import Datagrams
from tls_privsep.shared.errors import (
    Alert,
    AlertDescription,
    BlobError,
    ChannelError,
    ConfigError,
    LocalAlert,
    PeerAlert,
)
from tls_privsep.shared.record import RecordLayer
from tls_privsep.shared.state import fingerprint

_PEERCRED = struct.Struct("3i")
# What a client refused for lack of room gets: nothing has been sent to it yet, so a plaintext alert.
# internal_error is RFC 8446's alert for a failure unrelated to the peer (its example: out of memory).
_BUSY_ALERT = RecordLayer().send_alert(AlertDescription.internal_error)


def peer_uid(sock: socket.socket | trio.socket.SocketType) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket."""
    pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid


@dataclass
class Limits:
    max_handshakes: int = 1024  # in flight on one channel
    handshake_timeout: float = 10.0
    max_handshakes_total: int = 4096  # in flight on all channels together


@dataclass
class _Pending:
    engine: ServerHandshake
    started: float
    peer: str


@dataclass
class Stats:
    channels: int = 0
    handshakes: int = 0
    failures: int = 0
    in_flight: int = 0
    reloads: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Secured:
    """Everything one secured process serves; ``config`` is swapped whole on reload."""

    def __init__(self, config: ServerConfig, limits: Limits, log: Any, allowed_uids: frozenset[int], *,
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
    def __init__(self, owner: Secured, dg: Datagrams, log: Any) -> None:
        self.owner = owner
        self.dg = dg
        self.log = log
        self.state = ch.ChannelState("secured")
        self.pending: dict[int, _Pending] = {}
        self.sealer: BlobSealer | None = None

    async def send(self, msg: ch.Message) -> None:
        def make() -> bytes:
            self.state.send(msg)
            return msg.encode()

        # Not shielded: a send here is only cancelled when the channel is torn down, and its order
        # checker goes with it, so a counted datagram that never leaves wrongs nobody.
        await self.dg.send(make)

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
        self.log.info("channel down", reason=reason, failed_in_flight=len(self.pending))

    async def _serve(self) -> str:
        """The receive loop; protocol errors are answered here, inside the nursery."""
        try:
            while True:
                msg = await self.recv()
                if msg is None:
                    return "peer closed"
                if self.state.receive(msg):
                    await self._handle(msg)
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
        self.sealer = keys.sealer()

    def drop_all(self) -> None:
        for pending in self.pending.values():
            pending.engine.abort()
        self.owner.stats.in_flight -= len(self.pending)
        self.pending.clear()

    def _finish(self, conn: int) -> _Pending:
        pending = self.pending.pop(conn)
        self.owner.stats.in_flight -= 1
        return pending

    async def _reaper(self, scope: trio.CancelScope) -> None:
        """Fail handshakes older than the deadline (slow or stalled clients)."""
        try:
            await self._reap()
        except (ChannelError, OSError):
            scope.cancel()  # the receive loop sees the broken socket too and reports it

    async def _reap(self) -> None:
        timeout = self.owner.limits.handshake_timeout
        while True:
            await trio.sleep(min(1.0, timeout / 4))
            now = time.monotonic()
            for conn in [c for c, p in self.pending.items() if now - p.started > timeout]:
                pending = self._finish(conn)
                pending.engine.abort()
                self._count("timeout")
                self.log.info("handshake failed", conn=conn, peer=pending.peer, reason="timeout")
                await self.send(ch.Fail(conn, b"", "timeout"))

    def _count(self, reason: str) -> None:
        stats = self.owner.stats
        stats.failures += 1
        stats.by_reason[reason] = stats.by_reason.get(reason, 0) + 1

    async def _handle(self, msg: ch.Message) -> None:
        if isinstance(msg, ch.Open):
            limits = self.owner.limits
            full = ("per_channel" if len(self.pending) >= limits.max_handshakes else
                    "total" if self.owner.stats.in_flight >= limits.max_handshakes_total else None)
            if full is not None:
                self._count("busy")
                self.log.warning("handshake refused", conn=msg.conn, peer=msg.peer, reason="busy", limit=full)
                await self.send(ch.Fail(msg.conn, _BUSY_ALERT, "busy"))
                return
            engine = ServerHandshake(self.owner.config)
            self.pending[msg.conn] = _Pending(engine, time.monotonic(), msg.peer)
            self.owner.stats.in_flight += 1
            await self._step(msg.conn, msg.data)
        elif isinstance(msg, ch.Hs):
            await self._step(msg.conn, msg.data)
        elif isinstance(msg, ch.Abort):
            if msg.conn in self.pending:
                self._finish(msg.conn).engine.abort()
        elif isinstance(msg, ch.Error):
            raise ChannelError("peer_error", msg.reason)

    async def _step(self, conn: int, data: bytes) -> None:
        pending = self.pending.get(conn)
        if pending is None:
            raise ChannelError("unknown_conn", f"hs for connection {conn} that was never opened")
        engine = pending.engine
        try:
            engine.receive_data(data)
        except Exception as exc:
            if not isinstance(exc, Alert):  # the engine names its own bugs InternalError; this is a last resort
                self.log.error("handshake crashed", conn=conn, error=f"{type(exc).__name__}: {exc}")
                engine.abort()
                exc = LocalAlert("unexpected failure")
            await self._failed(conn, pending, engine, exc)
            return
        out = engine.data_to_send()
        if not engine.complete:
            await self.send(ch.Hs(conn, out, len(data)))
            return
        self._finish(conn)
        consumed = len(data) - len(engine.trailing)
        # The fallback is the internal_error alert appd writes if it refuses the blob (DESIGN.md §3).
        state, fallback = engine.export_with_fallback()
        assert self.sealer is not None
        try:
            blob = self.sealer.seal(state, conn)
            key_fp = state.fingerprints()
        except BlobError as exc:
            self._count("export_failed")
            self.log.error("export failed", conn=conn, reason=exc.reason)
            await self.send(ch.Fail(conn, b"", "export_failed"))
            return
        finally:
            state.wipe()  # our copies go now; the only other copy is the sealed blob
        info = engine.info
        self.owner.stats.handshakes += 1
        # One line per handshake, the export included (which keys left, by fingerprint, in which blob).
        self.log.info(
            "handshake done", conn=conn, peer=pending.peer, suite=_hex(info.suite), group=_hex(info.group),
            sig_scheme=_hex(info.sig_scheme), resumed=info.resumed, hrr=info.hrr, sni=info.sni, alpn=info.alpn,
            client_cert=info.client_cert, cert=(info.cert_fingerprint or "")[:16], ms=_ms(pending.started),
            blob_bytes=len(blob), read_key=key_fp["read"], write_key=key_fp["write"], blob_id=fingerprint(blob),
        )
        await self.send(ch.Done(conn, out, consumed, blob, fallback))


    async def _failed(self, conn: int, pending: _Pending, engine: ServerHandshake, exc: Alert) -> None:
        """Report one failed handshake: its alert (if any) goes to appd in ``fail``."""
        self._finish(conn)
        out = engine.data_to_send()
        if isinstance(exc, LocalAlert):
            self._count(exc.description.name)
            self.log.info("alert sent", conn=conn, peer=pending.peer, alert=exc.description.name,
                          why=exc.reason, after_ms=_ms(pending.started))
            reason = exc.description.name
        else:
            assert isinstance(exc, PeerAlert)
            self._count("peer_alert")
            self.log.info("alert received", conn=conn, peer=pending.peer, alert=exc.description.name)
            reason = "peer_" + exc.description.name
        await self.send(ch.Fail(conn, out, reason[:64]))


def _fingerprints(config: ServerConfig) -> list[str]:
    """Which certificates are served, for the log: fingerprint prefix and names, never key material."""
    return [f"{c.fingerprint[:16]} {','.join(c.names) or '-'}" for c in config.credentials.credentials]


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 2)


def _hex(value: int | None) -> str | None:
    return None if value is None else f"{value:#06x}"


def open_listener(path: str, mode: int) -> socket.socket:
    """A listening SEQPACKET socket at ``path`` (a stale socket file is replaced).

    Synchronous, before any event loop: workers are forked with it already listening.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(128)
    return sock
