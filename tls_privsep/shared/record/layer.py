"""RecordLayer: the sans-IO record layer that secured's handshake and appd's stream drive.

TLS 1.3 (RFC 8446 §5) by default; TLS 1.2 (RFC 5246 §6, AEAD suites only) once :meth:`RecordLayer.use_tls12`
says so, or on the import of a TLS 1.2 state. The versions differ in which records are protected (1.3: outer
application_data only; 1.2: every record once the peer's change_cipher_spec came), in what a
change_cipher_spec is (1.3: a dummy dropped in a window; 1.2: an event), in what may follow the handshake
(1.3: KeyUpdate; 1.2: a refused renegotiation), in alert levels (ignored in 1.3) and in what the AEAD
usage limit does (1.3: KeyUpdate; 1.2: the connection ends with close_notify).

Bytes go in through :meth:`RecordLayer.receive_data`, events come out of :meth:`RecordLayer.next_event`,
and the ``send_*`` methods return the bytes to write. No sockets, no trio.

Parsing is lazy on purpose: a record is only deprotected when an event is asked for and none is
pending, so a caller that changes the read key after an event (ClientHello, Finished, KeyUpdate) gets
the following records opened under the new key.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from tls_privsep.shared.errors import (
    AlertDescription,
    AlertLevel,
    BadRecordMac,
    DecodeError,
    IllegalParameter,
    InternalError,
    LocalAlert,
    PeerAlert,
    RecordOverflow,
    UnexpectedMessage,
)
from tls_privsep.shared.record import bulk
from tls_privsep.shared.record.events import (
    ApplicationData,
    ChangeCipherSpec,
    CloseNotify,
    Event,
    HandshakeMessage,
    KeyUpdated,
    RenegotiationRefused,
)
from tls_privsep.shared.record.framing import (
    CCS_RECORD,
    HEADER_LEN,
    MAX_CIPHERTEXT12,
    MAX_PLAINTEXT,
    BytesLike,
    ContentType,
    ReceiveBuffer,
    plaintext_records,
    read_header,
)
from tls_privsep.shared.record.limits import Limits
from tls_privsep.shared.record.messages import MAX_CLIENT_HELLO, HandshakeType, Reassembly
from tls_privsep.shared.record.phase import Phase, check_transition
from tls_privsep.shared.record.protection import Protection, RecordProtection, Tls12Protection
from tls_privsep.shared.state import TLS12, TLS13, TrafficState

# Enum members the per-record code compares against, bound to module names once: in CPython 3.11 a
# lookup on the enum class costs about 0.1 µs, which these paths would pay several times a record.
_INVALID, _CCS, _ALERT = ContentType.invalid, ContentType.change_cipher_spec, ContentType.alert
_HANDSHAKE, _APPLICATION_DATA = ContentType.handshake, ContentType.application_data
_APPLICATION, _CLOSED = Phase.APPLICATION, Phase.CLOSED

# RFC 8446 §5.5: an AES-GCM key is good for 2^24.5 full-size records; 2^24 is the round number below it
# (ChaCha20-Poly1305 has no practical limit, but one number for all suites keeps it simple). The
# ceiling of appd.key_update_after in shared/config.py is the same number. TLS 1.2's AEADs are the same
# (RFC 5288, RFC 7905), so the same limit holds there, where it ends the connection instead.
AEAD_RECORD_LIMIT = 2**24
_WARNING_NO_RENEGOTIATION = bytes((AlertLevel.warning, AlertDescription.no_renegotiation))
_CLOSE_NOTIFY = bytes((AlertLevel.warning, AlertDescription.close_notify))


class _Skip(enum.Enum):
    """What the handshake drops instead of reading (None: nothing)."""

    TRIAL = "trial"  # rejected 0-RTT: drop records that fail deprotection under the handshake key
    OUTER_APP = "outer_app"  # after HRR: drop every outer application_data record until a handshake record


class RecordLayer:
    """Record framing, protection, reassembly and the limits that keep a peer from spinning us.

    Any peer misbehaviour raises a :class:`shared.errors.LocalAlert` subclass (send that alert and
    close); an alert from the peer raises :class:`shared.errors.PeerAlert`. After either, the
    object must not be used for receiving any more.

    The layer decides about KeyUpdate itself: it answers a peer's update_requested (unless our
    close_notify went out: nothing follows it), and no write key protects more than
    ``key_update_after`` records, the KeyUpdate that retires it included (RFC 8446 §5.5).

    In TLS 1.2 the usage limit cannot be met with a new key, so the key's last record is our
    close_notify and :attr:`write_exhausted` tells the caller to stop writing; a client's first
    renegotiation attempt is answered by the layer too (a queued warning no_renegotiation alert).
    """

    def __init__(
        self,
        *,
        max_handshake_message: int = MAX_CLIENT_HELLO + 4,
        max_empty_records: int = 32,
        max_key_updates: int = 32,
        max_warning_alerts: int = 4,
        max_handshake_records: int = 64,
        key_update_after: int = AEAD_RECORD_LIMIT,
        check_handshake_header: Callable[[int, int], None] | None = None,
        version: int = TLS13,
    ) -> None:
        if key_update_after < 2:
            raise ValueError("key_update_after must leave room for the KeyUpdate record itself")
        if version not in (TLS12, TLS13):
            raise ValueError(f"record layer version 0x{version:04x} not supported")
        self.limits = Limits(
            max_handshake_message=max_handshake_message, max_handshake_records=max_handshake_records,
            max_empty_records=max_empty_records, max_key_updates=max_key_updates,
            max_warning_alerts=max_warning_alerts,
        )
        # Called with (type, length) of each handshake message as soon as its 4-byte header is in,
        # before the size limit and before any of its body is buffered; raises the alert to send.
        self.check_handshake_header = check_handshake_header
        self._key_update_after = key_update_after
        self.key_updates_sent = 0  # answers to the peer and ours at the usage limit alike
        self.key_updates_received = 0
        self.read: RecordProtection | None = None
        self.write: RecordProtection | None = None
        self._phase = Phase.HANDSHAKE
        self._rx = ReceiveBuffer()
        self._hs = Reassembly()
        self._out = bytearray()  # bytes we queued ourselves (KeyUpdate answers)
        self._skip: _Skip | None = None
        self._skip_budget = 0
        self._stop: bulk.Stop = None  # what the last bulk run stopped at
        # The write sequence number the KeyUpdate that retires the key takes, its key_update_after-th
        # record: a key's sequence numbers count its records from 0 (an import corrects for any it did not).
        self._key_update_seq = key_update_after - 1
        self._close_sent = False  # our close_notify went out
        self._version = version
        self._write_exhausted = False  # TLS 1.2: the write key sealed its last record, our close_notify
        self.renegotiations_refused = 0  # TLS 1.2: ClientHellos after the handshake (the second is fatal)

    @classmethod
    def from_traffic_state(
        cls,
        state: TrafficState,
        *,
        key_update_after: int = AEAD_RECORD_LIMIT,
        max_empty_records: int = 32,
        max_key_updates: int = 32,
        max_warning_alerts: int = 4,
    ) -> RecordLayer:
        """The import of an exported :class:`TrafficState`: appd's, and the only one the tests use.

        Both keys at their sequence numbers, in the application phase, so that the imported layer
        seals exactly what the exporter's would have; the write key's usage count goes on from the
        state's ``records_protected`` (the AEAD limit is per key, wherever the key was used). The
        secrets are copied into the layer; wiping ``state`` is the caller's decision. A TLS 1.2 state
        (version 0x0303) gives a TLS 1.2 layer: its secrets are each direction's key and IV.
        """
        if state.version not in (TLS12, TLS13):
            raise ValueError(f"cannot import a state of version 0x{state.version:04x}")
        layer = cls(key_update_after=key_update_after, max_empty_records=max_empty_records,
                    max_key_updates=max_key_updates, max_warning_alerts=max_warning_alerts, version=state.version)
        if state.version == TLS12:
            layer.set_read_protection(Tls12Protection(state.suite, state.read_secret, state.read_seq))
            layer.set_write_protection(Tls12Protection(state.suite, state.write_secret, state.write_seq))
        else:
            layer.set_read_key(state.suite, state.read_secret, state.read_seq)
            layer.set_write_key(state.suite, state.write_secret, state.write_seq)
        # Records the key protected that its sequence number does not count (none in TLS 1.3, where the number
        # starts at 0 with each key, nor in TLS 1.2, where it starts at 0 with the connection's only key); a
        # smaller count than the sequence number must never lengthen its life.
        layer._key_update_seq -= max(state.records_protected, state.write_seq) - state.write_seq
        layer.enter(Phase.APPLICATION)
        return layer

    def __repr__(self) -> str:
        return (f"RecordLayer(version=0x{self._version:04x}, read={self.read!r}, write={self.write!r}, "
                f"phase={self._phase.value})")

    # -- version --------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """TLS13 (0x0304) or TLS12 (0x0303): which record layer this is."""
        return self._version

    def use_tls12(self) -> None:
        """Read and write TLS 1.2 records from the next record on: the handshake engine calls it as soon
        as the ClientHello chose TLS 1.2, before any key is set (there is no way back to TLS 1.3).

        It closes TLS 1.3's dummy change_cipher_spec window (``HANDSHAKE_CCS``) if the ClientHello
        opened it: in TLS 1.2 a change_cipher_spec is the :class:`ChangeCipherSpec` event instead.
        """
        if self._version == TLS12:
            return
        if (self.read is not None or self.write is not None or self._skip is not None
                or self._phase not in (Phase.HANDSHAKE, Phase.HANDSHAKE_CCS)):
            raise InternalError("the record layer's version is settled once keys are set")
        self._version = TLS12
        if self._phase is Phase.HANDSHAKE_CCS:
            self.enter(Phase.HANDSHAKE)

    # -- phase ----------------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    def enter(self, phase: Phase) -> None:
        """Move to ``phase``; InternalError if :data:`phase.TRANSITIONS` has no such move."""
        check_transition(self._phase, phase)
        if phase is Phase.HANDSHAKE_CCS and self._version == TLS12:
            raise InternalError("TLS 1.2 has no dummy change_cipher_spec window")
        self._phase = phase

    @property
    def closed(self) -> bool:
        """The peer's close_notify came: nothing more is read."""
        return self._phase is _CLOSED

    @property
    def ccs_allowed(self) -> bool:
        return self._phase is Phase.HANDSHAKE_CCS

    # -- keys -----------------------------------------------------------------------------------

    def set_read_key(self, suite: int, secret: bytes | bytearray, seq: int = 0) -> None:
        """Switch to a TLS 1.3 read key; refused if handshake bytes of the old key are still buffered.

        (TLS 1.2: ``set_read_protection(Tls12Protection(suite, key_material, seq))``.)
        """
        self._tls13_only("a TLS 1.3 traffic secret")
        self.set_read_protection(Protection(suite, secret, seq))

    def set_write_key(self, suite: int, secret: bytes | bytearray, seq: int = 0) -> None:
        self._tls13_only("a TLS 1.3 traffic secret")
        self.set_write_protection(Protection(suite, secret, seq))

    def set_read_protection(self, protection: RecordProtection) -> None:
        """Read under ``protection`` from the next record on; the old one is wiped.

        RFC 8446 §5.1: handshake messages must not span a key change, so leftover bytes mean the
        peer put data after the message that triggers the change in the same record.
        """
        if self._hs.pending():
            raise UnexpectedMessage("handshake data spans a key change")
        old, self.read = self.read, protection
        if old is not None:
            old.wipe()

    def set_write_protection(self, protection: RecordProtection) -> None:
        """Write under ``protection`` from now on; the old one is wiped, the usage count starts over."""
        old, self.write = self.write, protection
        self._key_update_seq = self._key_update_after - 1
        if old is not None:
            old.wipe()

    @property
    def key_update_after(self) -> int:
        return self._key_update_after

    @property
    def close_sent(self) -> bool:
        """Our close_notify is sealed (sent, or queued in :meth:`data_to_send`): nothing may follow it."""
        return self._close_sent

    @property
    def write_exhausted(self) -> bool:
        """TLS 1.2: the write key reached its usage limit and sealed our close_notify as its last
        record; nothing more can be sent on this connection."""
        return self._write_exhausted

    def records_before_key_update(self) -> int:
        """Application data records the write key may still protect before the KeyUpdate that retires it
        (TLS 1.2: before the close_notify that ends the connection)."""
        if self.write is None:
            raise InternalError("no write key")
        return self._key_update_seq - self.write.seq

    def skip_early_data(self, max_bytes: int) -> None:
        """Rejected 0-RTT (§4.2.10): drop records that fail deprotection, up to ``max_bytes``."""
        self._tls13_only("early data")
        self._skip = _Skip.TRIAL
        self._skip_budget = max_bytes

    def skip_plaintext_app_data(self, max_bytes: int = 2**14) -> None:
        """After a HelloRetryRequest (§4.2.10): drop outer application_data records, up to ``max_bytes``.

        The budget bounds how much a client may send us to discard; pass the ticket's
        max_early_data_size when known.
        """
        self._tls13_only("a HelloRetryRequest")
        self._skip = _Skip.OUTER_APP
        self._skip_budget = max_bytes

    def _tls13_only(self, what: str) -> None:
        if self._version != TLS13:
            raise InternalError(f"{what} is TLS 1.3 only")

    # -- receiving ------------------------------------------------------------------------------

    def receive_data(self, data: BytesLike) -> None:
        """Buffer ``data``; it is parsed lazily by :meth:`next_event` (and dropped after close_notify)."""
        if self._phase is not _CLOSED and data:
            self._rx.feed(data)

    def has_pending_handshake(self) -> bool:
        return self._hs.pending()

    def take_unprocessed(self) -> bytes:
        """Hand over raw bytes not yet parsed (the records after the client Finished)."""
        if self._hs.pending():
            raise UnexpectedMessage("handshake data follows the last handshake message")
        return self._rx.take_all()

    def next_event(self, max_data: int = 0) -> Event | None:
        """The next event, or None when more data is needed (or after close_notify).

        Records that yield nothing (a dropped CCS, an empty record, a skipped early-data record, an
        ignored user_canceled) are consumed without returning, so None always means "feed me".

        With ``max_data``, the application data of consecutive records already buffered comes back
        as one event of at most ``max_data`` bytes (the first record is always taken whole; see
        :mod:`.bulk`). A record the run stopped at, and an error it met after some data, are dealt
        with by the next call: the data before them is delivered first, as record by record.
        """
        while self._phase is not _CLOSED:
            msg = self._next_handshake_message()
            if msg is not None:
                return msg
            record = self._stop
            if record is not None:
                self._stop = None
                if isinstance(record, LocalAlert):
                    raise record
            else:
                read = self.read
                # The steady state (application phase, a read key, nothing skipped, no handshake
                # fragment) takes runs; anything else, and any record a run cannot take, goes here.
                if (max_data and self._phase is _APPLICATION and read is not None and self._skip is None
                        and not self._hs.pending()):
                    run = bulk.read_run(self._rx, read, max_data, self.limits)
                    if run is not None:
                        data, self._stop = run
                        if data is not None:
                            return data
                        continue
                record = self._read_record()
                if record is None:
                    self._rx.release_drained()
                    return None
            event = self._dispatch(*record)
            if event is not None:
                return event
        return None

    def _next_handshake_message(self) -> Event | None:
        head = self._hs.next_header()
        if head is None:
            return None
        msg_type, length = head
        # Judged on the header, before the size limit: a message of the wrong type is
        # unexpected_message and one of a fixed size announcing another length is decode_error,
        # whatever length it announces; only a message that may come here and may be long is
        # measured against the limit (docs/alerts.md).
        if self._phase is _APPLICATION:
            if self._version == TLS12:
                # Only a ClientHello, a renegotiation attempt, refused once politely (RFC 5746 §4.4).
                if msg_type != HandshakeType.client_hello:
                    raise UnexpectedMessage(f"handshake message type {msg_type} after the handshake")
                if self.renegotiations_refused:
                    raise UnexpectedMessage("client insisted on renegotiation")
            # Only a 1-byte KeyUpdate is acceptable after the handshake.
            elif msg_type != HandshakeType.key_update:
                raise UnexpectedMessage(f"handshake message type {msg_type} after the handshake")
            elif length != 1:
                raise DecodeError("KeyUpdate body is not 1 byte")
        elif self.check_handshake_header is not None:
            self.check_handshake_header(msg_type, length)
        self.limits.handshake_message(length)
        body = self._hs.take(length)
        if body is None:
            return None
        if self._phase is _APPLICATION:
            if self._version == TLS12:
                return self._refuse_renegotiation()
            return self._key_update(body[0])
        return HandshakeMessage(msg_type, body)

    def _refuse_renegotiation(self) -> RenegotiationRefused:
        """Drop the ClientHello and queue the warning no_renegotiation alert; the connection goes on.

        The alert takes a record under the write key. When the key has only its last record left,
        that record must be our close_notify (the usage limit), so the answer is the close instead.
        """
        self.renegotiations_refused += 1
        write = self.write
        if write is None:
            raise InternalError("renegotiation refused without a write key")
        if not self._close_sent:
            if self._key_update_seq - write.seq >= 1:
                self._out += write.seal(_ALERT, _WARNING_NO_RENEGOTIATION)
            else:
                self._out += self._seal_last_record()
        return RenegotiationRefused()

    def _key_update(self, value: int) -> KeyUpdated:
        if value not in (0, 1):
            raise IllegalParameter("KeyUpdate request_update out of range")
        if self._hs.pending():
            raise UnexpectedMessage("KeyUpdate does not end its record")
        self.limits.key_update()
        if self.read is None:
            raise InternalError("KeyUpdate without a read key")
        self.set_read_protection(self.read.next_generation())
        self.key_updates_received += 1
        # §4.6.3: answer before our next application data; after our close_notify there is none.
        if value and not self._close_sent:
            self._out += self._seal_key_update(False)
        return KeyUpdated(bool(value))

    def _read_record(self) -> tuple[int, bytes] | None:
        """Take one whole record off the buffer: (content type, content), or None if incomplete.

        Returns type ``invalid`` for a record that was consumed but produced nothing (a dropped
        CCS or skipped early data); a protected record can never decode to type 0.
        """
        rx = self._rx
        if rx.end - rx.off < HEADER_LEN:
            return None
        if self._version == TLS12:
            return self._read_record12(*read_header(rx.buf, rx.off, MAX_CIPHERTEXT12))
        outer, length = read_header(rx.buf, rx.off)
        # TLS 1.3 protects outer application_data records only (§5.2): alerts and CCS may stay plaintext.
        protected = outer == _APPLICATION_DATA and (self.read is not None or self._skip is not None)
        if not protected:
            if length > MAX_PLAINTEXT:
                raise RecordOverflow("plaintext record longer than 2^14 bytes")
            if outer == _HANDSHAKE and self.read is not None:
                raise UnexpectedMessage("plaintext handshake record after keys were set")
            if outer == _APPLICATION_DATA and self._phase is not _APPLICATION:
                raise UnexpectedMessage("application data during the handshake")
        start = self._take_record(length)
        if start is None:
            return None
        end = start + HEADER_LEN + length
        if not protected:
            content = bytes(rx.buf[start + HEADER_LEN : end])
            if outer == _CCS:
                # §5: the compatibility CCS is dropped, but only in its one legal form and window.
                if not (self._phase is Phase.HANDSHAKE_CCS and content == b"\x01"):
                    raise UnexpectedMessage("unexpected change_cipher_spec record")
                self.limits.empty_record()
                return _INVALID, b""
            if outer == _HANDSHAKE and self._skip is _Skip.OUTER_APP:
                self._skip = None
            return outer, content
        head_bytes = bytes(rx.buf[start : start + HEADER_LEN])
        if self._skip is None:
            assert self.read is not None
            with memoryview(rx.buf) as view, view[start + HEADER_LEN : end] as payload:
                return self.read.open(head_bytes, payload)
        if self._skip is _Skip.TRIAL and self.read is not None:
            try:
                with memoryview(rx.buf) as view, view[start + HEADER_LEN : end] as payload:
                    opened = self.read.open(head_bytes, payload)
            except BadRecordMac:
                pass
            else:
                self._skip = None
                return opened
        # Skipped: count the most early data this record can hold against the budget. §4.2.10
        # counts payload only, not the content-type byte; padding is invisible to us, so a record
        # is taken at its largest possible payload (an honest client is never over-charged).
        payload_len = max(0, length - Protection.expansion - 1)
        self._skip_budget -= payload_len
        if self._skip_budget < 0:
            raise UnexpectedMessage("too much early data to skip")
        if not payload_len:  # non-empty ones are bounded by the budget; many small writes are legal
            self.limits.empty_record()
        return _INVALID, b""

    def _take_record(self, length: int) -> int | None:
        """Consume the whole record of ``length`` bytes at the front (its header read and judged): where it
        starts, or None while it is incomplete. Each one before the handshake ends counts against its limit."""
        rx = self._rx
        start = rx.off
        end = start + HEADER_LEN + length
        if rx.end < end:
            return None
        rx.off = end
        if self._phase is not _APPLICATION:
            self.limits.handshake_record()
        return start

    def _read_record12(self, outer: int, length: int) -> tuple[int, bytes] | None:
        """TLS 1.2's :meth:`_read_record`: plaintext records until the read protection is set, then every
        record protected whatever its type, the real type in the header (RFC 5246 §6.2).

        A change_cipher_spec is judged on its header and its one byte. After the one that set the read
        protection (or after the handshake) any is misplaced: unexpected_message, as OpenSSL and
        BoringSSL answer an early or protected one. A well-placed one that is not the single byte 1
        (§7.1) is malformed: decode_error, which §7.2.2 defines for a wrong length or a field out of
        range (OpenSSL 3 sends unexpected_message, BoringSSL illegal_parameter: docs/alerts.md).
        The engine decides whether one was due at all (the :class:`ChangeCipherSpec` event).
        """
        rx = self._rx
        read = self.read
        if outer == _CCS and (read is not None or self._phase is _APPLICATION):
            raise UnexpectedMessage("change_cipher_spec after the handshake keys were set")
        if read is None:
            if length > MAX_PLAINTEXT:
                raise RecordOverflow("plaintext record longer than 2^14 bytes")
            if outer == _APPLICATION_DATA:
                raise UnexpectedMessage("application data before the change_cipher_spec")
        start = self._take_record(length)
        if start is None:
            return None
        end = start + HEADER_LEN + length
        if read is None:
            content = bytes(rx.buf[start + HEADER_LEN : end])
            if outer == _CCS and content != b"\x01":
                raise DecodeError("change_cipher_spec is not the single byte 1")
            return outer, content
        head_bytes = bytes(rx.buf[start : start + HEADER_LEN])
        with memoryview(rx.buf) as view, view[start + HEADER_LEN : end] as payload:
            return read.open(head_bytes, payload)

    def _dispatch(self, ctype: int, content: bytes) -> Event | None:
        # TLS 1.3 forbids any other record between the fragments of a handshake message (RFC 8446 §5.1);
        # TLS 1.2 lets other types interleave (RFC 5246 §6.2.1), but never the change_cipher_spec, after
        # which the rest of the message would be read under another key.
        if self._hs.pending() and ctype != _HANDSHAKE and (self._version == TLS13 or ctype == _CCS):
            raise UnexpectedMessage("record interleaved with a fragmented handshake message")
        if ctype == _APPLICATION_DATA:
            if self._phase is not _APPLICATION:
                raise UnexpectedMessage("application data during the handshake")
            if not content:
                self.limits.empty_record()
                return None
            self.limits.application_data()
            return ApplicationData(content)
        if ctype == _HANDSHAKE:
            if not content:
                raise UnexpectedMessage("empty handshake record")
            self.limits.handshake_fragment()
            self._hs.add(content)
            return None
        if ctype == _ALERT:
            return self._alert(content)
        if ctype == _INVALID:  # a skipped record or a dropped CCS, already counted
            return None
        if ctype == _CCS and self._version == TLS12:  # plaintext and well formed: _read_record12 saw to it
            return ChangeCipherSpec()
        # A protected CCS, type 0 or an unknown inner type (a TLS 1.3 plaintext CCS never gets here).
        raise UnexpectedMessage(f"record content type {ctype} not acceptable here")

    def _alert(self, content: bytes) -> Event | None:
        if len(content) != 2:
            raise DecodeError("alert record is not 2 bytes")
        level, description = content[0], content[1]
        if description == AlertDescription.close_notify:
            self.enter(_CLOSED)
            self._rx.clear()
            if self._version == TLS12 and self.write is not None and not self._close_sent:
                # RFC 5246 §7.2.1: answer with our own close_notify at once and write nothing more (TLS 1.3
                # made closure per direction, RFC 8446 §6.1; TLS 1.2 did not). Queued, as a KeyUpdate answer.
                self._out += self._send(_ALERT, _CLOSE_NOTIFY)
                self._close_sent = True
            return CloseNotify()
        if self._version == TLS12:
            # RFC 5246 §7.2: the level says it. A warning (user_canceled, no_renegotiation, ...) is
            # ignored but counted; a level that is neither is illegal_parameter, as OpenSSL and
            # BoringSSL answer it.
            if level == AlertLevel.warning:
                self.limits.warning_alert()
                return None
            if level != AlertLevel.fatal:
                raise IllegalParameter(f"alert level {level}")
            raise PeerAlert(description, level)
        # TLS 1.3 (§6): the level is implied by the description, so it is ignored here.
        if description == AlertDescription.user_canceled:
            self.limits.warning_alert()
            return None
        raise PeerAlert(description, level)

    # -- sending --------------------------------------------------------------------------------

    def _drain(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def data_to_send(self) -> bytes:
        """Bytes the layer queued itself (a KeyUpdate answer); returned once, then cleared.

        Every ``send_*`` method also returns these first, so wire order always follows key order
        even if the caller forgets to call this.
        """
        return self._drain()

    def _send(self, ctype: int, data: BytesLike, into: bytearray | None = None) -> bytes | bytearray:
        """The one send path: the queued bytes, then ``data`` as records of at most 2^14 bytes each.

        Protected iff a write key is set. One record (no ``into``) is sealed by the AEAD's own output,
        which costs less than a buffer prepared to seal into; anything longer is sealed straight into
        one buffer, ``into`` when given (resized to fit), else a new one.
        """
        write = self.write
        if write is None:
            return self._drain() + plaintext_records(ctype, data)
        n = len(data)
        if into is None and n <= MAX_PLAINTEXT:
            record = write.seal(ctype, data)
            return self._drain() + record if self._out else record
        queued = self._out
        size = len(queued) + write.record_overhead * max(1, -(-n // MAX_PLAINTEXT)) + n
        out = bytearray(size) if into is None else into
        if len(out) > size:
            del out[size:]
        elif len(out) < size:
            out += bytes(size - len(out))
        pos = len(queued)
        out[:pos] = queued
        queued.clear()
        # The view is released on the way out so that the buffer may grow again.
        with memoryview(out) as dst, dst[pos:] as room:
            write.seal_run_into(room, ctype, data)
        return out

    def send_handshake(self, data: BytesLike) -> bytes:
        """Frame handshake messages into records of at most 2^14 bytes (encrypted iff a write key is set)."""
        if not data:
            return self._drain()
        return bytes(self._send(_HANDSHAKE, data))

    def send_application_data(self, data: BytesLike, into: bytearray | None = None) -> bytes | bytearray:
        """Frame and protect application data; empty data gives one empty record (a keepalive).

        The bulk path: the records are sealed straight into the buffer returned, a new one or
        ``into`` (resized to fit): a caller that writes out each result before it seals the next
        can pass the previous one back and keep allocating nothing. Without ``into``, data that
        fits one record comes back as bytes.

        Where the write key reaches its usage limit, a KeyUpdate goes in between and the rest is
        sealed under the next key (then the result is one new buffer, not ``into``). TLS 1.2 has no
        KeyUpdate: there the records that still fit are followed by our close_notify, the key's last
        record, the rest is not sent, and :attr:`write_exhausted` is set.
        """
        write = self.write
        if write is None:
            raise InternalError("application data without a write key")
        n = len(data)
        if write.seq + (1 if n <= MAX_PLAINTEXT else -(-n // MAX_PLAINTEXT)) > self._key_update_seq:
            if self._version == TLS12:
                return self._send_until_exhausted(data)
            return self._send_across_key_updates(data)
        return self._send(_APPLICATION_DATA, data, into)

    def _send_until_exhausted(self, data: BytesLike) -> bytes:
        """TLS 1.2 at the usage limit: the records the write key may still protect, then its close_notify."""
        write = self.write
        assert write is not None
        parts: list[bytes | bytearray] = []
        room = self._key_update_seq - write.seq
        if room > 0:
            with memoryview(data) as view, view[: room * MAX_PLAINTEXT] as piece:
                parts.append(self._send(_APPLICATION_DATA, piece))
        parts.append(self._seal_last_record())
        return b"".join(parts)

    def _seal_last_record(self) -> bytes:
        """TLS 1.2: the close_notify that is the write key's last record (the queue before it)."""
        if self._write_exhausted:
            raise InternalError("the write key reached its usage limit: the connection was closed")
        record = bytes(self._send(_ALERT, _CLOSE_NOTIFY))
        self._close_sent = True
        self._write_exhausted = True
        return record

    def _send_across_key_updates(self, data: BytesLike) -> bytes:
        """The records the write key may still protect, its KeyUpdate, the rest under the next key, ..."""
        parts: list[bytes | bytearray] = []
        with memoryview(data) as view:
            off, n = 0, len(view)
            while True:
                room = self.records_before_key_update()
                if room <= 0:
                    self._out += self._seal_key_update(False)  # the key's last record
                    continue
                end = min(n, off + room * MAX_PLAINTEXT)
                with view[off:end] as piece:
                    parts.append(self._send(_APPLICATION_DATA, piece))
                off = end
                if off >= n:
                    return b"".join(parts)

    def send_alert(self, description: int, level: int = 2) -> bytes:
        if self._write_exhausted:
            raise InternalError("the write key reached its usage limit: the connection was closed")
        if description == AlertDescription.close_notify:
            self._close_sent = True
        return bytes(self._send(_ALERT, bytes((level, description))))

    def send_ccs(self) -> bytes:
        """A plaintext change_cipher_spec record (the queue first).

        TLS 1.3: the middlebox-compatibility one (§D.4), plaintext whatever key is set. TLS 1.2: the
        one that announces our write protection, so it must go out before
        :meth:`set_write_protection`; after it, it would have to be protected (a renegotiation).
        """
        if self._version == TLS12 and self.write is not None:
            raise InternalError("TLS 1.2 sends its change_cipher_spec before the write protection is set")
        return self._drain() + CCS_RECORD

    def _seal_key_update(self, request_peer: bool) -> bytes:
        write = self.write
        if write is None:
            raise InternalError("KeyUpdate without a write key")
        message = bytes((HandshakeType.key_update, 0, 0, 1, request_peer))
        record = write.seal(_HANDSHAKE, message)
        self.set_write_protection(write.next_generation())
        self.key_updates_sent += 1
        return record

    def send_key_update(self, request_peer: bool) -> bytes:
        """Send KeyUpdate under the current write key, then move the write key one generation on."""
        return self._drain() + self._seal_key_update(request_peer)
