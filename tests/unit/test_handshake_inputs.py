"""Malformed and hostile handshake input, each case with the exact alert RFC 8446 names for it.

Every case also checks what goes on the wire: a plaintext alert record before our ServerHello, an
alert encrypted under our current key after it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import certs
from tests.inmemory import client_verifier, pki, server_config
from tests.tlsclient import P256, X25519, Client, record, u16s
from tls_privsep.secured import messages as m
from tls_privsep.secured.handshake import ServerConfig, ServerHandshake
from tls_privsep.secured.tickets import TicketKeys, TicketState
from tls_privsep.shared import keyschedule as ks
from tls_privsep.shared.errors import AlertDescription as AD
from tls_privsep.shared.errors import LocalAlert
from tls_privsep.shared.record import Protection
from tls_privsep.shared.wire import u8, u16, u32, vector

A = AD


def _server(**kw: object) -> ServerHandshake:
    kw.setdefault("ticket_keys", TicketKeys())
    return ServerHandshake(server_config(("ecdsa", "rsa2048"), **kw))


def _expect_plain_alert(hs: ServerHandshake, data: bytes, alert: AD) -> None:
    with pytest.raises(LocalAlert) as exc:
        hs.receive_data(data)
    assert exc.value.description == alert, exc.value.reason
    assert hs.data_to_send() == bytes([21, 3, 3, 0, 2, 2, alert])


# ---- ClientHello cases: (id, edit the hello and/or return raw record bytes, alert, server kwargs) ----

Edit = Callable[[Client], bytes | None]


def _flip_last_bit(record: bytes) -> bytes:
    """The record with one bit of its own AEAD tag flipped: it can never authenticate."""
    return record[:-1] + bytes([record[-1] ^ 1])


def _raw_ch(c: Client, mutate: Callable[[bytes], bytes]) -> bytes:
    """A ClientHello whose body is edited; the handshake header is recomputed to match."""
    return record(22, m.handshake(1, mutate(c.hello.encode()[4:])), 0x0301)


def _psk_ext(identity: bytes, binder_len: int = 32, n_binders: int = 1, binder: bytes | None = None,
             obfuscated_age: int = 7 + 1000) -> bytes:
    ids = vector(2, vector(2, identity) + u32(obfuscated_age))
    binders = vector(2, b"".join(vector(1, binder or bytes(binder_len)) for _ in range(n_binders)))
    return ids + binders


def _sig_only(schemes: tuple[int, ...]) -> Edit:
    def edit(c: Client) -> None:
        c.hello.set(13, u16s(schemes))

    return edit


CH_CASES: list[tuple[str, Edit, AD, dict[str, object]]] = [
    ("truncated in random", lambda c: _raw_ch(c, lambda b: b[:20]), A.decode_error, {}),
    ("truncated in session id", lambda c: _raw_ch(c, lambda b: b[:34] + b"\x20" + bytes(5)), A.decode_error, {}),
    ("session id of 33 bytes", lambda c: setattr(c.hello, "session_id", bytes(33)), A.decode_error, {}),
    ("odd cipher_suites length", lambda c: _raw_ch(c, lambda b: b[:35] + b"\x00\x07" + b[37:]), A.decode_error, {}),
    ("empty cipher_suites", lambda c: setattr(c.hello, "cipher_suites", []), A.decode_error, {}),
    ("empty compression", lambda c: setattr(c.hello, "compression", b""), A.decode_error, {}),
    ("compression method 1", lambda c: setattr(c.hello, "compression", b"\x01"), A.illegal_parameter, {}),
    ("compression null+deflate", lambda c: setattr(c.hello, "compression", b"\x00\x01"), A.illegal_parameter, {}),
    ("trailing byte after extensions", lambda c: _raw_ch(c, lambda b: b + b"\x00"), A.decode_error, {}),
    ("extensions length overruns", lambda c: _raw_ch(c, lambda b: b[:-1]), A.decode_error, {}),
    ("duplicate extension", lambda c: c.hello.extensions.append((10, u16s([0x1D]))), A.illegal_parameter, {}),
    ("pre_shared_key not last", lambda c: c.hello.extensions.insert(0, (41, _psk_ext(b"x"))), A.illegal_parameter, {}),
    ("no supported_versions", lambda c: c.hello.drop(43), A.protocol_version, {"versions": frozenset({0x0304})}),
    ("supported_versions without TLS 1.3", lambda c: c.hello.set(43, vector(1, u16(0x0303))), A.protocol_version, {"versions": frozenset({0x0304})}),
    ("legacy_version SSL 3.0", lambda c: setattr(c.hello, "legacy_version", 0x0300), A.protocol_version, {}),
    ("no extensions block", lambda c: setattr(c.hello, "omit_extensions_block", True), A.protocol_version, {"versions": frozenset({0x0304})}),
    ("supported_versions odd length", lambda c: c.hello.set(43, vector(1, b"\x03\x04\x03")), A.decode_error, {}),
    ("supported_versions empty", lambda c: c.hello.set(43, vector(1, b"")), A.decode_error, {}),
    ("no signature_algorithms", lambda c: c.hello.drop(13), A.missing_extension, {}),
    ("no supported_groups", lambda c: c.hello.drop(10), A.missing_extension, {}),
    ("no key_share", lambda c: c.hello.drop(51), A.missing_extension, {}),
    ("psk without psk_key_exchange_modes", lambda c: (c.hello.drop(45), c.hello.extensions.append((41, _psk_ext(b"t"))))[0], A.missing_extension, {}),
    ("no common cipher suite", lambda c: setattr(c.hello, "cipher_suites", [0xC02F, 0x009C]), A.handshake_failure, {}),
    ("no common group", lambda c: (c.hello.set(10, u16s([0x0018])), c.hello.set(51, vector(2, u16(0x0018) + vector(2, bytes(97)))))[0], A.handshake_failure, {}),
    ("x25519 share of 31 bytes", lambda c: c.hello.set(51, vector(2, u16(X25519) + vector(2, bytes(31)))), A.illegal_parameter, {}),
    ("x25519 share of 33 bytes", lambda c: c.hello.set(51, vector(2, u16(X25519) + vector(2, bytes(33)))), A.illegal_parameter, {}),
    ("x25519 all-zero shared secret", lambda c: c.hello.set(51, vector(2, u16(X25519) + vector(2, bytes(32)))), A.illegal_parameter, {}),
    ("x25519 low-order point 1", lambda c: c.hello.set(51, vector(2, u16(X25519) + vector(2, b"\x01" + bytes(31)))), A.illegal_parameter, {}),
    ("P-256 point not on curve", lambda c: c.hello.set(51, vector(2, u16(P256) + vector(2, b"\x04" + b"\x01" * 64))), A.illegal_parameter, {"groups": (P256,)}),
    ("P-256 compressed point", lambda c: c.hello.set(51, vector(2, u16(P256) + vector(2, b"\x02" + b"\x01" * 64))), A.illegal_parameter, {"groups": (P256,)}),
    ("P-256 share of 33 bytes", lambda c: c.hello.set(51, vector(2, u16(P256) + vector(2, b"\x02" + bytes(32)))), A.illegal_parameter, {"groups": (P256,)}),
    ("P-256 point at infinity", lambda c: c.hello.set(51, vector(2, u16(P256) + vector(2, b"\x04" + bytes(64)))), A.illegal_parameter, {"groups": (P256,)}),
    ("key share group not in supported_groups", lambda c: c.hello.set(10, u16s([P256])), A.illegal_parameter, {}),
    ("two shares for one group", lambda c: c.hello.set(51, c.key_share((X25519, X25519))), A.illegal_parameter, {}),
    ("key share entry overruns", lambda c: c.hello.set(51, vector(2, u16(X25519) + u16(40) + bytes(32))), A.decode_error, {}),
    ("empty key share entry", lambda c: c.hello.set(51, vector(2, u16(X25519) + u16(0))), A.decode_error, {}),
    ("only rsa_pkcs1 schemes", _sig_only((0x0401, 0x0501, 0x0601)), A.handshake_failure, {}),
    ("only rsa_pss_pss for an rsaEncryption key", _sig_only((0x0809, 0x080A)), A.handshake_failure, {}),
    ("only ecdsa_secp384r1 for a P-256 key", _sig_only((0x0503,)), A.handshake_failure, {}),
    ("signature_algorithms odd length", lambda c: c.hello.set(13, vector(2, b"\x04\x03\x08")), A.decode_error, {}),
    ("ALPN with no overlap", lambda c: c.hello.set(16, vector(2, vector(1, b"spdy/1"))), A.no_application_protocol, {"alpn": ("h2",)}),
    ("ALPN with an empty name", lambda c: c.hello.set(16, vector(2, vector(1, b"h2") + b"\x00")), A.decode_error, {"alpn": ("h2",)}),
    ("ALPN list empty", lambda c: c.hello.set(16, vector(2, b"")), A.decode_error, {}),
    ("server_name twice", lambda c: c.hello.set(0, vector(2, (u8(0) + vector(2, b"a")) * 2)), A.illegal_parameter, {}),
    ("server_name list empty", lambda c: c.hello.set(0, vector(2, b"")), A.decode_error, {}),
    # A host name no server can have is unrecognized_name, as in OpenSSL and BoringSSL (docs/alerts.md).
    ("server_name with NUL", lambda c: c.hello.set(0, vector(2, u8(0) + vector(2, b"a\x00b"))), A.unrecognized_name, {}),
    ("server_name with a trailing dot", lambda c: c.hello.set(0, vector(2, u8(0) + vector(2, b"localhost."))), A.unrecognized_name, {}),
    ("server_name not ASCII", lambda c: c.hello.set(0, vector(2, u8(0) + vector(2, "bücher.example".encode()))), A.unrecognized_name, {}),
    ("server_name with a control character", lambda c: c.hello.set(0, vector(2, u8(0) + vector(2, b"a\tb"))), A.unrecognized_name, {}),
    ("PSK identities and binders differ", lambda c: c.hello.extensions.append((41, _psk_ext(b"t", n_binders=2))), A.illegal_parameter, {}),
    ("PSK binder of 31 bytes", lambda c: c.hello.extensions.append((41, _psk_ext(b"t", binder_len=31))), A.decode_error, {}),
    ("early_data with a body", lambda c: c.hello.set(42, b"\x00"), A.decode_error, {}),
    ("psk_key_exchange_modes empty", lambda c: c.hello.set(45, vector(1, b"")), A.decode_error, {}),
    ("cookie empty", lambda c: c.hello.set(44, vector(2, b"")), A.decode_error, {}),
    ("Finished as first message", lambda c: record(22, m.finished(bytes(32))), A.unexpected_message, {}),
    ("application data before the handshake", lambda c: record(23, b"GET / HTTP/1.1\r\n\r\n"), A.unexpected_message, {}),
    ("CCS before ClientHello", lambda c: record(20, b"\x01"), A.unexpected_message, {}),
    ("unknown record type", lambda c: record(99, b"\x01"), A.unexpected_message, {}),
    ("plaintext record over 2^14", lambda c: record(22, bytes(2**14 + 1)), A.record_overflow, {}),
    ("zero-length handshake record", lambda c: record(22, b""), A.unexpected_message, {}),
    ("alert record of 3 bytes", lambda c: record(21, b"\x02\x28\x00"), A.decode_error, {}),
    ("ClientHello followed by a partial message, then CCS", lambda c: record(22, c.hello.encode() + b"\x01\x00") + record(20, b"\x01"), A.unexpected_message, {}),
    ("ClientHello over 131,396 bytes", lambda c: record(22, b"\x01" + (131397).to_bytes(3, "big") + bytes(64)), A.illegal_parameter, {}),
]


@pytest.mark.parametrize(("edit", "alert", "kw"), [c[1:] for c in CH_CASES], ids=[c[0] for c in CH_CASES])
def test_client_hello_rejected(edit: Edit, alert: AD, kw: dict[str, object]) -> None:
    c = Client()
    raw = edit(c)
    data = raw if isinstance(raw, bytes) else c.client_hello_record()
    _expect_plain_alert(_server(**kw), data, alert)


def test_legacy_record_version_is_ignored() -> None:
    c = Client()
    hs = _server()
    hs.receive_data(record(22, c.hello.encode(), 0x0300))
    assert hs.data_to_send()[:1] == b"\x16"


def test_unknown_extensions_groups_suites_schemes_are_ignored() -> None:
    c = Client(groups=(0x6399, 0x0100, X25519), sig_algs=(0xFEFE, 0x0403))
    c.hello.cipher_suites = [0x1305, 0x00FF, 0x1301]
    c.hello.extensions.insert(0, (0xFACE, b"whatever"))
    hs = _server()
    hs.receive_data(c.client_hello_record())
    out = hs.data_to_send()
    c.read_server(out)
    # Nothing sent back that was not asked for: EE is empty (no ALPN asked, SNI used -> server_name).
    ee = c.server_msgs[0]
    assert ee == m.encrypted_extensions(m.extension(0, b""))


@pytest.mark.parametrize(("sig_algs", "scheme"), [((0x0403,), 0x0403), ((0x0804,), 0x0804), ((0x0806,), 0x0806), ((0x0806, 0x0403), 0x0403)])
def test_certificate_chosen_by_client_schemes(sig_algs: tuple[int, ...], scheme: int) -> None:
    c = Client(sig_algs=sig_algs)
    hs = _server()
    hs.receive_data(c.client_hello_record())
    assert hs.info.sig_scheme == scheme


# ---- HelloRetryRequest cases -------------------------------------------------------------------


def _hrr_then(edit: Callable[[Client, bytes | None], None], *, cookie: bool = True) -> tuple[ServerHandshake, Client, bytes]:
    hs = _server(groups=(P256,), hrr_cookie=cookie)
    c = Client()
    hs.receive_data(c.client_hello_record())
    hrr = hs.data_to_send()
    assert hrr[11:43] == m.HRR_RANDOM
    cookie_value = None
    if cookie:
        at = hrr.index(b"\x00\x2c", 43)
        n = int.from_bytes(hrr[at + 4 : at + 6], "big")
        cookie_value = hrr[at + 6 : at + 6 + n]
    c.hello.set(51, c.key_share((P256,)))
    if cookie_value is not None:
        c.hello.set(44, vector(2, cookie_value))
    edit(c, cookie_value)
    return hs, c, record(22, c.hello.encode())


def test_hrr_happy_path() -> None:
    hs, _c, data = _hrr_then(lambda c, k: None)
    hs.receive_data(data)
    assert hs.data_to_send()[:1] == b"\x16" and hs.info.hrr


HRR_CASES: list[tuple[str, Callable[[Client, bytes | None], None], AD]] = [
    ("no share for the requested group", lambda c, k: c.hello.set(51, c.key_share((X25519,))), A.illegal_parameter),
    ("two shares", lambda c, k: c.hello.set(51, c.key_share((P256, X25519))), A.illegal_parameter),
    ("changed random", lambda c, k: setattr(c.hello, "random", bytes(32)), A.illegal_parameter),
    ("changed cipher_suites", lambda c, k: setattr(c.hello, "cipher_suites", [0x1301]), A.illegal_parameter),
    ("changed session id", lambda c, k: setattr(c.hello, "session_id", b"\x01" * 32), A.illegal_parameter),
    ("cookie missing", lambda c, k: c.hello.drop(44), A.illegal_parameter),
    ("cookie altered", lambda c, k: c.hello.set(44, vector(2, b"forged")), A.illegal_parameter),
    ("early_data after HRR", lambda c, k: c.hello.set(42, b""), A.illegal_parameter),
    ("changed ALPN", lambda c, k: c.hello.set(16, vector(2, vector(1, b"h2"))), A.illegal_parameter),
    ("dropped server_name", lambda c, k: c.hello.drop(0), A.illegal_parameter),
    ("supported_versions dropped", lambda c, k: c.hello.drop(43), A.protocol_version),
]


@pytest.mark.parametrize(("edit", "alert"), [c[1:] for c in HRR_CASES], ids=[c[0] for c in HRR_CASES])
def test_second_client_hello_rejected(edit: Callable[[Client, bytes | None], None], alert: AD) -> None:
    hs, _c, data = _hrr_then(edit)
    _expect_plain_alert(hs, data, alert)


def test_application_data_record_before_second_hello() -> None:
    hs, _c, _data = _hrr_then(lambda c, k: None)
    _expect_plain_alert(hs, record(23, b"early?"), A.unexpected_message)


# ---- after our flight: encrypted cases ---------------------------------------------------------


def _after_flight(**kw: object) -> tuple[ServerHandshake, Client]:
    hs = _server(**kw)
    c = Client()
    hs.receive_data(c.client_hello_record())
    c.read_server(hs.data_to_send())
    return hs, c


def _expect_encrypted_alert(hs: ServerHandshake, c: Client, data: bytes, alert: AD) -> None:
    with pytest.raises(LocalAlert) as exc:
        hs.receive_data(data)
    assert exc.value.description == alert, exc.value.reason
    out = hs.data_to_send()
    assert c.suite is not None
    ctype, plain = Protection(c.suite.suite, c._secrets["s_ap"]).open(out[:5], out[5:])
    assert (ctype, plain) == (21, bytes([2, alert]))


FlightEdit = Callable[[Client], bytes]

FLIGHT_CASES: list[tuple[str, FlightEdit, AD]] = [
    ("CCS of value 2", lambda c: record(20, b"\x02"), A.unexpected_message),
    ("CCS of two bytes", lambda c: record(20, b"\x01\x01"), A.unexpected_message),
    ("empty CCS", lambda c: record(20, b""), A.unexpected_message),
    ("bad Finished verify_data", lambda c: c.protect(c.finished_message(corrupt=True)), A.decrypt_error),
    ("Finished one byte short", lambda c: c.protect(c.finished_message()[:-1][:1] + b"\x00\x00\x1f" + c.finished_message()[4:-1]), A.decode_error),
    ("Finished record with a flipped tag bit", lambda c: _flip_last_bit(c.protect(c.finished_message())), A.bad_record_mac),
    ("application data instead of Finished", lambda c: c.protect(b"hello", content_type=23), A.unexpected_message),
    ("plaintext handshake after ServerHello", lambda c: record(22, c.finished_message()), A.unexpected_message),
    ("unprotected application data after ServerHello", lambda c: record(23, b"x" * 40), A.bad_record_mac),
    ("Finished then more handshake bytes in its record", lambda c: c.protect(c.finished_message() + m.handshake(24, b"\x00")), A.unexpected_message),
    ("Certificate that was never requested", lambda c: c.protect(m.certificate([])), A.unexpected_message),
    ("all-zero inner plaintext", lambda c: c.protect(b"", content_type=0), A.unexpected_message),
    ("encrypted CCS", lambda c: c.protect(b"\x01", content_type=20), A.unexpected_message),
    ("second ClientHello after ServerHello", lambda c: c.protect(c.hello.encode()), A.unexpected_message),
    ("KeyUpdate during the handshake", lambda c: c.protect(m.handshake(24, b"\x00")), A.unexpected_message),
    ("ciphertext over 2^14+256", lambda c: record(23, bytes(2**14 + 257)), A.record_overflow),
    ("Finished fragment then CCS", lambda c: c.protect(c.finished_message()[:10]) + record(20, b"\x01"), A.unexpected_message),
    ("Finished fragment then alert", lambda c: c.protect(c.finished_message()[:10]) + c.protect(b"\x01\x00", content_type=21), A.unexpected_message),
    ("unknown inner content type", lambda c: c.protect(b"\x00", content_type=77), A.unexpected_message),
    ("zero-length encrypted handshake", lambda c: c.protect(b"", content_type=22), A.unexpected_message),
]


@pytest.mark.parametrize("edit,alert", [c[1:] for c in FLIGHT_CASES], ids=[c[0] for c in FLIGHT_CASES])
def test_client_flight_rejected(edit: FlightEdit, alert: AD) -> None:
    hs, c = _after_flight()
    _expect_encrypted_alert(hs, c, edit(c), alert)


def test_ccs_then_finished_in_pieces_completes() -> None:
    hs, c = _after_flight()
    fin = c.finished_message()
    hs.receive_data(record(20, b"\x01"))
    data = c.protect(fin[:7]) + c.protect(fin[7:])
    for i in range(len(data)):  # byte by byte
        hs.receive_data(data[i : i + 1])
    assert hs.complete


def test_bytes_after_finished_are_handed_over() -> None:
    hs = _server()
    c = Client()
    ch_record = c.client_hello_record()
    hs.receive_data(ch_record)
    c.read_server(hs.data_to_send())
    fin_record = c.protect(c.finished_message())
    hs.receive_data(fin_record + b"\x17\x03\x03\x00\x20" + bytes(10))
    assert hs.complete and hs.trailing == b"\x17\x03\x03\x00\x20" + bytes(10)
    assert hs.bytes_consumed == len(ch_record) + len(fin_record)


def test_ccs_after_finished_is_not_swallowed() -> None:
    hs, c = _after_flight()
    hs.receive_data(c.protect(c.finished_message()) + record(20, b"\x01"))
    assert hs.complete and hs.trailing == record(20, b"\x01")  # the record layer after import rejects it


# ---- client certificates -----------------------------------------------------------------------


def _client_pair(kind: str = "ecdsa", *, client: bool = True) -> tuple[list[bytes], object]:
    from cryptography.hazmat.primitives.serialization import Encoding

    p = pki()
    leaf, key = certs.make_leaf(p.client_ca, p.client_ca_key, kind, names=("client",), client=client)  # type: ignore[arg-type]
    return [leaf.public_bytes(Encoding.DER)], key


def _sign_cv(c: Client, key: object, scheme: int = 0x0403, corrupt: bool = False) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    assert c.suite is not None
    digest = hashlib.new(c.suite.hash_name, b"".join(c.transcript)).digest()
    content = m.certificate_verify_content(digest, server=False)
    sig = key.sign(content, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]
    if corrupt:
        sig = sig[:-1] + bytes([sig[-1] ^ 1])
    return m.certificate_verify(scheme, sig)


def _auth(mode: str = "required") -> tuple[ServerHandshake, Client]:
    return _after_flight(client_auth=mode, client_verifier=client_verifier())


def test_client_auth_happy_path_with_mini_client() -> None:
    hs, c = _auth()
    chain, key = _client_pair()
    cert = m.certificate(chain)
    c.add_transcript(cert)
    cv = _sign_cv(c, key)
    c.add_transcript(cv)
    hs.receive_data(c.protect(cert + cv + c.finished_message()))
    assert hs.complete and hs.info.client_cert


AUTH_CASES: list[tuple[str, Callable[[Client], bytes], AD]] = [
    # Our context is empty, so any other is a length that cannot be: decode_error, as in OpenSSL and BoringSSL.
    ("certificate_request_context mismatch", lambda c: c.protect(m.certificate(_client_pair()[0], context=b"\x01")), A.decode_error),
    # Past the cap on the chain: unknown_ca, their alert for a chain past the verify depth.
    ("chain of 11 certificates", lambda c: c.protect(m.certificate(_client_pair()[0] * 11)), A.unknown_ca),
    # A leaf not for client authentication (EKU serverAuth only): unsupported_certificate, as theirs.
    ("certificate without the clientAuth EKU", lambda c: c.protect(m.certificate(_client_pair(client=False)[0])), A.unsupported_certificate),
    ("no certificate when required", lambda c: c.protect(m.certificate([])), A.certificate_required),
    ("garbage certificate DER", lambda c: c.protect(m.certificate([b"\x30\x03\x02\x01\x00"])), A.bad_certificate),
    ("certificate list overruns", lambda c: c.protect(m.handshake(11, b"\x00" + b"\x00\x00\x10" + b"\x00\x00\x05abc")), A.decode_error),
    ("Finished instead of Certificate", lambda c: c.protect(c.finished_message()), A.unexpected_message),
]


@pytest.mark.parametrize(("edit", "alert"), [c[1:] for c in AUTH_CASES], ids=[c[0] for c in AUTH_CASES])
def test_client_certificate_rejected(edit: Callable[[Client], bytes], alert: AD) -> None:
    hs, c = _auth()
    _expect_encrypted_alert(hs, c, edit(c), alert)


@pytest.mark.parametrize(
    ("scheme", "corrupt", "alert"),
    [(0x0403, True, A.decrypt_error), (0x0401, False, A.illegal_parameter), (0x0804, False, A.illegal_parameter)],
    ids=["forged signature", "PKCS#1 v1.5 scheme", "RSA scheme for an EC key"],
)
def test_client_certificate_verify_rejected(scheme: int, corrupt: bool, alert: AD) -> None:
    hs, c = _auth()
    chain, key = _client_pair()
    cert = m.certificate(chain)
    c.add_transcript(cert)
    _expect_encrypted_alert(hs, c, c.protect(cert + _sign_cv(c, key, scheme, corrupt)), alert)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
def test_client_certificate_with_a_key_we_cannot_use(tmp_path: Path) -> None:
    """A chain that verifies, but whose leaf key is of a type we cannot load (an SM2 curve): the client
    gets unsupported_certificate on its CertificateVerify, not internal_error."""
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    p = pki()
    (tmp_path / "ca.pem").write_bytes(p.client_ca.public_bytes(Encoding.PEM))
    (tmp_path / "ca.key").write_bytes(
        p.client_ca_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())  # type: ignore[attr-defined]
    )
    (tmp_path / "ext.cnf").write_text("keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    try:
        openssl("genpkey", "-algorithm", "SM2", "-out", "sm2.key")
    except subprocess.CalledProcessError:
        pytest.skip("this openssl has no SM2")
    openssl("pkey", "-in", "sm2.key", "-pubout", "-out", "sm2.pub")
    openssl("req", "-new", "-key", "ca.key", "-subj", "/CN=client", "-out", "leaf.csr")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-force_pubkey", "sm2.pub",
            "-extfile", "ext.cnf", "-set_serial", "7", "-days", "2", "-outform", "DER", "-out", "leaf.der")
    hs, c = _auth()
    cert = m.certificate([(tmp_path / "leaf.der").read_bytes()])
    c.add_transcript(cert)
    _expect_encrypted_alert(hs, c, c.protect(cert + m.certificate_verify(0x0403, bytes(70))), A.unsupported_certificate)


def test_finished_without_certificate_verify() -> None:
    hs, c = _auth()
    chain, _ = _client_pair()
    cert = m.certificate(chain)
    c.add_transcript(cert)
    _expect_encrypted_alert(hs, c, c.protect(cert + c.finished_message()), A.unexpected_message)


# ---- resumption ---------------------------------------------------------------------------------


def _with_ticket(config_kw: dict[str, object], *, corrupt_binder: bool = False, age_s: float = 1.0,
                 sni: str | None = "localhost", client_age_ms: int = 1000) -> tuple[ServerHandshake, Client]:
    keys = TicketKeys()
    psk = bytes(range(32))
    import time

    ticket = keys.seal(TicketState(psk=psk, suite=0x1301, created_ms=int((time.time() - age_s) * 1000),
                                   age_add=7, lifetime=3600, alpn=None, sni=sni, peer_certs=[]))
    obfuscated = (client_age_ms + 7) % 2**32
    hs = ServerHandshake(server_config(("ecdsa",), ticket_keys=keys, **config_kw))
    c = Client()
    c.hello.set(41, _psk_ext(ticket, obfuscated_age=obfuscated))
    raw = c.hello.encode()
    truncated = raw[: len(raw) - (2 + 1 + 32)]
    binder = ks.KeySchedule("sha256", psk).binder(hashlib.sha256(truncated).digest())
    if corrupt_binder:
        binder = bytes([binder[0] ^ 1]) + binder[1:]
    c.hello.set(41, _psk_ext(ticket, binder=binder, obfuscated_age=obfuscated))
    return hs, c


def test_psk_resumption_mini_client() -> None:
    hs, c = _with_ticket({})
    hs.receive_data(c.client_hello_record())
    assert hs.info.resumed and hs.info.group == X25519


def test_ticket_too_old_by_the_clients_clock_falls_back() -> None:
    hs, c = _with_ticket({}, client_age_ms=3_700_000)
    hs.receive_data(c.client_hello_record())
    assert not hs.info.resumed


def test_psk_bad_binder_is_decrypt_error() -> None:
    hs, c = _with_ticket({}, corrupt_binder=True)
    _expect_plain_alert(hs, c.client_hello_record(), A.decrypt_error)


def test_expired_ticket_falls_back_to_full_handshake() -> None:
    hs, c = _with_ticket({}, age_s=7200)
    hs.receive_data(c.client_hello_record())
    assert not hs.info.resumed and hs.info.sig_scheme is not None


def test_psk_ke_only_when_enabled() -> None:
    hs, c = _with_ticket({})
    c.hello.set(45, vector(1, b"\x00"))  # psk_ke only; binder no longer matters: PSK is ignored
    hs.receive_data(c.client_hello_record())
    assert not hs.info.resumed
    hs2, c2 = _with_ticket({"allow_psk_ke": True})
    c2.hello.set(45, vector(1, b"\x00"))
    # Changing the modes invalidated the binder: recompute it as a real client would.
    ext41 = dict(c2.hello.extensions)[41]
    c2.hello.drop(41)
    c2.hello.extensions.append((41, ext41))
    raw = c2.hello.encode()
    identity_block = ext41[: len(ext41) - 35]
    psk = bytes(range(32))
    binder = ks.KeySchedule("sha256", psk).binder(hashlib.sha256(raw[: len(raw) - 35]).digest())
    c2.hello.set(41, identity_block + vector(2, vector(1, binder)))
    hs2.receive_data(c2.client_hello_record())
    assert hs2.info.resumed and hs2.info.group is None


def test_early_data_records_are_skipped_up_to_the_limit() -> None:
    hs = _server(early_data_skip_limit=110)
    c = Client()
    c.hello.set(42, b"")
    hs.receive_data(c.client_hello_record())
    c.read_server(hs.data_to_send())
    early = record(23, bytes(67))  # undecryptable 0-RTT: 50 bytes of plaintext each
    hs.receive_data(early + early)
    assert not hs.complete
    with pytest.raises(LocalAlert) as exc:
        hs.receive_data(early)  # about 150 bytes of early data > 110
    assert exc.value.description == A.unexpected_message


def _unused(config: ServerConfig) -> None:  # keep the import used for type checkers
    del config
