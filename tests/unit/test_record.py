"""The TLS 1.3 record layer: RFC 8448 known answers, round trips, and every error with its alert."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from tests.vectors import section
from tls_privsep.shared import errors
from tls_privsep.shared.keyschedule import SUITES, next_traffic_secret, traffic_key_iv
from tls_privsep.shared.record import (
    MAX_CIPHERTEXT,
    MAX_CLIENT_HELLO,
    MAX_PLAINTEXT,
    ApplicationData,
    CloseNotify,
    ContentType,
    Event,
    HandshakeMessage,
    HandshakeType,
    KeyUpdated,
    Phase,
    Protection,
    RecordLayer,
)
from tls_privsep.shared.state import TrafficState

ALL_SUITES = [0x1301, 0x1302, 0x1303]
AES128 = 0x1301
CCS = b"\x14\x03\x03\x00\x01\x01"


def secrets_for(suite: int) -> tuple[bytes, bytes]:
    """(client, server) traffic secrets of the right length for ``suite``."""
    n = SUITES[suite].hash_len
    return bytes(range(1, n + 1)), bytes(range(100, 100 + n))


C_SECRET, S_SECRET = secrets_for(AES128)


def plain(ctype: int, payload: bytes, version: bytes = b"\x03\x03") -> bytes:
    return bytes([ctype]) + version + len(payload).to_bytes(2, "big") + payload


def hs(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def raw_protected(secret: bytes, inner: bytes, seq: int = 0, suite: int = AES128) -> bytes:
    """Seal an arbitrary inner plaintext, bypassing Protection's own checks."""
    key, iv = traffic_key_iv(SUITES[suite], secret)
    aead = ChaCha20Poly1305(key) if suite == 0x1303 else AESGCM(key)
    header = b"\x17\x03\x03" + (len(inner) + 16).to_bytes(2, "big")
    nonce = (int.from_bytes(iv, "big") ^ seq).to_bytes(12, "big")
    return header + aead.encrypt(nonce, inner, header)


def events(layer: RecordLayer, data: bytes = b"") -> list[Event]:
    layer.receive_data(data)
    out = []
    while (ev := layer.next_event()) is not None:
        out.append(ev)
    return out


def reader(app: bool = False, suite: int = AES128) -> RecordLayer:
    """A server-side layer reading under the client secret."""
    layer = RecordLayer()
    layer.set_read_key(suite, secrets_for(suite)[0])
    if app:
        layer.enter(Phase.APPLICATION)
    return layer


def sender(suite: int = AES128) -> Protection:
    """The client's write protection matching :func:`reader`."""
    return Protection(suite, secrets_for(suite)[0])


def pair(suite: int = AES128, app: bool = True) -> tuple[RecordLayer, RecordLayer]:
    c, s = secrets_for(suite)
    server, client = RecordLayer(), RecordLayer()
    server.set_read_key(suite, c)
    server.set_write_key(suite, s)
    client.set_read_key(suite, s)
    client.set_write_key(suite, c)
    if app:
        server.enter(Phase.APPLICATION)
        client.enter(Phase.APPLICATION)
    return server, client


# -- RFC 8448 §3 (and §4, §7) known answers ---------------------------------------------------


def test_rfc8448_server_records_byte_exact() -> None:
    v = section("simple_1rtt")
    p = Protection(AES128, v["server_application_traffic_secret_0"])
    assert (
        p.seal(ContentType.handshake, v["new_session_ticket_record_payload"])
        == v["new_session_ticket_record"]
    )
    assert p.seq == 1
    assert (
        p.seal(ContentType.application_data, v["server_application_data_record_payload"])
        == v["server_application_data_record"]
    )
    assert p.seal(ContentType.alert, v["server_alert_record_payload"]) == v["server_alert_record"]
    assert p.seq == 3


def test_rfc8448_client_records_open() -> None:
    v = section("simple_1rtt")
    p = Protection(AES128, v["client_application_traffic_secret_0"])
    rec = v["client_application_data_record"]
    assert p.open(rec[:5], rec[5:]) == (23, v["client_application_data_record_payload"])
    assert v["client_application_data_record_payload"] == bytes(range(50))
    rec = v["client_alert_record"]
    assert p.open(rec[:5], rec[5:]) == (21, v["client_alert_record_payload"])
    assert p.seq == 2


def test_rfc8448_server_flight_opens() -> None:
    v = section("simple_1rtt")
    p = Protection(AES128, v["server_handshake_traffic_secret"])
    rec = v["server_flight_record"]
    assert p.open(rec[:5], rec[5:]) == (22, v["server_flight_record_payload"])
    assert v["server_flight_record_payload"] == (
        v["encrypted_extensions"] + v["certificate"] + v["certificate_verify"] + v["server_finished"]
    )


def test_rfc8448_through_record_layer() -> None:
    v = section("simple_1rtt")
    server = RecordLayer()
    # Handshake phase: the client Finished, then the switch to application keys.
    server.set_read_key(AES128, v["client_handshake_traffic_secret"])
    (fin,) = events(server, v["client_finished_record"])
    assert isinstance(fin, HandshakeMessage) and fin.raw == v["client_finished"]
    server.set_read_key(AES128, v["client_application_traffic_secret_0"])
    server.set_write_key(AES128, v["server_application_traffic_secret_0"])
    assert server.send_handshake(v["new_session_ticket"]) == v["new_session_ticket_record"]
    server.enter(Phase.APPLICATION)
    got = events(server, v["client_application_data_record"] + v["client_alert_record"])
    assert got == [ApplicationData(bytes(range(50))), CloseNotify()]
    assert server.closed
    assert server.read is not None and server.read.seq == 2
    assert server.send_application_data(bytes(range(50))) == v["server_application_data_record"]
    assert server.send_alert(0, level=1) == v["server_alert_record"]


def test_rfc8448_plaintext_hello_records() -> None:
    v = section("simple_1rtt")
    server = RecordLayer()
    # client_hello_record carries legacy_record_version 0x0301: accepted, never checked.
    assert events(server, v["client_hello_record"]) == [HandshakeMessage(1, v["client_hello"][4:])]
    assert server.send_handshake(v["server_hello"]) == v["server_hello_record"]


def test_rfc8448_compat_mode_ccs_is_dropped() -> None:
    v = section("compatibility_mode")
    assert v["client_change_cipher_spec_record"] == CCS
    server = RecordLayer()
    assert server.send_ccs() == v["server_change_cipher_spec_record"]
    server.enter(Phase.HANDSHAKE_CCS)
    server.set_read_key(AES128, _compat_client_hs_secret())
    got = events(server, v["client_change_cipher_spec_record"] + v["client_finished_record"])
    assert [type(e) for e in got] == [HandshakeMessage]
    assert isinstance(got[0], HandshakeMessage) and got[0].msg_type == HandshakeType.finished


def _compat_client_hs_secret() -> bytes:
    from tests.vectors import rfc8448

    return bytes.fromhex(rfc8448()["compatibility_mode"]["client_handshake_traffic_secret"])


def test_rfc8448_rejected_0rtt_is_skipped() -> None:
    """§4's early data record fails under the handshake key and is dropped; the Finished opens."""
    v = section("resumed_0rtt")
    server = RecordLayer()
    server.set_read_key(AES128, v["client_handshake_traffic_secret"])
    server.skip_early_data(1024)
    # The Finished of §4 was sealed at seq 0 of the handshake key (EndOfEarlyData used the early key).
    got = events(server, v["client_early_data_record"] + v["client_finished_record"])
    assert [type(e) for e in got] == [HandshakeMessage]
    assert server.read is not None and server.read.seq == 1


def test_rfc8448_accepted_0rtt_record_opens() -> None:
    v = section("resumed_0rtt")
    p = Protection(AES128, v["client_early_traffic_secret"])
    rec = v["client_early_data_record"]
    assert p.open(rec[:5], rec[5:]) == (23, b"ABCDEF")
    rec = v["end_of_early_data_record"]
    assert p.open(rec[:5], rec[5:]) == (22, v["end_of_early_data_record_payload"])


# -- Protection ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", ALL_SUITES)
@pytest.mark.parametrize("padding", [0, 1, 100, MAX_PLAINTEXT - 10])
def test_protection_round_trip_with_padding(suite: int, padding: int) -> None:
    c, _ = secrets_for(suite)
    a, b = Protection(suite, c), Protection(suite, c)
    rec = a.seal(23, b"0123456789", padding=padding)
    assert rec[:3] == b"\x17\x03\x03"
    assert int.from_bytes(rec[3:5], "big") == len(rec) - 5 == 10 + 1 + padding + 16
    assert b.open(rec[:5], rec[5:]) == (23, b"0123456789")


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_protection_largest_record(suite: int) -> None:
    c, _ = secrets_for(suite)
    rec = Protection(suite, c).seal(23, bytes(MAX_PLAINTEXT))
    assert len(rec) == 5 + MAX_PLAINTEXT + 1 + 16
    assert Protection(suite, c).open(rec[:5], rec[5:]) == (23, bytes(MAX_PLAINTEXT))
    with pytest.raises(ValueError):
        Protection(suite, c).seal(23, bytes(MAX_PLAINTEXT), padding=1)
    with pytest.raises(ValueError):
        Protection(suite, c).seal(23, b"x", padding=-1)


def test_protection_nonce_uses_sequence_number() -> None:
    a = Protection(AES128, C_SECRET)
    r0, r1 = a.seal(23, b"same"), a.seal(23, b"same")
    assert r0 != r1
    b = Protection(AES128, C_SECRET, seq=1)
    assert b.open(r1[:5], r1[5:]) == (23, b"same")
    with pytest.raises(errors.BadRecordMac):
        Protection(AES128, C_SECRET, seq=1).open(r0[:5], r0[5:])


def test_protection_failed_open_keeps_seq() -> None:
    rec = bytearray(Protection(AES128, C_SECRET).seal(23, b"data"))
    rec[-1] ^= 1
    p = Protection(AES128, C_SECRET)
    with pytest.raises(errors.BadRecordMac):
        p.open(bytes(rec[:5]), bytes(rec[5:]))
    assert p.seq == 0
    with pytest.raises(errors.BadRecordMac):
        p.open(bytes(rec[:5]), b"short")


def test_protection_header_is_authenticated() -> None:
    rec = Protection(AES128, C_SECRET).seal(23, b"data")
    with pytest.raises(errors.BadRecordMac):
        Protection(AES128, C_SECRET).open(b"\x17\x03\x01" + rec[3:5], rec[5:])


def test_protection_next_generation_and_wipe() -> None:
    p = Protection(AES128, C_SECRET, seq=7)
    q = p.next_generation()
    assert q.seq == 0 and q.suite == AES128
    assert bytes(q.secret) == next_traffic_secret("sha256", C_SECRET)
    p.wipe()
    assert p.secret == bytearray(32)
    with pytest.raises(errors.InternalError):
        p.seal(23, b"x")
    with pytest.raises(errors.InternalError):
        p.next_generation()


def test_protection_argument_checks() -> None:
    with pytest.raises(ValueError):
        Protection(0x1304, C_SECRET)
    with pytest.raises(ValueError):
        Protection(0x1302, C_SECRET)  # SHA-384 suite wants a 48-byte secret
    with pytest.raises(ValueError):
        Protection(AES128, C_SECRET, seq=2**64)


@pytest.mark.parametrize("suite", ALL_SUITES)
@pytest.mark.parametrize("size", [0, 1, MAX_PLAINTEXT, MAX_PLAINTEXT + 1, 3 * MAX_PLAINTEXT - 7])
def test_seal_run_is_one_seal_per_piece(suite: int, size: int) -> None:
    c, _ = secrets_for(suite)
    data = bytes(i % 251 for i in range(size))
    one, run = Protection(suite, c, seq=5), Protection(suite, c, seq=5)
    expected = b"".join(one.seal(22, data[i : i + MAX_PLAINTEXT]) for i in range(0, max(size, 1), MAX_PLAINTEXT))
    out = bytearray(len(expected) + 3)
    with memoryview(out) as view:
        assert run.seal_run_into(view, 22, memoryview(data)) == len(expected)
    assert out[: len(expected)] == expected
    assert run.seq == one.seq


def test_seal_run_refuses_to_wrap_before_sealing_anything() -> None:
    p = Protection(AES128, C_SECRET, seq=2**64 - 1)
    out = bytearray(2 * (5 + MAX_PLAINTEXT + 17))
    with memoryview(out) as view, pytest.raises(errors.InternalError):
        p.seal_run_into(view, 23, bytes(MAX_PLAINTEXT + 1))
    assert p.seq == 2**64 - 1 and not any(out)


def test_protection_refuses_wrapping_sequence() -> None:
    p = Protection(AES128, C_SECRET, seq=2**64 - 1)
    p.seal(23, b"last")
    with pytest.raises(errors.InternalError):
        p.seal(23, b"one too many")


def test_repr_and_errors_show_no_secrets() -> None:
    key, iv = traffic_key_iv(SUITES[AES128], C_SECRET)
    p = Protection(AES128, C_SECRET)
    layer = reader(app=True)
    layer.set_write_key(AES128, S_SECRET)
    texts = [repr(p), str(p), repr(layer)]
    rec = bytearray(sender().seal(23, b"x"))
    rec[-1] ^= 1
    with pytest.raises(errors.BadRecordMac) as info:
        events(layer, bytes(rec))
    texts += [str(info.value), repr(info.value)]
    for text in texts:
        for secret in (C_SECRET, S_SECRET, key, iv):
            assert secret.hex() not in text
            assert repr(secret) not in text
    assert "seq=0" in repr(p)


def test_handshake_message_raw() -> None:
    assert HandshakeMessage(20, b"\xaa" * 3).raw == b"\x14\x00\x00\x03\xaa\xaa\xaa"
    assert HandshakeMessage(1, b"").raw == b"\x01\x00\x00\x00"


# -- phase ------------------------------------------------------------------------------------------


def test_phase_moves_only_as_the_table_says() -> None:
    layer = RecordLayer()
    assert layer.phase is Phase.HANDSHAKE and not layer.ccs_allowed
    layer.enter(Phase.HANDSHAKE_CCS)
    layer.enter(Phase.HANDSHAKE_CCS)  # a second ClientHello, after a HelloRetryRequest
    assert layer.ccs_allowed
    with pytest.raises(errors.InternalError):
        layer.enter(Phase.APPLICATION)  # only after the client Finished closed the CCS window
    layer.enter(Phase.HANDSHAKE)  # the client Finished closes the window
    assert layer.phase is Phase.HANDSHAKE
    layer.enter(Phase.APPLICATION)
    for phase in (Phase.HANDSHAKE, Phase.HANDSHAKE_CCS, Phase.APPLICATION):
        with pytest.raises(errors.InternalError):
            layer.enter(phase)
    assert layer.phase is Phase.APPLICATION


def test_close_notify_is_the_last_phase() -> None:
    layer = reader(app=True)
    assert events(layer, sender().seal(21, b"\x01\x00")) == [CloseNotify()]
    assert layer.phase is Phase.CLOSED and layer.closed
    for phase in Phase:
        with pytest.raises(errors.InternalError):
            layer.enter(phase)


def test_from_traffic_state_is_the_import() -> None:
    state = TrafficState(AES128, bytearray(C_SECRET), bytearray(S_SECRET), read_seq=3, write_seq=5)
    layer = RecordLayer.from_traffic_state(state, max_empty_records=7)
    assert layer.phase is Phase.APPLICATION and layer.limits.max_empty_records == 7
    assert layer.read is not None and layer.write is not None and (layer.read.seq, layer.write.seq) == (3, 5)
    assert layer.send_application_data(b"x") == Protection(AES128, S_SECRET, 5).seal(23, b"x")
    state.wipe()  # the layer holds its own copies
    assert events(layer, Protection(AES128, C_SECRET, 3).seal(23, b"y")) == [ApplicationData(b"y")]
    with pytest.raises(ValueError, match="version"):
        RecordLayer.from_traffic_state(TrafficState(AES128, bytearray(C_SECRET), bytearray(S_SECRET), version=0x0302))
    with pytest.raises(ValueError, match=r"TLS 1\.2 cipher suite"):  # a TLS 1.3 suite in a TLS 1.2 state
        RecordLayer.from_traffic_state(TrafficState(AES128, bytearray(C_SECRET), bytearray(S_SECRET), version=0x0303))


# -- round trips between two layers ---------------------------------------------------------------


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_round_trip_both_ways(suite: int) -> None:
    server, client = pair(suite)
    assert events(server, client.send_application_data(b"ping")) == [ApplicationData(b"ping")]
    assert events(client, server.send_application_data(b"pong")) == [ApplicationData(b"pong")]
    assert events(client, server.send_alert(0, 1)) == [CloseNotify()]
    assert client.closed


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_fragmentation_of_application_data(suite: int) -> None:
    server, client = pair(suite)
    data = bytes(i % 251 for i in range(2 * MAX_PLAINTEXT + 5))
    wire = client.send_application_data(data)
    assert len(wire) == 3 * (5 + 1 + 16) + len(data)
    got = events(server, wire)
    assert [len(e.data) for e in got if isinstance(e, ApplicationData)] == [MAX_PLAINTEXT, MAX_PLAINTEXT, 5]
    assert b"".join(e.data for e in got if isinstance(e, ApplicationData)) == data
    assert server.read is not None and server.read.seq == 3


def test_empty_application_data_is_one_record() -> None:
    server, client = pair()
    wire = client.send_application_data(b"")
    assert len(wire) == 5 + 1 + 16
    assert events(server, wire) == []
    assert server.read is not None and server.read.seq == 1


def test_send_application_data_needs_a_key() -> None:
    with pytest.raises(errors.InternalError):
        RecordLayer().send_application_data(b"x")


@pytest.mark.parametrize("protected", [False, True])
def test_handshake_fragmentation_and_reassembly(protected: bool) -> None:
    server, client = pair(app=False)
    if not protected:
        server, client = RecordLayer(), RecordLayer()
    big = hs(11, bytes(i % 256 for i in range(40000)))
    small = hs(15, b"sig") + hs(20, b"\x01" * 32)
    wire = client.send_handshake(big + small)
    assert wire.count(b"\x17\x03\x03" if protected else b"\x16\x03\x03") >= 3
    got = events(server, wire)
    assert got == [
        HandshakeMessage(11, big[4:]),
        HandshakeMessage(15, b"sig"),
        HandshakeMessage(20, b"\x01" * 32),
    ]
    assert client.send_handshake(b"") == b""


def test_several_messages_in_one_record_and_one_across_records() -> None:
    server = RecordLayer()
    m1, m2, m3 = hs(8, b"ee"), hs(11, b"cert" * 10), hs(15, b"cv")
    stream = m1 + m2 + m3
    wire = plain(22, stream[:3]) + plain(22, stream[3:20]) + plain(22, stream[20:])
    assert events(server, wire) == [
        HandshakeMessage(8, b"ee"),
        HandshakeMessage(11, b"cert" * 10),
        HandshakeMessage(15, b"cv"),
    ]


def test_byte_at_a_time() -> None:
    server, client = pair(app=False)
    wire = client.send_handshake(hs(20, b"f" * 32)) + client.send_handshake(hs(8, b""))
    got: list[Event] = []
    for i in range(len(wire)):
        server.receive_data(wire[i : i + 1])
        while (ev := server.next_event()) is not None:
            got.append(ev)
    assert got == [HandshakeMessage(20, b"f" * 32), HandshakeMessage(8, b"")]

    server, client = pair(app=True)
    wire = (
        client.send_application_data(b"hello")
        + client.send_key_update(True)
        + client.send_application_data(b"x")
    )
    got = []
    for byte in wire:
        got += events(server, bytes([byte]))
    assert got == [ApplicationData(b"hello"), KeyUpdated(True), ApplicationData(b"x")]


def test_lazy_parsing_lets_the_caller_switch_keys_between_records() -> None:
    """ClientHello (plaintext) and the encrypted Finished arrive in one read."""
    server = RecordLayer()
    wire = plain(22, hs(1, b"hello")) + sender().seal(22, hs(20, b"f" * 32))
    server.receive_data(wire)
    assert server.next_event() == HandshakeMessage(1, b"hello")
    server.set_read_key(AES128, C_SECRET)
    assert server.next_event() == HandshakeMessage(20, b"f" * 32)
    assert server.next_event() is None


def test_take_unprocessed_hands_over_the_rest() -> None:
    server = reader()
    after = sender().seal(22, hs(20, b"f" * 32))
    rest = b"\x17\x03\x03\x00\x20" + b"partial"
    server.receive_data(after + rest)
    assert isinstance(server.next_event(), HandshakeMessage)
    assert server.take_unprocessed() == rest
    assert server.take_unprocessed() == b""
    assert server.next_event() is None


def test_take_unprocessed_refuses_partial_handshake() -> None:
    server = RecordLayer()
    events(server, plain(22, hs(20, b"f" * 32)[:10]))
    assert server.has_pending_handshake()
    with pytest.raises(errors.UnexpectedMessage):
        server.take_unprocessed()


def test_sequence_numbers_restart_on_new_keys() -> None:
    server, client = pair()
    for _ in range(3):
        events(server, client.send_application_data(b"x"))
    assert server.read is not None and server.read.seq == 3
    assert client.write is not None and client.write.seq == 3
    server.set_read_key(AES128, S_SECRET, seq=5)
    assert server.read.seq == 5
    server.set_read_key(AES128, S_SECRET)
    assert server.read.seq == 0


def test_replacing_a_key_wipes_the_old_one() -> None:
    layer = reader()
    old = layer.read
    assert old is not None
    layer.set_read_key(AES128, S_SECRET)
    assert old.secret == bytearray(32)
    layer.set_write_key(AES128, S_SECRET)
    old = layer.write
    assert old is not None
    layer.set_write_key(AES128, C_SECRET)
    assert old.secret == bytearray(32)


def test_send_helpers() -> None:
    layer = RecordLayer()
    assert layer.send_ccs() == CCS
    assert layer.send_alert(40) == b"\x15\x03\x03\x00\x02\x02\x28"
    layer.set_write_key(AES128, S_SECRET)
    assert layer.send_ccs() == CCS  # never encrypted
    rec = layer.send_alert(10)
    assert rec[:3] == b"\x17\x03\x03"
    assert Protection(AES128, S_SECRET).open(rec[:5], rec[5:]) == (21, b"\x02\x0a")


# -- record header --------------------------------------------------------------------------------


@pytest.mark.parametrize("ctype", [0, 19, 24, 25, 0x80, 0xFF])
def test_unknown_content_type(ctype: int) -> None:
    with pytest.raises(errors.UnexpectedMessage):
        events(RecordLayer(), bytes([ctype, 3, 3, 0, 1]))  # fails on the header alone


@pytest.mark.parametrize("version", [b"\x03\x01", b"\x00\x00", b"\xff\xff", b"\x03\x04"])
def test_legacy_record_version_is_ignored(version: bytes) -> None:
    assert events(RecordLayer(), plain(22, hs(1, b"x"), version)) == [HandshakeMessage(1, b"x")]
    server, client = pair()
    rec = client.send_application_data(b"y")
    with pytest.raises(errors.BadRecordMac):  # it is still authenticated as sent
        events(server, rec[:1] + version + rec[3:])


def test_record_too_long() -> None:
    with pytest.raises(errors.RecordOverflow):
        events(reader(app=True), b"\x17\x03\x03" + (MAX_CIPHERTEXT + 1).to_bytes(2, "big"))


def test_protected_record_at_the_ciphertext_limit_is_not_an_overflow() -> None:
    with pytest.raises(errors.BadRecordMac):
        events(reader(app=True), b"\x17\x03\x03" + MAX_CIPHERTEXT.to_bytes(2, "big") + bytes(MAX_CIPHERTEXT))


@pytest.mark.parametrize("ctype", [21, 22, 20])
def test_plaintext_record_too_long(ctype: int) -> None:
    with pytest.raises(errors.RecordOverflow):
        events(RecordLayer(), bytes([ctype, 3, 3]) + (MAX_PLAINTEXT + 1).to_bytes(2, "big"))
    # plaintext alerts and CCS stay plaintext records after keys are set
    if ctype != 22:
        with pytest.raises(errors.RecordOverflow):
            events(reader(), bytes([ctype, 3, 3]) + (MAX_PLAINTEXT + 1).to_bytes(2, "big"))


def test_plaintext_application_data_record_too_long_in_application_mode() -> None:
    layer = RecordLayer()
    layer.enter(Phase.APPLICATION)
    with pytest.raises(errors.RecordOverflow):
        events(layer, b"\x17\x03\x03" + (MAX_PLAINTEXT + 1).to_bytes(2, "big"))


def test_plaintext_handshake_record_at_the_limit() -> None:
    body = bytes(MAX_PLAINTEXT - 4)
    assert events(RecordLayer(), plain(22, hs(11, body))) == [HandshakeMessage(11, body)]


def test_empty_plaintext_handshake_record() -> None:
    with pytest.raises(errors.UnexpectedMessage):
        events(RecordLayer(), plain(22, b""))


@pytest.mark.parametrize("payload", [b"", b"\x02", b"\x02\x28\x00"])
def test_alert_not_two_bytes(payload: bytes) -> None:
    with pytest.raises(errors.DecodeError):
        events(RecordLayer(), plain(21, payload))
    with pytest.raises(errors.DecodeError):
        events(reader(), raw_protected(C_SECRET, payload + b"\x15"))


# -- protected records ------------------------------------------------------------------------------


def test_ccs_dropped_only_when_allowed_and_well_formed() -> None:
    layer = RecordLayer()
    layer.enter(Phase.HANDSHAKE_CCS)
    assert events(layer, CCS + plain(22, hs(1, b"x"))) == [HandshakeMessage(1, b"x")]
    layer = reader()
    layer.enter(Phase.HANDSHAKE_CCS)
    assert events(layer, CCS + sender().seal(22, hs(20, b"f"))) == [HandshakeMessage(20, b"f")]


@pytest.mark.parametrize("payload", [b"\x01", b"\x02", b"\x00", b"", b"\x01\x01"])
def test_ccs_refused(payload: bytes) -> None:
    layer = RecordLayer()
    if payload != b"\x01":  # the well-formed one is refused only when not allowed
        layer.enter(Phase.HANDSHAKE_CCS)
    with pytest.raises(errors.UnexpectedMessage):
        events(layer, plain(20, payload))


def test_ccs_refused_in_application_mode_by_default() -> None:
    with pytest.raises(errors.UnexpectedMessage):
        events(reader(app=True), CCS)


def test_plaintext_alert_accepted_after_keys() -> None:
    with pytest.raises(errors.PeerAlert) as info:
        events(reader(), plain(21, b"\x02\x28"))
    assert info.value.description == errors.AlertDescription.handshake_failure


def test_plaintext_handshake_after_read_key() -> None:
    with pytest.raises(errors.UnexpectedMessage):
        events(reader(), plain(22, hs(20, b"f")))


def test_plaintext_application_data_during_handshake() -> None:
    with pytest.raises(errors.UnexpectedMessage):
        events(RecordLayer(), plain(23, b"early"))


def test_unprotected_application_data_after_read_key_fails_authentication() -> None:
    with pytest.raises(errors.BadRecordMac):
        events(reader(app=True), plain(23, b"x" * 40))


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_bad_tag(suite: int) -> None:
    layer = reader(app=True, suite=suite)
    rec = bytearray(sender(suite).seal(23, b"data"))
    rec[7] ^= 0x40
    with pytest.raises(errors.BadRecordMac):
        events(layer, bytes(rec))


@pytest.mark.parametrize("length", [0, 1, 15])
def test_protected_record_shorter_than_tag(length: int) -> None:
    with pytest.raises(errors.BadRecordMac):
        events(reader(app=True), plain(23, bytes(length)))


def test_inner_plaintext_too_long() -> None:
    layer = reader(app=True)
    ok = raw_protected(C_SECRET, bytes(MAX_PLAINTEXT) + b"\x17")  # exactly 2^14 + 1
    assert events(layer, ok) == [ApplicationData(bytes(MAX_PLAINTEXT))]
    over = raw_protected(C_SECRET, b"x" + b"\x17" + bytes(MAX_PLAINTEXT), seq=1)  # padding pushes it over
    with pytest.raises(errors.RecordOverflow):
        events(layer, over)


def test_padding_is_stripped() -> None:
    layer = reader(app=True)
    assert events(layer, sender().seal(23, b"pad\x00me\x00", padding=300)) == [
        ApplicationData(b"pad\x00me\x00")
    ]


@pytest.mark.parametrize("inner", [b"", b"\x00", bytes(100)])
def test_inner_plaintext_without_content_type(inner: bytes) -> None:
    with pytest.raises(errors.UnexpectedMessage):
        events(reader(app=True), raw_protected(C_SECRET, inner))


def test_protected_ccs_refused_even_when_allowed() -> None:
    layer = reader()
    layer.enter(Phase.HANDSHAKE_CCS)
    with pytest.raises(errors.UnexpectedMessage):
        events(layer, sender().seal(20, b"\x01"))


@pytest.mark.parametrize("inner_type", [1, 19, 24, 99, 255])
def test_unknown_inner_type(inner_type: int) -> None:
    with pytest.raises(errors.UnexpectedMessage):
        events(reader(app=True), sender().seal(inner_type, b"data"))


def test_all_suites_interoperate_only_with_themselves() -> None:
    rec = Protection(0x1301, C_SECRET).seal(23, b"x")
    # same secret, other AEAD (ChaCha20 uses the SHA-256 schedule too)
    with pytest.raises(errors.BadRecordMac):
        Protection(0x1303, C_SECRET).open(rec[:5], rec[5:])


# -- handshake messages -----------------------------------------------------------------------------


def test_handshake_message_too_big() -> None:
    layer = RecordLayer(max_handshake_message=100)
    assert events(layer, plain(22, hs(11, bytes(96)))) == [HandshakeMessage(11, bytes(96))]
    with pytest.raises(errors.IllegalParameter):
        events(layer, plain(22, hs(11, bytes(97))[:4]))  # refused on the header alone
    with pytest.raises(errors.IllegalParameter):
        events(RecordLayer(), plain(22, b"\x0b\xff\xff\xff"))


def test_default_limit_is_the_largest_client_hello() -> None:
    body = bytes(MAX_CLIENT_HELLO)  # 131,396 bytes: 9 records
    wire = RecordLayer().send_handshake(hs(1, body))
    assert wire.count(b"\x16\x03\x03") >= 9
    assert events(RecordLayer(), wire) == [HandshakeMessage(1, body)]
    with pytest.raises(errors.IllegalParameter):
        events(RecordLayer(), plain(22, hs(1, bytes(MAX_CLIENT_HELLO + 1))[:4]))


def test_header_check_comes_before_the_size_limit() -> None:
    seen: list[tuple[int, int]] = []

    def check(msg_type: int, length: int) -> None:
        seen.append((msg_type, length))
        if msg_type == 20:
            raise errors.DecodeError("wrong length")

    layer = RecordLayer(max_handshake_message=100, check_handshake_header=check)
    assert events(layer, plain(22, hs(11, bytes(96)))) == [HandshakeMessage(11, bytes(96))]
    assert seen == [(11, 96)]
    with pytest.raises(errors.DecodeError):  # not the size limit's IllegalParameter
        events(layer, plain(22, b"\x14\xff\xff\xff"))


@pytest.mark.parametrize("interloper", ["ccs", "alert", "close_notify", "app"])
def test_other_record_inside_a_fragmented_handshake_message(interloper: str) -> None:
    layer = reader(app=False)
    layer.enter(Phase.HANDSHAKE_CCS)
    p = sender()
    first = p.seal(22, hs(11, b"c" * 50)[:20])
    others = {
        "ccs": lambda: CCS,
        "alert": lambda: plain(21, b"\x01\x5a"),
        "close_notify": lambda: p.seal(21, b"\x01\x00"),
        "app": lambda: p.seal(23, b"data"),
    }
    with pytest.raises(errors.UnexpectedMessage):
        events(layer, first + others[interloper]())


def test_app_data_inside_a_fragmented_key_update() -> None:
    layer = reader(app=True)
    p = sender()
    with pytest.raises(errors.UnexpectedMessage):
        events(layer, p.seal(22, b"\x18\x00") + p.seal(23, b"data"))


def test_set_read_key_refused_while_message_is_partial() -> None:
    layer = RecordLayer()
    events(layer, plain(22, hs(1, b"hello")[:6]))
    assert layer.has_pending_handshake()
    with pytest.raises(errors.UnexpectedMessage):
        layer.set_read_key(AES128, C_SECRET)


def test_set_read_key_refused_while_record_has_unread_messages() -> None:
    layer = RecordLayer()
    layer.receive_data(plain(22, hs(1, b"hello") + hs(20, b"x")))
    assert layer.next_event() == HandshakeMessage(1, b"hello")
    assert layer.has_pending_handshake()
    with pytest.raises(errors.UnexpectedMessage):
        layer.set_read_key(AES128, C_SECRET)
    assert layer.next_event() == HandshakeMessage(20, b"x")
    assert not layer.has_pending_handshake()
    layer.set_read_key(AES128, C_SECRET)


def test_empty_protected_handshake_fragment() -> None:
    with pytest.raises(errors.UnexpectedMessage):
        events(reader(), sender().seal(22, b""))


# -- alerts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [1, 2])
def test_close_notify_then_input_is_ignored(level: int) -> None:
    server, client = pair()
    wire = client.send_application_data(b"last") + client.send_alert(0, level) + b"\xff garbage"
    assert events(server, wire) == [ApplicationData(b"last"), CloseNotify()]
    assert server.closed
    assert events(server, b"\x00more garbage") == []
    assert server.next_event() is None


def test_plaintext_close_notify() -> None:
    layer = RecordLayer()
    assert events(layer, plain(21, b"\x01\x00")) == [CloseNotify()]
    assert layer.closed


def test_user_canceled_is_ignored_but_counted() -> None:
    server, client = pair()
    for _ in range(4):
        assert events(server, client.send_alert(90, 1)) == []
    events(server, client.send_application_data(b"resets the count"))
    for _ in range(4):
        assert events(server, client.send_alert(90, 2)) == []  # the level is ignored in TLS 1.3
    with pytest.raises(errors.UnexpectedMessage):
        events(server, client.send_alert(90, 1))


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("description", [10, 20, 40, 42, 47, 50, 70, 80, 112, 116, 200])
def test_other_alerts_raise_peer_alert(level: int, description: int) -> None:
    server, client = pair()
    with pytest.raises(errors.PeerAlert) as info:
        events(server, client.send_alert(description, level))
    assert info.value.raw_description == description
    assert info.value.level == level
    assert not isinstance(info.value, errors.LocalAlert)


# -- application data -----------------------------------------------------------------------------------


def test_empty_records_are_limited() -> None:
    server, client = pair()
    server.limits.max_empty_records = 5
    for _ in range(5):
        assert events(server, client.send_application_data(b"")) == []
    assert events(server, client.send_application_data(b"x")) == [ApplicationData(b"x")]
    for _ in range(5):
        events(server, client.send_application_data(b""))
    with pytest.raises(errors.UnexpectedMessage):
        events(server, client.send_application_data(b""))


def test_dropped_ccs_counts_as_empty() -> None:
    layer = RecordLayer(max_empty_records=3)
    layer.enter(Phase.HANDSHAKE_CCS)
    events(layer, CCS * 3)
    with pytest.raises(errors.UnexpectedMessage):
        events(layer, CCS)


def test_application_data_before_application_mode() -> None:
    server, client = pair(app=False)
    with pytest.raises(errors.UnexpectedMessage):
        events(server, client.send_application_data(b"too early"))


# -- KeyUpdate ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", ALL_SUITES)
def test_key_update_both_ways(suite: int) -> None:
    server, client = pair(suite)
    events(server, client.send_application_data(b"a"))
    c_secret = bytes(client.write.secret) if client.write else b""
    wire = client.send_key_update(request_peer=True)
    assert client.write is not None and client.write.seq == 0
    assert bytes(client.write.secret) == next_traffic_secret(SUITES[suite].hash_name, c_secret)
    wire += client.send_application_data(b"after")
    assert events(server, wire) == [KeyUpdated(True), ApplicationData(b"after")]
    assert server.read is not None and server.read.seq == 1
    answer = server.data_to_send()
    assert answer and server.data_to_send() == b""
    assert server.write is not None and server.write.seq == 0
    wire = answer + server.send_application_data(b"reply")
    assert events(client, wire) == [KeyUpdated(False), ApplicationData(b"reply")]
    assert client.data_to_send() == b""
    # and the other way round, unrequested
    assert events(server, client.send_key_update(False) + client.send_application_data(b"z")) == [
        KeyUpdated(False),
        ApplicationData(b"z"),
    ]
    assert server.data_to_send() == b""


def test_key_update_answer_goes_out_before_later_data() -> None:
    """A caller that forgets data_to_send() still writes in key order."""
    server, client = pair()
    events(server, client.send_key_update(True))
    wire = server.send_application_data(b"data")
    assert events(client, wire) == [KeyUpdated(False), ApplicationData(b"data")]


def test_key_update_split_across_records() -> None:
    layer = reader(app=True)
    p = sender()
    assert events(layer, p.seal(22, b"\x18\x00") + p.seal(22, b"\x00\x01\x00")) == [KeyUpdated(False)]
    assert layer.read is not None and layer.read.seq == 0


@pytest.mark.parametrize("body", [b"", b"\x00\x00", b"\x01\x01\x01"])
def test_key_update_wrong_length(body: bytes) -> None:
    with pytest.raises(errors.DecodeError):
        events(reader(app=True), sender().seal(22, hs(24, body)))


@pytest.mark.parametrize("value", [2, 0x80, 0xFF])
def test_key_update_bad_value(value: int) -> None:
    with pytest.raises(errors.IllegalParameter):
        events(reader(app=True), sender().seal(22, hs(24, bytes([value]))))


def test_key_update_must_end_its_record() -> None:
    with pytest.raises(errors.UnexpectedMessage):
        events(reader(app=True), sender().seal(22, hs(24, b"\x00") + hs(24, b"\x00")))
    with pytest.raises(errors.UnexpectedMessage):
        events(reader(app=True), sender().seal(22, hs(24, b"\x00") + b"\x18"))


def test_too_many_key_updates() -> None:
    server, client = pair()
    server.limits.max_key_updates = 3
    for _ in range(3):
        events(server, client.send_key_update(False))
    events(server, client.send_application_data(b"resets"))
    for _ in range(3):
        events(server, client.send_key_update(True))
    events(client, server.data_to_send())
    # empty records do not reset the count
    events(server, client.send_application_data(b""))
    with pytest.raises(errors.UnexpectedMessage):
        events(server, client.send_key_update(False))


@pytest.mark.parametrize("msg_type", [1, 4, 11, 13, 20])
def test_other_handshake_message_after_handshake(msg_type: int) -> None:
    with pytest.raises(errors.UnexpectedMessage):
        events(reader(app=True), sender().seal(22, hs(msg_type, b"\x00" * 8)))


def test_key_update_during_handshake_is_just_a_message() -> None:
    """Before the application phase the engine sees it and decides (it is unexpected there)."""
    assert events(reader(), sender().seal(22, hs(24, b"\x00"))) == [HandshakeMessage(24, b"\x00")]


def test_key_update_at_the_usage_limit() -> None:
    """No write key protects more than key_update_after records, its own KeyUpdate included."""
    _, client = pair()
    server = RecordLayer(key_update_after=3)
    server.set_write_key(AES128, S_SECRET)
    twin, _ = pair()
    assert twin.write is not None
    wire = b"".join(bytes(server.send_application_data(bytes([i]) * 10)) for i in range(5))
    # Under the first key: two data records and the KeyUpdate; under the next: two more, and so on.
    expected = twin.write.seal(23, bytes(10)) + twin.write.seal(23, b"\x01" * 10)
    expected += twin.send_key_update(False)
    assert wire.startswith(expected)
    assert events(client, wire) == [
        ApplicationData(bytes(10)), ApplicationData(b"\x01" * 10), KeyUpdated(False),
        ApplicationData(b"\x02" * 10), ApplicationData(b"\x03" * 10), KeyUpdated(False),
        ApplicationData(b"\x04" * 10),
    ]
    assert server.key_updates_sent == 2 and client.key_updates_received == 2
    # One large write crosses the limit in the middle: the rest goes under the next key.
    big = bytes(range(256)) * 300
    got = events(client, server.send_application_data(big, into=bytearray()))
    assert b"".join(e.data for e in got if isinstance(e, ApplicationData)) == big
    assert got.count(KeyUpdated(False)) == 2 and server.key_updates_sent == 4  # 5 records: 1 | 2 | 2


def test_usage_count_goes_on_from_the_imported_state() -> None:
    state = TrafficState(AES128, bytearray(C_SECRET), bytearray(S_SECRET), write_seq=1, records_protected=6)
    layer = RecordLayer.from_traffic_state(state, key_update_after=8)
    assert layer.records_before_key_update() == 1
    reference = Protection(AES128, S_SECRET, 1)
    wire = bytes(layer.send_application_data(b"a" * 20000))
    assert wire.startswith(reference.seal(23, b"a" * MAX_PLAINTEXT) + reference.seal(22, b"\x18\x00\x00\x01\x00"))
    assert layer.key_updates_sent == 1 and layer.records_before_key_update() == 8 - 1 - 1
    with pytest.raises(ValueError):
        RecordLayer(key_update_after=1)


def test_no_key_update_answer_after_our_close_notify() -> None:
    server, client = pair()
    bye = server.send_alert(0, 1)
    assert events(server, client.send_key_update(True) + client.send_application_data(b"late")) == [
        KeyUpdated(True), ApplicationData(b"late"),
    ]
    assert server.data_to_send() == b"" and server.key_updates_sent == 0 and server.key_updates_received == 1
    assert events(client, bye) == [CloseNotify()]


# -- skipping 0-RTT ---------------------------------------------------------------------------------------


def test_skip_early_data_drops_until_a_record_decrypts() -> None:
    layer = reader()
    early = Protection(AES128, S_SECRET)  # stands for the early key the server lacks
    wire = early.seal(23, b"0rtt" * 10) + early.seal(23, b"") + sender().seal(22, hs(20, b"f"))
    layer.skip_early_data(100)
    assert events(layer, wire) == [HandshakeMessage(20, b"f")]
    assert layer.read is not None and layer.read.seq == 1
    # skipping is now off: another undecryptable record is fatal
    with pytest.raises(errors.BadRecordMac):
        events(layer, early.seal(23, b"late"))


def test_skip_early_data_budget() -> None:
    layer = reader()
    early = Protection(AES128, S_SECRET)
    layer.skip_early_data(58)
    # §4.2.10 counts payload, not the content-type byte: exactly at the limit is fine
    events(layer, early.seal(23, bytes(29)) + early.seal(23, bytes(29)) + early.seal(23, b""))
    with pytest.raises(errors.UnexpectedMessage):
        events(layer, early.seal(23, b"x"))


def test_skip_early_data_many_small_records_are_fine_empty_ones_are_counted() -> None:
    layer = reader()
    layer.limits.max_empty_records = 3
    early = Protection(AES128, S_SECRET)
    layer.skip_early_data(10_000)
    assert events(layer, b"".join(early.seal(23, b"x" * 9) for _ in range(50))) == []
    forged_empty = b"\x17\x03\x03\x00\x11" + bytes(17)  # room for a content type, no payload
    events(layer, forged_empty * 3)
    with pytest.raises(errors.UnexpectedMessage):
        events(layer, forged_empty)


def test_skip_early_data_first_decrypting_record_is_checked_normally() -> None:
    layer = reader()
    layer.skip_early_data(1000)
    with pytest.raises(errors.UnexpectedMessage):
        events(layer, raw_protected(C_SECRET, bytes(5)))


def test_skip_plaintext_app_data_after_hrr() -> None:
    layer = RecordLayer()
    layer.enter(Phase.HANDSHAKE_CCS)
    events(layer, plain(22, hs(1, b"ch1")))
    early = Protection(AES128, S_SECRET)
    layer.skip_plaintext_app_data()
    wire = early.seal(23, b"0rtt") + CCS + early.seal(23, b"more") + plain(22, hs(1, b"ch2"))
    assert events(layer, wire) == [HandshakeMessage(1, b"ch2")]
    with pytest.raises(errors.UnexpectedMessage):
        events(layer, early.seal(23, b"late"))


def test_skip_plaintext_app_data_budget() -> None:
    layer = RecordLayer()
    layer.skip_plaintext_app_data(max_bytes=10)
    early = Protection(AES128, S_SECRET)
    events(layer, early.seal(23, bytes(10)))
    with pytest.raises(errors.UnexpectedMessage):
        events(layer, early.seal(23, bytes(1)))


def test_max_ciphertext_constant() -> None:
    assert (MAX_PLAINTEXT, MAX_CIPHERTEXT) == (16384, 16640)
    assert [int(t) for t in ContentType] == [0, 20, 21, 22, 23]
    assert [int(HandshakeType.key_update), int(HandshakeType.message_hash)] == [24, 254]


# -- runs of application data (next_event(max_data)) and the buffers of the bulk path ---------------------------


def run_events(layer: RecordLayer, data: bytes = b"", max_data: int = 1 << 20) -> list[Event]:
    layer.receive_data(data)
    out = []
    while (ev := layer.next_event(max_data)) is not None:
        out.append(ev)
    return out


def test_run_joins_whole_records_into_one_event() -> None:
    p = sender()
    parts = [b"a" * 10, bytes(MAX_PLAINTEXT), b"c" * 300]
    wire = b"".join(p.seal(23, part) for part in parts)
    [run] = run_events(reader(app=True), wire)
    assert run == ApplicationData(b"".join(parts))
    assert isinstance(run, ApplicationData) and run.records == 3
    assert events(reader(app=True), wire) == [ApplicationData(part) for part in parts]  # no max_data: one each


def test_run_takes_the_first_record_whole_and_stops_before_one_that_does_not_fit() -> None:
    p = sender()
    wire = b"".join(p.seal(23, bytes([i]) * 10) for i in range(3))
    # A record counts with its type byte: two fit in 22 bytes, the third starts the next run.
    assert run_events(reader(app=True), wire, max_data=22) == [
        ApplicationData(bytes(10) + b"\x01" * 10),
        ApplicationData(b"\x02" * 10),
    ]
    assert run_events(reader(app=True), wire, max_data=1) == [
        ApplicationData(bytes([i]) * 10) for i in range(3)
    ]


def test_run_leaves_a_partial_record_for_later() -> None:
    p = sender()
    wire = p.seal(23, b"first") + p.seal(23, b"second")
    layer = reader(app=True)
    assert run_events(layer, wire[:-3]) == [ApplicationData(b"first")]
    assert run_events(layer, wire[-3:]) == [ApplicationData(b"second")]


def test_run_strips_padding_of_every_record() -> None:
    p = sender()
    wire = p.seal(23, b"one\x00", padding=7) + p.seal(23, b"two") + p.seal(23, b"three", padding=1000)
    assert run_events(reader(app=True), wire) == [ApplicationData(b"one\x00twothree")]


def test_run_stops_at_a_key_update_and_goes_on_under_the_new_key() -> None:
    server, client = pair()
    wire = client.send_application_data(b"before") + client.send_key_update(request_peer=True)
    wire += client.send_application_data(b"after") + client.send_application_data(b"!")
    assert run_events(server, wire) == [ApplicationData(b"before"), KeyUpdated(True), ApplicationData(b"after!")]
    assert events(client, server.data_to_send() + server.send_application_data(b"ok")) == [
        KeyUpdated(False),
        ApplicationData(b"ok"),
    ]


def test_run_stops_at_close_notify() -> None:
    server, client = pair()
    wire = client.send_application_data(b"a") + client.send_application_data(b"b") + client.send_alert(0, 1)
    wire += client.send_application_data(b"ignored")
    assert run_events(server, wire) == [ApplicationData(b"ab"), CloseNotify()]


def test_run_passes_a_warning_alert_between_records() -> None:
    server, client = pair()
    wire = client.send_application_data(b"a") + client.send_alert(90, 1) + client.send_application_data(b"b")
    assert run_events(server, wire) == [ApplicationData(b"a"), ApplicationData(b"b")]


@pytest.mark.parametrize("bad", ["tag", "overflow", "no_type"])
def test_run_delivers_the_data_before_an_error_then_raises(bad: str) -> None:
    p = sender()
    wire = p.seal(23, b"good") + p.seal(23, b"also good")
    if bad == "tag":
        broken = bytearray(p.seal(23, b"bad"))
        broken[-1] ^= 1
        wire += bytes(broken)
    elif bad == "overflow":
        wire += raw_protected(C_SECRET, b"x\x17" + bytes(MAX_PLAINTEXT), seq=2)
    else:
        wire += raw_protected(C_SECRET, bytes(20), seq=2)
    layer = reader(app=True)
    layer.receive_data(wire)
    assert layer.next_event(1 << 20) == ApplicationData(b"goodalso good")
    expected = {"tag": errors.BadRecordMac, "overflow": errors.RecordOverflow, "no_type": errors.UnexpectedMessage}
    with pytest.raises(expected[bad]):
        layer.next_event(1 << 20)


def test_run_with_an_error_first_raises_at_once() -> None:
    broken = bytearray(sender().seal(23, b"bad"))
    broken[-1] ^= 1
    with pytest.raises(errors.BadRecordMac):
        run_events(reader(app=True), bytes(broken))


def test_run_counts_empty_records() -> None:
    p = sender()
    layer = reader(app=True)
    wire = p.seal(23, b"a") + b"".join(p.seal(23, b"") for _ in range(32)) + p.seal(23, b"b")
    assert run_events(layer, wire) == [ApplicationData(b"ab")]  # 32 in a row is the limit, data resets it
    layer.receive_data(b"".join(p.seal(23, b"") for _ in range(33)) + p.seal(23, b"never"))
    with pytest.raises(errors.UnexpectedMessage):  # 33 in a row, no data before them in this run
        layer.next_event(1 << 20)
    p = sender()
    layer = reader(app=True)
    layer.receive_data(p.seal(23, b"a") + b"".join(p.seal(23, b"") for _ in range(33)))
    assert layer.next_event(1 << 20) == ApplicationData(b"a")
    with pytest.raises(errors.UnexpectedMessage):
        layer.next_event(1 << 20)


def test_run_only_in_the_steady_state() -> None:
    layer = reader()  # handshake phase: application data is refused, run or not
    with pytest.raises(errors.UnexpectedMessage):
        run_events(layer, sender().seal(23, b"early"))


@pytest.mark.parametrize("chunk", [1, 5, 1000, 16389, 16390, 65536, 300000])
def test_runs_over_any_read_sizes(chunk: int) -> None:
    """The receive buffer moves and grows under any feed; what comes out is the stream that went in."""
    p = sender()
    payload = bytes(range(256)) * 2000
    sizes = [1, MAX_PLAINTEXT, 700, MAX_PLAINTEXT - 1, 0, 5000] * 6
    wire, off = b"", 0
    for size in sizes:
        wire += p.seal(23, payload[off : off + size])
        off += size
    layer = reader(app=True)
    got, records = bytearray(), 0
    for start in range(0, len(wire), chunk):
        for ev in run_events(layer, wire[start : start + chunk], max_data=100000):
            assert isinstance(ev, ApplicationData)
            got += ev.data
            records += ev.records
    assert got == payload[:off]
    assert records == sum(1 for size in sizes if size)


def test_open_into() -> None:
    a, opener = sender(), sender()
    record = a.seal(23, b"hello", padding=3)
    inner = bytearray(len(record) - 5 - 16)
    with memoryview(inner) as into:
        assert opener.open_into(record[:5], record[5:], into) == (23, 5)
    assert inner == b"hello\x17" + bytes(3)


def test_send_application_data_into_a_buffer_it_resizes() -> None:
    server, client = pair()
    twin, _ = pair()
    reference = twin.write
    buf = bytearray(b"stale" * 10000)
    for size in (100_000, 10, 40_000, 0):
        data = bytes([size % 251]) * size
        out = server.send_application_data(data, into=buf)
        assert out is buf
        assert reference is not None
        starts = range(0, max(size, 1), MAX_PLAINTEXT)
        assert out == b"".join(reference.seal(23, data[i : i + MAX_PLAINTEXT]) for i in starts)
        assert b"".join(ev.data for ev in events(client, bytes(out)) if isinstance(ev, ApplicationData)) == data


def test_one_record_sends_match_the_buffer_path() -> None:
    """send_handshake/send_alert/send_application_data of one record: same bytes, queued KeyUpdate first."""
    server, client = pair()
    twin, _ = pair()
    assert twin.write is not None
    for data in (b"", b"ping\n", bytes(MAX_PLAINTEXT)):
        assert server.send_application_data(data) == twin.send_application_data(data, into=bytearray())
    assert server.send_handshake(b"\x04\x00\x00\x01\x00") == twin.write.seal(22, b"\x04\x00\x00\x01\x00")
    assert server.send_alert(0, 1) == twin.write.seal(21, b"\x01\x00")

    server, client = pair()
    assert events(server, client.send_key_update(True)) == [KeyUpdated(True)]
    wire = server.send_application_data(b"after")  # the queued KeyUpdate answer, then the data
    assert events(client, bytes(wire)) == [KeyUpdated(False), ApplicationData(b"after")]
