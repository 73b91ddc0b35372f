"""Malformed and hostile TLS 1.2 input, each case with the exact alert it gets and that alert on the wire.

Before our ChangeCipherSpec an alert is the plaintext record ``15 03 03 00 02 02 <code>``; after it
(an abbreviated handshake, where our CCS and Finished come before the client's) it is sealed under our
write key. Where the RFCs name no alert, or OpenSSL 3.0 (``openssl s_server -tls1_2``) answers the same
bytes with another one, the case's comment says so.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.inmemory import client_verifier, imported, server_config
from tests.tls12client import CCS, EC_POINT_FORMATS, EMS, P256, RENEGOTIATION_INFO, SESSION_TICKET, X25519, Client12
from tests.tlsclient import record, u16s
from tests.unit.test_handshake_inputs import _client_pair, _expect_plain_alert
from tls_privsep.secured import messages as m
from tls_privsep.secured import messages12 as m12
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.secured.tickets import TicketKeys, TicketState
from tls_privsep.shared import tls12
from tls_privsep.shared.errors import AlertDescription as A
from tls_privsep.shared.errors import LocalAlert, PeerAlert
from tls_privsep.shared.record import ApplicationData, Tls12Protection
from tls_privsep.shared.wire import u16, u32, vector

KINDS = ("ecdsa", "rsa2048")
TLS13_ONLY, TLS12_ONLY = frozenset({0x0304}), frozenset({0x0303})
FALLBACK_SCSV = 0x5600
ECDSA_SUITES, RSA_SUITES = [0xC02B, 0xC02C, 0xCCA9], [0xC02F, 0xC030, 0xCCA8]
# An X25519 point of order 8 (RFC 7748 §6.1: the shared secret with it is all zero).
X25519_ORDER_8 = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


def _server(*, kinds: tuple[str, ...] = KINDS, clock: Callable[[], float] = time.time, **kw: object) -> ServerHandshake:
    kw.setdefault("ticket_keys", TicketKeys())
    return ServerHandshake(server_config(kinds, **kw), clock=clock)


def _handshake(hs: ServerHandshake, c: Client12) -> None:
    """ClientHello in, our first flight read by the client."""
    hs.receive_data(c.client_hello_record())
    c.read_server(hs.data_to_send())


def _hs(msg: bytes) -> bytes:
    return record(22, msg)


def _flip(data: bytes, pos: int) -> bytes:
    pos %= len(data)
    return data[:pos] + bytes([data[pos] ^ 1]) + data[pos + 1 :]


def _server_hello_extensions(c: Client12) -> dict[int, bytes]:
    sh = c.server_msgs[2]
    at = 4 + 2 + 32 + 1 + sh[38] + 2 + 1
    exts, out = sh[at + 2 :], {}
    while exts:
        t, n = int.from_bytes(exts[:2], "big"), int.from_bytes(exts[2:4], "big")
        out[t] = exts[4 : 4 + n]
        exts = exts[4 + n :]
    return out


# ---- ClientHello: (id, edit the hello or return the raw records, alert, server settings) ----------

Edit = Callable[[Client12], bytes | None]


def _suites(*suites: int) -> Edit:
    def edit(c: Client12) -> None:
        c.hello.cipher_suites = list(suites)

    return edit


def _set(ext_type: int, data: bytes) -> Edit:
    def edit(c: Client12) -> None:
        c.hello.set(ext_type, data)

    return edit


def _drop(ext_type: int) -> Edit:
    def edit(c: Client12) -> None:
        c.hello.drop(ext_type)

    return edit


def _legacy(version: int) -> Edit:
    def edit(c: Client12) -> None:
        c.hello.legacy_version = version

    return edit


def _fallback(c: Client12) -> None:
    c.hello.cipher_suites.append(FALLBACK_SCSV)


CH_CASES: list[tuple[str, Edit, A, dict[str, object]]] = [
    ("no TLS 1.2 suite in common", _suites(0x009C, 0x003C), A.handshake_failure, {}),
    ("only CBC suites", _suites(0xC009, 0xC013, 0xC023, 0xC027), A.handshake_failure, {}),
    ("only RSA key exchange", _suites(0x002F, 0x0035, 0x009C, 0x009D), A.handshake_failure, {}),
    ("only DHE suites", _suites(0x009E, 0x009F, 0xCCAA, 0x0033), A.handshake_failure, {}),
    ("only NULL ciphers", _suites(0x0000, 0xC006, 0xC010, 0x003B), A.handshake_failure, {}),
    ("only export suites", _suites(0x0003, 0x0006, 0x0008, 0x0014), A.handshake_failure, {}),
    ("only TLS 1.3 suites", _suites(0x1301, 0x1302, 0x1303), A.handshake_failure, {}),
    # RFC 5246 §7.4.1.4.1: no signature_algorithms means SHA-1, which we never sign with.
    ("no signature_algorithms", _drop(13), A.handshake_failure, {}),
    ("only SHA-1 and MD5 schemes", _set(13, u16s([0x0201, 0x0203, 0x0101, 0x0103])), A.handshake_failure, {}),
    ("only rsa_pss_pss schemes", _set(13, u16s([0x0809, 0x080A, 0x080B])), A.handshake_failure, {}),
    ("no extended_master_secret", _drop(EMS), A.handshake_failure, {}),  # RFC 7627 §5.2, required here
    ("renegotiation_info not empty", _set(RENEGOTIATION_INFO, vector(1, bytes(12))), A.handshake_failure, {}),  # RFC 5746 §3.6
    # RFC 8422 §5.1.2 (OpenSSL carries on instead).
    ("ec_point_formats without uncompressed", _set(EC_POINT_FORMATS, vector(1, b"\x01\x02")), A.illegal_parameter, {}),
    ("extended_master_secret with a body", _set(EMS, b"\x00"), A.decode_error, {}),  # RFC 7627 §5.1
    ("renegotiation_info overruns", _set(RENEGOTIATION_INFO, b"\x05\x00"), A.decode_error, {}),
    ("renegotiation_info with a trailing byte", _set(RENEGOTIATION_INFO, b"\x00\x00"), A.decode_error, {}),
    ("renegotiation_info without its length", _set(RENEGOTIATION_INFO, b""), A.decode_error, {}),
    ("ec_point_formats empty", _set(EC_POINT_FORMATS, vector(1, b"")), A.decode_error, {}),  # <1..2^8-1>
    ("ec_point_formats overruns", _set(EC_POINT_FORMATS, b"\x05\x00"), A.decode_error, {}),
    # RFC 5246 §7.4.1.2 names no alert; OpenSSL's.
    ("no null compression", lambda c: setattr(c.hello, "compression", b"\x01"), A.decode_error, {}),
    ("legacy_version SSL 3.0", _legacy(0x0300), A.protocol_version, {}),  # RFC 7568
    ("legacy_version TLS 1.1", _legacy(0x0302), A.protocol_version, {}),
    ("supported_versions TLS 1.1 only", _set(43, vector(1, u16(0x0302))), A.protocol_version, {}),
    ("TLS 1.2 hello to a TLS 1.3-only server", lambda c: None, A.protocol_version, {"versions": TLS13_ONLY}),
    ("supported_versions TLS 1.2 to a TLS 1.3-only server", _set(43, vector(1, u16(0x0303))), A.protocol_version,
     {"versions": TLS13_ONLY}),
    ("TLS_FALLBACK_SCSV with legacy_version 1.2", _fallback, A.inappropriate_fallback, {}),  # RFC 7507 §3
    # A version we do not speak is refused before the SCSV is looked at, as OpenSSL does.
    ("TLS_FALLBACK_SCSV with legacy_version TLS 1.1", lambda c: (_fallback(c), _legacy(0x0302)(c))[0],
     A.protocol_version, {}),
    ("TLS_FALLBACK_SCSV with supported_versions 1.2",
     lambda c: (_fallback(c), c.hello.set(43, vector(1, u16(0x0303))))[0], A.inappropriate_fallback, {}),
    ("no x25519 or secp256r1 in supported_groups", _set(10, u16s([0x0018, 0x0019, 0x001E])), A.handshake_failure, {}),
    ("ECDSA suites to an RSA-only server", _suites(*ECDSA_SUITES), A.handshake_failure, {"kinds": ("rsa2048",)}),
    ("RSA suites to an ECDSA-only server", _suites(*RSA_SUITES), A.handshake_failure, {"kinds": ("ecdsa",)}),
    # RFC 8422 §5.1.1: our P-256 key is of no use to a client without secp256r1.
    ("P-256 certificate, no secp256r1 in supported_groups",
     lambda c: (_suites(*ECDSA_SUITES)(c), c.hello.set(10, u16s([X25519])))[0], A.handshake_failure, {"kinds": ("ecdsa",)}),
    ("ALPN with no overlap", _set(16, vector(2, vector(1, b"spdy/1"))), A.no_application_protocol, {"alpn": ("h2",)}),
    ("duplicate extension", lambda c: c.hello.extensions.append((10, u16s([X25519]))), A.illegal_parameter, {}),
    ("truncated in the cipher suites", lambda c: _hs(m.handshake(1, c.hello.encode()[4:40])), A.decode_error, {}),
    ("truncated in the extensions", lambda c: _hs(m.handshake(1, c.hello.encode()[4:-3])), A.decode_error, {}),
    ("plaintext record over 2^14", lambda c: record(22, bytes(2**14 + 1)), A.record_overflow, {}),
    ("ClientHello then a partial message in its record", lambda c: _hs(c.hello.encode() + b"\x10\x00"),
     A.unexpected_message, {}),
]


@pytest.mark.parametrize(("edit", "alert", "kw"), [c[1:] for c in CH_CASES], ids=[c[0] for c in CH_CASES])
def test_client_hello_rejected(edit: Edit, alert: A, kw: dict[str, object]) -> None:
    c = Client12()
    raw = edit(c)
    data = raw if isinstance(raw, bytes) else c.client_hello_record()
    _expect_plain_alert(_server(**kw), data, alert)  # type: ignore[arg-type]


def test_without_extended_master_secret_when_not_required() -> None:
    hs, c = _server(require_ems=False), Client12(ems=False)
    _handshake(hs, c)
    assert EMS not in _server_hello_extensions(c)
    hs.receive_data(c.full_flight())  # the RFC 5246 §8.1 master secret on both sides
    assert hs.complete


def test_fallback_scsv_to_a_tls12_only_server_is_answered() -> None:
    hs, c = _server(versions=TLS12_ONLY), Client12()
    _fallback(c)
    _handshake(hs, c)
    assert c.server_msgs[2][4:6] == b"\x03\x03"
    assert not c.server_msgs[2][6:38].endswith(m12.DOWNGRADE_TLS12)  # RFC 8446 §4.1.3: only with 1.3 enabled


def test_legacy_version_tls13_without_supported_versions_gets_tls12() -> None:
    """RFC 8446 §4.2.1: without supported_versions, TLS 1.2 whatever legacy_version says."""
    hs, c = _server(), Client12()
    _legacy(0x0304)(c)
    _handshake(hs, c)
    assert c.server_msgs[2][4:6] == b"\x03\x03"
    hs.receive_data(c.full_flight())
    assert hs.complete


def test_downgrade_sentinel_while_tls13_is_enabled() -> None:
    hs, c = _server(), Client12()
    _handshake(hs, c)
    assert c.server_random[24:] == m12.DOWNGRADE_TLS12


def test_p256_certificate_skipped_for_a_client_without_secp256r1() -> None:
    """The RSA certificate signs instead, and the exchange is X25519."""
    hs, c = _server(), Client12(groups=(X25519,))
    _handshake(hs, c)
    assert c.suite is not None and c.suite.auth == "RSA" and c.group == X25519
    hs.receive_data(c.full_flight())
    assert hs.complete


@pytest.mark.parametrize("signal", ["extension", "SCSV"])
def test_secure_renegotiation_is_answered(signal: str) -> None:
    c = Client12()
    if signal == "SCSV":
        c.hello.drop(RENEGOTIATION_INFO)
        c.hello.cipher_suites.append(0x00FF)
    _handshake(_server(), c)
    assert _server_hello_extensions(c)[RENEGOTIATION_INFO] == b"\x00"


def test_no_renegotiation_info_without_the_signal() -> None:
    c = Client12()
    c.hello.drop(RENEGOTIATION_INFO)
    _handshake(_server(), c)
    assert RENEGOTIATION_INFO not in _server_hello_extensions(c)


# ---- the client's second flight of a full handshake: plaintext alerts --------------------------

Flight = Callable[[Client12], bytes]


def _cke(public: bytes) -> Flight:
    return lambda c: _hs(c.client_key_exchange(public))


def _cke_raw(body: bytes) -> Flight:
    return lambda c: _hs(m.handshake(16, body))


def _to_ccs(c: Client12) -> bytes:
    """A correct ClientKeyExchange and ChangeCipherSpec."""
    return _hs(c.client_key_exchange()) + CCS


def _oversized_sealed_record(c: Client12) -> bytes:
    """A Finished-type record that authenticates but holds 2^14+1 bytes (AES-GCM, sealed by hand)."""
    assert c.keys is not None
    key, salt = c.keys[0][:-4], c.keys[0][-4:]
    body = bytes(2**14 + 1)
    explicit = bytes(8)
    aad = u32(0) + u32(0) + bytes([22]) + u16(0x0303) + u16(len(body))
    sealed = explicit + AESGCM(key).encrypt(salt + explicit, body, aad)
    return record(22, sealed)


FLIGHT_CASES: list[tuple[str, Flight, A, dict[str, object], dict[str, object]]] = [
    # RFC 8422 §5.11, RFC 7748 §6.1; as TLS 1.3's table and OpenSSL.
    ("x25519 point of 31 bytes", _cke(bytes(range(1, 32))), A.illegal_parameter, {}, {}),
    ("x25519 point of 33 bytes", _cke(bytes(range(1, 34))), A.illegal_parameter, {}, {}),
    ("x25519 all-zero point", _cke(bytes(32)), A.illegal_parameter, {}, {}),
    ("x25519 point 1 (small order)", _cke(b"\x01" + bytes(31)), A.illegal_parameter, {}, {}),
    ("x25519 point of order 8", _cke(X25519_ORDER_8), A.illegal_parameter, {}, {}),
    # RFC 8422 §5.1.2: we answered ec_point_formats with uncompressed only (OpenSSL takes a compressed one).
    ("P-256 compressed point", _cke(b"\x02" + bytes(range(1, 33))), A.illegal_parameter, {}, {"groups": (P256,)}),
    ("P-256 point not on the curve", _cke(b"\x04" + b"\x01" * 64), A.illegal_parameter, {}, {"groups": (P256,)}),
    ("P-256 point of 32 bytes", _cke(bytes(range(1, 33))), A.illegal_parameter, {}, {"groups": (P256,)}),
    ("P-256 point at infinity", _cke(b"\x00"), A.illegal_parameter, {}, {"groups": (P256,)}),
    # ECPoint is <1..2^8-1> (RFC 8422 §5.7); the implicit form is for fixed-ECDH certificates we never
    # ask for. OpenSSL answers an empty body with handshake_failure.
    ("empty ClientKeyExchange", _cke_raw(b""), A.decode_error, {}, {}),
    ("ClientKeyExchange with a zero-length point", _cke_raw(b"\x00"), A.decode_error, {}, {}),
    ("ClientKeyExchange with a trailing byte", _cke_raw(vector(1, bytes(range(1, 33))) + b"\x00"), A.decode_error, {}, {}),
    ("ClientKeyExchange point overruns", _cke_raw(b"\x40" + bytes(32)), A.decode_error, {}, {}),
    ("Finished before ChangeCipherSpec", lambda c: _hs(c.client_key_exchange()) + _hs(c.finished()),
     A.unexpected_message, {}, {}),
    ("Finished before ClientKeyExchange", lambda c: _hs(m.finished(bytes(12))), A.unexpected_message, {}, {}),
    ("ChangeCipherSpec before ClientKeyExchange", lambda c: CCS, A.unexpected_message, {}, {}),
    # The second is plaintext where only protected records may come (OpenSSL: bad_record_mac).
    ("ChangeCipherSpec twice", lambda c: _to_ccs(c) + CCS, A.unexpected_message, {}, {}),
    # RFC 5246 §7.1 names no alert for a malformed CCS; the record layer says decode_error (OpenSSL:
    # unexpected_message, BoringSSL: illegal_parameter).
    ("ChangeCipherSpec of value 2", lambda c: _hs(c.client_key_exchange()) + record(20, b"\x02"), A.decode_error, {}, {}),
    ("ChangeCipherSpec of two bytes", lambda c: _hs(c.client_key_exchange()) + record(20, b"\x01\x01"),
     A.decode_error, {}, {}),
    ("empty ChangeCipherSpec", lambda c: _hs(c.client_key_exchange()) + record(20, b""), A.decode_error, {}, {}),
    ("ChangeCipherSpec inside a fragmented ClientKeyExchange",
     lambda c: record(22, c.client_key_exchange()[:10]) + CCS, A.unexpected_message, {}, {}),
    ("unencrypted Finished after ChangeCipherSpec", lambda c: _to_ccs(c) + _hs(c.finished()), A.bad_record_mac, {}, {}),
    ("Finished of 13 bytes", lambda c: _to_ccs(c) + c.protect(m.handshake(20, bytes(13))), A.decode_error, {}, {}),
    ("Finished of 11 bytes", lambda c: _to_ccs(c) + c.protect(m.handshake(20, bytes(11))), A.decode_error, {}, {}),
    ("bad verify_data", lambda c: _to_ccs(c) + c.protect(c.finished(corrupt=True)), A.decrypt_error, {}, {}),
    ("Finished record with a flipped tag bit", lambda c: _flip(_to_ccs(c) + c.protect(c.finished()), -1),
     A.bad_record_mac, {}, {}),
    ("Finished record with a changed explicit nonce",
     lambda c: (lambda head, fin: head + _flip(fin, 5))(_to_ccs(c), c.protect(c.finished())), A.bad_record_mac, {}, {}),
    ("ChaCha20-Poly1305 Finished with a flipped tag bit", lambda c: _flip(_to_ccs(c) + c.protect(c.finished()), -1),
     A.bad_record_mac, {}, {"suites": [0xCCA9]}),
    ("sealed record that is not 0x0303", lambda c: (lambda head, fin: head + fin[:1] + b"\x03\x02" + fin[3:])(
        _to_ccs(c), c.protect(c.finished())), A.protocol_version, {}, {}),
    ("sealed record shorter than nonce and tag", lambda c: _to_ccs(c) + record(22, bytes(23)), A.bad_record_mac, {}, {}),
    ("plaintext record over 2^14", lambda c: record(22, bytes(2**14 + 1)), A.record_overflow, {}, {}),
    ("ciphertext over 2^14+2048", lambda c: _to_ccs(c) + record(22, bytes(2**14 + 2049)), A.record_overflow, {}, {}),
    # within RFC 5246's bound, so judged by its tag (as OpenSSL does)
    ("ciphertext of 2^14+257 bytes", lambda c: _to_ccs(c) + record(22, bytes(2**14 + 257)), A.bad_record_mac, {}, {}),
    ("sealed plaintext over 2^14", lambda c: _to_ccs(c) + _oversized_sealed_record(c), A.record_overflow, {}, {}),
    ("application data before ChangeCipherSpec", lambda c: _hs(c.client_key_exchange()) + record(23, b"GET /"),
     A.unexpected_message, {}, {}),
    ("application data before Finished", lambda c: _to_ccs(c) + c.protect(b"GET /", 23), A.unexpected_message, {}, {}),
    ("second ClientHello", lambda c: _hs(c.hello.encode()), A.unexpected_message, {}, {}),
    ("second ClientHello after ClientKeyExchange", lambda c: _hs(c.client_key_exchange()) + _hs(c.hello.encode()),
     A.unexpected_message, {}, {}),
    ("ClientKeyExchange twice", lambda c: _hs(c.client_key_exchange()) + _hs(c.client_key_exchange()),
     A.unexpected_message, {}, {}),
    ("CertificateVerify without a Certificate",
     lambda c: _hs(c.client_key_exchange()) + _hs(m.certificate_verify(0x0403, bytes(70))), A.unexpected_message, {}, {}),
    ("Certificate that was never requested", lambda c: _hs(m12.certificate([])), A.unexpected_message, {}, {}),
    ("HelloRequest from the client", lambda c: _hs(m.handshake(0, b"")), A.unexpected_message, {}, {}),
    ("KeyUpdate during the handshake", lambda c: _to_ccs(c) + c.protect(m.handshake(24, b"\x00")), A.unexpected_message,
     {}, {}),
    ("handshake bytes after the Finished in its record", lambda c: _to_ccs(c) + c.protect(c.finished() + bytes(4)),
     A.unexpected_message, {}, {}),
    ("ClientKeyExchange announcing 2^24-1 bytes", lambda c: _hs(b"\x10\xff\xff\xff"), A.illegal_parameter, {}, {}),
    ("unknown record type", lambda c: record(99, b"\x01"), A.unexpected_message, {}, {}),
    ("zero-length handshake record", lambda c: record(22, b""), A.unexpected_message, {}, {}),
    ("alert record of 3 bytes", lambda c: record(21, b"\x02\x28\x00"), A.decode_error, {}, {}),
    ("alert of level 3", lambda c: record(21, b"\x03\x28"), A.illegal_parameter, {}, {}),  # as OpenSSL
]


@pytest.mark.parametrize(("flight", "alert", "server_kw", "client_kw"), [c[1:] for c in FLIGHT_CASES],
                         ids=[c[0] for c in FLIGHT_CASES])
def test_client_flight_rejected(flight: Flight, alert: A, server_kw: dict[str, object],
                                client_kw: dict[str, object]) -> None:
    hs, c = _server(**server_kw), Client12(**client_kw)  # type: ignore[arg-type]
    _handshake(hs, c)
    _expect_plain_alert(hs, flight(c), alert)


def test_fatal_alert_from_the_client_is_not_answered() -> None:
    hs, c = _server(), Client12()
    _handshake(hs, c)
    with pytest.raises(PeerAlert) as exc:
        hs.receive_data(_hs(c.client_key_exchange()) + record(21, b"\x02\x28"))
    assert exc.value.description == A.handshake_failure
    assert hs.data_to_send() == b""


def test_warning_alert_mid_handshake_is_ignored() -> None:
    hs, c = _server(), Client12()
    _handshake(hs, c)
    hs.receive_data(record(21, b"\x01\x5a") + c.full_flight())  # user_canceled, a warning
    assert hs.complete


def test_second_flight_byte_by_byte_completes() -> None:
    hs, c = _server(), Client12()
    _handshake(hs, c)
    data = c.full_flight()
    for i in range(len(data)):
        hs.receive_data(data[i : i + 1])
    assert hs.complete


def test_messages_split_across_records_complete() -> None:
    hs, c = _server(), Client12()
    _handshake(hs, c)
    cke = c.client_key_exchange()
    fin = c.finished()
    hs.receive_data(_hs(cke[:7]) + _hs(cke[7:]) + CCS + c.protect(fin[:5]) + c.protect(fin[5:]))
    assert hs.complete


def test_false_start_application_data_is_handed_over() -> None:
    """RFC 7918: the client's data right after its Finished, before our Finished reached it, is kept
    for the record layer that takes over, and read there."""
    hs, c = _server(), Client12()
    _handshake(hs, c)
    flight = c.full_flight()
    early = c.protect(b"GET / HTTP/1.1\r\n\r\n", 23)
    hs.receive_data(flight + early)
    assert hs.complete and hs.trailing == early
    assert hs.bytes_consumed == len(c.hello.encode()) + 5 + len(flight)
    rl = imported(hs)
    assert rl.next_event() == ApplicationData(b"GET / HTTP/1.1\r\n\r\n")


# ---- client certificates ------------------------------------------------------------------------


def _auth(mode: str = "required") -> tuple[ServerHandshake, Client12]:
    hs, c = _server(client_auth=mode, client_verifier=client_verifier()), Client12()
    _handshake(hs, c)
    assert 13 in c.server_msgs  # CertificateRequest
    return hs, c


def _certificate(c: Client12, chain: list[bytes]) -> bytes:
    msg = m12.certificate(chain)
    c.messages += msg
    return msg


def _certificate_verify(c: Client12, key: object, scheme: int = 0x0403, *, corrupt: bool = False) -> bytes:
    """RFC 5246 §7.4.8: a signature over every handshake message so far."""
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    sig = key.sign(c.messages, ec.ECDSA(hashes.SHA256()))
    if corrupt:
        sig = _flip(sig, len(sig) - 1)
    msg = m.certificate_verify(scheme, sig)
    c.messages += msg
    return msg


def test_client_certificate_accepted() -> None:
    hs, c = _auth()
    chain, key = _client_pair()
    first = _certificate(c, chain) + c.client_key_exchange()
    hs.receive_data(_hs(first + _certificate_verify(c, key)) + CCS + c.protect(c.finished()))
    assert hs.complete and hs.info.client_cert


AUTH_CASES: list[tuple[str, Callable[[Client12], bytes], A, str]] = [
    # RFC 5246 §7.4.6: handshake_failure (TLS 1.2 has no certificate_required).
    ("empty Certificate when required", lambda c: _hs(_certificate(c, [])), A.handshake_failure, "required"),
    ("ClientKeyExchange without a Certificate", lambda c: _hs(c.client_key_exchange()), A.unexpected_message, "required"),
    ("garbage certificate DER", lambda c: _hs(_certificate(c, [b"\x30\x03\x02\x01\x00"])), A.bad_certificate, "required"),
    ("certificate list overruns", lambda c: _hs(m.handshake(11, b"\x00\x00\x10" + b"\x00\x00\x05abc")), A.decode_error,
     "required"),
    ("certificate without the clientAuth EKU", lambda c: _hs(_certificate(c, _client_pair(client=False)[0])),
     A.unsupported_certificate, "required"),
    ("bad CertificateVerify signature", lambda c: _hs(_certificate(c, _client_pair()[0]) + c.client_key_exchange()
     + _certificate_verify(c, _client_pair()[1], corrupt=True)), A.decrypt_error, "required"),
    ("CertificateVerify with ecdsa_sha1, never offered", lambda c: _hs(_certificate(c, _client_pair()[0])
     + c.client_key_exchange() + _certificate_verify(c, _client_pair()[1], 0x0203)), A.illegal_parameter, "required"),
    ("CertificateVerify with an RSA scheme for an EC key", lambda c: _hs(_certificate(c, _client_pair()[0])
     + c.client_key_exchange() + _certificate_verify(c, _client_pair()[1], 0x0804)), A.illegal_parameter, "required"),
    ("ChangeCipherSpec instead of CertificateVerify",
     lambda c: _hs(_certificate(c, _client_pair()[0]) + c.client_key_exchange()) + CCS, A.unexpected_message, "required"),
    ("CertificateVerify after an empty Certificate", lambda c: _hs(_certificate(c, []) + c.client_key_exchange()
     + m.certificate_verify(0x0403, bytes(70))), A.unexpected_message, "optional"),
]


@pytest.mark.parametrize(("flight", "alert", "mode"), [c[1:] for c in AUTH_CASES], ids=[c[0] for c in AUTH_CASES])
def test_client_certificate_rejected(flight: Callable[[Client12], bytes], alert: A, mode: str) -> None:
    hs, c = _auth(mode)
    _expect_plain_alert(hs, flight(c), alert)


def test_empty_client_certificate_when_optional_completes() -> None:
    hs, c = _auth("optional")
    hs.receive_data(_hs(_certificate(c, [])) + c.full_flight())
    assert hs.complete and not hs.info.client_cert


# ---- resumption with a ticket (RFC 5077), and when it must not happen ----------------------------


@dataclass
class Session:
    keys: TicketKeys
    ticket: bytes
    master: bytes


def _session() -> Session:
    """A full handshake that ends with a NewSessionTicket; the ticket and the master secret it seals."""
    keys = TicketKeys()
    hs, c = _server(ticket_keys=keys), Client12()
    _handshake(hs, c)
    hs.receive_data(c.full_flight())
    out = hs.data_to_send()
    assert out[0] == 22 and out[5] == 4  # NewSessionTicket, before our ChangeCipherSpec
    nst = out[5 : 5 + int.from_bytes(out[3:5], "big")]
    ticket = nst[4 + 4 + 2 :]
    assert nst[8:10] == u16(len(ticket)) and ticket
    return Session(keys, ticket, c.master)


def _offer(session: Session, ticket: bytes | None = None, *, clock: Callable[[], float] = time.time,
           server_kw: dict[str, object] | None = None, **client_kw: object) -> tuple[ServerHandshake, Client12]:
    hs = _server(ticket_keys=session.keys, clock=clock, **(server_kw or {}))
    c = Client12(ticket=session.ticket if ticket is None else ticket, **client_kw)  # type: ignore[arg-type]
    c.hello.session_id = os.urandom(32)  # RFC 5077 §3.4: echoed when the ticket is taken
    return hs, c


def _abbreviated(session: Session) -> tuple[ServerHandshake, Client12, Tls12Protection]:
    """The server's ServerHello, ChangeCipherSpec and Finished read; the reader goes on to what it seals next."""
    hs, c = _offer(session)
    _handshake(hs, c)
    assert hs.info.resumed and 11 not in c.server_msgs and c.session_id == c.hello.session_id
    c.master = session.master
    c.derive_keys()
    assert c.suite is not None and c.rest[:6] == CCS
    reader = c.server_reader()
    ctype, fin = reader.open(c.rest[6:11], c.rest[11:])
    expected = tls12.finished_verify_data(c.suite.hash_name, c.master, hashlib.new(c.suite.hash_name, c.messages).digest(),
                                          client=False)
    assert (ctype, fin) == (22, m.finished(expected))
    c.messages += fin
    return hs, c, reader


def test_resumption_completes() -> None:
    hs, c, _reader = _abbreviated(_session())
    hs.receive_data(CCS + c.protect(c.finished()))
    assert hs.complete and hs.info.resumed


RESUMED_CASES: list[tuple[str, Flight, A]] = [
    ("bad client Finished", lambda c: CCS + c.protect(c.finished(corrupt=True)), A.decrypt_error),
    ("Finished before ChangeCipherSpec", lambda c: _hs(c.finished()), A.unexpected_message),
    ("unencrypted Finished after ChangeCipherSpec", lambda c: CCS + _hs(c.finished()), A.bad_record_mac),
    ("ClientKeyExchange instead of ChangeCipherSpec", _cke_raw(vector(1, bytes(range(1, 33)))), A.unexpected_message),
    ("ChangeCipherSpec twice", lambda c: CCS + CCS, A.unexpected_message),
    ("Finished of 13 bytes", lambda c: CCS + c.protect(m.handshake(20, bytes(13))), A.decode_error),
    ("application data before Finished", lambda c: CCS + c.protect(b"GET /", 23), A.unexpected_message),
    ("Finished record with a flipped tag bit", lambda c: CCS + _flip(c.protect(c.finished()), -1), A.bad_record_mac),
]


@pytest.mark.parametrize(("flight", "alert"), [c[1:] for c in RESUMED_CASES], ids=[c[0] for c in RESUMED_CASES])
def test_resumed_flight_rejected_under_our_key(flight: Flight, alert: A) -> None:
    hs, c, reader = _abbreviated(_session())
    with pytest.raises(LocalAlert) as exc:
        hs.receive_data(flight(c))
    assert exc.value.description == alert, exc.value.reason
    out = hs.data_to_send()
    assert reader.open(out[:5], out[5:]) == (21, bytes([2, alert]))


def _assert_full_handshake(hs: ServerHandshake, c: Client12) -> None:
    _handshake(hs, c)
    assert not hs.info.resumed and 11 in c.server_msgs and c.session_id == b""
    hs.receive_data(c.full_flight())
    assert hs.complete


def test_tls13_ticket_gets_a_full_handshake() -> None:
    keys = TicketKeys()
    ticket = keys.seal(TicketState(psk=bytes(32), suite=0x1301, created_ms=int(time.time() * 1000), age_add=7,
                                   lifetime=3600, sni="localhost"))
    assert ticket is not None
    _assert_full_handshake(*_offer(Session(keys, ticket, bytes(48))))


def test_garbage_ticket_gets_a_full_handshake() -> None:
    session = _session()
    _assert_full_handshake(*_offer(session, os.urandom(len(session.ticket))))


def test_forged_ticket_gets_a_full_handshake() -> None:
    session = _session()
    _assert_full_handshake(*_offer(session, _flip(session.ticket, len(session.ticket) // 2)))


def test_ticket_for_another_server_name_gets_a_full_handshake() -> None:
    _assert_full_handshake(*_offer(_session(), sni="www.example.test"))


def test_expired_ticket_gets_a_full_handshake() -> None:
    later = time.time() + 7200 + 60  # past the default ticket_lifetime
    _assert_full_handshake(*_offer(_session(), clock=lambda: later))


def test_ticket_whose_suite_is_not_offered_gets_a_full_handshake() -> None:
    _assert_full_handshake(*_offer(_session(), suites=RSA_SUITES))


def test_session_without_extended_master_secret_gets_no_ticket() -> None:
    """RFC 7627 §5.3: it could never be resumed, so the session_ticket extension goes unanswered."""
    hs, c = _server(require_ems=False), Client12(ems=False)
    _handshake(hs, c)
    assert SESSION_TICKET not in _server_hello_extensions(c)
    hs.receive_data(c.full_flight())
    assert hs.complete and hs.data_to_send()[:6] == CCS  # no NewSessionTicket before it


def test_ticket_without_extended_master_secret_is_never_resumed() -> None:
    """RFC 7627 §5.3: not even a valid ticket of such a session gets an abbreviated handshake."""
    keys = TicketKeys()
    ticket = keys.seal(TicketState(psk=bytes(48), suite=0xC02B, created_ms=int(time.time() * 1000), age_add=0,
                                   lifetime=3600, sni="localhost", ems=False))
    assert ticket is not None
    _assert_full_handshake(*_offer(Session(keys, ticket, bytes(48)), server_kw={"require_ems": False}, ems=False))


def test_extended_master_secret_session_resumed_without_it() -> None:
    """RFC 7627 §5.3: the server MUST abort; handshake_failure, as OpenSSL."""
    hs, c = _offer(_session(), server_kw={"require_ems": False}, ems=False)
    _expect_plain_alert(hs, c.client_hello_record(), A.handshake_failure)
