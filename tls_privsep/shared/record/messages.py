"""Handshake message reassembly (RFC 8446 §5.1): messages span records, and a record may hold several.

Bytes only: which messages may come, and how long they may be, is the layer's decision.
"""

from __future__ import annotations

import enum


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


# The largest ClientHello body its own length fields allow (RFC 8446 §4.1.2): version 2, random 32,
# session id 1+32, cipher suites 2+(2^16-2), compression methods 1+(2^8-1), extensions 2+(2^16-1).
# OpenSSL's server limit (CLIENT_HELLO_MAX_LENGTH) is the same number; it spans 9 full records.
MAX_CLIENT_HELLO = 2 + 32 + 1 + 32 + 2 + (2**16 - 2) + 1 + (2**8 - 1) + 2 + (2**16 - 1)
MESSAGE_HEADER_LEN = 4  # type (1) and body length (3)


class Reassembly:
    """Handshake bytes not yet returned as messages, from ``_off`` on."""

    __slots__ = ("_buf", "_off")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._off = 0

    def pending(self) -> bool:
        """Part of a message, or whole messages not taken yet: a key change must wait (§5.1)."""
        return self._off < len(self._buf)

    def add(self, fragment: bytes) -> None:
        if self._off:
            del self._buf[: self._off]
            self._off = 0
        self._buf += fragment

    def next_header(self) -> tuple[int, int] | None:
        """(type, body length) of the next message once its 4-byte header is in, before its body is."""
        buf, off = self._buf, self._off
        if len(buf) - off < MESSAGE_HEADER_LEN:
            return None
        return buf[off], int.from_bytes(buf[off + 1 : off + MESSAGE_HEADER_LEN], "big")

    def take(self, length: int) -> bytes | None:
        """The next message's body of ``length`` bytes (its header read), or None until it is all in."""
        buf, start = self._buf, self._off + MESSAGE_HEADER_LEN
        end = start + length
        if len(buf) < end:
            return None
        body = bytes(buf[start:end])
        if end == len(buf):
            buf.clear()
            end = 0
        self._off = end
        return body
