"""secured.tickets: sealing, rotation, and refusing anything that is not our own ticket."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from tls_privsep.secured import tickets as t
from tls_privsep.secured.tickets import TicketKeys, TicketState
from tls_privsep.shared.errors import ConfigError

STATE = TicketState(
    psk=bytes(range(32)),
    suite=0x1301,
    created_ms=1_700_000_000_000,
    age_add=0xDEADBEEF,
    lifetime=7200,
    alpn="h2",
    sni="example.com",
    peer_certs=[b"\x30\x82cert1", b"\x30\x82cert2"],
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingRng:
    """Deterministic bytes, so a test can know the key and forge well-authenticated garbage."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, size: int) -> bytes:
        out = b""
        while len(out) < size:
            self.n += 1
            out += hashlib.sha256(self.n.to_bytes(8, "big")).digest()
        return out[:size]


def test_round_trip() -> None:
    keys = TicketKeys()
    ticket = keys.seal(STATE)
    assert keys.open(ticket) == STATE
    minimal = TicketState(psk=b"\x01" * 48, suite=0x1302, created_ms=0, age_add=0, lifetime=0)
    assert keys.open(keys.seal(minimal)) == minimal
    assert keys.open(bytearray(ticket)) == STATE
    assert ticket[:4].hex() == keys.key_ids()[0]


def test_other_instance_cannot_open() -> None:
    assert TicketKeys().open(TicketKeys().seal(STATE)) is None


def test_rotation_keeps_previous_keys() -> None:
    clock = Clock()
    keys = TicketKeys(rotate_after=100, keep=2, clock=clock)
    first = keys.seal(STATE)
    clock.now += 99
    assert keys.seal(STATE)[:4] == first[:4]  # not due yet
    clock.now += 1
    second = keys.seal(STATE)
    assert second[:4] != first[:4]
    assert keys.open(first) == STATE
    clock.now += 100
    keys.seal(STATE)
    assert len(keys.key_ids()) == 3
    assert keys.open(first) == STATE and keys.open(second) == STATE
    clock.now += 100
    keys.seal(STATE)
    assert len(keys.key_ids()) == 3
    assert keys.open(first) is None  # dropped after `keep` rotations
    assert keys.open(second) == STATE


def test_keys_expire_without_sealing() -> None:
    """A key dies (1 + keep) * rotate_after after it was made even if nothing rotated it out."""
    clock = Clock()
    keys = TicketKeys(rotate_after=100, keep=1, clock=clock)
    ticket = keys.seal(STATE)
    clock.now += 199
    assert keys.open(ticket) == STATE
    clock.now += 1
    assert keys.open(ticket) is None


def test_keep_zero() -> None:
    clock = Clock()
    keys = TicketKeys(rotate_after=10, keep=0, clock=clock)
    ticket = keys.seal(STATE)
    clock.now += 10
    keys.seal(STATE)
    assert keys.open(ticket) is None


def test_no_tickets_past_the_nonce_budget_until_the_next_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(t, "MAX_SEALS_PER_KEY", 3)
    clock = Clock()
    keys = TicketKeys(rotate_after=100, clock=clock)
    sealed = [keys.seal(STATE) for _ in range(5)]
    assert [x is not None for x in sealed] == [True, True, True, False, False]
    clock.now += 100
    assert keys.seal(STATE) is not None


def test_nonces_are_instance_and_counter() -> None:
    keys = TicketKeys()
    keys.for_instance(7)
    nonces = [keys.seal(STATE)[4:16] for _ in range(3)]  # type: ignore[index]
    assert nonces == [(7).to_bytes(4, "big") + i.to_bytes(8, "big") for i in range(3)]


def test_forked_workers_agree_on_keys_without_talking() -> None:
    """Two copies made from one seed (as fork makes them) seal and open each other's tickets, through
    rotations, while their nonces never meet (each has its own instance number)."""
    clock = Clock()
    first = TicketKeys(rotate_after=100, keep=1, rng=CountingRng(), clock=clock)
    second = TicketKeys(rotate_after=100, keep=1, rng=CountingRng(), clock=clock)
    first.for_instance(1)
    second.for_instance(2)
    for _ in range(3):
        a, b = first.seal(STATE), second.seal(STATE)
        assert a is not None and b is not None and a[:4] == b[:4] and a[4:16] != b[4:16]
        assert first.key_ids() == second.key_ids()
        assert second.open(a) == STATE and first.open(b) == STATE
        clock.now += 100
        assert second.open(a) == STATE  # the previous key is still kept
    assert TicketKeys(rng=CountingRng(), clock=clock).key_ids() != first.key_ids()[:1]  # the ratchet moved on


def test_same_key_id_on_two_live_keys_tries_both(monkeypatch: pytest.MonkeyPatch) -> None:
    real = t._expand
    monkeypatch.setattr(t, "_expand", lambda secret, label, n: b"same" if label == b"id" else real(secret, label, n))
    clock = Clock()
    keys = TicketKeys(rotate_after=100, keep=1, clock=clock)
    old = keys.seal(STATE)
    clock.now += 100
    new = keys.seal(STATE)
    assert keys.key_ids() == [b"same".hex()] * 2
    assert old is not None and new is not None and keys.open(old) == STATE and keys.open(new) == STATE


def test_tampering_anywhere_is_refused() -> None:
    keys = TicketKeys()
    ticket = keys.seal(STATE)
    for i in range(len(ticket)):
        bad = bytearray(ticket)
        bad[i] ^= 0x01
        assert keys.open(bytes(bad)) is None
    for n in range(len(ticket)):
        assert keys.open(ticket[:n]) is None
    assert keys.open(ticket + b"\x00") is None


def test_authenticated_but_malformed_body() -> None:
    rng = CountingRng()
    keys = TicketKeys(rng=rng)
    state = CountingRng()(32)  # the ratchet's first state; the epoch's key and id derive from it
    key_id, secret = t._expand(state, b"id", 4), t._expand(state, b"key", 32)
    assert keys.key_ids() == [key_id.hex()]
    good = dict(
        cbor2.loads(cbor2.dumps({0: 2, 1: b"k" * 32, 2: 0x1301, 3: 1, 4: 2, 5: 3, 6: None, 7: None, 8: [], 9: False}))
    )

    def forge(body: bytes) -> bytes:
        nonce = b"\x07" * 12
        return key_id + nonce + AESGCM(secret).encrypt(nonce, body, key_id)

    assert keys.open(forge(cbor2.dumps(good))) is not None  # the forging itself works
    bodies = [
        b"",
        b"\xff\xff",
        cbor2.dumps([1, 2, 3]),
        cbor2.dumps({**good, 0: 1}),  # the format before the ems flag
        cbor2.dumps({**good, 0: 3}),  # unknown format
        cbor2.dumps({**good, 10: 1}),  # unknown field
        cbor2.dumps({k: v for k, v in good.items() if k != 9}),  # missing ems
        cbor2.dumps({**good, 9: 1}),  # ems not a bool
        cbor2.dumps({k: v for k, v in good.items() if k != 1}),  # missing psk
        cbor2.dumps({**good, 1: "text"}),
        cbor2.dumps({**good, 1: b""}),
        cbor2.dumps({**good, 2: -1}),
        cbor2.dumps({**good, 4: 1 << 32}),
        cbor2.dumps({**good, 5: 604801}),
        cbor2.dumps({**good, 3: True}),
        cbor2.dumps({**good, 6: 5}),
        cbor2.dumps({**good, 8: ["not bytes"]}),
        cbor2.dumps({**good, 8: b"not a list"}),
    ]
    for body in bodies:
        assert keys.open(forge(body)) is None, body


@given(st.binary(max_size=300))
def test_garbage_never_raises(data: bytes) -> None:
    keys = _GARBAGE_KEYS
    assert keys.open(data) is None
    assert keys.open(bytes.fromhex(keys.key_ids()[0]) + data) is None


_GARBAGE_KEYS = TicketKeys()


def test_nonces_are_unique() -> None:
    keys = TicketKeys()
    sealed = [keys.seal(STATE) for _ in range(2000)]
    nonces = {s[4:16] for s in sealed}
    assert len(nonces) == len(sealed)
    assert len(set(sealed)) == len(sealed)


def test_bad_parameters() -> None:
    with pytest.raises(ConfigError):
        TicketKeys(rotate_after=0)
    with pytest.raises(ConfigError):
        TicketKeys(keep=-1)


def test_repr_hides_secrets() -> None:
    keys = TicketKeys(rng=CountingRng())
    replay = CountingRng()
    replay(4)
    secret = replay(32)
    assert secret.hex() not in repr(keys)
    text = repr(STATE)
    assert STATE.psk.hex() not in text and STATE.psk.hex()[:16] not in text
    assert "example.com" in text


def test_expired_keys_are_forgotten_without_new_seals() -> None:
    """An idle server drops old ticket keys when it next looks at a ticket, not only when it seals."""
    now = [1000.0]
    keys = TicketKeys(rotate_after=10, keep=1, clock=lambda: now[0])
    old = keys.seal(STATE)
    first_id = keys.key_ids()
    now[0] += 100  # far past (1 + keep) * rotate_after
    assert keys.open(old) is None
    assert first_id[0] not in keys.key_ids() and len(keys.key_ids()) == 2  # this epoch's and the one kept


def test_advance_moves_the_ratchet_without_tickets() -> None:
    """An idle worker (or the supervisor) forgets old keys too, so its memory opens no old ticket."""
    clock = Clock()
    keys = TicketKeys(rotate_after=100, keep=1, clock=clock)
    first = keys.key_ids()
    clock.now += 250
    keys.advance()
    assert not set(first) & set(keys.key_ids())
