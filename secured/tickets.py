"""Stateless session tickets (RFC 8446 §4.6.1): the resumption state, sealed under a rotating key.

secured keeps no per-ticket state; the ticket *is* the state, AES-256-GCM sealed so only secured can
read or forge it. Keys rotate so that stealing secured's memory exposes only recent tickets
(forward secrecy for resumption, RFC 8446 §8 and appendix E.6), and a key is forgotten at the latest
``(1 + keep) * rotate_after`` seconds after it was made, whether or not anything was sealed since.

Tickets are attacker-controlled input: :meth:`TicketKeys.open` returns None for anything it does
not like and never raises. Replay protection for 0-RTT is not done here (we do not accept early data).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import ConfigError
from shared.state import fingerprint

KEY_ID_LEN = 4
NONCE_LEN = 12
TAG_LEN = 16
MAX_TICKET = 0xFFFF  # the ticket<1..2^16-1> vector of NewSessionTicket
MAX_LIFETIME = 604800  # seconds, RFC 8446 §4.6.1
# Random 96-bit nonces: stay far below the 2^32 messages-per-key bound (NIST SP 800-38D §8.3).
MAX_SEALS_PER_KEY = 1 << 30

_FORMAT = 1
# CBOR map keys (small integers keep tickets short).
_K_FORMAT, _K_PSK, _K_SUITE, _K_CREATED, _K_AGE_ADD, _K_LIFETIME, _K_ALPN, _K_SNI, _K_PEER = range(9)


@dataclass
class TicketState:
    """What a ticket carries; ``repr`` shows a fingerprint of the PSK, never the PSK."""

    psk: bytes = field(repr=False)
    suite: int
    created_ms: int
    age_add: int
    lifetime: int
    alpn: str | None = None
    sni: str | None = None
    peer_certs: list[bytes] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        return (
            f"TicketState(psk={fingerprint(self.psk)}, suite=0x{self.suite:04x}, "
            f"created_ms={self.created_ms}, lifetime={self.lifetime}, alpn={self.alpn!r}, "
            f"sni={self.sni!r}, peer_certs={len(self.peer_certs)})"
        )

    def to_cbor(self) -> bytes:
        return cbor2.dumps(
            {
                _K_FORMAT: _FORMAT,
                _K_PSK: self.psk,
                _K_SUITE: self.suite,
                _K_CREATED: self.created_ms,
                _K_AGE_ADD: self.age_add,
                _K_LIFETIME: self.lifetime,
                _K_ALPN: self.alpn,
                _K_SNI: self.sni,
                _K_PEER: list(self.peer_certs),
            },
            canonical=True,
        )

    @classmethod
    def from_cbor(cls, data: bytes) -> TicketState | None:
        """Decode and type-check strictly; None for anything unexpected."""
        try:
            m: Any = cbor2.loads(data)
        except Exception:  # cbor2 raises several types on bad input; a ticket must never crash us
            return None
        if not isinstance(m, dict) or set(m) != set(range(9)) or m[_K_FORMAT] != _FORMAT:
            return None
        psk, suite, created, age_add, lifetime = (
            m[_K_PSK],
            m[_K_SUITE],
            m[_K_CREATED],
            m[_K_AGE_ADD],
            m[_K_LIFETIME],
        )
        alpn, sni, peer = m[_K_ALPN], m[_K_SNI], m[_K_PEER]
        ok = (
            isinstance(psk, bytes)
            and 1 <= len(psk) <= 64
            and _uint(suite, 0xFFFF)
            and _uint(created, 1 << 63)
            and _uint(age_add, 0xFFFFFFFF)
            and _uint(lifetime, MAX_LIFETIME)
            and (alpn is None or isinstance(alpn, str))
            and (sni is None or isinstance(sni, str))
            and isinstance(peer, list)
            and all(isinstance(c, bytes) for c in peer)
        )
        if not ok:
            return None
        return cls(psk, suite, created, age_add, lifetime, alpn, sni, list(peer))


def _uint(v: object, limit: int) -> bool:
    return type(v) is int and 0 <= v <= limit


class _Key:
    __slots__ = ("aead", "created", "key_id", "seals")

    def __init__(self, key_id: bytes, secret: bytes, created: float) -> None:
        self.key_id = key_id
        self.aead = AESGCM(secret)
        self.created = created
        self.seals = 0

    def __repr__(self) -> str:
        return f"_Key(id={self.key_id.hex()}, created={self.created})"


class TicketKeys:
    """The current sealing key plus up to ``keep`` previous ones, still accepted for opening."""

    def __init__(
        self,
        *,
        rotate_after: float = 3600.0,
        keep: int = 2,
        rng: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not rotate_after > 0:
            raise ConfigError("ticket key rotate_after must be > 0 seconds")
        if keep < 0:
            raise ConfigError("ticket key keep must be >= 0")
        self.rotate_after = rotate_after
        self.keep = keep
        self._rng = rng
        self._clock = clock
        self._keys: list[_Key] = []  # newest first
        self._rotate(clock())

    def __repr__(self) -> str:
        return f"TicketKeys(key_ids={self.key_ids()}, rotate_after={self.rotate_after}, keep={self.keep})"

    def key_ids(self) -> list[str]:
        """Hex ids of the keys held, newest first (safe to log)."""
        return [k.key_id.hex() for k in self._keys]

    def _rotate(self, now: float) -> None:
        held = {k.key_id for k in self._keys}
        key_id = self._rng(KEY_ID_LEN)
        while key_id in held:  # 4 random bytes can collide; an ambiguous id would lose tickets
            key_id = self._rng(KEY_ID_LEN)
        self._keys.insert(0, _Key(key_id, self._rng(32), now))
        del self._keys[1 + self.keep :]

    def _alive(self, key: _Key, now: float) -> bool:
        return now - key.created < (1 + self.keep) * self.rotate_after

    def _forget_expired(self, now: float) -> None:
        """Drop keys past their life, at every use: an idle server must not keep old ticket keys."""
        if not self._alive(self._keys[0], now):
            self._rotate(now)
        self._keys[1:] = [k for k in self._keys[1:] if self._alive(k, now)]

    def seal(self, state: TicketState) -> bytes:
        """``key_id || nonce || AES-256-GCM(body, aad=key_id)``; rotates first if the key is due."""
        now = self._clock()
        self._forget_expired(now)
        cur = self._keys[0]
        if now - cur.created >= self.rotate_after or cur.seals >= MAX_SEALS_PER_KEY:
            self._rotate(now)
            cur = self._keys[0]
        cur.seals += 1
        nonce = self._rng(NONCE_LEN)
        return cur.key_id + nonce + cur.aead.encrypt(nonce, state.to_cbor(), cur.key_id)

    def open(self, ticket: bytes | bytearray | memoryview) -> TicketState | None:
        """The state in ``ticket``, or None (unknown or expired key, bad tag, malformed body)."""
        ticket = bytes(ticket)
        if not KEY_ID_LEN + NONCE_LEN + TAG_LEN <= len(ticket) <= MAX_TICKET:
            return None
        key_id = ticket[:KEY_ID_LEN]
        nonce = ticket[KEY_ID_LEN : KEY_ID_LEN + NONCE_LEN]
        now = self._clock()
        self._forget_expired(now)
        for key in self._keys:
            if key.key_id == key_id:
                if not self._alive(key, now):
                    return None
                try:
                    body = key.aead.decrypt(nonce, ticket[KEY_ID_LEN + NONCE_LEN :], key_id)
                except InvalidTag:
                    return None
                return TicketState.from_cbor(body)
        return None
