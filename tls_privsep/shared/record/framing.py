"""Record framing (RFC 8446 §5.1): content types, size limits, the 5-byte header, the receive buffer.

The one place that reads a record header (:func:`read_header`) and the one that writes one
(:func:`header`). Nothing here knows about keys: protection is :mod:`.protection`'s job.
"""

from __future__ import annotations

import enum
import struct
from typing import TypeAlias

from tls_privsep.shared.errors import LocalAlert, RecordOverflow, UnexpectedMessage

BytesLike: TypeAlias = bytes | bytearray | memoryview


class ContentType(enum.IntEnum):
    invalid = 0  # never on the wire: what the layer calls a record it consumed without content
    change_cipher_spec = 20
    alert = 21
    handshake = 22
    application_data = 23


MAX_PLAINTEXT = 2**14
MAX_CIPHERTEXT = 2**14 + 256
MAX_CIPHERTEXT12 = 2**14 + 2048  # TLS 1.2's bound (RFC 5246 §6.2.3), room its compression and CBC padding needed
_HEADER = struct.Struct(">BHH")  # content type, legacy_record_version (0x0303, never checked on receipt), length
HEADER_LEN = _HEADER.size
_KNOWN_TYPES = frozenset(ContentType) - {ContentType.invalid}
# A buffer that grew past this while bulk data went through is dropped once it is drained.
_KEEP_BUFFER = 2 * (HEADER_LEN + MAX_CIPHERTEXT)


def read_header(buf: BytesLike, pos: int, max_length: int = MAX_CIPHERTEXT) -> tuple[int, int]:
    """The content type and length of the record whose 5-byte header starts at ``buf[pos]``.

    Raises the alert for a header no record can have: an unknown content type or a length over
    ``max_length`` (2^14+256 in TLS 1.3; the layer passes TLS 1.2's 2^14+2048). The legacy version is
    ignored, as RFC 8446 §5.1 says (a TLS 1.2 protection checks it on the records it opens). The
    caller checks the 5 bytes are there.

    TLS 1.2 keeps its own bound although, with AEAD suites only, no legal record is over 2^14+24: a
    record between the two bounds is one RFC 5246 lets through the framing, so it is judged as the RFC
    judges it, by its tag (bad_record_mac) or, if that verifies, by its plaintext (record_overflow).
    """
    ctype, _, length = _HEADER.unpack_from(buf, pos)
    if ctype not in _KNOWN_TYPES:
        raise UnexpectedMessage(f"unknown record content type {ctype}")
    if length > max_length:
        raise RecordOverflow(f"record longer than {max_length} bytes")
    return ctype, length


def header(ctype: int, length: int) -> bytes:
    """A record header: ``ctype``, legacy_record_version 0x0303, ``length``."""
    return _HEADER.pack(ctype, 0x0303, length)


CCS_RECORD = header(ContentType.change_cipher_spec, 1) + b"\x01"
"""A plaintext change_cipher_spec record: TLS 1.3's middlebox-compatibility one (§D.4), and TLS 1.2's,
which goes out before the write protection is set."""


def plaintext_records(ctype: int, data: BytesLike) -> bytes:
    """``data`` as unprotected records of at most 2^14 bytes each (before any key is set)."""
    n = len(data)
    return b"".join(
        header(ctype, min(n - start, MAX_PLAINTEXT)) + data[start : start + MAX_PLAINTEXT]
        for start in range(0, max(n, 1), MAX_PLAINTEXT)
    )


def whole_records(buf: bytes | bytearray) -> int:
    """How many bytes at the front of ``buf`` are whole records (framing only, no decryption).

    A header no record can have (unknown type, longer than 2^14+2048) makes the whole buffer count:
    whoever parses it next answers it with the precise alert, instead of waiting for bytes that a
    broken peer will never send. The bound is TLS 1.2's, the larger: appd relays handshake records
    before it knows the version, and a record TLS 1.2 frames must reach secured whole (a TLS 1.3
    record between the two bounds then gets its record_overflow from secured, on its header).
    """
    pos = 0
    while len(buf) - pos >= HEADER_LEN:
        try:
            _, length = read_header(buf, pos, MAX_CIPHERTEXT12)
        except LocalAlert:
            return len(buf)
        if len(buf) - pos - HEADER_LEN < length:
            break
        pos += HEADER_LEN + length
    return pos


class ReceiveBuffer:
    """Received bytes, the unparsed ones at ``buf[off:end]``; the record paths advance ``off``.

    One bytearray that keeps its size while it is in use: new bytes are copied in after the
    unparsed ones, which are first moved to the front when the end is reached. At bulk sizes, a new
    buffer per read (or a bytearray cut at the front and grown again) has the allocator map fresh
    pages for every read, which costs more than decrypting them.
    """

    __slots__ = ("buf", "end", "off")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.off = 0
        self.end = 0

    def feed(self, data: BytesLike) -> None:
        n = len(data)
        buf, off, end = self.buf, self.off, self.end
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
        self.off, self.end = off, end + n

    def release_drained(self) -> None:
        """Everything is parsed: drop a buffer a bulk transfer grew, rather than keep it while idle."""
        if self.off == self.end and len(self.buf) > _KEEP_BUFFER:
            self.clear()

    def take_all(self) -> bytes:
        """The unparsed bytes, handed over; the buffer is emptied."""
        out = bytes(self.buf[self.off : self.end])
        self.clear()
        return out

    def clear(self) -> None:
        self.buf = bytearray()
        self.off = self.end = 0
