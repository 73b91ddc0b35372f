"""The sans-IO TLS 1.3 record layer (RFC 8446 §5).

Bytes go in through :meth:`RecordLayer.receive_data`, events come out of
:meth:`RecordLayer.next_event`, and the ``send_*`` methods return the bytes to write. No sockets, no
trio: the handshake engine in secured and the bulk loop in appd drive the same object.

Parsing is lazy on purpose: a record is only deprotected when an event is asked for and none is
pending, so a caller that changes the read key after an event (ClientHello, Finished, KeyUpdate) gets
the following records opened under the new key.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from tls_privsep.shared.errors import (
    AlertDescription,
    BadRecordMac,
    DecodeError,
    IllegalParameter,
    InternalError,
    LocalAlert,
    PeerAlert,
    RecordOverflow,
    UnexpectedMessage,
)
from tls_privsep.shared.keyschedule import SUITES, CipherSuite, next_traffic_secret, traffic_key_iv
from tls_privsep.shared.state import wipe_bytes

BytesLike: TypeAlias = bytes | bytearray | memoryview


class ContentType(enum.IntEnum):
    invalid = 0
    change_cipher_spec = 20
    alert = 21
    handshake = 22
    application_data = 23


class HandshakeType(enum.IntEnum):
    client_hello = 1
    server_hello = 2
    new_session_ticket = 4
    end_of_early_data = 5
    encrypted_extensions = 8
    certificate = 11
    certificate_request = 13
    certificate_verify = 15
    finished = 20
    key_update = 24
    message_hash = 254


MAX_PLAINTEXT = 2**14
MAX_CIPHERTEXT = 2**14 + 256
# The largest ClientHello body its own length fields allow (RFC 8446 §4.1.2): version 2, random 32,
# session id 1+32, cipher suites 2+(2^16-2), compression methods 1+(2^8-1), extensions 2+(2^16-1).
# OpenSSL's server limit (CLIENT_HELLO_MAX_LENGTH) is the same number; it spans 9 full records.
MAX_CLIENT_HELLO = 2 + 32 + 1 + 32 + 2 + (2**16 - 2) + 1 + (2**8 - 1) + 2 + (2**16 - 1)
_MAX_INNER = MAX_PLAINTEXT + 1  # content plus the inner content-type byte (§5.4)
_TAG_LEN = 16  # all three suites use a 16-byte tag
_SEQ_LIMIT = 2**64  # §5.3: a sequence number must never wrap
_HEADER_LEN = 5
_LEGACY_VERSION = b"\x03\x03"
_CCS_RECORD = b"\x14\x03\x03\x00\x01\x01"
_KNOWN_TYPES = frozenset((20, 21, 22, 23))
# The content types as plain ints for the per-record code: an IntEnum member costs a lookup each time.
_INVALID, _CCS, _ALERT, _HANDSHAKE, _APPLICATION_DATA = 0, 20, 21, 22, 23
_KEEP_BUFFER = 2 * (_HEADER_LEN + MAX_CIPHERTEXT)  # a receive buffer up to this size is kept when drained


def whole_records(buf: bytes | bytearray) -> int:
    """How many bytes at the front of ``buf`` are whole records (§5.1 framing only, no decryption).

    A header no record can have (unknown type, longer than 2^14+256) makes the whole buffer count:
    whoever parses it next answers it with the precise alert, instead of waiting for bytes that a
    broken peer will never send.
    """
    pos = 0
    while len(buf) - pos >= _HEADER_LEN:
        length = (buf[pos + 3] << 8) | buf[pos + 4]
        if buf[pos] not in _KNOWN_TYPES or length > MAX_CIPHERTEXT:
            return len(buf)
        if len(buf) - pos - _HEADER_LEN < length:
            break
        pos += _HEADER_LEN + length
    return pos


def sealed_size(length: int, padding: int = 0) -> int:
    """The wire size of a protected record holding ``length`` bytes of content."""
    return _HEADER_LEN + length + 1 + padding + _TAG_LEN


def _content_end(inner: bytes | memoryview) -> int:
    """Where a deprotected record's content ends, its type byte included (§5.4: padding stripped)."""
    n = len(inner)
    if n > _MAX_INNER:
        raise RecordOverflow("inner plaintext longer than 2^14+1 bytes")
    if n and not inner[n - 1]:  # padding: rare, so a copy to strip it is fine
        n = len(bytes(inner).rstrip(b"\x00"))
    if not n:
        raise UnexpectedMessage("protected record without a content type")
    return n


class Protection:
    """One direction's AEAD state: the traffic secret, the AEAD object and the sequence number.

    The AEAD object is built once per key because building it is the expensive part of a small
    record. The secret is kept (as a bytearray, so :meth:`wipe` can overwrite it) because KeyUpdate
    and the secured->appd export need it; key and IV are not, they are derived from it.
    """

    __slots__ = ("_aead", "_hash_name", "_iv", "secret", "seq", "suite")

    def __init__(self, suite: int, secret: bytes | bytearray, seq: int = 0) -> None:
        params = SUITES.get(suite)
        if params is None:
            raise ValueError(f"unsupported cipher suite 0x{suite:04x}")
        if len(secret) != params.hash_len:
            raise ValueError("traffic secret length does not match the suite's hash")
        if not 0 <= seq < _SEQ_LIMIT:
            raise ValueError("sequence number out of range")
        self.suite = suite
        self.seq = seq
        self.secret = bytearray(secret)
        self._hash_name = params.hash_name
        key, iv = traffic_key_iv(params, bytes(self.secret))
        self._iv = int.from_bytes(iv, "big")
        self._aead: AESGCM | ChaCha20Poly1305 | None = (
            ChaCha20Poly1305(key) if suite == CipherSuite.TLS_CHACHA20_POLY1305_SHA256 else AESGCM(key)
        )

    def __repr__(self) -> str:
        return f"Protection(suite=0x{self.suite:04x}, seq={self.seq})"

    def _next_nonce(self) -> tuple[AESGCM | ChaCha20Poly1305, bytes]:
        aead = self._aead
        if aead is None:
            raise InternalError("record protection used after wipe")
        if self.seq >= _SEQ_LIMIT:
            raise InternalError("sequence number exhausted")
        return aead, (self._iv ^ self.seq).to_bytes(12, "big")

    def seal(self, content_type: int, data: BytesLike, padding: int = 0) -> bytes:
        """Protect one record and return it with its header (outer type application_data).

        For a handshake message, an alert or a small write: the AEAD's own output and one join cost
        less than preparing a buffer to seal into (bulk goes through :meth:`seal_run_into`).
        """
        inner_len = len(data) + 1 + padding
        if padding < 0:
            raise ValueError("negative padding")
        if inner_len > _MAX_INNER:
            raise ValueError("record content plus padding exceeds 2^14 bytes")
        header = b"\x17\x03\x03" + (inner_len + _TAG_LEN).to_bytes(2, "big")
        inner = b"".join((data, content_type.to_bytes(1, "big"), bytes(padding)))
        aead, nonce = self._next_nonce()
        record = header + aead.encrypt(nonce, inner, header)
        self.seq += 1
        return record

    def seal_run_into(self, out: memoryview, content_type: int, data: BytesLike) -> int:
        """Protect ``data`` as consecutive records of at most 2^14 bytes each (no padding) into ``out``.

        Returns the bytes written (``out`` needs :func:`sealed_size` per record). Empty ``data`` gives
        one empty record. The same records as :meth:`seal` called once per 2^14-byte piece, written
        straight into ``out`` in one loop: at bulk sizes a copy per record, or the per-record method
        call and checks, cost as much as the AEAD itself.
        """
        aead, _ = self._next_nonce()  # the checks; each record's nonce is computed below
        n = len(data)
        count = max(1, -(-n // MAX_PLAINTEXT))
        if self.seq + count > _SEQ_LIMIT:
            raise InternalError("sequence number exhausted")
        type_byte = content_type.to_bytes(1, "big")
        full_header = b"\x17\x03\x03" + (_MAX_INNER + _TAG_LEN).to_bytes(2, "big")
        iv, seq, pos = self._iv, self.seq, 0
        with memoryview(data) as src:
            for start in range(0, max(n, 1), MAX_PLAINTEXT):
                size = min(n - start, MAX_PLAINTEXT)
                if size == MAX_PLAINTEXT:
                    header = full_header
                else:
                    header = b"\x17\x03\x03" + (size + 1 + _TAG_LEN).to_bytes(2, "big")
                body = pos + _HEADER_LEN
                end = body + size + 1 + _TAG_LEN
                # The AEAD takes its input in one piece, and must not read where it writes: join a copy.
                with src[start : start + size] as chunk, out[body:end] as sealed:
                    aead.encrypt_into((iv ^ seq).to_bytes(12, "big"), b"".join((chunk, type_byte)), header, sealed)
                out[pos:body] = header
                seq += 1
                pos = end
        self.seq = seq
        return pos

    def open(self, header: BytesLike, ciphertext: BytesLike) -> tuple[int, bytes]:
        """Deprotect one record; return (inner content type, content without padding).

        The sequence number only advances on success, so a failed trial decryption (skipped early
        data) leaves the state untouched.
        """
        aead, nonce = self._next_nonce()
        if len(ciphertext) < _TAG_LEN:
            raise BadRecordMac("protected record shorter than its tag")
        try:
            inner = aead.decrypt(nonce, ciphertext, header)
        except InvalidTag:
            raise BadRecordMac("record authentication failed") from None
        self.seq += 1
        n = _content_end(inner)
        return inner[n - 1], inner[: n - 1]

    def open_into(self, header: BytesLike, ciphertext: BytesLike, out: memoryview) -> tuple[int, int]:
        """Deprotect one record into ``out``; return (inner content type, length of the content).

        ``out`` must be exactly ``len(ciphertext) - 16`` bytes: the content lands at its front, the
        type byte and any padding after it. On failure ``out`` may hold unauthenticated bytes, which
        the caller must drop. The sequence number advances as in :meth:`open`.
        """
        aead, nonce = self._next_nonce()
        if len(ciphertext) < _TAG_LEN:
            raise BadRecordMac("protected record shorter than its tag")
        try:
            aead.decrypt_into(nonce, ciphertext, header, out)
        except InvalidTag:
            raise BadRecordMac("record authentication failed") from None
        self.seq += 1
        n = _content_end(out)
        return out[n - 1], n - 1

    def next_generation(self) -> Protection:
        """The protection for application_traffic_secret_N+1 (KeyUpdate, §7.2); seq restarts at 0."""
        if self._aead is None:
            raise InternalError("record protection used after wipe")
        return Protection(self.suite, next_traffic_secret(self._hash_name, bytes(self.secret)))

    def wipe(self) -> None:
        """Overwrite the secret in place and drop the key; the object is unusable afterwards."""
        wipe_bytes(self.secret)
        self._aead = None
        self._iv = 0


@dataclass(frozen=True, slots=True)
class HandshakeMessage:
    msg_type: int
    body: bytes

    @property
    def raw(self) -> bytes:
        """The message as it goes into the transcript hash (4-byte header + body)."""
        return self.msg_type.to_bytes(1, "big") + len(self.body).to_bytes(3, "big") + self.body


@dataclass(frozen=True, slots=True)
class ApplicationData:
    """Decrypted application data: one record's, or a run of records' (``next_event(max_data)``)."""

    data: bytes | bytearray
    records: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class CloseNotify:
    pass


@dataclass(frozen=True, slots=True)
class KeyUpdated:
    """The peer's KeyUpdate was applied (and answered, if it asked: see ``data_to_send``)."""

    update_requested: bool


Event: TypeAlias = HandshakeMessage | ApplicationData | CloseNotify | KeyUpdated

_SKIP_NONE = 0
_SKIP_TRIAL = 1  # rejected 0-RTT: drop records that fail deprotection under the handshake key
_SKIP_OUTER_APP = 2  # after HRR: drop every outer application_data record until a handshake record


class RecordLayer:
    """Record framing, protection, reassembly and the limits that keep a peer from spinning us.

    Any peer misbehaviour raises a :class:`shared.errors.LocalAlert` subclass (send that alert and
    close); an alert from the peer raises :class:`shared.errors.PeerAlert`. After either, the
    object must not be used for receiving any more.
    """

    def __init__(
        self,
        *,
        max_handshake_message: int = MAX_CLIENT_HELLO + 4,
        max_empty_records: int = 32,
        max_key_updates: int = 32,
        max_warning_alerts: int = 4,
        max_handshake_records: int = 64,
        check_handshake_header: Callable[[int, int], None] | None = None,
    ) -> None:
        self.max_handshake_message = max_handshake_message  # header included
        # Called with (type, length) of each handshake message as soon as its 4-byte header is in,
        # before the size limit and before any of its body is buffered; raises the alert to send.
        self.check_handshake_header = check_handshake_header
        self.max_empty_records = max_empty_records
        self.max_key_updates = max_key_updates
        self.max_warning_alerts = max_warning_alerts
        self.max_handshake_records = max_handshake_records
        self.read: Protection | None = None
        self.write: Protection | None = None
        self.application_mode = False
        self.ccs_allowed = False
        self.closed = False
        self._buf = bytearray()  # raw received bytes: the unparsed ones are _buf[_off:_end]
        self._off = 0
        self._end = 0
        self._hs = bytearray()  # handshake bytes not yet returned as messages; start at _hs_off
        self._hs_off = 0
        self._out = bytearray()  # bytes we queued ourselves (KeyUpdate answers)
        self._empty_run = 0
        self._key_update_run = 0
        self._warning_run = 0
        self._handshake_records = 0  # every record taken before application_mode
        self._skip = _SKIP_NONE
        self._skip_budget = 0
        self._held: tuple[int, bytes] | None = None  # a record a run of application data stopped at
        self._deferred: LocalAlert | None = None  # an error a run found after some data

    def __repr__(self) -> str:
        return (
            f"RecordLayer(read={self.read!r}, write={self.write!r}, "
            f"application_mode={self.application_mode}, closed={self.closed})"
        )

    # -- keys -----------------------------------------------------------------------------------

    def set_read_key(self, suite: int, secret: bytes | bytearray, seq: int = 0) -> None:
        """Switch the read key; refused if handshake bytes of the old key are still buffered.

        RFC 8446 §5.1: handshake messages must not span a key change, so leftover bytes mean the
        peer put data after the message that triggers the change in the same record.
        """
        if self.has_pending_handshake():
            raise UnexpectedMessage("handshake data spans a key change")
        old, self.read = self.read, Protection(suite, secret, seq)
        if old is not None:
            old.wipe()

    def set_write_key(self, suite: int, secret: bytes | bytearray, seq: int = 0) -> None:
        old, self.write = self.write, Protection(suite, secret, seq)
        if old is not None:
            old.wipe()

    def skip_early_data(self, max_bytes: int) -> None:
        """Rejected 0-RTT (§4.2.10): drop records that fail deprotection, up to ``max_bytes``."""
        self._skip = _SKIP_TRIAL
        self._skip_budget = max_bytes

    def skip_plaintext_app_data(self, max_bytes: int = 2**14) -> None:
        """After a HelloRetryRequest (§4.2.10): drop outer application_data records, up to ``max_bytes``.

        The budget bounds how much a client may send us to discard; pass the ticket's
        max_early_data_size when known.
        """
        self._skip = _SKIP_OUTER_APP
        self._skip_budget = max_bytes

    # -- receiving ------------------------------------------------------------------------------

    def receive_data(self, data: BytesLike) -> None:
        """Buffer ``data``; it is parsed lazily by :meth:`next_event`.

        The buffer is one bytearray that keeps its size while it is in use: new bytes are copied in
        after the unparsed ones, which are first moved to the front when the end is reached. At bulk
        sizes, a new buffer per read (or a bytearray cut at the front and grown again) has the
        allocator map fresh pages for every read, which costs more than decrypting them.
        """
        if self.closed or not data:
            return
        n = len(data)
        buf, off, end = self._buf, self._off, self._end
        if off == end:
            off = end = 0
        if end + n > len(buf):
            if off:  # what is left is usually a part of one record
                buf[: end - off] = buf[off:end]
                off, end = 0, end - off
            if end + n > len(buf):
                buf += bytes(end + n - len(buf))
        with memoryview(buf) as view:  # bytearray slice assignment would copy bytes into a temporary
            view[end : end + n] = data
        self._off, self._end = off, end + n

    def _release_drained(self) -> None:
        """Everything is parsed: drop a buffer a bulk transfer grew, rather than keep it while idle."""
        if self._off == self._end and len(self._buf) > _KEEP_BUFFER:
            self._buf = bytearray()
            self._off = self._end = 0

    def has_pending_handshake(self) -> bool:
        return self._hs_off < len(self._hs)

    def take_unprocessed(self) -> bytes:
        """Hand over raw bytes not yet parsed (the records after the client Finished)."""
        if self.has_pending_handshake():
            raise UnexpectedMessage("handshake data follows the last handshake message")
        out = bytes(self._buf[self._off : self._end])
        self._buf = bytearray()
        self._off = self._end = 0
        return out

    def next_event(self, max_data: int = 0) -> Event | None:
        """The next event, or None when more data is needed (or after close_notify).

        Records that yield nothing (a dropped CCS, an empty record, a skipped early-data record, an
        ignored user_canceled) are consumed without returning, so None always means "feed me".

        With ``max_data``, the application data of consecutive records already buffered comes back
        as one event of at most ``max_data`` bytes (the first record is always taken whole), so a
        bulk reader pays per transport read, not per record. The run is decrypted straight into the
        event's buffer. It stops before a record that would not fit and after one that is not
        application data; that record is dispatched by the next call. An error after some data is
        raised by the next call too: the data before it is delivered, as record by record.
        """
        while not self.closed:
            msg = self._next_handshake_message()
            if msg is not None:
                return msg
            if self._deferred is not None:
                error, self._deferred = self._deferred, None
                raise error
            record = self._held
            if record is not None:
                self._held = None
            elif max_data and (end := self._run_end(max_data)):
                data = self._open_run(end)
                if data is not None:
                    return data
                continue
            else:
                record = self._next_record()
                if record is None:
                    self._release_drained()
                    return None
            event = self._dispatch(*record)
            if event is not None:
                return event
        return None

    def _run_end(self, max_data: int) -> int:
        """Where the run of whole application_data records at the front of the buffer ends; 0: none.

        Only in the steady state (application mode, a read key, nothing skipped, no handshake
        fragment): anything else, and any record the run cannot take, goes the general way.
        """
        if not self.application_mode or self.read is None or self._skip != _SKIP_NONE:
            return 0
        if self.has_pending_handshake():
            return 0
        buf, start = self._buf, self._off
        pos, room = start, max_data
        while self._end - pos >= _HEADER_LEN:
            length = (buf[pos + 3] << 8) | buf[pos + 4]
            end = pos + _HEADER_LEN + length
            if buf[pos] != _APPLICATION_DATA or not _TAG_LEN < length <= MAX_CIPHERTEXT or self._end < end:
                break
            if pos != start and length - _TAG_LEN > room:
                break
            room -= length - _TAG_LEN
            pos = end
        return 0 if pos == start else pos

    def _open_run(self, end: int) -> ApplicationData | None:
        """Decrypt the records up to ``end`` into one buffer; None if none of them held data."""
        read = self.read
        assert read is not None
        buf, pos = self._buf, self._off
        out = bytearray(end - pos)  # roomier than the plaintext: every record has a header and a tag
        filled = records = 0
        with memoryview(buf) as src, memoryview(out) as dst:
            while pos < end:
                body = pos + _HEADER_LEN
                record_end = body + ((buf[pos + 3] << 8) | buf[pos + 4])
                # Each record's inner plaintext lands right after the content before it: its type
                # byte and padding are overwritten by the next one.
                slot = filled + record_end - body - _TAG_LEN
                try:
                    with src[pos:body] as header, src[body:record_end] as ciphertext, dst[filled:slot] as inner:
                        ctype, n = read.open_into(header, ciphertext, inner)
                    self._off = pos = record_end
                    if ctype != _APPLICATION_DATA:
                        self._held = (ctype, bytes(dst[filled : filled + n]))
                        break
                    if not n:
                        self._count_empty()
                        continue
                except LocalAlert as exc:
                    if not filled:
                        raise
                    self._deferred = exc
                    break
                self._empty_run = self._key_update_run = self._warning_run = 0
                filled += n
                records += 1
        del out[filled:]
        return ApplicationData(out, records) if filled else None

    def _next_handshake_message(self) -> Event | None:
        hs, off = self._hs, self._hs_off
        avail = len(hs) - off
        if avail < 4:
            return None
        msg_type = hs[off]
        length = int.from_bytes(hs[off + 1 : off + 4], "big")
        # Judged on the header, before the size limit: a message of the wrong type is
        # unexpected_message and one of a fixed size announcing another length is decode_error,
        # whatever length it announces; only a message that may come here and may be long is
        # measured against the limit (docs/alerts.md).
        if self.application_mode:
            # Only a 1-byte KeyUpdate is acceptable after the handshake.
            if msg_type != HandshakeType.key_update:
                raise UnexpectedMessage(f"handshake message type {msg_type} after the handshake")
            if length != 1:
                raise DecodeError("KeyUpdate body is not 1 byte")
        elif self.check_handshake_header is not None:
            self.check_handshake_header(msg_type, length)
        if 4 + length > self.max_handshake_message:
            raise IllegalParameter(f"handshake message of {length} bytes exceeds the limit")
        if avail < 4 + length:
            return None
        body = bytes(hs[off + 4 : off + 4 + length])
        off += 4 + length
        if off == len(hs):
            hs.clear()
            off = 0
        self._hs_off = off
        if self.application_mode:
            return self._key_update(body[0])
        return HandshakeMessage(msg_type, body)

    def _key_update(self, value: int) -> KeyUpdated:
        if value not in (0, 1):
            raise IllegalParameter("KeyUpdate request_update out of range")
        if self.has_pending_handshake():
            raise UnexpectedMessage("KeyUpdate does not end its record")
        self._key_update_run += 1
        if self._key_update_run > self.max_key_updates:
            raise UnexpectedMessage("too many KeyUpdates without application data")
        if self.read is None:
            raise InternalError("KeyUpdate without a read key")
        old, self.read = self.read, self.read.next_generation()
        old.wipe()
        if value:
            self._out += self._seal_key_update(False)
        return KeyUpdated(bool(value))

    def _next_record(self) -> tuple[int, bytes] | None:
        """Take one whole record off the buffer: (content type, content), or None if incomplete.

        Returns type ``invalid`` for a record that was consumed but produced nothing (a dropped
        CCS or skipped early data); a protected record can never decode to type 0.
        """
        buf, off = self._buf, self._off
        if self._end - off < _HEADER_LEN:
            return None
        outer = buf[off]
        length = (buf[off + 3] << 8) | buf[off + 4]
        if outer not in _KNOWN_TYPES:
            raise UnexpectedMessage(f"unknown record content type {outer}")
        if length > MAX_CIPHERTEXT:
            raise RecordOverflow("record longer than 2^14+256 bytes")
        protected = outer == _APPLICATION_DATA and (
            self.read is not None or self._skip != _SKIP_NONE
        )
        if not protected:
            if length > MAX_PLAINTEXT:
                raise RecordOverflow("plaintext record longer than 2^14 bytes")
            if outer == _HANDSHAKE and self.read is not None:
                raise UnexpectedMessage("plaintext handshake record after keys were set")
            if outer == _APPLICATION_DATA and not self.application_mode:
                raise UnexpectedMessage("application data during the handshake")
        end = off + _HEADER_LEN + length
        if self._end < end:
            return None
        self._off = end
        if not self.application_mode:
            # Every record counts, dropped ones (CCS, skipped early data) too: each costs a parse
            # or a trial decryption, and a handshake needs only a handful (see max_handshake_records
            # in docs/configuration.md for the budget).
            self._handshake_records += 1
            if self._handshake_records > self.max_handshake_records:
                raise UnexpectedMessage("too many records before the handshake completed")
        if not protected:
            content = bytes(buf[off + _HEADER_LEN : end])
            if outer == _CCS:
                # §5: the compatibility CCS is dropped, but only in its one legal form and window.
                if not (self.ccs_allowed and content == b"\x01"):
                    raise UnexpectedMessage("unexpected change_cipher_spec record")
                self._count_empty()
                return _INVALID, b""
            if outer == _HANDSHAKE and self._skip == _SKIP_OUTER_APP:
                self._skip = _SKIP_NONE
            return outer, content
        header = bytes(buf[off : off + _HEADER_LEN])
        if self._skip == _SKIP_NONE:
            assert self.read is not None
            with memoryview(buf) as view, view[off + _HEADER_LEN : end] as payload:
                return self.read.open(header, payload)
        if self._skip == _SKIP_TRIAL and self.read is not None:
            try:
                with memoryview(buf) as view, view[off + _HEADER_LEN : end] as payload:
                    opened = self.read.open(header, payload)
            except BadRecordMac:
                pass
            else:
                self._skip = _SKIP_NONE
                return opened
        # Skipped: count the most early data this record can hold against the budget. §4.2.10
        # counts payload only, not the content-type byte; padding is invisible to us, so a record
        # is taken at its largest possible payload (an honest client is never over-charged).
        payload_len = max(0, length - _TAG_LEN - 1)
        self._skip_budget -= payload_len
        if self._skip_budget < 0:
            raise UnexpectedMessage("too much early data to skip")
        if not payload_len:  # non-empty ones are bounded by the budget; many small writes are legal
            self._count_empty()
        return _INVALID, b""

    def _count_empty(self) -> None:
        self._empty_run += 1
        if self._empty_run > self.max_empty_records:
            raise UnexpectedMessage("too many records without content")

    def _dispatch(self, ctype: int, content: bytes) -> Event | None:
        if self.has_pending_handshake() and ctype != _HANDSHAKE:
            raise UnexpectedMessage("record interleaved with a fragmented handshake message")
        if ctype == _APPLICATION_DATA:
            if not self.application_mode:
                raise UnexpectedMessage("application data during the handshake")
            if not content:
                self._count_empty()
                return None
            self._empty_run = self._key_update_run = self._warning_run = 0
            return ApplicationData(content)
        if ctype == _HANDSHAKE:
            if not content:
                raise UnexpectedMessage("empty handshake record")
            self._empty_run = self._warning_run = 0
            if self._hs_off:
                del self._hs[: self._hs_off]
                self._hs_off = 0
            self._hs += content
            return None
        if ctype == _ALERT:
            return self._alert(content)
        if ctype == _INVALID:  # a skipped record or a dropped CCS, already counted
            return None
        # A protected CCS, type 0 or an unknown inner type (a plaintext CCS never gets here).
        raise UnexpectedMessage(f"record content type {ctype} not acceptable here")

    def _alert(self, content: bytes) -> Event | None:
        if len(content) != 2:
            raise DecodeError("alert record is not 2 bytes")
        level, description = content[0], content[1]
        # TLS 1.3 (§6): the level is implied by the description, so it is ignored here.
        if description == AlertDescription.close_notify:
            self.closed = True
            self._buf = bytearray()
            self._off = self._end = 0
            return CloseNotify()
        if description == AlertDescription.user_canceled:
            self._warning_run += 1
            if self._warning_run > self.max_warning_alerts:
                raise UnexpectedMessage("too many warning alerts")
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

    def _records(self, ctype: int, data: BytesLike, allow_empty: bool, into: bytearray | None = None) -> bytearray:
        """The queued bytes, then ``data`` cut into records of at most 2^14 bytes, in one buffer.

        Protected records go into ``into`` when given (resized to fit), else into a new bytearray.
        """
        n = len(data)
        queued = self._out
        if n == 0 and not allow_empty:
            return bytearray(self._drain())
        starts = range(0, max(n, 1), MAX_PLAINTEXT)
        write = self.write
        if write is None:
            out = bytearray(queued)
            type_byte = ctype.to_bytes(1, "big")
            for start in starts:
                chunk = data[start : start + MAX_PLAINTEXT]
                out += type_byte + _LEGACY_VERSION + len(chunk).to_bytes(2, "big")
                out += chunk
            queued.clear()
            return out
        size = len(queued) + sealed_size(0) * len(starts) + n
        if into is None:
            out = bytearray(size)
        else:
            out = into
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

    def _seal_one(self, write: Protection, ctype: int, data: BytesLike) -> bytes:
        """The queued bytes, then ``data`` (at most 2^14 bytes) as one protected record.

        Most records are one of these (a handshake flight, an alert, a short write), and for them
        the AEAD's own output costs less than a buffer prepared to seal into.
        """
        record = write.seal(ctype, data)
        return self._drain() + record if self._out else record

    def send_handshake(self, data: BytesLike) -> bytes:
        """Frame handshake messages into records of at most 2^14 bytes (encrypted iff a write key is set)."""
        if self.write is not None and 0 < len(data) <= MAX_PLAINTEXT:
            return self._seal_one(self.write, ContentType.handshake, data)
        return bytes(self._records(ContentType.handshake, data, allow_empty=False))

    def send_application_data(self, data: BytesLike, into: bytearray | None = None) -> bytes | bytearray:
        """Frame and protect application data; empty data gives one empty record (a keepalive).

        The bulk path: the records are sealed straight into the buffer returned, a new one or
        ``into`` (resized to fit): a caller that writes out each result before it seals the next
        can pass the previous one back and keep allocating nothing. Without ``into``, data that
        fits one record comes back as bytes.
        """
        if self.write is None:
            raise InternalError("application data without a write key")
        if into is None and len(data) <= MAX_PLAINTEXT:
            return self._seal_one(self.write, ContentType.application_data, data)
        return self._records(ContentType.application_data, data, allow_empty=True, into=into)

    def send_alert(self, description: int, level: int = 2) -> bytes:
        alert = bytes((level, description))
        if self.write is not None:
            return self._seal_one(self.write, ContentType.alert, alert)
        return bytes(self._records(ContentType.alert, alert, allow_empty=False))

    def send_ccs(self) -> bytes:
        """The middlebox-compatibility CCS (§D.4): always plaintext."""
        return self._drain() + _CCS_RECORD

    def _seal_key_update(self, request_peer: bool) -> bytes:
        write = self.write
        if write is None:
            raise InternalError("KeyUpdate without a write key")
        message = b"\x18\x00\x00\x01" + (b"\x01" if request_peer else b"\x00")
        record = write.seal(ContentType.handshake, message)
        self.write = write.next_generation()
        write.wipe()
        return record

    def send_key_update(self, request_peer: bool) -> bytes:
        """Send KeyUpdate under the current write key, then move the write key one generation on."""
        return self._drain() + self._seal_key_update(request_peer)
