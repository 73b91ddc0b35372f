"""secured's side of one channel, without I/O: channel messages in, channel messages out.

For every ``open`` it runs a :class:`~tls_privsep.secured.handshake.ServerHandshake`; for every ``hs`` it
feeds the engine and answers ``hs`` (more bytes for the client), ``done`` (the sealed blob, the
fallback alert record, how much input the handshake used) or ``fail`` (the alert, if any, and a
reason code). It also enforces the in-flight limits and the handshake deadline (:meth:`expire`).
Every secret of a finished handshake is wiped here, once it is in the blob.

The trio shell (:mod:`tls_privsep.secured.daemon`) only moves datagrams: it decodes, checks order with
the channel codec, calls :meth:`receive`, and sends what comes back, in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tls_privsep.secured.handshake import ServerConfig, ServerHandshake
from tls_privsep.secured.versions import version_label
from tls_privsep.shared import channel as ch
from tls_privsep.shared.blob import BlobSealer
from tls_privsep.shared.config import group_label
from tls_privsep.shared.errors import Alert, AlertDescription, BlobError, ChannelError, LocalAlert, PeerAlert
from tls_privsep.shared.log import Logger
from tls_privsep.shared.preload import InstallUnreadable
from tls_privsep.shared.record import RecordLayer
from tls_privsep.shared.state import fingerprint

# What a client refused for lack of room gets: nothing has been sent to it yet, so a plaintext alert.
# internal_error is RFC 8446's alert for a failure unrelated to the peer (its example: out of memory).
BUSY_ALERT = RecordLayer().send_alert(AlertDescription.internal_error)


@dataclass
class Limits:
    max_handshakes: int = 1024  # in flight on one channel
    handshake_timeout: float = 10.0
    max_handshakes_total: int = 4096  # in flight on all channels together


@dataclass
class Stats:
    """Counts over every channel of one secured process (shared by their drivers)."""

    channels: int = 0
    handshakes: int = 0
    failures: int = 0
    in_flight: int = 0
    reloads: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def failed(self, reason: str) -> None:
        self.failures += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


@dataclass
class _Pending:
    engine: ServerHandshake
    started: float
    peer: str


class ChannelDriver:
    """The handshakes of one channel. ``config()`` is read at each ``open``, so a reload applies to the
    next handshake and one in flight keeps the configuration it started with."""

    def __init__(self, config: Callable[[], ServerConfig], sealer: BlobSealer, limits: Limits, stats: Stats,
                 log: Logger, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._sealer = sealer
        self._limits = limits
        self._stats = stats
        self._log = log
        self._clock = clock
        self._pending: dict[int, _Pending] = {}

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def receive(self, msg: ch.Message) -> list[ch.Message]:
        """What to send for one message from appd (already order-checked). ChannelError ends the channel."""
        if isinstance(msg, ch.Open):
            return self._open(msg)
        if isinstance(msg, ch.Hs):
            return self._step(msg.conn, msg.data)
        if isinstance(msg, ch.Abort):
            if msg.conn in self._pending:
                self._finish(msg.conn).engine.abort()
            return []
        if isinstance(msg, ch.Error):
            raise ChannelError("peer_error", msg.reason)
        return []  # hello: the shell's exchange has handled it

    def expire(self) -> list[ch.Message]:
        """Fail every handshake older than the deadline (slow or stalled clients)."""
        now = self._clock()
        out: list[ch.Message] = []
        for conn in [c for c, p in self._pending.items() if now - p.started > self._limits.handshake_timeout]:
            pending = self._finish(conn)
            pending.engine.abort()
            self._stats.failed("timeout")
            self._log.info("handshake failed", conn=conn, peer=pending.peer, reason="timeout")
            out.append(ch.Fail(conn, b"", "timeout"))
        return out

    def close(self) -> None:
        """The channel is gone: every handshake on it ends, its secrets with it."""
        for pending in self._pending.values():
            pending.engine.abort()
        self._stats.in_flight -= len(self._pending)
        self._pending.clear()

    # ---- one message ---------------------------------------------------------------------------

    def _open(self, msg: ch.Open) -> list[ch.Message]:
        full = ("per_channel" if len(self._pending) >= self._limits.max_handshakes else
                "total" if self._stats.in_flight >= self._limits.max_handshakes_total else None)
        if full is not None:
            self._stats.failed("busy")
            self._log.warning("handshake refused", conn=msg.conn, peer=msg.peer, reason="busy", limit=full)
            return [ch.Fail(msg.conn, BUSY_ALERT, "busy")]
        self._pending[msg.conn] = _Pending(ServerHandshake(self._config()), self._clock(), msg.peer)
        self._stats.in_flight += 1
        return self._step(msg.conn, msg.data)

    def _step(self, conn: int, data: bytes) -> list[ch.Message]:
        pending = self._pending.get(conn)
        if pending is None:
            raise ChannelError("unknown_conn", f"hs for connection {conn} that was never opened")
        engine = pending.engine
        try:
            engine.receive_data(data)
        except InstallUnreadable:
            raise  # every handshake would fail the same way: secured stops and says why (shared/preload.py)
        except Exception as exc:
            if not isinstance(exc, Alert):  # the engine names its own bugs InternalError; this is a last resort
                self._log.error("handshake crashed", conn=conn, error=f"{type(exc).__name__}: {exc}")
                engine.abort()
                exc = LocalAlert("unexpected failure")
            return [self._failed(conn, pending, exc)]
        out = engine.data_to_send()
        if not engine.complete:
            return [ch.Hs(conn, out, len(data))]
        return [self._done(conn, pending, out, consumed=len(data) - len(engine.trailing))]

    def _done(self, conn: int, pending: _Pending, out: bytes, consumed: int) -> ch.Message:
        """Export, seal, wipe: the only copy of the session's keys that leaves is the sealed blob."""
        self._finish(conn)
        engine = pending.engine
        # The fallback is the internal_error alert appd writes if it refuses the blob (DESIGN.md §3).
        state, fallback = engine.export_with_fallback()
        try:
            blob = self._sealer.seal(state, conn)
            key_fp = state.fingerprints()
        except BlobError as exc:
            self._stats.failed("export_failed")
            self._log.error("export failed", conn=conn, reason=exc.reason)
            return ch.Fail(conn, b"", "export_failed")
        finally:
            state.wipe()
        info = engine.info
        self._stats.handshakes += 1
        # One line per handshake, the export included (which keys left, by fingerprint, in which blob).
        self._log.info(
            "handshake done", conn=conn, peer=pending.peer, version=version_label(info.version), suite=_hex(info.suite),
            group=_hex(info.group),
            group_name=group_label(info.group), sig_scheme=_hex(info.sig_scheme), resumed=info.resumed, hrr=info.hrr,
            sni=info.sni, alpn=info.alpn, client_cert=info.client_cert, cert=(info.cert_fingerprint or "")[:16],
            ms=self._ms(pending.started), blob_bytes=len(blob), read_key=key_fp["read"], write_key=key_fp["write"],
            blob_id=fingerprint(blob),
        )
        return ch.Done(conn, out, consumed, blob, fallback)

    def _failed(self, conn: int, pending: _Pending, exc: Alert) -> ch.Message:
        """One failed handshake: its alert record (if any) goes to appd in ``fail``."""
        self._finish(conn)
        out = pending.engine.data_to_send()
        if isinstance(exc, LocalAlert):
            self._stats.failed(exc.description.name)
            self._log.info("alert sent", conn=conn, peer=pending.peer, alert=exc.description.name,
                           why=exc.reason, after_ms=self._ms(pending.started))
            reason = exc.description.name
        else:
            assert isinstance(exc, PeerAlert)
            self._stats.failed("peer_alert")
            self._log.info("alert received", conn=conn, peer=pending.peer, alert=exc.description.name)
            reason = "peer_" + exc.description.name
        return ch.Fail(conn, out, reason[:64])

    def _finish(self, conn: int) -> _Pending:
        pending = self._pending.pop(conn)
        self._stats.in_flight -= 1
        return pending

    def _ms(self, started: float) -> float:
        return round((self._clock() - started) * 1000, 2)


def _hex(value: int | None) -> str | None:
    return None if value is None else f"{value:#06x}"
