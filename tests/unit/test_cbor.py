"""The strict CBOR codec both daemons use: the refused subset, one reason per fault, and agreement with cbor2.

cbor2, with every strictness option on and a re-encode check, serves as the oracle: for any input our decoder
must accept exactly what it accepts (within our subset) and produce the same value.
"""

from __future__ import annotations

import enum
import io
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tls_privsep.shared import cbor

SETTINGS = settings(max_examples=300, deadline=None)


def test_cbor2_pitfalls_exist() -> None:
    """Why our own decoder exists: plain cbor2.loads accepts all of these."""
    assert cbor2.loads(b"\x01\x02") == 1  # trailing bytes ignored
    assert cbor2.loads(b"\xa2\x61a\x01\x61a\x02") == {"a": 2}  # duplicate: last one wins
    assert cbor2.loads(b"\xc2\x41\x05") == 5  # semantic tag decoded (bignum)
    assert cbor2.loads(b"\x18\x01") == 1  # non-shortest integer
    assert cbor2.loads(b"\xbf\x61a\x01\xff") == {"a": 1}  # indefinite-length map


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x01\x02", "trailing_bytes"),
        (b"\xa2\x61a\x01\x61a\x02", "duplicate_key"),
        (b"\xc2\x41\x05", "tag"),
        (b"\xd9\xd9\xf7\x01", "tag"),
        (b"\xc1\x1a\x00\x00\x00\x00", "tag"),
        (b"\xdf\x01", "tag"),
        (b"\x18\x01", "non_canonical"),
        (b"\x19\x00\xff", "non_canonical"),
        (b"\x3a\x00\x00\xff\xff", "non_canonical"),
        (b"\x58\x01\x00", "non_canonical"),
        (b"\xbf\x61a\x01\xff", "indefinite_length"),
        (b"\x5f\x41a\xff", "indefinite_length"),
        (b"\xa2\x61b\x01\x61a\x02", "non_canonical"),
        (b"\xa2\x62aa\x01\x61b\x02", "non_canonical"),  # longer key first
        (b"\xa2\x01\x00\x00\x00", "non_canonical"),
        (b"\xf9\x3c\x00", "malformed"),  # half float
        (b"\xfb" + b"\x00" * 8, "malformed"),  # double
        (b"\xf7", "malformed"),  # undefined
        (b"\xf8\x20", "malformed"),  # simple value 32
        (b"\x62\xff\xfe", "malformed"),  # invalid UTF-8
        (b"\x81" * 10 + b"\x00", "malformed"),  # too deep
        (b"\x1c", "malformed"),  # reserved additional information
        (b"\xff", "malformed"),  # lone break
        (b"\xa1\x41k\x00", "malformed"),  # byte-string key
        (b"\xa1\x80\x00", "malformed"),  # array key
        (b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff", "malformed"),  # absurd length
        (b"\x99\x04\x01" + b"\x00" * 1025, "malformed"),  # more than MAX_ITEMS items
        (b"\x82\x01", "malformed"),  # truncated array
        (b"\x43ab", "malformed"),  # truncated byte string
        (b"", "malformed"),
    ],
)
def test_refused_with_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(cbor.CBORFault) as ei:
        cbor.decode(data, 4096)
    assert ei.value.reason == reason


def test_oversize_is_refused_before_parsing() -> None:
    with pytest.raises(cbor.CBORFault) as ei:
        cbor.decode(b"\x40" + b"\x00" * 100, 100)
    assert ei.value.reason == "oversize"


def test_values_and_byte_string_type() -> None:
    value = {"t": "x", "c": 1, "n": -5, "vs": [1, 2], "pk": b"k", "z": None, "b": True, "f": False, 0: 2**64 - 1}
    data = cbor.encode(value)
    assert cbor.decode(data, 1024) == value
    secret = cbor.decode(bytearray(cbor.encode({1: b"secret"})), 1024)
    assert isinstance(secret, dict) and type(secret[1]) is bytearray  # wipeable by the caller


# ------------------------------------------------------------------ the oracle


def oracle(data: bytes) -> object:
    """cbor2 at its strictest, then the value must re-encode to the input; raises ValueError otherwise."""

    def refuse(*_args: object) -> Any:
        raise ValueError("tag")

    decoder = cbor2.CBORDecoder(io.BytesIO(data), tag_hook=refuse, str_errors="strict",
                                max_depth=cbor.MAX_DEPTH + 2, allow_indefinite=False, allow_duplicate_keys=False)
    try:
        value = decoder.decode()
    except Exception as exc:
        raise ValueError(type(exc).__name__) from None
    if cbor2.dumps(value, canonical=True) != data:
        raise ValueError("not canonical")
    if not _in_subset(value):
        raise ValueError("outside our subset")
    if _depth(value) > cbor.MAX_DEPTH:  # cbor2 counts containers, we count items: apply our rule here
        raise ValueError("nested too deep")
    return value


def _in_subset(v: object) -> bool:
    if v is None or isinstance(v, (bool, int, bytes, str)):
        return True
    if isinstance(v, list):
        return all(_in_subset(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, (int, str)) and not isinstance(k, bool) for k in v) and \
            all(_in_subset(x) for x in v.values())
    return False


def _depth(v: object) -> int:
    """The nesting level of the deepest item (the top item is at 0), as the decoder counts it."""
    if isinstance(v, list):
        return max((1 + _depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return max((1 + _depth(x) for x in [*v.keys(), *v.values()]), default=0)
    return 0


scalars = st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=20)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
    st.integers(-(2**64), 2**64 - 1) | st.text(max_size=8), inner, max_size=5), max_leaves=30)
# What encode() is for: maps whose keys are small integers or short text (both canonical orders agree).
our_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
    st.integers(0, 23) | st.text(st.characters(max_codepoint=127), max_size=8), inner, max_size=5), max_leaves=30)


@SETTINGS
@given(our_values)
def test_round_trip(value: object) -> None:
    data = cbor.encode(value)
    if _depth(value) > cbor.MAX_DEPTH:
        with pytest.raises(cbor.CBORFault):
            cbor.decode(data, 1 << 20)
    else:
        assert cbor.decode(data, 1 << 20) == value


def _orders_differ(v: object) -> bool:
    """A map whose keys sort differently length-first (cbor2) and bytewise (RFC 8949, our decoder)."""
    if isinstance(v, list):
        return any(_orders_differ(x) for x in v)
    if isinstance(v, dict):
        keys = [cbor2.dumps(k) for k in v]
        return sorted(keys) != sorted(keys, key=lambda k: (len(k), k)) or any(map(_orders_differ, v.values()))
    return False


def _agrees(data: bytes) -> None:
    try:
        expected = oracle(data)
    except ValueError:
        expected = ValueError
    try:
        got = cbor.decode(data, 1 << 20)
    except cbor.CBORFault:
        got = ValueError
    if _orders_differ(expected) or _orders_differ(got):
        return  # the two canonical orders disagree here by definition; encode() never emits such keys
    assert got == expected
    assert _outcome(bytearray(data)) == _outcome(data)  # no key cache for bytearrays: same answers


def _outcome(data: bytes | bytearray) -> object:
    try:
        return cbor.decode(data, 1 << 20)
    except cbor.CBORFault as exc:
        return exc.reason


def test_encode_sorts_keys_bytewise() -> None:
    """RFC 8949 §4.2.1 order, where cbor2's length-first order differs: 100 (0x18 0x64) before "" (0x60)."""
    assert cbor.encode({"": 1, 100: 2}) == b"\xa2\x18\x64\x02\x60\x01"
    assert cbor.encode({"k" * 24: 1, -1: 2, 24: 3}) == b"\xa3\x18\x18\x03\x20\x02\x78\x18" + b"k" * 24 + b"\x01"
    for value in ({"": 1, 100: 2}, {"k" * 24: 1, -1: 2, 24: 3}, {2**64 - 1: 0, -(2**64): 1, "a": {"b": 0, 1: 1}}):
        assert cbor.decode(cbor.encode(value), 1000) == value


def test_encode_key_order_is_per_key_type() -> None:
    """The remembered key order never lets True or 1.0 pass as the integer 1."""
    assert cbor.encode({1: 0, 2: 0}) == b"\xa2\x01\x00\x02\x00"
    for key in (True, 1.0, b"k", (1,), None):
        with pytest.raises(ValueError, match="map key"):
            cbor.encode({key: 0, 2: 0})
    with pytest.raises(ValueError, match="map key"):
        cbor.encode({"a": 0, False: 0})


@pytest.mark.parametrize("value", [2**64, -(2**64) - 1, 1.5, object(), {1, 2}, frozenset()])
def test_encode_refuses_what_is_outside_the_subset(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        cbor.encode(value)
    with pytest.raises((ValueError, TypeError)):
        cbor.encode({"k": [value]})


def test_encode_subclasses_as_their_base_type() -> None:
    class Suite(enum.IntEnum):
        AES = 0x1301

    assert cbor.encode({"s": Suite.AES, "l": (1, 2)}) == cbor2.dumps({"s": 0x1301, "l": [1, 2]}, canonical=True)


def test_encode_mutable_matches_encode() -> None:
    value = {0: bytearray(b"secret"), 1: [b"cert"], 2: "x"}
    out = cbor.encode_mutable(value)
    assert type(out) is bytearray and out == cbor.encode(value)


@SETTINGS
@given(our_values)
def test_encode_agrees_with_cbor2(value: object) -> None:
    """Where both canonical orders agree, our encoder and cbor2's canonical mode emit the same bytes."""
    assert cbor.encode(value) == cbor2.dumps(value, canonical=True)


@SETTINGS
@given(values)
def test_encode_is_bytewise_canonical(value: object) -> None:
    """Any keys: cbor2 (any order) reads back the value, and our decoder accepts it when shallow enough."""
    data = cbor.encode(value)
    assert cbor2.loads(data) == value
    if _depth(value) <= cbor.MAX_DEPTH:
        assert cbor.decode(data, 1 << 20) == value


@SETTINGS
@given(st.binary(max_size=64))
def test_agrees_with_cbor2_on_random_bytes(data: bytes) -> None:
    _agrees(data)


@SETTINGS
@given(values.filter(lambda v: _depth(v) <= cbor.MAX_DEPTH), st.data())
def test_agrees_with_cbor2_on_mutated_encodings(value: object, data: st.DataObject) -> None:
    """Flip, drop or insert one byte of a valid encoding: both decoders still agree."""
    encoded = bytearray(cbor2.dumps(value, canonical=True))
    i = data.draw(st.integers(0, len(encoded)))
    how = data.draw(st.sampled_from(["flip", "drop", "insert"]))
    if how == "flip" and i < len(encoded):
        encoded[i] ^= data.draw(st.integers(1, 255))
    elif how == "drop" and i < len(encoded):
        del encoded[i]
    else:
        encoded.insert(i, data.draw(st.integers(0, 255)))
    _agrees(bytes(encoded))


def test_depth_limit_counts_items_not_brackets() -> None:
    assert cbor.decode(cbor.encode([[[[[]]]]]), 100) == [[[[[]]]]]  # the empty list sits at depth 4
    with pytest.raises(cbor.CBORFault, match="nested too deep"):
        cbor.decode(cbor.encode([[[[[0]]]]]), 100)  # the 0 would sit at depth 5


# ------------------------------------------------------------------ keys decoded before (bytes input only)


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_known_keys_keep_every_refusal(kind: type) -> None:
    def dec(data: bytes) -> object:
        return cbor.decode(kind(data), 100)

    assert dec(b"\xa2\x61a\x01\x61b\x02") == dec(b"\xa2\x61a\x01\x61b\x02") == {"a": 1, "b": 2}
    for data, reason in [
        (b"\xa2\x61a\x01\x61a\x02", "duplicate_key"),
        (b"\xa2\x61b\x01\x61a\x02", "non_canonical"),
        (b"\xa1\x61", "malformed"),  # truncated key
        (b"\xa1\x61a", "malformed"),  # key without its value
        (b"\xa2\x61a\x01\x61", "malformed"),
        (b"\xa1\x41a\x01", "malformed"),  # byte-string key with the same bytes after the head
        (b"\xa2\x01\x00\x01\x00", "duplicate_key"),
    ]:
        with pytest.raises(cbor.CBORFault) as ei:
            dec(data)
        assert ei.value.reason == reason, data


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_item_limit_counts_known_keys(kind: type) -> None:
    """[{0..510: 0}] is 1 + 1 + 2 * 511 = 1024 items, the most allowed; one more pair is too many."""
    fits = cbor.encode([{k: 0 for k in range(511)}])
    assert cbor.decode(kind(fits), 1 << 16) == [{k: 0 for k in range(511)}]
    too_many = cbor.encode([{k: 0 for k in range(512)}])
    with pytest.raises(cbor.CBORFault, match="too many items"):
        cbor.decode(kind(too_many), 1 << 16)
