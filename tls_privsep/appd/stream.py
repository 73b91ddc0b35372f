"""RecordStream: a trio stream of TLS application data (1.3 or 1.2) over a transport, after the handshake.

appd never runs a handshake. It receives the traffic state secured exported (the current application
traffic secrets and sequence numbers), imports it into the sans-IO :class:`shared.record.RecordLayer`
and from then on protects records itself. This module is the async shell around that engine, shaped
like trio's ``SSLStream``: an I/O-free engine, three states (OK, BROKEN, CLOSED), and every engine or
transport failure translated into trio's stream exceptions in one place (:meth:`RecordStream._boundary`),
so the application side only ever sees ``trio.BrokenResourceError`` / ``trio.ClosedResourceError``.

The engine makes every protocol decision, KeyUpdate included (answering the peer's request, and
updating our key before its AEAD usage limit), and in TLS 1.2 the answer to a renegotiation attempt
and the close_notify that ends a connection whose write key reached that limit (TLS 1.2 has no
KeyUpdate); this shell moves bytes, logs, and keeps the counters of the summary line.

Ordering rule: bytes reach the transport in the order they were sealed, because a record's nonce is
its sequence number. Everything that seals a record does so while holding ``_send_lock`` and writes it
before releasing the lock; the one exception, the KeyUpdate the engine seals by itself when the peer
asks for one, sits in the engine's queue until the next lock holder writes it (every holder drains the
queue before it lets go), so a receiving task never has to wait behind a blocked sender.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import operator
import os
from collections.abc import AsyncIterator

import structlog
import trio
from structlog.typing import FilteringBoundLogger

from tls_privsep.shared.errors import AlertDescription, AlertLevel, LocalAlert, PeerAlert, UnexpectedMessage
from tls_privsep.shared.keyschedule import CipherSuite
from tls_privsep.shared.record import (
    AEAD_RECORD_LIMIT,
    MAX_CIPHERTEXT,
    MAX_PLAINTEXT,
    ApplicationData,
    CloseNotify,
    KeyUpdated,
    RecordLayer,
    RenegotiationRefused,
)
from tls_privsep.shared.state import TLS12, TLS13, TrafficState
from tls_privsep.shared.tls12 import SUITES12

__all__ = [
    "BULK_RECEIVE", "CLOSE_TIMEOUT", "RECEIVE_SIZE", "IdleTimeout", "RecordStream", "TruncatedError",
    "WriteKeyExhausted", "suite_name", "version_name",
]

RECEIVE_SIZE = 524288  # transport read size: many full records per system call (and per receive_some)
# A receive_some(max_bytes) at least this large returns all the whole records one transport read
# completed (the read, plus the part of a record left over from the one before) in one piece.
BULK_RECEIVE = RECEIVE_SIZE + MAX_CIPHERTEXT
CLOSE_TIMEOUT = 1.0  # the most a closing alert may wait for a stuck transport (aclose, fatal alerts)
_BATCH = 32 * MAX_PLAINTEXT  # plaintext sealed per transport write: bounds memory on a large send_all
_SPARE_BATCHES = 4  # sealed-batch buffers kept between writes, per trio run (process), not per stream
# Full batches are sealed into a buffer taken from here and given back once written. A fresh 512 KiB
# buffer per batch costs more than sealing it (the allocator hands out fresh pages, which are zeroed),
# and a buffer kept by the stream would stay with it while it idles; a few per process serve every
# bulk sender in turn. Per run, so that trio runs in other threads never share one.
_spare_batches: trio.lowlevel.RunVar[list[bytearray] | None] = trio.lowlevel.RunVar("spare_batches", default=None)


def _take_spare() -> bytearray | None:
    """A spare batch buffer to seal into, if this run has one (see ``_SPARE_BATCHES``)."""
    spares = _spare_batches.get()
    return spares.pop() if spares else None


def _give_spare(buffer: bytearray) -> None:
    spares = _spare_batches.get()
    if spares is None:
        _spare_batches.set([buffer])
    elif len(spares) < _SPARE_BATCHES:
        spares.append(buffer)


def version_name(version: int) -> str:
    """The version as logs and backends name it (OpenSSL's spelling, which operators grep for)."""
    return {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}.get(version, f"0x{version:04x}")


def suite_name(version: int, suite: int) -> str:
    """The suite's name: RFC 8446's for TLS 1.3 (OpenSSL uses it too), OpenSSL's for TLS 1.2."""
    if version == TLS12 and suite in SUITES12:
        return SUITES12[suite].name
    if version == TLS13 and suite in CipherSuite.__members__.values():
        return CipherSuite(suite).name
    return f"0x{suite:04x}"


class TruncatedError(trio.BrokenResourceError):
    """The transport reached EOF without close_notify: TLS treats that as a possible truncation."""


class IdleTimeout(trio.BrokenResourceError):
    """Nothing was sent or received for ``idle_timeout`` seconds; close_notify was sent (best effort)."""


class WriteKeyExhausted(trio.BrokenResourceError):
    """TLS 1.2: the write key reached its usage limit (``key_update_after`` records) and, with no KeyUpdate
    in TLS 1.2, the connection was closed with close_notify, the key's last record. Data that did not fit
    before it was not sent."""


class _Truncated(Exception):
    pass


class _Idle(Exception):
    pass


class _Exhausted(Exception):
    pass


class _State(enum.Enum):
    OK = "ok"
    BROKEN = "broken"
    CLOSED = "closed"


class _OneTaskAtATime:
    """Raise BusyResourceError when two tasks use the same direction at once (a bug in the caller)."""

    __slots__ = ("_busy", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._busy = False

    def __enter__(self) -> None:
        if self._busy:
            raise trio.BusyResourceError(f"another task is already in {self._what}")
        self._busy = True

    def __exit__(self, *exc: object) -> None:
        self._busy = False


def _known(code: int) -> int:
    """The AlertDescription member for ``code`` when there is one (it has a ``.name`` for logs)."""
    try:
        return AlertDescription(code)
    except ValueError:
        return code


def alert_name(code: int | None) -> str | None:
    if code is None:
        return None
    known = _known(code)
    return known.name if isinstance(known, AlertDescription) else str(code)


class RecordStream(trio.abc.HalfCloseableStream):
    """TLS application data over ``transport``, from an imported :class:`TrafficState` (TLS 1.3 or 1.2).

    The stream takes ownership of ``state``: its secrets are copied into the record layer and then
    wiped in the object passed in (one-time import, no second copy lying around). ``initial`` is what
    followed the client Finished on the wire; it is parsed before anything is read from the transport.

    ``receive_some()`` returns at most one record's plaintext per call, so an echo can answer record
    for record. ``receive_some(max_bytes)`` returns up to ``max_bytes``: one record's plaintext cut
    short, or the plaintext of as many whole records as were already read and fit, in one buffer (a
    bulk reader pays per transport read, not per record). The result may be a bytearray.

    ``send_eof`` sends close_notify and keeps the read side open (TLS 1.3 half-close; a TLS 1.2 peer
    may answer with its own and stop); it does not shut down the transport's write side.

    The limits go to the record layer: ``key_update_after`` is the most records one write key
    protects, the KeyUpdate that retires it included (the AEAD usage limit, RFC 8446 §5.5); in TLS
    1.2, where there is no KeyUpdate, the close_notify that ends the connection included
    (:class:`WriteKeyExhausted`). The ``max_*`` bound runs of empty records, KeyUpdates and warning
    alerts without application data.
    """

    # One per established connection: without an instance dict an idle stream is ~40 % smaller.
    __slots__ = (
        "_close_reason", "_layer", "_log", "_pending", "_pending_off", "_receive_guard", "_send_guard",
        "_send_lock", "_state", "alert_received", "alert_sent", "alpn", "bytes_in", "bytes_out",
        "close_timeout", "eof_received", "eof_sent", "idle_timeout", "last_activity", "peer_certs",
        "psk_resumed", "records_in", "records_out", "renegotiations_refused", "sni", "suite", "transport", "version",
    )

    def __init__(
        self,
        transport: trio.abc.Stream,
        state: TrafficState,
        *,
        initial: bytes = b"",
        log: FilteringBoundLogger | None = None,
        idle_timeout: float | None = None,
        key_update_after: int = AEAD_RECORD_LIMIT,
        close_timeout: float = CLOSE_TIMEOUT,
        max_empty_records: int = 32,
        max_key_updates: int = 32,
        max_warning_alerts: int = 4,
    ) -> None:
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        self.transport = transport
        self.version = state.version
        self.suite = state.suite
        self.alpn = state.alpn
        self.sni = state.sni
        self.psk_resumed = state.psk_resumed
        self.peer_certs = list(state.peer_certs)
        layer = RecordLayer.from_traffic_state(state, key_update_after=key_update_after,
                                               max_empty_records=max_empty_records,
                                               max_key_updates=max_key_updates,
                                               max_warning_alerts=max_warning_alerts)
        layer.receive_data(initial)
        state.wipe()
        self._layer = layer
        self._log: FilteringBoundLogger = log if log is not None else structlog.get_logger("appd.stream")
        self.idle_timeout = idle_timeout
        self.close_timeout = close_timeout

        self._state = _State.OK
        self._close_reason: str | None = None
        self._send_lock = trio.Lock()
        self._send_guard = _OneTaskAtATime("send_all/send_eof")
        self._receive_guard = _OneTaskAtATime("receive_some")
        self._pending: bytes | bytearray = b""  # the rest of a record a small max_bytes left behind
        self._pending_off = 0
        self.eof_received = False  # the peer's close_notify
        self.eof_sent = False  # our close_notify
        self.last_activity = trio.current_time()

        # AlertDescription members (an int for a code outside the registry); None if no alert.
        self.alert_sent: int | None = None
        self.alert_received: int | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.records_in = 0
        self.records_out = 0
        self.renegotiations_refused = 0

    def __repr__(self) -> str:
        return (
            f"RecordStream(version={self.tls_version}, suite=0x{self.suite:04x}, state={self._state.value}, "
            f"bytes_in={self.bytes_in}, bytes_out={self.bytes_out}, key_updates={self.key_updates})"
        )

    # -- status ---------------------------------------------------------------------------------

    @property
    def tls_version(self) -> str:
        """"TLSv1.3" or "TLSv1.2"."""
        return version_name(self.version)

    @property
    def suite_name(self) -> str:
        return suite_name(self.version, self.suite)

    @property
    def key_updates_sent(self) -> int:
        return self._layer.key_updates_sent

    @property
    def key_updates_received(self) -> int:
        return self._layer.key_updates_received

    @property
    def key_updates(self) -> int:
        return self.key_updates_sent + self.key_updates_received

    @property
    def outcome(self) -> str:
        """How the connection ended, for the summary line."""
        if self._close_reason is not None:
            return self._close_reason
        if self.eof_received and self.eof_sent:
            return "clean"
        return "closed" if self._state is _State.CLOSED else "open"

    def summary(self) -> dict[str, object]:
        """Counters for the per-connection log line (plaintext bytes, application-data records)."""
        return {
            "version": self.tls_version,
            "outcome": self.outcome,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "records_in": self.records_in,
            "records_out": self.records_out,
            "key_updates": self.key_updates,
            "key_updates_sent": self.key_updates_sent,
            "key_updates_received": self.key_updates_received,
            "close_notify_received": self.eof_received,
            "close_notify_sent": self.eof_sent,
            "alert_sent": alert_name(self.alert_sent),
            "alert_received": alert_name(self.alert_received),
            "renegotiations_refused": self.renegotiations_refused,
        }

    # -- the error boundary ---------------------------------------------------------------------

    def _check_state(self) -> None:
        if self._state is _State.CLOSED:
            raise trio.ClosedResourceError("the RecordStream is closed")
        if self._state is _State.BROKEN:
            raise trio.BrokenResourceError(f"the RecordStream is broken ({self._close_reason})")

    def _break(self, reason: str) -> None:
        if self._state is _State.OK:
            self._state = _State.BROKEN
            self._close_reason = reason

    @contextlib.asynccontextmanager
    async def _boundary(self) -> AsyncIterator[None]:
        """Translate engine and transport failures into trio stream exceptions, exactly once."""
        try:
            yield
        except LocalAlert as exc:
            self.alert_sent = exc.description
            self._break("alert_sent")
            self._log.info("tls alert sent", alert=exc.description.name, reason=exc.reason)
            await self._final_alert(exc.description, AlertLevel.fatal)
            raise trio.BrokenResourceError(f"sent {exc.description.name} alert: {exc.reason}") from exc
        except PeerAlert as exc:
            self.alert_received = _known(exc.raw_description)
            self._break("alert_received")
            self._log.info("tls alert received", alert=alert_name(exc.raw_description))
            raise trio.BrokenResourceError(f"peer sent {exc.description.name} alert") from exc
        except _Truncated:
            self._break("truncated")  # what the summary line reports, rather than a line of its own
            self._log.debug("tls transport eof without close_notify")
            raise TruncatedError("transport closed without close_notify (truncation)") from None
        except _Idle:
            self._break("idle_timeout")
            self._log.info("tls idle timeout", seconds=self.idle_timeout)
            if not self.eof_sent:
                self.eof_sent = True
                await self._final_alert(AlertDescription.close_notify, AlertLevel.warning)
            raise IdleTimeout(f"no traffic for {self.idle_timeout} s") from None
        except _Exhausted:
            # The engine sealed our close_notify as the key's last record. A receiving task that sealed it
            # (a refused renegotiation) while a send held the lock left it queued: whoever gets here first
            # with the lock writes it.
            if self._state is _State.OK:
                self._break("write_key_exhausted")
                self._log.info("tls 1.2 write key reached its usage limit, connection closed with close_notify",
                               records=self._layer.key_update_after)
            with trio.move_on_after(self.close_timeout):
                try:
                    async with self._send_lock:
                        await self._drain_queued()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            raise WriteKeyExhausted("TLS 1.2 write key reached its usage limit; closed with close_notify") from None
        except trio.ClosedResourceError as exc:
            if self._state is _State.CLOSED:
                raise
            self._break("transport_closed")
            raise trio.BrokenResourceError("transport closed under the stream") from exc
        except trio.BrokenResourceError:
            self._break("transport_error")
            raise

    async def _final_alert(self, description: int, level: int) -> None:
        """Best effort: one last alert, bounded in time; the connection is over whatever happens.

        Nothing goes out after our close_notify: the peer must ignore it (RFC 8446 §6.1).
        """
        if self.eof_sent and description != AlertDescription.close_notify:
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(self.close_timeout):
            try:
                async with self._send_lock:
                    await self.transport.send_all(self._layer.send_alert(description, level))
            except (trio.BrokenResourceError, trio.ClosedResourceError, LocalAlert):
                pass

    # -- receiving ------------------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Decrypted application data; b"" once the peer sent close_notify."""
        with self._receive_guard:
            if max_bytes is not None:
                max_bytes = operator.index(max_bytes)
                if max_bytes < 1:
                    raise ValueError("max_bytes must be >= 1")
            await trio.lowlevel.checkpoint()
            self._check_state()
            async with self._boundary():
                return await self._receive(max_bytes)
        raise AssertionError("unreachable")  # pragma: no cover (mypy cannot see through _boundary)

    async def _receive(self, max_bytes: int | None) -> bytes | bytearray:
        first_read = True
        while True:
            if self._pending_off < len(self._pending):
                return self._take(max_bytes)
            if self.eof_received:
                return b""
            event = self._layer.next_event(max_data=max_bytes or 0)
            if event is None:
                if not first_read:
                    # receive_some yielded once already; each further read in the same call yields too,
                    # or a peer sending records that carry no data (empty, padded, alerts, KeyUpdates)
                    # could keep this task, and every other connection with it, off the loop for long
                    await trio.lowlevel.checkpoint()
                first_read = False
                data = await self._read_transport()
                self._check_state()  # closed or broken by another task while we waited
                if not data:
                    raise _Truncated
                self._layer.receive_data(data)
            elif isinstance(event, ApplicationData):
                self.records_in += event.records
                self.bytes_in += len(event.data)
                self._pending, self._pending_off = event.data, 0
            elif isinstance(event, CloseNotify):
                self.eof_received = True
                self._log.debug("tls close_notify received")
                if self._layer.close_sent and not self.eof_sent:
                    # TLS 1.2: the engine answered with our close_notify; nothing may be written after it.
                    self.eof_sent = True
                    await self._write_queued()
            elif isinstance(event, KeyUpdated):
                self._log.debug("tls key update received", update_requested=event.update_requested)
                await self._write_queued()
            elif isinstance(event, RenegotiationRefused):
                # TLS 1.2: the engine queued the warning no_renegotiation alert (or, with the write key at
                # its last record, the close_notify that ends the connection); a second attempt is fatal.
                self.renegotiations_refused += 1
                self._log.info("renegotiation refused")
                await self._write_queued()
                self._check_exhausted()
            else:  # the application phase never yields a handshake message; refuse rather than ignore
                raise UnexpectedMessage(f"{type(event).__name__} after the handshake")

    def _take(self, max_bytes: int | None) -> bytes | bytearray:
        pending, start = self._pending, self._pending_off
        end = len(pending) if max_bytes is None else min(len(pending), start + max_bytes)
        if end == len(pending):
            self._pending, self._pending_off = b"", 0
            return pending if start == 0 else pending[start:]  # the whole event: handed over, no copy
        self._pending_off = end
        return pending[start:end]

    async def _read_transport(self) -> bytes | bytearray:
        data: bytes | bytearray | None
        if self.idle_timeout is None:
            data = self._read_ready()
            if data is None:
                data = await self.transport.receive_some(RECEIVE_SIZE)
        else:
            # Sends count as activity too: a long download with a silent client is not idle.
            if trio.current_time() >= self.last_activity + self.idle_timeout:
                raise _Idle  # as the expired timer below would, before reading anything
            data = self._read_ready()
            while data is None:
                with trio.move_on_at(self.last_activity + self.idle_timeout):
                    data = await self.transport.receive_some(RECEIVE_SIZE)
                if data is None and trio.current_time() >= self.last_activity + self.idle_timeout:
                    raise _Idle
        self.last_activity = trio.current_time()
        assert data is not None  # both branches loop until there is data (or raise)
        return data

    def _read_ready(self) -> bytes | None:
        """What a TCP transport already holds (b"" at EOF), or None if a read would have to wait.

        Most reads find their data waiting. Taking it without trio's wait machinery spares them the
        idle timer's cancel scope (a few µs per read, more than the read itself costs), which only a
        read that waits needs. Other transports (memory streams in tests) always take the usual path.
        Errors are translated as ``trio.SocketStream`` translates them.
        """
        if type(self.transport) is not trio.SocketStream:
            return None
        try:
            return os.read(self.transport.socket.fileno(), RECEIVE_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise trio.ClosedResourceError("this socket was already closed") from None
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    async def _write_queued(self) -> None:
        """Write what the engine queued by itself (a KeyUpdate answer), keeping seal order."""
        if self._send_lock.locked():
            return  # the holder drains the queue before it releases the lock
        async with self._send_lock:
            await self._drain_queued()

    async def _drain_queued(self) -> None:
        while out := self._layer.data_to_send():
            await self._write(out)

    def _check_exhausted(self) -> None:
        """TLS 1.2: once the engine sealed the write key's last record (our close_notify), stop."""
        if self._layer.write_exhausted:
            self.eof_sent = True  # nothing may follow it, not even a fatal alert
            raise _Exhausted

    # -- sending --------------------------------------------------------------------------------

    async def _write(self, data: bytes | bytearray) -> None:
        try:
            await self.transport.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise  # the boundary names these
        except BaseException:
            # A record cut in the middle (cancellation) cannot be resumed.
            self._break("send_interrupted")
            raise
        self.last_activity = trio.current_time()

    def _seal(self, data: memoryview, into: bytearray | None = None) -> bytes | bytearray:
        """Protect ``data`` (sealed into ``into`` when given, unless a KeyUpdate had to go in between).

        In TLS 1.2 at the usage limit only the records that fit are sealed, then our close_notify:
        the counters take what was sealed, and the caller writes it and stops (:meth:`_check_exhausted`).
        """
        layer = self._layer
        self._check_exhausted()  # another task's receive may have spent the key's last record
        updates = layer.key_updates_sent
        room = layer.records_before_key_update() if self.version == TLS12 else 0
        sealed = layer.send_application_data(data, into=into)
        if layer.key_updates_sent != updates:
            self._log.debug("tls key update sent", reason="usage_limit")
        n = min(len(data), max(room, 0) * MAX_PLAINTEXT) if layer.write_exhausted else len(data)
        self.records_out += -(-n // MAX_PLAINTEXT)
        self.bytes_out += n
        return sealed

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as records of at most 2^14 bytes each; returns when the transport took them."""
        with self._send_guard:
            self._check_state()
            if self.eof_sent:
                raise trio.ClosedResourceError("send_eof() was already called")
            if not len(data):
                await trio.lowlevel.checkpoint()
                return
            async with self._boundary(), self._send_lock:
                with memoryview(data) as view:
                    for start in range(0, len(view), _BATCH):
                        self._check_state()
                        with view[start : start + _BATCH] as batch:
                            full = len(batch) == _BATCH
                            out = self._seal(batch, _take_spare() if full else None)
                        await self._write(out)
                        self._check_exhausted()
                        if full and isinstance(out, bytearray):  # not after a KeyUpdate joined it to a copy
                            _give_spare(out)  # written: the transport is done with it (dropped if the write failed)
                await self._drain_queued()

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_guard:
            self._check_state()
            async with self._boundary():
                await self.transport.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Send close_notify; receiving goes on (TLS 1.3 closes each direction on its own)."""
        with self._send_guard:
            self._check_state()
            if self.eof_sent:
                await trio.lowlevel.checkpoint()
                return
            async with self._boundary(), self._send_lock:
                self._check_state()
                self.eof_sent = True
                await self._write(self._layer.send_alert(AlertDescription.close_notify, AlertLevel.warning))
                self._log.debug("tls close_notify sent")

    async def send_fatal_alert(self, description: int = AlertDescription.internal_error) -> None:
        """Give up on the connection with a fatal alert (best effort); the stream becomes BROKEN.

        For the application side: a proxied backend that failed mid-stream must not look like a
        clean end (close_notify) to the client. ``aclose`` still has to be called.
        """
        if self._state is not _State.OK:
            await trio.lowlevel.checkpoint()
            return
        self.alert_sent = _known(description)
        self._break("alert_sent")
        self._log.info("tls alert sent", alert=alert_name(description), reason="application")
        await self._final_alert(description, AlertLevel.fatal)

    async def aclose(self) -> None:
        """close_notify (if not sent yet and the stream is healthy, within ``close_timeout``), then close."""
        if self._state is _State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        healthy = self._state is _State.OK
        self._state = _State.CLOSED
        try:
            if healthy and not self.eof_sent:
                self.eof_sent = True
                with trio.move_on_after(self.close_timeout):
                    async with self._send_lock:
                        await self.transport.send_all(
                            self._layer.send_alert(AlertDescription.close_notify, AlertLevel.warning)
                        )
        except (trio.BrokenResourceError, trio.ClosedResourceError, LocalAlert):
            pass
        finally:
            for protection in (self._layer.read, self._layer.write):
                if protection is not None:
                    protection.wipe()
            await self.transport.aclose()
