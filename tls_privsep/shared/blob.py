"""TrafficState <-> sealed, one-time CBOR blob (DESIGN.md §4; schema and reasons in docs/blob.md).

secured seals the state of one finished handshake (TLS 1.3 or TLS 1.2) under the channel's key; appd opens
it exactly once.
The outer map travels in the clear (``v``, ``ch``, ``n``, ``ct``); the inner map is AES-256-GCM sealed
with the connection id bound in as associated data.

Both maps are strict deterministic CBOR (:mod:`shared.cbor`). The inner map is decoded from a
wipeable buffer, so the secrets in it come out as buffers that end up in the TrafficState itself.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tls_privsep.shared.cbor import CBORFault
from tls_privsep.shared.cbor import decode as cbor_decode
from tls_privsep.shared.cbor import encode as cbor_encode
from tls_privsep.shared.cbor import encode_mutable as cbor_encode_mutable
from tls_privsep.shared.errors import BlobError
from tls_privsep.shared.keyschedule import SUITES
from tls_privsep.shared.state import TLS12, TLS13, TrafficState, wipe_bytes
from tls_privsep.shared.tls12 import SUITES12

MAX_BLOB = 64 * 1024
"""Hard cap on a sealed blob, checked before any parsing (peer_certs make up most of it)."""
BLOB_VERSION = 2
"""2: the inner map's schema is a choice on its TLS version, and a TLS 1.2 state carries key material where
a TLS 1.3 one carries traffic secrets. A blob of another version is refused as unsupported_version before
anything else is read: both daemons come from one install, so a mismatch is a half-done upgrade, which the
channel's hello already refuses (docs/blob.md, *Versions*)."""
KEY_LEN = 32
CHANNEL_ID_LEN = 16
UINT64_MAX = 2**64 - 1
TAG_LEN = 16

_MAX_TEXT = 255
_MAX_CERT = 2**24 - 1


# --------------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Inner map: integer keys (table in docs/blob.md)
# --------------------------------------------------------------------------------------------------

K_VERSION = 0
K_SUITE = 1
K_READ_SECRET = 2
K_WRITE_SECRET = 3
K_READ_SEQ = 4
K_WRITE_SEQ = 5
K_RECORDS_PROTECTED = 6
K_ALPN = 7
K_SNI = 8
K_PEER_CERTS = 9
K_PSK_RESUMED = 10
K_CREATED = 11

INNER_KEYS: dict[int, str] = {
    K_VERSION: "version",
    K_SUITE: "suite",
    K_READ_SECRET: "read_secret",
    K_WRITE_SECRET: "write_secret",
    K_READ_SEQ: "read_seq",
    K_WRITE_SEQ: "write_seq",
    K_RECORDS_PROTECTED: "records_protected",
    K_ALPN: "alpn",
    K_SNI: "sni",
    K_PEER_CERTS: "peer_certs",
    K_PSK_RESUMED: "psk_resumed",
    K_CREATED: "created",
}


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_cert_list(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(c, (bytes, bytearray)) for c in v)


# What each inner value may be (isinstance; an int field never takes a bool, and peer_certs is a list
# of byte strings).
_INNER_TYPES: dict[int, type | tuple[type, ...]] = {
    K_VERSION: int,
    K_SUITE: int,
    K_READ_SECRET: (bytes, bytearray),
    K_WRITE_SECRET: (bytes, bytearray),
    K_READ_SEQ: int,
    K_WRITE_SEQ: int,
    K_RECORDS_PROTECTED: int,
    K_ALPN: (str, type(None)),
    K_SNI: (str, type(None)),
    K_PEER_CERTS: list,
    K_PSK_RESUMED: bool,
    K_CREATED: int,
}


def _text_ok(v: str | None) -> bool:
    return v is None or 1 <= len(v.encode("utf-8")) <= _MAX_TEXT


def _check_fields(m: Mapping[Any, object]) -> None:
    """Keys and types one field at a time, in the order docs/blob.md gives; raises the first fault."""
    for key in m:
        if not _is_int(key) or key not in INNER_KEYS:
            raise BlobError("unknown_field", f"inner key {repr(key)[:40]}")
    for key, name in INNER_KEYS.items():
        if key not in m:
            raise BlobError("missing_field", name)
        value, expected = m[key], _INNER_TYPES[key]
        if (not isinstance(value, expected) or (expected is int and isinstance(value, bool))
                or (key == K_PEER_CERTS and not _is_cert_list(value))):
            raise BlobError("wrong_type", f"{name} is {type(value).__name__}")


def _parse_inner(m: Mapping[Any, object]) -> tuple[Any, ...]:
    """Schema check shared by seal (own state) and open (decoded map); raises BlobError(reason).

    Returns the values in INNER_KEYS order: references only, secrets are not copied.
    """
    _check_fields(m)
    values: tuple[Any, ...] = tuple(m[key] for key in INNER_KEYS)  # in key order: values[K_SUITE] is the suite
    (version, suite, read_secret, write_secret, read_seq, write_seq, records_protected, alpn, sni, peer_certs,
     _psk_resumed, created) = values
    if version not in (TLS13, TLS12):
        raise BlobError("bad_tls_version", f"version {version:#x}")
    # The schema's choice: TLS 1.3 secrets are the suite's hash long, TLS 1.2 key material is key ‖ IV.
    if version == TLS13:
        if suite not in SUITES:
            raise BlobError("unknown_suite", f"suite {suite:#x} is not a TLS 1.3 suite")
        need, what = SUITES[suite].hash_len, "the suite's hash length"
    else:
        if suite not in SUITES12:
            raise BlobError("unknown_suite", f"suite {suite:#x} is not a TLS 1.2 suite")
        need, what = SUITES12[suite].key_material_len, "the suite's write key and IV"
    for name, secret in (("read_secret", read_secret), ("write_secret", write_secret)):
        if len(secret) != need:
            raise BlobError("bad_secret_length", f"{name} has {len(secret)} bytes, {what} is {need}")
    for name, seq in (("read_seq", read_seq), ("write_seq", write_seq), ("records_protected", records_protected)):
        if not 0 <= seq <= UINT64_MAX:
            raise BlobError("bad_seq", f"{name} out of range")
    if not 0 <= created <= UINT64_MAX:
        raise BlobError("bad_value", "created out of range")
    if not _text_ok(alpn) or not _text_ok(sni):
        raise BlobError("bad_value", f"alpn and sni must be 1..{_MAX_TEXT} bytes or null")
    if not all(1 <= len(cert) <= _MAX_CERT for cert in peer_certs):
        raise BlobError("bad_value", "peer certificate length out of range")
    return values


def _inner_from_state(state: TrafficState) -> dict[int, object]:
    # Secrets go in as the state's own bytearrays: no extra immutable copy on our side.
    return {
        K_VERSION: state.version,
        K_SUITE: state.suite,
        K_READ_SECRET: state.read_secret,
        K_WRITE_SECRET: state.write_secret,
        K_READ_SEQ: state.read_seq,
        K_WRITE_SEQ: state.write_seq,
        K_RECORDS_PROTECTED: state.records_protected,
        K_ALPN: state.alpn,
        K_SNI: state.sni,
        K_PEER_CERTS: list(state.peer_certs),
        K_PSK_RESUMED: state.psk_resumed,
        K_CREATED: state.created,
    }


def _state_from_inner(values: tuple[Any, ...]) -> TrafficState:
    # Decoded from a bytearray, the secrets already are fresh bytearrays: the state takes them over.
    return TrafficState(
        suite=values[K_SUITE],
        read_secret=_own(values[K_READ_SECRET]),
        write_secret=_own(values[K_WRITE_SECRET]),
        read_seq=values[K_READ_SEQ],
        write_seq=values[K_WRITE_SEQ],
        records_protected=values[K_RECORDS_PROTECTED],
        alpn=values[K_ALPN],
        sni=values[K_SNI],
        peer_certs=[bytes(c) for c in values[K_PEER_CERTS]],
        psk_resumed=values[K_PSK_RESUMED],
        created=values[K_CREATED],
        version=values[K_VERSION],
    )


def _own(secret: bytes | bytearray) -> bytearray:
    return secret if isinstance(secret, bytearray) else bytearray(secret)


# --------------------------------------------------------------------------------------------------
# Outer map and AEAD
# --------------------------------------------------------------------------------------------------


def blob_nonce(n: int) -> bytes:
    """12-byte GCM nonce: n big-endian. Unique per key because a sealer never reuses n."""
    return n.to_bytes(12, "big")


def blob_aad(channel_id: bytes, n: int, conn: int) -> bytes:
    """Associated data: deterministic CBOR of {v, ch, n, c}, binding the blob to one connection."""
    return cbor_encode({"v": BLOB_VERSION, "ch": channel_id, "n": n, "c": conn})


def _check_key(key: bytes | bytearray, channel_id: bytes) -> None:
    if len(key) != KEY_LEN:
        raise ValueError(f"blob key must be {KEY_LEN} bytes")
    if len(channel_id) != CHANNEL_ID_LEN:
        raise ValueError(f"channel id must be {CHANNEL_ID_LEN} bytes")


def _check_conn(conn: int) -> None:
    if not _is_int(conn) or not 0 <= conn <= UINT64_MAX:
        raise BlobError("bad_conn", "connection id must be an unsigned 64-bit integer")


class BlobSealer:
    """secured's half: seals TrafficStates for one channel with counters 1, 2, 3, ..."""

    def __init__(self, key: bytes | bytearray, channel_id: bytes) -> None:
        _check_key(key, channel_id)
        self._aead = AESGCM(bytes(key))
        self.channel_id = bytes(channel_id)
        self._next = 1

    def __repr__(self) -> str:
        return f"BlobSealer(channel={self.channel_id.hex()[:8]}, next={self._next})"

    def seal(self, state: TrafficState, conn: int) -> bytes:
        """Seal ``state`` for connection ``conn``. The caller then wipes its own state.

        Refuses (BlobError) a state appd would refuse, so a bad export fails in secured, not later.
        """
        _check_conn(conn)
        inner = _inner_from_state(state)
        _parse_inner(inner)
        n = self._next
        if n > UINT64_MAX:
            raise BlobError("counter_exhausted", "open a new channel")
        self._next = n + 1  # burn n before it touches the AEAD: a nonce is never used twice
        plain = cbor_encode_mutable(inner)  # the one copy of the secrets on our side, wiped below
        try:
            ct = self._aead.encrypt(blob_nonce(n), plain, blob_aad(self.channel_id, n, conn))
        finally:
            wipe_bytes(plain)
        blob = cbor_encode({"v": BLOB_VERSION, "ch": self.channel_id, "n": n, "ct": ct})
        if len(blob) > MAX_BLOB:
            raise BlobError("oversize", f"sealed blob would be {len(blob)} > {MAX_BLOB} bytes")
        return blob


class BlobOpener:
    """appd's half: opens each blob of one channel at most once (``n`` must keep increasing)."""

    def __init__(self, key: bytes | bytearray, channel_id: bytes) -> None:
        _check_key(key, channel_id)
        self._aead = AESGCM(bytes(key))
        self.channel_id = bytes(channel_id)
        self._last = 0

    def __repr__(self) -> str:
        return f"BlobOpener(channel={self.channel_id.hex()[:8]}, last={self._last})"

    def _decrypt_into(self, nonce: bytes, ct: bytes, aad: bytes, out: bytearray) -> None:
        # decrypt_into (recent cryptography) writes the plaintext straight into our wipeable buffer;
        # older releases only return immutable bytes, which then linger (docs/blob.md).
        into = getattr(self._aead, "decrypt_into", None)
        if into is not None:
            into(nonce, ct, aad, out)
        else:  # pragma: no cover - depends on the installed cryptography
            out[:] = self._aead.decrypt(nonce, ct, aad)

    @property
    def last(self) -> int:
        """The counter of the last blob imported on this channel (0: none yet)."""
        return self._last

    def open(self, blob: bytes, conn: int) -> TrafficState:
        """Check and import ``blob`` for ``conn``; BlobError(reason) and no import on any refusal."""
        _check_conn(conn)
        if not isinstance(blob, (bytes, bytearray)):
            raise BlobError("malformed", "blob must be bytes")
        try:
            outer = cbor_decode(blob, MAX_BLOB)
        except CBORFault as exc:
            raise BlobError(exc.reason, str(exc)) from None
        if not isinstance(outer, dict):
            raise BlobError("bad_outer", "not a map")
        v = outer.get("v")
        if not _is_int(v):
            raise BlobError("bad_outer", "v missing or not an integer")
        if v != BLOB_VERSION:
            raise BlobError("unsupported_version", f"v={v}")
        if set(outer) != {"v", "ch", "n", "ct"}:
            raise BlobError("bad_outer", "fields must be exactly v, ch, n, ct")
        ch, n, ct = outer["ch"], outer["n"], outer["ct"]
        if not isinstance(ch, bytes) or not _is_int(n) or not isinstance(ct, bytes):
            raise BlobError("bad_outer", "wrong field types")
        if n < 1:
            raise BlobError("bad_outer", "n starts at 1")
        if not hmac.compare_digest(ch, self.channel_id):
            raise BlobError("wrong_channel")
        if n <= self._last:
            raise BlobError("replayed", f"n={n}, last imported {self._last}")
        if len(ct) < TAG_LEN:
            raise BlobError("bad_tag", "ciphertext shorter than the tag")
        plain = bytearray(len(ct) - TAG_LEN)
        try:
            try:
                self._decrypt_into(blob_nonce(n), ct, blob_aad(ch, n, conn), plain)
            except InvalidTag:
                raise BlobError("bad_tag") from None
            try:
                inner = cbor_decode(plain, MAX_BLOB)
            except CBORFault as exc:
                raise BlobError("bad_inner", exc.reason) from None
            if not isinstance(inner, dict):
                raise BlobError("bad_inner", "not a map")
            state = _state_from_inner(_parse_inner(inner))
        finally:
            wipe_bytes(plain)
        self._last = n
        return state
