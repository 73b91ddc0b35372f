"""Strict deterministic CBOR (RFC 8949 §4.2.1), restricted to the types the channel and the blob use.

Both ends of the channel must agree byte for byte on what they accept, and secured parses what a
possibly compromised appd sends, so decoding is our own single pass that builds the value and refuses,
as it goes, everything outside the subset: tags, indefinite lengths, floats and simple values other
than false/true/null, non-shortest heads, map keys that are not integers or text or are not in strictly
increasing bytewise order (duplicates included), invalid UTF-8, nesting deeper than ``MAX_DEPTH``, more
than ``MAX_ITEMS`` items, trailing bytes. No C parser sees the other daemon's bytes.

Encoding is ours too, for the same subset: shortest heads, definite lengths, map keys sorted bytewise
by their encoding. It refuses (ValueError/TypeError) what the decoder would refuse from the sender's
type alone: other types, integers outside 64 bits, map keys that are not integers or text. Tests hold
both halves to cbor2's canonical mode wherever the two orders agree.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 4
"""Deepest nesting any of our messages needs (inner map -> peer_certs array -> byte string is 2)."""
MAX_ITEMS = 1024
"""Most data items in one message (a certificate chain is a handful; a hello's versions at most 16)."""

_MIN_FOR_AI = (24, 1 << 8, 1 << 16, 1 << 32)  # below these, additional information 24..27 is not shortest
_SIMPLE = {20: False, 21: True, 22: None}
_UINT64_MAX = (1 << 64) - 1


class CBORFault(ValueError):
    """Input outside the strict CBOR subset; ``reason`` is one of the stable CBOR-level reasons."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------

_ONE_BYTE = tuple(bytes((b,)) for b in range(256))
_PACK_1 = struct.Struct(">BB").pack
_PACK_2 = struct.Struct(">BH").pack
_PACK_4 = struct.Struct(">BI").pack
_PACK_8 = struct.Struct(">BQ").pack


def _head(major: int, arg: int) -> bytes:
    """An item's head: the major type and ``arg`` in its shortest form (§4.2.1)."""
    ib = major << 5
    if arg < 24:
        return _ONE_BYTE[ib | arg]
    if arg < 1 << 8:
        return _PACK_1(ib | 24, arg)
    if arg < 1 << 16:
        return _PACK_2(ib | 25, arg)
    if arg < 1 << 32:
        return _PACK_4(ib | 26, arg)
    if arg <= _UINT64_MAX:
        return _PACK_8(ib | 27, arg)
    raise ValueError("integer outside CBOR's 64-bit range (a bignum tag is not in our subset)")


def _put_bytes(value: bytes | bytearray, parts: list[bytes | bytearray]) -> None:
    parts += (_head(2, len(value)), value)


def _put_int(value: int, parts: list[bytes | bytearray]) -> None:
    if 0 <= value < 24:
        parts.append(_ONE_BYTE[value])
    else:
        parts.append(_head(0, value) if value >= 0 else _head(1, ~value))


def _put_text(value: str, parts: list[bytes | bytearray]) -> None:
    data = value.encode("utf-8")
    parts += (_head(3, len(data)), data)


def _put_array(value: list[object] | tuple[object, ...], parts: list[bytes | bytearray]) -> None:
    parts.append(_head(4, len(value)))
    for item in value:
        _ENCODERS.get(type(item), _put_other)(item, parts)


def _put_map(value: dict[object, object], parts: list[bytes | bytearray]) -> None:
    parts.append(_head(5, len(value)))
    keys = tuple(value)
    cached = _layouts.get(keys)
    if cached is not None and (cached[1] or _KEY_TYPES.issuperset(map(type, keys))):
        layout = cached[0]
    else:
        layout = _layout(keys)
    append, encoder = parts.append, _ENCODERS.get
    for encoded_key, key in layout:
        append(encoded_key)
        item = value[key]
        encoder(type(item), _put_other)(item, parts)


def _put_bool(value: bool, parts: list[bytes | bytearray]) -> None:
    parts.append(b"\xf5" if value else b"\xf4")


def _put_null(_value: None, parts: list[bytes | bytearray]) -> None:
    parts.append(b"\xf6")


def _put_other(value: object, parts: list[bytes | bytearray]) -> None:
    """A subclass of one of our types (IntEnum, say) goes as the plain type; anything else is refused."""
    for kind, convert in _PLAIN:
        if isinstance(value, kind):
            plain = convert(value)
            _ENCODERS[type(plain)](plain, parts)
            return
    raise TypeError(f"cannot encode {type(value).__name__} in strict CBOR")


_PLAIN: tuple[tuple[type, Callable[[Any], object]], ...] = (
    (bool, bool),  # before int, which it subclasses
    (int, int),
    (str, str),
    (bytes, bytes),
    (bytearray, bytes),
    (dict, dict),
    (list, list),
    (tuple, list),
)

_ENCODERS: dict[type, Callable[[Any, list[bytes | bytearray]], None]] = {
    bytes: _put_bytes,
    bytearray: _put_bytes,
    int: _put_int,
    str: _put_text,
    dict: _put_map,
    list: _put_array,
    tuple: _put_array,
    bool: _put_bool,
    type(None): _put_null,
}
"""One encoder per exact type: a dict lookup instead of a chain of isinstance checks per item."""

_Layout = list[tuple[bytes, object]]
_layouts: dict[tuple[object, ...], tuple[_Layout, bool]] = {}
"""Key order per key set, with whether all its keys are text. Equal tuples of text keys encode
alike; a tuple with integers also equals one holding True or 1.0 there, so it is used only after
checking that every key is exactly an int or a str."""
_MAX_LAYOUTS = 256  # the channel and the blob use a dozen key sets; others are simply not remembered
_KEY_TYPES = frozenset((int, str))


def _layout(keys: tuple[object, ...]) -> _Layout:
    """The map's keys in bytewise order of their encodings (§4.2.1), each with its encoding."""
    layout = sorted([(_key(k), k) for k in keys])  # distinct keys encode distinctly: no key is ever compared
    if len(_layouts) < _MAX_LAYOUTS and _KEY_TYPES.issuperset(map(type, keys)):
        _layouts[keys] = (layout, all(type(k) is str for k in keys))
    return layout


def _key(key: object) -> bytes:
    if type(key) is int and 0 <= key < 24:  # the blob's inner map: a key that is its own head
        return _ONE_BYTE[key]
    if isinstance(key, str):
        data = key.encode("utf-8")
        return _head(3, len(data)) + data
    if isinstance(key, int) and not isinstance(key, bool):
        return _head(0, key) if key >= 0 else _head(1, ~key)
    raise ValueError(f"map key of type {type(key).__name__}: only integers and text are allowed")


def encode(value: object) -> bytes:
    """Deterministic CBOR of our own value (ints, bytes, text, lists, maps, booleans, None)."""
    parts: list[bytes | bytearray] = []
    _ENCODERS.get(type(value), _put_other)(value, parts)
    return b"".join(parts)


def encode_mutable(value: object) -> bytearray:
    """:func:`encode` into a bytearray, for plaintexts with secrets that the caller wipes after use.

    Secrets given as bytearrays are copied exactly once, into the result.
    """
    parts: list[bytes | bytearray] = []
    _ENCODERS.get(type(value), _put_other)(value, parts)
    return bytearray().join(parts)


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


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


_KEY_MAJORS = frozenset((0, 1, 3))  # integers and text


class _Decoder:
    __slots__ = ("buf", "items", "size")

    def __init__(self, buf: bytes | bytearray) -> None:
        self.buf = buf
        self.size = len(buf)
        self.items = 0

    def item(self, pos: int, depth: int) -> tuple[object, int]:
        """The item at ``pos`` and the offset just after it."""
        items = self.items + 1
        if items > MAX_ITEMS:
            raise CBORFault("malformed", "too many items")
        self.items = items
        if depth > MAX_DEPTH:
            raise CBORFault("malformed", "nested too deep")
        if pos >= self.size:
            raise CBORFault("malformed", "truncated")
        buf = self.buf
        head = buf[pos]
        major, arg = head >> 5, head & 0x1F
        pos += 1
        if arg >= 24:  # the argument follows the head, or this is a refused form
            arg, pos = self._long_argument(major, arg, pos)
        # Most frequent first: byte strings, unsigned integers, text.
        if major == 2 or major == 3:
            end = pos + arg
            if end > self.size:
                raise CBORFault("malformed", "truncated")
            if major == 2:
                return buf[pos:end], end
            try:
                return str(buf[pos:end], "utf-8"), end
            except UnicodeDecodeError:
                raise CBORFault("malformed", "text string is not valid UTF-8") from None
        if major == 0:
            return arg, pos
        if major == 5:
            return self._map(pos, arg, depth)
        if major == 4:
            if arg > self.size - pos:  # every item takes at least one byte
                raise CBORFault("malformed", "truncated")
            item = self.item
            out: list[object] = []
            for _ in range(arg):
                value, pos = item(pos, depth + 1)
                out.append(value)
            return out, pos
        if major == 1:
            return -1 - arg, pos
        if major == 6:
            raise CBORFault("tag", "semantic tags are not allowed")
        if arg in _SIMPLE:  # major 7
            return _SIMPLE[arg], pos
        raise CBORFault("malformed", "floats and simple values other than false/true/null")

    def _long_argument(self, major: int, ai: int, pos: int) -> tuple[int, int]:
        """Additional information 24..31: a 1..8 byte argument after the head, or a refusal."""
        if major == 6:
            raise CBORFault("tag", "semantic tags are not allowed")
        if ai < 28:
            if major == 7:
                raise CBORFault("malformed", "floats and simple values other than false/true/null")
            width = 1 << (ai - 24)
            if width > self.size - pos:
                raise CBORFault("malformed", "truncated")
            arg = int.from_bytes(self.buf[pos : pos + width], "big")
            if arg < _MIN_FOR_AI[ai - 24]:
                raise CBORFault("non_canonical", "argument not in its shortest form")
            return arg, pos + width
        if ai == 31:
            if major == 7:
                raise CBORFault("malformed", "break outside an indefinite-length item")
            raise CBORFault("indefinite_length", "indefinite-length items are not allowed")
        raise CBORFault("malformed", "reserved additional information")

    def _map(self, pos: int, count: int, depth: int) -> tuple[dict[object, object], int]:
        """Keys are integers or text, strictly increasing as encoded bytes (so never repeated)."""
        buf, size, item = self.buf, self.size, self.item
        if count > (size - pos) // 2:
            raise CBORFault("malformed", "truncated")
        depth += 1
        out: dict[object, object] = {}
        prev: bytes | bytearray = b""
        for _ in range(count):
            start = pos
            if pos < size and buf[pos] >> 5 not in _KEY_MAJORS:
                raise CBORFault("malformed", "map keys must be integers or text")
            key, pos = item(pos, depth)
            encoded = buf[start:pos]
            if encoded <= prev:
                if encoded == prev:
                    raise CBORFault("duplicate_key", "a map key appears twice")
                raise CBORFault("non_canonical", "map keys not in bytewise order")
            prev = encoded
            out[key], pos = item(pos, depth)
        return out, pos
