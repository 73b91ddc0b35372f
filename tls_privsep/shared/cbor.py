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
from typing import Any, NoReturn

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
    parts.append(_head(2, len(value)))
    parts.append(value)


def _put_int(value: int, parts: list[bytes | bytearray]) -> None:
    if 0 <= value < 24:
        parts.append(_ONE_BYTE[value])
    else:
        parts.append(_head(0, value) if value >= 0 else _head(1, ~value))


def _put_text(value: str, parts: list[bytes | bytearray]) -> None:
    data = value.encode("utf-8")
    parts.append(_head(3, len(data)))
    parts.append(data)


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
checking that every key is exactly an int or a str.

It still pays (CPython 3.11, with and without it interleaved in one process): a channel ``hs`` map
encodes in 1.3 µs instead of 2.4 (``Hs.encode()`` 2.2 instead of 3.3), a blob seal takes 15.7 µs
instead of 20.9, and bench/handoff.py 219 µs per connection instead of 229 (best of 20 runs; median
274 against 288). Decoding does not use it."""
_MAX_LAYOUTS = 256  # the channel and the blob use a dozen key sets; others are simply not remembered
_KEY_TYPES = frozenset((int, str))


def _layout(keys: tuple[object, ...]) -> _Layout:
    """The map's keys in bytewise order of their encodings (§4.2.1), each with its encoding."""
    layout = sorted([(_key(k), k) for k in keys])  # distinct keys encode distinctly: no key is ever compared
    if len(_layouts) < _MAX_LAYOUTS and _KEY_TYPES.issuperset(map(type, keys)):
        _layouts[keys] = (layout, all(type(k) is str for k in keys))
    return layout


def _key(key: object) -> bytes:
    """A map key's encoding, which decides its place in the map; ValueError for a key we never emit."""
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


_KEY_MAJORS = frozenset((0, 1, 3))  # integers and text
_Frame = tuple[Any, int, bool, object, Any]  # an outer open container, see decode()

_KEY_SPAN = tuple(1 if h < 0x18 else h - 0x5F if 0x60 <= h < 0x78 else 0 for h in range(256))
"""For a head byte, the length of the whole key it starts when the head alone says so (integers
0..23, text under 24 bytes), else 0."""
_known_keys: dict[bytes, object] = {}
"""Map keys already decoded, by their encoding: the channel's and the blob's keys repeat in every
message. Only complete encodings that decoded and whose length the head gives are stored, and an
encoding has one key, so a hit answers exactly what decoding would. Filled once up to the bound: a
peer sending junk keys can only make later lookups miss."""
_MAX_KNOWN_KEYS = 256


def decode(data: bytes | bytearray, max_size: int) -> object:
    """Decode one strictly deterministic CBOR item; raise :class:`CBORFault` for anything else.

    Byte strings come back as the input's type: decode a ``bytearray`` to get secrets in buffers
    the caller can wipe.

    One pass, one loop iteration per item, no recursion. The container being filled lives in
    locals (``container``, how many entries are ``left``, ``is_map``; for a map, the pending ``key``
    and the encoding of the previous one, ``prev_key``); the containers around it wait on ``stack``.
    The checks and their order are those of a recursive descent: the size cap first; for each item,
    a map key's type, then the item count and truncation, then the head; nesting depth when a
    container opens; a map's key order right after each key.
    """
    if len(data) > max_size:
        raise CBORFault("oversize", f"{len(data)} > {max_size} bytes")
    buf = data
    size = len(buf)
    pos = 0
    items = 0
    stack: list[_Frame] = []
    container: Any = None  # None: the item being read is the top-level one
    left = 0
    is_map = want_key = False  # want_key: the next item is a key of ``container``
    key: object = None
    prev_key: bytes | bytearray = b""
    key_start = 0
    value: Any = None
    known_keys: dict[Any, object] | None = _known_keys if type(buf) is bytes else None  # bytearrays: unhashable
    while True:
        if want_key:
            key_start = pos
            if known_keys is not None and items < MAX_ITEMS and pos < size:  # a key seen before: no decoding
                encoded = buf[pos : pos + _KEY_SPAN[buf[pos]]]
                value = known_keys.get(encoded)
                if value is not None:
                    if encoded <= prev_key:
                        raise _key_order_fault(encoded, prev_key)
                    items += 1
                    pos += len(encoded)
                    key, prev_key, want_key = value, encoded, False
                    continue
            if pos < size and buf[pos] >> 5 not in _KEY_MAJORS:
                raise CBORFault("malformed", "map keys must be integers or text")
        items += 1
        if items > MAX_ITEMS or pos >= size:
            raise CBORFault("malformed", "too many items" if items > MAX_ITEMS else "truncated")
        head = buf[pos]
        major, arg = head >> 5, head & 0x1F
        pos += 1
        if arg >= 24:  # a 1, 2, 4 or 8 byte argument follows the head, or this is a refused form
            if arg > 27 or major > 5:
                _refuse_head(major, arg)
            width = 1 << (arg - 24)
            if width > size - pos:
                raise CBORFault("malformed", "truncated")
            minimum = _MIN_FOR_AI[arg - 24]
            arg = buf[pos] if width == 1 else int.from_bytes(buf[pos : pos + width], "big")
            if arg < minimum:
                raise CBORFault("non_canonical", "argument not in its shortest form")
            pos += width

        # Most frequent first: byte strings, unsigned integers, text.
        if major == 2:
            value = buf[pos : pos + arg]
            pos += arg
            if pos > size:
                raise CBORFault("malformed", "truncated")
        elif major == 0:
            value = arg
        elif major == 3:
            end = pos + arg
            if end > size:
                raise CBORFault("malformed", "truncated")
            try:
                value = buf[pos:end].decode("utf-8")
            except UnicodeDecodeError:
                raise CBORFault("malformed", "text string is not valid UTF-8") from None
            pos = end
        elif major == 4 or major == 5:
            if arg > (size - pos if major == 4 else (size - pos) // 2):  # each item takes at least a byte
                raise CBORFault("malformed", "truncated")
            if not arg:
                value = [] if major == 4 else {}
            else:  # open it: its entries come next, one level deeper
                if len(stack) >= MAX_DEPTH:  # its first entry would be too deep
                    raise _too_deep_fault(buf, pos, major == 5, items)
                stack.append((container, left, is_map, key, prev_key))
                container, left, is_map = ([] if major == 4 else {}), arg, major == 5
                want_key, prev_key = is_map, b""
                continue
        elif major == 1:
            value = -1 - arg
        elif major == 6:
            raise CBORFault("tag", "semantic tags are not allowed")
        elif arg in _SIMPLE:  # major 7
            value = _SIMPLE[arg]
        else:
            raise CBORFault("malformed", "floats and simple values other than false/true/null")

        # The item is complete: it goes into the open container, which may complete in turn.
        while True:
            if container is None:
                if pos != size:
                    raise CBORFault("trailing_bytes", f"{size - pos} bytes after the item")
                return value
            if want_key:  # keys strictly increase as encoded bytes, so none repeats
                encoded = buf[key_start:pos]
                if encoded <= prev_key:
                    raise _key_order_fault(encoded, prev_key)
                key, prev_key, want_key = value, encoded, False
                if known_keys is not None and len(known_keys) < _MAX_KNOWN_KEYS and len(encoded) == _KEY_SPAN[head]:
                    known_keys[encoded] = key
                break  # its value is next
            if is_map:
                container[key] = value
            else:
                container.append(value)
            left -= 1
            if left:
                want_key = is_map
                break
            value = container
            container, left, is_map, key, prev_key = stack.pop()
            want_key = False  # a container is never a key


def _too_deep_fault(buf: bytes | bytearray, pos: int, is_map: bool, items: int) -> CBORFault:
    """What the first entry of a container opened at the deepest level is refused for: its checks
    before the depth one come first (all of them ``malformed``, only the detail differs)."""
    if is_map and pos < len(buf) and buf[pos] >> 5 not in _KEY_MAJORS:
        return CBORFault("malformed", "map keys must be integers or text")
    if items + 1 > MAX_ITEMS:
        return CBORFault("malformed", "too many items")
    return CBORFault("malformed", "nested too deep")


def _key_order_fault(encoded: bytes | bytearray, prev_key: bytes | bytearray) -> CBORFault:
    """Map keys must strictly increase as encoded bytes (§4.2.1), which also rules out repeats."""
    if encoded == prev_key:
        return CBORFault("duplicate_key", "a map key appears twice")
    return CBORFault("non_canonical", "map keys not in bytewise order")


def _refuse_head(major: int, ai: int) -> NoReturn:
    """The refusal for a head whose argument is not 1, 2, 4 or 8 bytes, or that starts a tag or float."""
    if major == 6:
        raise CBORFault("tag", "semantic tags are not allowed")
    if ai < 28:  # major 7
        raise CBORFault("malformed", "floats and simple values other than false/true/null")
    if ai == 31:
        if major == 7:
            raise CBORFault("malformed", "break outside an indefinite-length item")
        raise CBORFault("indefinite_length", "indefinite-length items are not allowed")
    raise CBORFault("malformed", "reserved additional information")
