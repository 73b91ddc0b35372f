"""The TLS 1.2 record layer: RFC 5246 §6.2.3.3 record format by hand, round trips, and every error with its alert.

Records are checked against ones built here straight from the RFC formulas with ``cryptography``'s AEADs
(RFC 5288 §3 for AES-GCM, RFC 7905 §2 for ChaCha20-Poly1305); the handshake engine's tests talk to
Python's ``ssl`` over the same protection.
"""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.test_record_fuzz import BOUNDED, MUTATION, feed, mutate
from tls_privsep.shared import errors
from tls_privsep.shared.record import (
    MAX_CIPHERTEXT,
    MAX_CIPHERTEXT12,
    MAX_CLIENT_HELLO,
    MAX_PLAINTEXT,
    ApplicationData,
    ChangeCipherSpec,
    CloseNotify,
    Event,
    HandshakeMessage,
    Phase,
    RecordLayer,
    RecordProtection,
    RenegotiationRefused,
    Tls12Protection,
)
from tls_privsep.shared.state import TLS12, TrafficState
from tls_privsep.shared.tls12 import SUITES12

ALL_SUITES = sorted(SUITES12)
GCM_SUITES = [s for s in ALL_SUITES if not SUITES12[s].chacha]
AES128 = 0xC02F
CCS = b"\x14\x03\x03\x00\x01\x01"
NO_RENEGOTIATION = b"\x01\x64"  # warning, no_renegotiation (100)


def material(suite: int, seed: int) -> bytes:
    return bytes((seed + 7 * i) % 256 for i in range(SUITES12[suite].key_material_len))


def client_km(suite: int) -> bytes:
    return material(suite, 1)


def server_km(suite: int) -> bytes:
    return material(suite, 2)


def by_hand(suite: int, key_material: bytes, seq: int, ctype: int, data: bytes, version: bytes = b"\x03\x03") -> bytes:
    """One record from RFC 5246 §6.2.3.3 and RFC 5288 §3 / RFC 7905 §2, nothing of ours involved."""
    params = SUITES12[suite]
    key, iv = key_material[: params.key_len], key_material[params.key_len :]
    aad = seq.to_bytes(8, "big") + bytes([ctype]) + b"\x03\x03" + len(data).to_bytes(2, "big")
    if params.chacha:
        nonce = bytes(a ^ b for a, b in zip(iv, bytes(4) + seq.to_bytes(8, "big"), strict=True))
        body = ChaCha20Poly1305(key).encrypt(nonce, data, aad)
    else:
        explicit = seq.to_bytes(8, "big")
        body = explicit + AESGCM(key).encrypt(iv + explicit, data, aad)
    return bytes([ctype]) + version + len(body).to_bytes(2, "big") + body


def plain(ctype: int, payload: bytes, version: bytes = b"\x03\x03") -> bytes:
    return bytes([ctype]) + version + len(payload).to_bytes(2, "big") + payload


def hs(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def state12(suite: int = AES128, read_seq: int = 1, write_seq: int = 1, **kw: object) -> TrafficState:
    """The server's state as secured exports it after both Finished messages."""
    return TrafficState(suite, bytearray(client_km(suite)), bytearray(server_km(suite)), read_seq=read_seq,
                        write_seq=write_seq, records_protected=write_seq, version=TLS12, **kw)  # type: ignore[arg-type]


def imported(suite: int = AES128, read_seq: int = 1, write_seq: int = 1, **kw: int) -> RecordLayer:
    return RecordLayer.from_traffic_state(state12(suite, read_seq, write_seq), **kw)


def client(suite: int = AES128, read_seq: int = 1, write_seq: int = 1) -> RecordLayer:
    """The client's side of :func:`imported`: directions and sequence numbers swapped."""
    state = state12(suite, write_seq, read_seq)
    state.read_secret, state.write_secret = state.write_secret, state.read_secret
    return RecordLayer.from_traffic_state(state)


def events(layer: RecordLayer, data: bytes = b"", max_data: int = 0) -> list[Event]:
    layer.receive_data(data)
    out = []
    while (ev := layer.next_event(max_data)) is not None:
        out.append(ev)
    return out


def opened(suite: int, key_material: bytes, seq: int, wire: bytes) -> list[tuple[int, bytes]]:
    """Every record in ``wire`` opened in order under a fresh protection at ``seq``."""
    prot, out, pos = Tls12Protection(suite, key_material, seq), [], 0
    while pos < len(wire):
        n = int.from_bytes(wire[pos + 3 : pos + 5], "big")
        out.append(prot.open(wire[pos : pos + 5], wire[pos + 5 : pos + 5 + n]))
        pos += 5 + n
    return out


# -- the record format, by hand ---------------------------------------------------------------------


@pytest.mark.parametrize("suite", ALL_SUITES)
@pytest.mark.parametrize("ctype", [21, 22, 23])
@pytest.mark.parametrize("seq", [0, 1, 0x0102030405060708, 2**64 - 1])
def test_seal_matches_the_rfc_by_hand(suite: int, ctype: int, seq: int) -> None:
    data = bytes(range(37))
    prot = Tls12Protection(suite, server_km(suite), seq)
    record = prot.seal(ctype, data)
    assert record == by_hand(suite, server_km(suite), seq, ctype, data)
    assert len(record) == prot.record_overhead + len(data)
    if not SUITES12[suite].chacha:
        assert record[5:13] == seq.to_bytes(8, "big")  # our explicit nonce is the sequence number
    assert Tls12Protection(suite, server_km(suite), seq).open(record[:5], record[5:]) == (ctype, data)


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_sizes(suite: int) -> None:
    prot = Tls12Protection(suite, client_km(suite))
    chacha = SUITES12[suite].chacha
    assert prot.expansion == (16 if chacha else 24)
    assert prot.record_overhead == 5 + prot.expansion
    assert len(prot.seal(23, b"")) == prot.record_overhead
    assert len(prot.seal(23, bytes(MAX_PLAINTEXT))) == MAX_PLAINTEXT + prot.record_overhead <= 5 + MAX_CIPHERTEXT


@pytest.mark.parametrize("suite", ALL_SUITES)
@pytest.mark.parametrize("size", [0, 1, MAX_PLAINTEXT, MAX_PLAINTEXT + 1, 3 * MAX_PLAINTEXT + 5])
def test_seal_run_is_the_records_by_hand(suite: int, size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    prot = Tls12Protection(suite, server_km(suite), 9)
    count = max(1, -(-size // MAX_PLAINTEXT))
    out = bytearray(size + count * prot.record_overhead)
    n = prot.seal_run_into(memoryview(out), 23, memoryview(data))
    pieces = [data[i : i + MAX_PLAINTEXT] for i in range(0, max(size, 1), MAX_PLAINTEXT)]
    assert bytes(out[:n]) == b"".join(by_hand(suite, server_km(suite), 9 + i, 23, p) for i, p in enumerate(pieces))
    assert n == len(out) and prot.seq == 9 + count


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_open_into(suite: int) -> None:
    record = by_hand(suite, client_km(suite), 4, 23, b"into a buffer")
    prot = Tls12Protection(suite, client_km(suite), 4)
    out = bytearray(len(record) - 5 - prot.expansion)
    assert prot.open_into(record[:5], memoryview(record)[5:], memoryview(out)) == (23, 13)
    assert out == b"into a buffer" and prot.seq == 5


def test_is_a_record_protection() -> None:
    prot: RecordProtection = Tls12Protection(AES128, client_km(AES128))
    assert prot.seq == 0


def test_argument_checks_and_limits() -> None:
    with pytest.raises(ValueError, match="suite"):
        Tls12Protection(0x1301, bytes(20))
    with pytest.raises(ValueError, match="key material"):
        Tls12Protection(AES128, bytes(21))
    with pytest.raises(ValueError, match="sequence"):
        Tls12Protection(AES128, bytes(20), 2**64)
    prot = Tls12Protection(AES128, bytes(20))
    with pytest.raises(ValueError, match="padding"):
        prot.seal(23, b"x", padding=1)
    with pytest.raises(ValueError):
        prot.seal(23, bytes(MAX_PLAINTEXT + 1))
    with pytest.raises(errors.InternalError):
        prot.next_generation()  # no KeyUpdate in TLS 1.2
    last = Tls12Protection(AES128, bytes(20), 2**64 - 1)
    last.seal(23, b"the last one")
    with pytest.raises(errors.InternalError):
        last.seal(23, b"one too many")
    with pytest.raises(errors.InternalError):
        Tls12Protection(AES128, bytes(20), 2**64 - 1).seal_run_into(memoryview(bytearray(2**15)), 23, bytes(2**14 + 1))


def test_failed_open_keeps_seq() -> None:
    prot = Tls12Protection(AES128, client_km(AES128))
    bad = bytearray(by_hand(AES128, client_km(AES128), 0, 23, b"x"))
    bad[-1] ^= 1
    with pytest.raises(errors.BadRecordMac):
        prot.open(bytes(bad[:5]), bytes(bad[5:]))
    assert prot.seq == 0


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_wipe_and_repr(suite: int) -> None:
    km = client_km(suite)
    prot = Tls12Protection(suite, km, 3)
    layer = imported(suite)
    texts = [repr(prot), str(prot), repr(layer)]
    for text in texts:
        assert km.hex() not in text and server_km(suite).hex() not in text
    assert "seq=3" in repr(prot) and "version=0x0303" in repr(layer)
    prot.wipe()
    assert prot.key_material == bytearray(len(km))
    with pytest.raises(errors.InternalError):
        prot.seal(23, b"after wipe")
    with pytest.raises(errors.InternalError):
        prot.open(b"\x17\x03\x03\x00\x20", bytes(32))


# -- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_layers_round_trip_both_ways(suite: int) -> None:
    server, peer = imported(suite, read_seq=1, write_seq=3), client(suite, read_seq=1, write_seq=3)
    for size in (0, 1, 1000, MAX_PLAINTEXT, MAX_PLAINTEXT + 1, 3 * MAX_PLAINTEXT + 7):
        data = bytes(i % 253 for i in range(size))
        got = events(server, peer.send_application_data(data))
        assert b"".join(e.data for e in got if isinstance(e, ApplicationData)) == data
        got = events(peer, server.send_application_data(data, into=bytearray()))
        assert b"".join(e.data for e in got if isinstance(e, ApplicationData)) == data
    assert events(server, peer.send_alert(0, 1)) == [CloseNotify()]


def test_from_traffic_state_imports_tls12() -> None:
    state = state12(0xCCA8, read_seq=5, write_seq=7)
    layer = RecordLayer.from_traffic_state(state, max_empty_records=3)
    state.wipe()  # the layer holds its own copies
    assert layer.version == TLS12 and layer.phase is Phase.APPLICATION and layer.limits.max_empty_records == 3
    assert isinstance(layer.read, Tls12Protection) and isinstance(layer.write, Tls12Protection)
    assert (layer.read.seq, layer.write.seq) == (5, 7)
    assert layer.send_application_data(b"x") == by_hand(0xCCA8, server_km(0xCCA8), 7, 23, b"x")
    assert events(layer, by_hand(0xCCA8, client_km(0xCCA8), 5, 23, b"y")) == [ApplicationData(b"y")]
    with pytest.raises(ValueError, match="key material"):
        RecordLayer.from_traffic_state(TrafficState(AES128, bytearray(32), bytearray(32), version=TLS12))


def test_send_handshake_and_alert_are_protected_under_their_own_type() -> None:
    layer = imported()
    wire = layer.send_handshake(hs(0, b"")) + layer.send_alert(40)
    assert wire[0] == 22 and opened(AES128, server_km(AES128), 1, wire) == [(22, b"\x00\x00\x00\x00"), (21, b"\x02\x28")]


# -- the handshake phase, as secured drives it -------------------------------------------------------


def handshake_layer() -> RecordLayer:
    layer = RecordLayer()
    layer.use_tls12()
    return layer


def test_plaintext_handshake_then_ccs_event_then_protected_finished() -> None:
    layer = handshake_layer()
    cke, fin = hs(16, b"\x20" + bytes(32)), hs(20, bytes(12))
    wire = plain(22, cke) + CCS + by_hand(AES128, client_km(AES128), 0, 22, fin)
    layer.receive_data(wire)
    assert layer.next_event() == HandshakeMessage(16, cke[4:])
    assert layer.next_event() == ChangeCipherSpec()
    layer.set_read_protection(Tls12Protection(AES128, client_km(AES128)))  # what the engine does on the event
    assert layer.next_event() == HandshakeMessage(20, bytes(12))
    assert layer.next_event() is None
    # Our side: a plaintext CCS, then the write protection, then the Finished under it.
    out = layer.send_ccs()
    layer.set_write_protection(Tls12Protection(AES128, server_km(AES128)))
    out += layer.send_handshake(fin)
    assert out == CCS + by_hand(AES128, server_km(AES128), 0, 22, fin)
    with pytest.raises(errors.InternalError):
        layer.send_ccs()  # after the write protection it would have to be protected


def test_use_tls12_closes_the_tls13_ccs_window_and_is_settled_by_keys() -> None:
    layer = RecordLayer()
    layer.enter(Phase.HANDSHAKE_CCS)  # the ClientHello opened it before the version was known
    layer.use_tls12()
    assert layer.phase is Phase.HANDSHAKE and layer.version == TLS12 and not layer.ccs_allowed
    layer.use_tls12()  # idempotent
    with pytest.raises(errors.InternalError):
        layer.enter(Phase.HANDSHAKE_CCS)
    for skip in (layer.skip_early_data, layer.skip_plaintext_app_data):
        with pytest.raises(errors.InternalError):
            skip(100)
    for set_key in (layer.set_read_key, layer.set_write_key):
        with pytest.raises(errors.InternalError):
            set_key(0x1301, bytes(32))  # a TLS 1.3 protection on a TLS 1.2 layer
    keyed = RecordLayer()
    keyed.set_write_key(0x1301, bytes(32))
    with pytest.raises(errors.InternalError):
        keyed.use_tls12()
    with pytest.raises(ValueError):
        RecordLayer(version=0x0302)
    assert RecordLayer(version=TLS12).version == TLS12


@pytest.mark.parametrize("version", [b"\x03\x01", b"\x03\x03"])
def test_plaintext_records_may_carry_any_version(version: bytes) -> None:
    # The ClientHello's record often says 0x0301 (RFC 5246 Appendix E.1); only protected ones are checked.
    assert events(handshake_layer(), plain(22, hs(1, b"x"), version)) == [HandshakeMessage(1, b"x")]


def test_plaintext_warning_alert_during_handshake_is_counted() -> None:
    layer = handshake_layer()
    assert events(layer, plain(21, b"\x01\x5a") * 4) == []
    with pytest.raises(errors.UnexpectedMessage, match="warning"):
        events(layer, plain(21, b"\x01\x5a"))


# -- hostile input, each with its alert --------------------------------------------------------------


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_bad_tag(suite: int) -> None:
    rec = bytearray(by_hand(suite, client_km(suite), 1, 23, b"hello"))
    rec[-1] ^= 0x40
    with pytest.raises(errors.BadRecordMac):
        events(imported(suite), bytes(rec))


@pytest.mark.parametrize("suite", GCM_SUITES)
def test_bad_explicit_nonce(suite: int) -> None:
    rec = bytearray(by_hand(suite, client_km(suite), 1, 23, b"hello"))
    rec[5 + 7] ^= 1  # the explicit nonce says seq 0 now: the receiver takes it, and the tag fails
    with pytest.raises(errors.BadRecordMac):
        events(imported(suite), bytes(rec))


def test_explicit_nonce_is_the_senders_choice() -> None:
    """RFC 5288 §3: any unique explicit nonce is legal; we send the sequence number but read what came."""
    key, salt = client_km(AES128)[:16], client_km(AES128)[16:]
    aad = struct.pack(">QBHH", 1, 23, 0x0303, 5)
    body = b"\xaa" * 8 + AESGCM(key).encrypt(salt + b"\xaa" * 8, b"hello", aad)
    assert events(imported(), plain(23, body)) == [ApplicationData(b"hello")]


@pytest.mark.parametrize("suite", ALL_SUITES)
@pytest.mark.parametrize("cut", [1, 16, "body"])
def test_truncated_record(suite: int, cut: int | str) -> None:
    rec = by_hand(suite, client_km(suite), 1, 23, b"hello")
    body = rec[5:]
    short = body[: Tls12Protection(suite, client_km(suite)).expansion - 1] if cut == "body" else body[: -int(cut)]
    with pytest.raises(errors.BadRecordMac):
        events(imported(suite), plain(23, short))
    with pytest.raises(errors.BadRecordMac):  # the bulk path sends it the general way
        events(imported(suite), plain(23, short), max_data=1 << 20)


@pytest.mark.parametrize("version", [b"\x03\x01", b"\x03\x04", b"\x00\x00", b"\x03\x02"])
@pytest.mark.parametrize("ctype", [21, 22, 23])
def test_wrong_header_version_under_protection(version: bytes, ctype: int) -> None:
    # Sealed with that version in the header: the tag would even verify (the AAD says 0x0303).
    rec = by_hand(AES128, client_km(AES128), 1, ctype, b"\x01\x00" if ctype == 21 else b"x", version)
    with pytest.raises(errors.ProtocolVersion):
        events(imported(), rec)
    with pytest.raises(errors.ProtocolVersion):
        events(imported(), rec, max_data=1 << 20)


def test_wrong_header_version_inside_a_run_comes_after_the_data() -> None:
    good = by_hand(AES128, client_km(AES128), 1, 23, b"first")
    bad = by_hand(AES128, client_km(AES128), 2, 23, b"second", b"\x03\x01")
    layer = imported()
    layer.receive_data(good + bad)
    assert layer.next_event(1 << 20) == ApplicationData(b"first")
    with pytest.raises(errors.ProtocolVersion):
        layer.next_event(1 << 20)


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_plaintext_over_2_14_is_record_overflow(suite: int) -> None:
    rec = by_hand(suite, client_km(suite), 1, 23, bytes(MAX_PLAINTEXT + 1))
    assert len(rec) - 5 <= MAX_CIPHERTEXT  # past the framing: the decrypted length is what is refused
    with pytest.raises(errors.RecordOverflow):
        events(imported(suite), rec)
    with pytest.raises(errors.RecordOverflow):
        events(imported(suite), rec, max_data=1 << 20)
    at_limit = by_hand(suite, client_km(suite), 1, 23, bytes(MAX_PLAINTEXT))
    assert events(imported(suite), at_limit) == [ApplicationData(bytes(MAX_PLAINTEXT))]


@pytest.mark.parametrize("ctype", [20, 21, 22, 23])
def test_header_length_over_the_ciphertext_limit(ctype: int) -> None:
    # RFC 5246 §6.2.3: 2^14+2048, judged on the header alone
    head = bytes([ctype, 3, 3]) + (MAX_CIPHERTEXT12 + 1).to_bytes(2, "big")
    with pytest.raises(errors.RecordOverflow):
        events(imported(), head)
    with pytest.raises(errors.RecordOverflow):
        events(handshake_layer(), head)


@pytest.mark.parametrize("length", [MAX_CIPHERTEXT + 1, MAX_CIPHERTEXT12])
def test_a_record_within_tls12s_bound_is_judged_by_its_tag(length: int) -> None:
    # Longer than TLS 1.3 allows but within TLS 1.2's: the framing lets it through, and a record that does
    # not authenticate is bad_record_mac, as OpenSSL answers it (a sealed one over 2^14 is record_overflow,
    # test_plaintext_over_2_14_is_record_overflow).
    garbage = bytes([23, 3, 3]) + length.to_bytes(2, "big") + bytes(length)
    for max_data in (0, 1 << 20):
        with pytest.raises(errors.BadRecordMac):
            events(imported(), garbage, max_data=max_data)
    layer = imported()
    layer.receive_data(client().send_application_data(b"first") + garbage)
    assert layer.next_event(1 << 20) == ApplicationData(b"first")  # the data before it is delivered first
    with pytest.raises(errors.BadRecordMac):
        layer.next_event(1 << 20)


def test_plaintext_record_over_2_14_before_keys() -> None:
    with pytest.raises(errors.RecordOverflow):
        events(handshake_layer(), b"\x16\x03\x03" + (MAX_PLAINTEXT + 1).to_bytes(2, "big"))


def test_ccs_in_application_phase() -> None:
    with pytest.raises(errors.UnexpectedMessage, match="change_cipher_spec"):
        events(imported(), CCS)  # refused on its header, not decrypted
    with pytest.raises(errors.UnexpectedMessage, match="change_cipher_spec"):
        events(imported(), by_hand(AES128, client_km(AES128), 1, 20, b"\x01"))


def test_second_ccs_after_the_read_protection() -> None:
    layer = handshake_layer()
    assert events(layer, CCS) == [ChangeCipherSpec()]
    layer.set_read_protection(Tls12Protection(AES128, client_km(AES128)))
    with pytest.raises(errors.UnexpectedMessage, match="change_cipher_spec"):
        events(layer, CCS)


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x02", b"\x01\x01"])
def test_malformed_ccs_is_decode_error(payload: bytes) -> None:
    with pytest.raises(errors.DecodeError):
        events(handshake_layer(), plain(20, payload))


def test_ccs_inside_a_fragmented_handshake_message() -> None:
    layer = handshake_layer()
    with pytest.raises(errors.UnexpectedMessage, match="fragmented"):
        events(layer, plain(22, hs(16, bytes(33))[:10]) + CCS)


def test_ccs_in_tls13_mode_is_still_dropped_or_refused() -> None:
    layer = RecordLayer()
    with pytest.raises(errors.UnexpectedMessage):
        events(layer, CCS)  # outside the compatibility window
    layer = RecordLayer()
    layer.enter(Phase.HANDSHAKE_CCS)
    assert events(layer, CCS) == []


def test_plaintext_application_data_before_keys() -> None:
    with pytest.raises(errors.UnexpectedMessage, match="application data"):
        events(handshake_layer(), plain(23, b"too early"))
    # a layer with a write protection only still reads plaintext, and still refuses it
    layer = handshake_layer()
    layer.set_write_protection(Tls12Protection(AES128, server_km(AES128)))
    with pytest.raises(errors.UnexpectedMessage, match="application data"):
        events(layer, plain(23, b"too early"))


@pytest.mark.parametrize("msg_type", [0, 2, 4, 11, 16, 20, 24])
def test_handshake_message_other_than_client_hello_after_the_handshake(msg_type: int) -> None:
    peer = client()
    with pytest.raises(errors.UnexpectedMessage, match=f"type {msg_type} after the handshake"):
        events(imported(), peer.send_handshake(hs(msg_type, b"\x00")))


def test_fatal_alert_is_peer_alert() -> None:
    peer = client()
    with pytest.raises(errors.PeerAlert) as info:
        events(imported(), peer.send_alert(40, 2))
    assert info.value.raw_description == 40 and info.value.level == 2
    with pytest.raises(errors.PeerAlert):  # user_canceled is fatal when the level says so
        events(imported(), client().send_alert(90, 2))


@pytest.mark.parametrize("level", [0, 3, 255])
def test_unknown_alert_level(level: int) -> None:
    with pytest.raises(errors.IllegalParameter):
        events(imported(), client().send_alert(40, level))


def test_warning_alerts_are_ignored_but_counted() -> None:
    server, peer = imported(max_warning_alerts=4), client()
    for description in (90, 100, 112, 40):  # user_canceled, no_renegotiation, even a warning handshake_failure
        assert events(server, peer.send_alert(description, 1)) == []
    assert events(server, peer.send_application_data(b"resets the count")) == [ApplicationData(b"resets the count")]
    for _ in range(4):
        assert events(server, peer.send_alert(90, 1)) == []
    with pytest.raises(errors.UnexpectedMessage, match="too many warning alerts"):
        events(server, peer.send_alert(90, 1))


@pytest.mark.parametrize("level", [1, 2])
def test_close_notify_at_either_level(level: int) -> None:
    server, peer = imported(), client()
    wire = peer.send_application_data(b"last") + peer.send_alert(0, level) + b"\xff garbage"
    assert events(server, wire) == [ApplicationData(b"last"), CloseNotify()]
    assert server.closed


def test_empty_records_are_limited() -> None:
    server, peer = imported(max_empty_records=3), client()
    for _ in range(3):
        assert events(server, peer.send_application_data(b""), max_data=100) == []
    with pytest.raises(errors.UnexpectedMessage):
        events(server, peer.send_application_data(b""))


# -- renegotiation ------------------------------------------------------------------------------------


def test_first_renegotiation_is_refused_with_a_warning_and_data_goes_on() -> None:
    server, peer = imported(), client()
    hello = hs(1, bytes(3 * MAX_PLAINTEXT))  # fragmented across four records
    wire = peer.send_handshake(hello)
    assert wire.count(b"\x16\x03\x03") >= 4
    assert events(server, wire) == [RenegotiationRefused()]
    assert server.renegotiations_refused == 1
    queued = server.data_to_send()
    assert queued == by_hand(AES128, server_km(AES128), 1, 21, NO_RENEGOTIATION)
    assert events(server, peer.send_application_data(b"still here")) == [ApplicationData(b"still here")]
    assert events(peer, queued + server.send_application_data(b"and here")) == [ApplicationData(b"and here")]


def test_renegotiation_answer_goes_out_before_later_data() -> None:
    server, peer = imported(), client()
    events(server, peer.send_handshake(hs(1, b"hello")))
    wire = server.send_application_data(b"after")  # the caller did not ask for data_to_send
    assert opened(AES128, server_km(AES128), 1, wire) == [(21, NO_RENEGOTIATION), (23, b"after")]


def test_second_renegotiation_is_fatal() -> None:
    server, peer = imported(), client()
    events(server, peer.send_handshake(hs(1, b"first")))
    with pytest.raises(errors.UnexpectedMessage, match="insisted on renegotiation"):
        events(server, peer.send_handshake(hs(1, b"second")[:4]))  # judged on the header alone


def test_renegotiation_client_hello_size_limit() -> None:
    with pytest.raises(errors.IllegalParameter):
        events(imported(), client().send_handshake(hs(1, b"")[:1] + (MAX_CLIENT_HELLO + 1).to_bytes(3, "big")))


def test_no_renegotiation_answer_after_our_close_notify() -> None:
    server, peer = imported(), client()
    server.send_alert(0, 1)
    assert events(server, peer.send_handshake(hs(1, b"hello"))) == [RenegotiationRefused()]
    assert server.data_to_send() == b""


def test_renegotiation_at_the_keys_last_record_closes_instead() -> None:
    server, peer = imported(key_update_after=3), client()  # seq 1 sent; 2 may be data, 3 must be close_notify
    server.send_application_data(b"x")
    assert server.records_before_key_update() == 0
    assert events(server, peer.send_handshake(hs(1, b"hello"))) == [RenegotiationRefused()]
    assert server.write_exhausted
    assert opened(AES128, server_km(AES128), 2, server.data_to_send()) == [(21, b"\x01\x00")]


# -- the write key's usage limit ----------------------------------------------------------------------


def test_usage_limit_ends_the_connection_with_close_notify() -> None:
    # key_update_after=4 and the Finished took seq 0: seqs 1 and 2 for data, 3 for the close_notify.
    server, peer = imported(key_update_after=4, write_seq=1), client(write_seq=1)
    assert server.records_before_key_update() == 2
    wire = server.send_application_data(bytes(3 * MAX_PLAINTEXT))
    assert server.write_exhausted
    assert [t for t, _ in opened(AES128, server_km(AES128), 1, wire)] == [23, 23, 21]
    got = events(peer, wire)
    assert got[-1] == CloseNotify() and sum(len(e.data) for e in got if isinstance(e, ApplicationData)) == 2 * MAX_PLAINTEXT
    for send in (lambda: server.send_application_data(b"more"), lambda: server.send_alert(80)):
        with pytest.raises(errors.InternalError):
            send()
    # The read side is untouched (data the client sent before it read our close_notify: a client that read
    # it has answered with its own and sends nothing more, RFC 5246 §7.2.1).
    assert peer.close_sent and peer.data_to_send()[:1] == b"\x15"
    assert events(server, client(write_seq=1).send_application_data(b"fine")) == [ApplicationData(b"fine")]


def test_usage_limit_a_send_that_fits_exactly_does_not_close() -> None:
    server = imported(key_update_after=4, write_seq=1)
    server.send_application_data(bytes(2 * MAX_PLAINTEXT))
    assert not server.write_exhausted and server.records_before_key_update() == 0
    wire = server.send_application_data(b"")  # even an empty record needs a place: only the close fits
    assert server.write_exhausted and opened(AES128, server_km(AES128), 3, wire) == [(21, b"\x01\x00")]


def test_usage_limit_counts_from_records_protected() -> None:
    state = state12(write_seq=1)
    state.records_protected = 5  # more than the sequence number: the key's life is shorter
    layer = RecordLayer.from_traffic_state(state, key_update_after=8)
    assert layer.records_before_key_update() == 8 - 1 - 5
    state = state12(write_seq=4)
    state.records_protected = 0  # fewer never lengthens it
    assert RecordLayer.from_traffic_state(state, key_update_after=8).records_before_key_update() == 3


def test_usage_limit_with_queued_bytes_first() -> None:
    server, peer = imported(key_update_after=4), client()
    events(server, peer.send_handshake(hs(1, b"hello")))  # the warning takes seq 1
    wire = server.send_application_data(bytes(MAX_PLAINTEXT + 1))
    assert [t for t, _ in opened(AES128, server_km(AES128), 1, wire)] == [21, 23, 21]


# -- framing: every split, runs ---------------------------------------------------------------------------


def valid_stream(suite: int) -> bytes:
    peer = client(suite)
    parts = [
        peer.send_application_data(b"hello"),
        peer.send_application_data(b""),
        peer.send_alert(90, 1),
        peer.send_handshake(hs(1, bytes(300))[:100]),
        peer.send_handshake(hs(1, bytes(300))[100:]),
        peer.send_application_data(b"x" * 2000),
        peer.send_application_data(b"y"),
        peer.send_alert(0, 1),
    ]
    return b"".join(parts)


EXPECTED = [ApplicationData(b"hello"), RenegotiationRefused(), ApplicationData(b"x" * 2000), ApplicationData(b"y"),
            CloseNotify()]


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_split_at_every_byte_boundary(suite: int) -> None:
    data = valid_stream(suite)
    assert events(imported(suite), data) == EXPECTED
    for cut in range(len(data) + 1):
        layer = imported(suite)
        assert events(layer, data[:cut]) + events(layer, data[cut:]) == EXPECTED, cut


def test_byte_at_a_time() -> None:
    data = valid_stream(AES128)
    layer, got = imported(), []
    for i in range(len(data)):
        got += events(layer, data[i : i + 1])
    assert got == EXPECTED


def test_runs_join_application_data_and_stop_at_other_types() -> None:
    data = valid_stream(0xC030)
    layer = imported(0xC030)
    got = events(layer, data, max_data=1 << 20)
    joined = b"".join(e.data for e in got if isinstance(e, ApplicationData))
    assert joined == b"hello" + b"x" * 2000 + b"y"
    assert [type(e) for e in got] == [ApplicationData, RenegotiationRefused, ApplicationData, CloseNotify]
    assert got[2] == ApplicationData(b"x" * 2000 + b"y") and got[2].records == 2


# -- properties ---------------------------------------------------------------------------------------


@BOUNDED
@given(suite=st.sampled_from(ALL_SUITES), chunks=st.lists(st.binary(max_size=300), max_size=8),
       bulk=st.booleans())
def test_random_bytes_to_an_imported_layer_raise_only_alerts(suite: int, chunks: list[bytes], bulk: bool) -> None:
    feed(imported(suite), chunks, 1 << 16 if bulk else 0)


@BOUNDED
@given(suite=st.sampled_from(ALL_SUITES), body=st.binary(max_size=200), ctype=st.sampled_from([20, 21, 22, 23]),
       version=st.sampled_from([b"\x03\x03", b"\x03\x01"]))
def test_random_record_bodies_raise_only_alerts(suite: int, body: bytes, ctype: int, version: bytes) -> None:
    feed(imported(suite), [plain(ctype, body, version)])
    feed(handshake_layer(), [plain(ctype, body, version)])


@BOUNDED
@given(
    suite=st.sampled_from(ALL_SUITES),
    mutations=st.lists(MUTATION, min_size=1, max_size=4),
    fill=st.binary(min_size=1, max_size=8),
    split=st.integers(0, 5000),
    bulk=st.booleans(),
)
def test_mutated_streams_raise_only_alerts(
    suite: int, mutations: list[tuple[str, int]], fill: bytes, split: int, bulk: bool
) -> None:
    data = mutate(valid_stream(suite), mutations, fill)
    split %= len(data) + 1
    feed(imported(suite), [data[:split], data[split:]], 1 << 16 if bulk else 0)


@BOUNDED
@given(suite=st.sampled_from(ALL_SUITES), data=st.binary(max_size=2000), ctype=st.sampled_from([21, 22, 23]),
       seq=st.integers(0, 2**64 - 2))
def test_seal_open_round_trip(suite: int, data: bytes, ctype: int, seq: int) -> None:
    a, b = Tls12Protection(suite, client_km(suite), seq), Tls12Protection(suite, client_km(suite), seq)
    rec = a.seal(ctype, data)
    assert rec == by_hand(suite, client_km(suite), seq, ctype, data)
    assert b.open(rec[:5], rec[5:]) == (ctype, data)
    assert a.seq == b.seq == seq + 1


# -- closure and interleaving: where TLS 1.2 differs from TLS 1.3 ------------------------------------


def test_a_close_notify_is_answered_with_ours_at_once() -> None:
    # RFC 5246 §7.2.1: respond with a close_notify of our own and write nothing more (TLS 1.3 closes each
    # direction on its own, RFC 8446 §6.1: there the application decides when its side ends).
    server, peer = imported(), client()
    assert events(server, peer.send_alert(0, level=1)) == [CloseNotify()]
    assert server.close_sent
    assert opened(AES128, server_km(AES128), 1, server.data_to_send()) == [(21, b"\x01\x00")]
    assert server.data_to_send() == b""  # once
    tls13 = RecordLayer.from_traffic_state(TrafficState(0x1301, bytearray(32), bytearray(32)))
    tls13_peer = RecordLayer.from_traffic_state(TrafficState(0x1301, bytearray(32), bytearray(32)))
    assert events(tls13, tls13_peer.send_alert(0, level=1)) == [CloseNotify()]
    assert not tls13.close_sent and tls13.data_to_send() == b""


def test_after_our_own_close_notify_a_peer_close_notify_is_not_answered_again() -> None:
    server, peer = imported(), client()
    ours = server.send_alert(0, level=1)
    assert events(server, peer.send_alert(0, level=1)) == [CloseNotify()]
    assert server.data_to_send() == b"" and opened(AES128, server_km(AES128), 1, ours) == [(21, b"\x01\x00")]


def test_records_of_other_types_may_come_between_fragments_of_a_handshake_message() -> None:
    # RFC 5246 §6.2.1: TLS 1.2 lets content types interleave (TLS 1.3 forbids it, RFC 8446 §5.1): application
    # data between two fragments of a renegotiation ClientHello is delivered, and the hello still refused.
    server, peer = imported(), client()
    hello = hs(1, bytes(60))
    wire = peer._send(22, hello[:30]) + peer.send_application_data(b"between") + peer._send(22, hello[30:])
    got = events(server, bytes(wire))
    assert got == [ApplicationData(b"between"), RenegotiationRefused()]
    # and in the handshake, a warning alert between two fragments of the ClientKeyExchange
    layer = handshake_layer()
    cke = hs(16, b"\x20" + bytes(32))
    assert events(layer, plain(22, cke[:10]) + plain(21, b"\x01\x5a") + plain(22, cke[10:])) == [
        HandshakeMessage(16, cke[4:])]


def test_no_change_cipher_spec_between_fragments_of_a_handshake_message() -> None:
    layer = handshake_layer()
    cke = hs(16, b"\x20" + bytes(32))
    with pytest.raises(errors.UnexpectedMessage):
        events(layer, plain(22, cke[:10]) + CCS + plain(22, cke[10:]))
