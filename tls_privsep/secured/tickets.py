"""Stateless session tickets (RFC 8446 §4.6.1): the resumption state, sealed under a rotating key.

secured keeps no per-ticket state; the ticket *is* the state, AES-256-GCM sealed so only secured can
read or forge it. Keys rotate so that stealing secured's memory exposes only recent tickets
(forward secrecy for resumption, RFC 8446 §8 and appendix E.6), and a key is forgotten at the latest
``(1 + keep) * rotate_after`` seconds after it was made, whether or not anything was sealed since.

Tickets are attacker-controlled input: :meth:`TicketKeys.open` returns None for anything it does
not like and never raises. Replay protection for 0-RTT is not done here (we do not accept early data).
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tls_privsep.shared.errors import ConfigError
from tls_privsep.shared.state import fingerprint

KEY_ID_LEN = 4
NONCE_LEN = 12
TAG_LEN = 16
MAX_TICKET = 0xFFFF  # the ticket<1..2^16-1> vector of NewSessionTicket
MAX_LIFETIME = 604800  # seconds, RFC 8446 §4.6.1
# Seals per key per process; nonces are deterministic (instance || counter), so this is a sanity bound.
MAX_SEALS_PER_KEY = 1 << 32

# 2: the ems flag (TLS 1.2). Tickets of format 1 are refused, which costs their holders one full handshake.
_FORMAT = 2
# CBOR map keys (small integers keep tickets short).
_K_FORMAT, _K_PSK, _K_SUITE, _K_CREATED, _K_AGE_ADD, _K_LIFETIME, _K_ALPN, _K_SNI, _K_PEER, _K_EMS = range(10)


@dataclass
class TicketState:
    """What a ticket carries; ``repr`` shows a fingerprint of the PSK, never the PSK.

    One format for both versions, told apart by ``suite``: a TLS 1.3 ticket's is a TLS 1.3 suite
    (0x13xx) and ``psk`` its resumption PSK; a TLS 1.2 ticket's is a TLS 1.2 suite and ``psk`` the
    session's master secret, ``ems`` whether it was extended (RFC 7627 §5.3), ``age_add`` unused.
    Each engine takes only tickets of its own suites, so neither version can resume the other's.
    """

    psk: bytes = field(repr=False)
    suite: int
    created_ms: int
    age_add: int
    lifetime: int
    alpn: str | None = None
    sni: str | None = None
    peer_certs: list[bytes] = field(default_factory=list, repr=False)
    ems: bool = False

    def __repr__(self) -> str:
        return (
            f"TicketState(psk={fingerprint(self.psk)}, suite=0x{self.suite:04x}, "
            f"created_ms={self.created_ms}, lifetime={self.lifetime}, alpn={self.alpn!r}, "
            f"sni={self.sni!r}, peer_certs={len(self.peer_certs)}, ems={self.ems})"
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
                _K_EMS: self.ems,
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
        if not isinstance(m, dict) or set(m) != set(range(10)) or m[_K_FORMAT] != _FORMAT:
            return None
        psk, suite, created, age_add, lifetime = (
            m[_K_PSK],
            m[_K_SUITE],
            m[_K_CREATED],
            m[_K_AGE_ADD],
            m[_K_LIFETIME],
        )
        alpn, sni, peer, ems = m[_K_ALPN], m[_K_SNI], m[_K_PEER], m[_K_EMS]
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
            and isinstance(ems, bool)
        )
        if not ok:
            return None
        return cls(psk, suite, created, age_add, lifetime, alpn, sni, list(peer), ems)


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


def _expand(secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869) with SHA-256, one block: every output here is at most 32 bytes."""
    return hmac.digest(secret, b"tls-privsep ticket " + label + b"\x01", "sha256")[:length]


class TicketKeys:
    """The current sealing key plus up to ``keep`` previous ones, still accepted for opening.

    Keys come from a one-way ratchet: epoch ``e`` runs from ``origin + e * rotate_after``; its state is
    the hash of the previous epoch's, and its key and key id are derived from that state. Workers
    forked from one TicketKeys therefore derive the same keys at the same times without talking, so a
    ticket sealed by one opens in any other; and a process holds only the current state and the keys
    still alive, so stealing its memory reveals no key older than ``keep`` rotations.

    Nonces are ``instance || counter``: each live process seals under its own instance number (its
    worker's spawn number, see :meth:`for_instance`), so no two processes ever use one nonce twice.
    """

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
        self._clock = clock
        self._origin = clock()
        self._epoch = 0
        self._state = rng(32)
        self._instance = 0
        self._keys: list[_Key] = []  # newest first
        self._keys.insert(0, self._derive())

    def __repr__(self) -> str:
        return f"TicketKeys(key_ids={self.key_ids()}, rotate_after={self.rotate_after}, keep={self.keep})"

    def for_instance(self, instance: int) -> None:
        """Seal with nonces of this instance from now on (a forked worker's unique spawn number)."""
        if not 0 <= instance < 1 << 32:
            raise ValueError("instance must fit in 32 bits")
        self._instance = instance
        for key in self._keys:
            key.seals = 0

    def key_ids(self) -> list[str]:
        """Hex ids of the keys held, newest first (safe to log)."""
        return [k.key_id.hex() for k in self._keys]

    def _derive(self) -> _Key:
        created = self._origin + self._epoch * self.rotate_after
        return _Key(_expand(self._state, b"id", KEY_ID_LEN), _expand(self._state, b"key", 32), created)

    def _alive(self, key: _Key, now: float) -> bool:
        return now - key.created < (1 + self.keep) * self.rotate_after

    def advance(self) -> None:
        """Move the ratchet to the current epoch even when nothing is sealed or opened: an idle worker or
        the supervisor must not keep an old state from which every later key derives."""
        self._forget_expired(self._clock())

    def _forget_expired(self, now: float) -> None:
        """Advance to the current epoch and drop keys past their life, at every use: an idle server must
        not keep old ticket keys (or the state they came from)."""
        epoch = int((now - self._origin) // self.rotate_after)
        while self._epoch < epoch:
            self._state = _expand(self._state, b"ratchet", 32)
            self._epoch += 1
            if epoch - self._epoch <= self.keep:  # only the keys that will still be alive
                self._keys.insert(0, self._derive())
        self._keys = [k for k in self._keys[: 1 + self.keep] if self._alive(k, now)]

    def seal(self, state: TicketState) -> bytes | None:
        """``key_id || nonce || AES-256-GCM(body, aad=key_id)``; None once this epoch's nonces are spent."""
        now = self._clock()
        self._forget_expired(now)
        if not self._keys:
            return None
        cur = self._keys[0]
        if cur.seals >= MAX_SEALS_PER_KEY:
            return None  # no tickets until the next epoch's key (never in practice: 2^32 per epoch)
        nonce = self._instance.to_bytes(4, "big") + cur.seals.to_bytes(8, "big")
        cur.seals += 1
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
        for key in self._keys:  # ids are 4 derived bytes: two live keys may share one, so try each
            if key.key_id == key_id and self._alive(key, now):
                try:
                    body = key.aead.decrypt(nonce, ticket[KEY_ID_LEN + NONCE_LEN :], key_id)
                except InvalidTag:
                    continue
                return TicketState.from_cbor(body)
        return None
