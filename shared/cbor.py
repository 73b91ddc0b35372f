"""Strict deterministic CBOR (RFC 8949 §4.2.1), restricted to the types the channel and the blob use.

Both ends of the channel must agree byte for byte on what they accept, and secured parses what a
possibly compromised appd sends, so decoding is our own single pass that builds the value and refuses,
as it goes, everything outside the subset: tags, indefinite lengths, floats and simple values other
than false/true/null, non-shortest heads, map keys that are not integers or text or are not in strictly
increasing bytewise order (duplicates included), invalid UTF-8, nesting deeper than ``MAX_DEPTH``, more
than ``MAX_ITEMS`` items, trailing bytes. No C parser sees the other daemon's bytes. Encoding is
cbor2's deterministic mode, applied to our own values only; tests hold the two to the same subset.
"""

from __future__ import annotations

import cbor2

MAX_DEPTH = 4
"""Deepest nesting any of our messages needs (inner map -> peer_certs array -> byte string is 2)."""
MAX_ITEMS = 1024
"""Most data items in one message (a certificate chain is a handful; a hello's versions at most 16)."""

_MIN_FOR_AI = (24, 1 << 8, 1 << 16, 1 << 32)  # below these, additional information 24..27 is not shortest
_SIMPLE = {20: False, 21: True, 22: None}


class CBORFault(ValueError):
    """Input outside the strict CBOR subset; ``reason`` is one of the stable CBOR-level reasons."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def encode(value: object) -> bytes:
    """Deterministic CBOR of our own value (ints, bytes, text, lists, maps, booleans, None).

    cbor2 orders map keys length-first (RFC 7049 canonical), which is RFC 8949's bytewise order only
    while every key encodes with its length in the head byte: integers 0..23 and text under 24 bytes,
    the only keys our messages use. Any other key in the top-level map is refused here, so the decoder
    never sees an order it refuses from us (our messages nest no further maps).
    """
    if isinstance(value, dict):
        for key in value:
            if not ((type(key) is int and 0 <= key < 24) or (type(key) is str and len(key.encode()) < 24)):
                raise ValueError(f"map key {key!r} is outside the keys whose order cbor2 gets right")
    out: bytes = cbor2.dumps(value, canonical=True)
    return out


def decode(data: bytes | bytearray, max_size: int) -> object:
    """Decode one strictly deterministic CBOR item; raise :class:`CBORFault` for anything else.

    Byte strings come back as the input's type: decode a ``bytearray`` to get secrets in buffers
    the caller can wipe.
    """
    if len(data) > max_size:
        raise CBORFault("oversize", f"{len(data)} > {max_size} bytes")
    decoder = _Decoder(data)
    value, end = decoder.item(0, 0)
    if end != len(data):
        raise CBORFault("trailing_bytes", f"{len(data) - end} bytes after the item")
    return value


class _Decoder:
    __slots__ = ("buf", "items")

    def __init__(self, buf: bytes | bytearray) -> None:
        self.buf = buf
        self.items = 0

    def item(self, pos: int, depth: int) -> tuple[object, int]:
        """The item at ``pos`` and the offset just after it."""
        buf = self.buf
        self.items += 1
        if self.items > MAX_ITEMS:
            raise CBORFault("malformed", "too many items")
        if depth > MAX_DEPTH:
            raise CBORFault("malformed", "nested too deep")
        if pos >= len(buf):
            raise CBORFault("malformed", "truncated")
        head = buf[pos]
        major, ai = head >> 5, head & 0x1F
        pos += 1
        if major == 6:
            raise CBORFault("tag", "semantic tags are not allowed")
        if ai < 24:
            arg = ai
        elif ai < 28:
            if major == 7:
                raise CBORFault("malformed", "floats and simple values other than false/true/null")
            width = 1 << (ai - 24)
            if width > len(buf) - pos:
                raise CBORFault("malformed", "truncated")
            arg = int.from_bytes(buf[pos : pos + width], "big")
            pos += width
            if arg < _MIN_FOR_AI[ai - 24]:
                raise CBORFault("non_canonical", "argument not in its shortest form")
        elif ai == 31:
            if major == 7:
                raise CBORFault("malformed", "break outside an indefinite-length item")
            raise CBORFault("indefinite_length", "indefinite-length items are not allowed")
        else:
            raise CBORFault("malformed", "reserved additional information")
        if major == 0:
            return arg, pos
        if major == 1:
            return -1 - arg, pos
        if major == 2 or major == 3:
            end = pos + arg
            if end > len(buf):
                raise CBORFault("malformed", "truncated")
            if major == 2:
                return buf[pos:end], end
            try:
                return str(buf[pos:end], "utf-8"), end
            except UnicodeDecodeError:
                raise CBORFault("malformed", "text string is not valid UTF-8") from None
        if major == 4:
            if arg > len(buf) - pos:  # every item takes at least one byte
                raise CBORFault("malformed", "truncated")
            out: list[object] = []
            for _ in range(arg):
                value, pos = self.item(pos, depth + 1)
                out.append(value)
            return out, pos
        if major == 5:
            return self._map(pos, arg, depth)
        if ai in _SIMPLE:  # major 7
            return _SIMPLE[ai], pos
        raise CBORFault("malformed", "floats and simple values other than false/true/null")

    def _map(self, pos: int, count: int, depth: int) -> tuple[dict[object, object], int]:
        """Keys are integers or text, strictly increasing as encoded bytes (so never repeated)."""
        buf = self.buf
        if count > (len(buf) - pos) // 2:
            raise CBORFault("malformed", "truncated")
        out: dict[object, object] = {}
        prev = b""
        for _ in range(count):
            if pos < len(buf) and buf[pos] >> 5 not in (0, 1, 3):
                raise CBORFault("malformed", "map keys must be integers or text")
            start = pos
            key, pos = self.item(pos, depth + 1)
            encoded = bytes(buf[start:pos])
            if encoded <= prev:
                if encoded == prev:
                    raise CBORFault("duplicate_key", "a map key appears twice")
                raise CBORFault("non_canonical", "map keys not in bytewise order")
            prev = encoded
            out[key], pos = self.item(pos, depth + 1)
        return out, pos
