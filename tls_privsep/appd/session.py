"""One client connection in appd: relay the handshake to secured, import the blob, serve the app.

appd cannot read the handshake (it has no keys until the blob arrives), so it forwards whole
records to secured and writes back whatever secured answers, until secured says ``done`` (import
the state and go on with the bytes that followed the client Finished) or ``fail`` (write the alert
secured produced, then close). Every connection ends with one summary log line.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from tls_privsep.appd.apps import Backend, serve
from tls_privsep.appd.link import HandshakeChannel, SecuredLink, SecuredUnavailable
from tls_privsep.appd.stream import RecordStream, alert_name, version_name
from tls_privsep.shared.config import group_label
from tls_privsep.shared.errors import AlertDescription
from tls_privsep.shared.log import Logger
from tls_privsep.shared.record import whole_records
from tls_privsep.shared.serverhello import negotiated_group
from tls_privsep.shared.state import TrafficState

_conn_ids = itertools.count(1)
# What one read from the client takes during the handshake. A chunk relayed to secured is at most one
# read plus the start of a record left over from the read before (under 5 + 2^14+256 bytes), so it
# always fits one channel datagram (channel.MAX_MESSAGE, 192 KiB): the largest ClientHello (131,396
# bytes, 9 records) crosses in a few ``hs`` steps and secured's record layer puts it back together.
HANDSHAKE_READ = 65536
# A plaintext internal_error alert: what a client gets when secured cannot be reached before our
# ServerHello (after it, only a TCP close is possible: appd holds no handshake keys).
INTERNAL_ERROR_ALERT = bytes([21, 3, 3, 0, 2, 2, AlertDescription.internal_error])


@dataclass
class Limits:
    """Per-connection limits; docs/configuration.md ("Limits") says what a client sees past each."""

    handshake: float = 10.0  # seconds from accept to the end of the handshake
    idle: float = 300.0  # seconds without traffic either way
    key_update_after: int = 2**24  # records under one write key (RFC 8446 §5.5; TLS 1.2 then closes)
    max_empty_records: int = 32
    max_key_updates: int = 32
    max_warning_alerts: int = 4


@dataclass
class Summary:
    conn: int
    peer: str
    started: float = field(default_factory=time.monotonic)
    outcome: str = "closed"
    handshake_ms: float | None = None
    # Every summary line carries the same keys, so a failed handshake reads like the others (null where unknown).
    fields: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(
        ("version", "suite", "group", "group_name", "sni", "alpn", "resumed")) | {"bytes_in": 0, "bytes_out": 0})

    def saw_from_secured(self, data: bytes) -> None:
        """The group, from the ServerHello among secured's bytes for the client (shared/serverhello.py):
        the blob does not carry it."""
        if self.fields["group"] is None and (group := negotiated_group(data)) is not None:
            self.fields.update(group=f"{group:#06x}", group_name=group_label(group))


async def handle(tcp: trio.SocketStream, link: SecuredLink, backend: Backend, limits: Limits, log: Logger) -> None:
    peer = _peer(tcp)
    summary = Summary(next(_conn_ids), peer)
    clog = log.bind(conn=summary.conn, peer=peer)
    try:
        async with tcp:
            result = await _handshake(tcp, link, limits, summary)
            if result is None:
                return
            state, trailing = result
            summary.fields.update(version=version_name(state.version), suite=f"{state.suite:#06x}", sni=state.sni,
                                  alpn=state.alpn, resumed=state.psk_resumed)
            stream = RecordStream(tcp, state, initial=trailing, log=clog, idle_timeout=limits.idle,
                                  key_update_after=limits.key_update_after,
                                  max_empty_records=limits.max_empty_records,
                                  max_key_updates=limits.max_key_updates,
                                  max_warning_alerts=limits.max_warning_alerts)
            try:
                await serve(stream, backend, peer=peer, log=clog)
                # serve also returns after giving up with an alert of its own (a backend reset mid-stream)
                summary.outcome = "closed" if stream.alert_sent is None else _why(stream, None)
            except trio.BrokenResourceError as exc:
                summary.outcome = _why(stream, exc)
            finally:
                summary.fields.update(bytes_in=stream.bytes_in, bytes_out=stream.bytes_out)
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await stream.aclose()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        summary.outcome = summary.outcome if summary.outcome != "closed" else f"transport: {type(exc).__name__}"
    finally:
        clog.info(
            "connection", outcome=summary.outcome, handshake_ms=summary.handshake_ms,
            duration_ms=round((time.monotonic() - summary.started) * 1000, 1), **summary.fields,
        )


def _why(stream: RecordStream, exc: BaseException | None) -> str:
    if stream.outcome == "write_key_exhausted":  # a clean end (our close_notify), not a break
        return stream.outcome
    if stream.alert_sent is not None:
        return f"alert sent: {alert_name(stream.alert_sent)}"
    if stream.alert_received is not None:
        return f"alert received: {alert_name(stream.alert_received)}"
    return f"broken: {exc}"


async def _handshake(tcp: trio.SocketStream, link: SecuredLink, limits: Limits,
                     summary: Summary) -> tuple[TrafficState, bytes] | None:
    """Relay until done/fail. Returns (state, trailing bytes) or None when the connection is over.

    Nothing goes to secured before the client's first whole record: a connection that sends nothing,
    or only part of a record, holds no handshake there, only its own place here (max_connections).
    The deadline is appd's own (from accept); secured's ends the wait too: when it gives up on the
    connection unasked (its deadline, or no room for another handshake), the client is let go at once.
    """
    buf = bytearray()
    wrote_anything = False
    with trio.move_on_after(limits.handshake) as deadline:
        try:
            chunk = await _next_records(tcp, buf, summary, None)
            if chunk is None:
                return None
            async with link.handshake(summary.peer) as hs:
                while True:
                    step = await hs.step(chunk)
                    if step.data:
                        summary.saw_from_secured(step.data)
                        await tcp.send_all(step.data)
                        wrote_anything = True
                    if step.failure is not None:
                        summary.outcome = f"handshake failed: {step.failure}"
                        return None
                    if step.state is not None:
                        summary.handshake_ms = round((time.monotonic() - summary.started) * 1000, 2)
                        return step.state, chunk[step.consumed :] + bytes(buf)
                    chunk = await _next_records(tcp, buf, summary, hs)
                    if chunk is None:
                        return None
        except SecuredUnavailable as exc:
            summary.outcome = f"secured unavailable: {exc}"
            if not wrote_anything:
                await tcp.send_all(INTERNAL_ERROR_ALERT)
            return None
    if deadline.cancelled_caught:
        summary.outcome = "handshake timeout"
    return None


async def _next_records(tcp: trio.SocketStream, buf: bytearray, summary: Summary,
                        hs: HandshakeChannel | None) -> bytes | None:
    """The client's next whole records, taken off ``buf``; None if it closed the connection, and b""
    when secured has spoken unasked meanwhile (its answer waits in ``hs.step``)."""
    while True:
        n = whole_records(buf)
        if n:
            chunk = bytes(buf[:n])
            del buf[:n]
            return chunk
        if hs is None:
            data = await tcp.receive_some(HANDSHAKE_READ)
        else:
            with hs.waiting_for_client() as waiting:
                data = await tcp.receive_some(HANDSHAKE_READ)
            if waiting.cancelled_caught:
                return b""
        if not data:
            summary.outcome = "client closed during handshake"
            return None
        buf += data


def _peer(tcp: trio.SocketStream) -> str:
    try:
        addr = tcp.socket.getpeername()
    except OSError:
        return "?"
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(addr)
