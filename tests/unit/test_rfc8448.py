"""RFC 8448 traces replayed against the server engine, byte for byte.

What cannot be reproduced is injected, and only that: the server's random values, ephemeral keys,
the PSS/ECDSA signature (randomized by design), the opaque ticket and cookie, and two things the
trace's server (NSS) chose that we do not: its EncryptedExtensions (it advertises groups we do not
implement and a record_size_limit) and its CertificateRequest's scheme list. Every other byte —
ServerHello, record protection, Certificate, CertificateVerify framing, Finished, the key schedule,
NewSessionTicket, application data and alerts — is computed by the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519

from tests.vectors import rfc8448, section
from tls_privsep.secured import messages as m
from tls_privsep.secured.credentials import Credential, CredentialStore, KeySigner, Signer
from tls_privsep.secured.handshake import ServerConfig, ServerHandshake
from tls_privsep.secured.tickets import TicketState
from tls_privsep.shared.errors import DecryptError
from tls_privsep.shared.keyschedule import KeySchedule, transcript_hash
from tls_privsep.shared.record import ApplicationData, CloseNotify, ContentType, Protection, RecordLayer

SUITE = 0x1301
# §3's ticket_age_add: the §4 client's obfuscated age minus this is the 6 ms the trace describes.
_AGE_ADD = int(rfc8448()["simple_1rtt"]["new_session_ticket_fields"]["ticket_age_add"], 16)


def _rsa_key() -> rsa.RSAPrivateKey:
    k = {name: int(value, 16) for name, value in rfc8448()["server_rsa_private_key"].items() if name != "note"}
    public = rsa.RSAPublicNumbers(k["public_exponent"], k["modulus"])
    return rsa.RSAPrivateNumbers(
        k["prime1"], k["prime2"], k["private_exponent"], k["exponent1"], k["exponent2"], k["coefficient"], public
    ).private_key()


def _cert_chain(certificate_msg: bytes) -> list[bytes]:
    _, chain = m.parse_certificate(certificate_msg[4:])
    return chain


def _ext_body(msg: bytes, skip: int = 0) -> bytes:
    """The extensions block of an EE (skip=0) or CR (skip=context) message, without its length."""
    return msg[4 + skip + 2 :]


class _Rng:
    """Hands out pinned values by request size (32: randoms, 4: ticket_age_add)."""

    def __init__(self, values: dict[int, list[bytes]]) -> None:
        self.values = values

    def __call__(self, n: int) -> bytes:
        return self.values[n].pop(0)


class _TraceSigner:
    """Answers with the trace's CertificateVerify signature: PSS is randomized, so ours cannot match it.
    It stands for the credential's own signer (same schemes, same public key)."""

    def __init__(self, real: Signer, signature: bytes) -> None:
        self.schemes, self._public_key, self._signature = real.schemes, real.public_key(), signature

    def public_key(self) -> Any:
        return self._public_key

    def sign(self, scheme: int, data: bytes) -> bytes:
        return self._signature


class _FixedTickets:
    def __init__(self, ticket: bytes, psk_map: dict[bytes, TicketState] | None = None) -> None:
        self.ticket, self.psk_map, self.sealed = ticket, psk_map or {}, []

    def seal(self, state: TicketState) -> bytes:
        self.sealed.append(state)
        return self.ticket

    def open(self, ticket: bytes) -> TicketState | None:
        return self.psk_map.get(ticket)


def _engine(v: dict[str, bytes], *, credential: Credential, ee: bytes, nst_ext: bytes = b"",
            cr_ext: bytes | None = None, cookie: bytes | None = None, ephemeral: Any = None,
            tickets: _FixedTickets | None = None, rng: _Rng | None = None, client_auth: str = "none",
            verifier: Any = None, ticket_lifetime: int = 30, groups: tuple[int, ...] = (0x001D, 0x0017), clock: Callable[[], float] = lambda: 1000.0
            ) -> ServerHandshake:
    class Trace(ServerHandshake):
        def _encrypted_extensions(self, *args: Any) -> bytes:
            return ee

        def _nst_extensions(self) -> bytes:
            return nst_ext

        def _certificate_request_extensions(self) -> bytes:
            assert cr_ext is not None
            return cr_ext

        def _make_cookie(self) -> bytes:
            assert cookie is not None
            return cookie

    signature = v.get("certificate_verify", b"")[8:]
    traced = dataclasses.replace(credential, signer=_TraceSigner(credential.signer, signature))
    config = ServerConfig(
        credentials=CredentialStore([traced]),
        tickets=1,
        ticket_keys=tickets,
        ticket_lifetime=ticket_lifetime,
        client_auth=client_auth,  # type: ignore[arg-type]
        client_verifier=verifier,
        hrr_cookie=cookie is not None,
        groups=groups,
    )
    return Trace(
        config,
        rng=rng or _Rng({32: [v["server_random"]], 4: []}),
        clock=clock,
        ephemeral=ephemeral or (lambda g: x25519.X25519PrivateKey.from_private_bytes(v["server_ephemeral_x25519_private"])),
    )


def _rsa_credential(v: dict[str, bytes]) -> Credential:
    return Credential.from_objects(_cert_chain(v["certificate"]), _rsa_key())


def _check_application_phase(hs: ServerHandshake, v: dict[str, bytes], write_seq: int) -> None:
    state = hs.export()
    assert state.suite == SUITE and state.write_seq == write_seq and state.read_seq == 0
    assert bytes(state.read_secret) == v["client_application_traffic_secret_0"]
    assert bytes(state.write_secret) == v["server_application_traffic_secret_0"]
    rl = RecordLayer.from_traffic_state(state)
    rl.receive_data(v["client_application_data_record"])
    event = rl.next_event()
    assert isinstance(event, ApplicationData) and event.data == bytes(range(50))
    assert rl.send_application_data(event.data) == v["server_application_data_record"]
    rl.receive_data(v["client_alert_record"])
    assert isinstance(rl.next_event(), CloseNotify)
    assert rl.send_alert(0, level=1) == v["server_alert_record"]


def test_simple_1rtt_section3_byte_exact() -> None:
    v = section("simple_1rtt")
    fields = rfc8448()["simple_1rtt"]["new_session_ticket_fields"]
    tickets = _FixedTickets(bytes.fromhex(fields["ticket"]))
    hs = _engine(
        v,
        credential=_rsa_credential(v),
        ee=_ext_body(v["encrypted_extensions"]),
        nst_ext=bytes.fromhex(fields["extensions"]),
        tickets=tickets,
        rng=_Rng({32: [v["server_random"]], 4: [bytes.fromhex(fields["ticket_age_add"])]}),
    )
    hs.receive_data(v["client_hello_record"])
    assert hs.data_to_send() == v["server_hello_record"] + v["server_flight_record"]
    assert not hs.complete
    hs.receive_data(v["client_finished_record"])
    assert hs.complete and hs.trailing == b""
    assert hs.data_to_send() == v["new_session_ticket_record"]
    # The ticket we issued stands for the RFC's resumption PSK.
    assert tickets.sealed[0].psk == v["resumption_psk"]
    _check_application_phase(hs, v, write_seq=1)


def test_simple_1rtt_real_signature_verifies() -> None:
    """Without the injected signer, our own RSA-PSS CertificateVerify verifies as the RFC describes."""
    v = section("simple_1rtt")
    config = ServerConfig(credentials=CredentialStore([_rsa_credential(v)]), tickets=0)
    hs = ServerHandshake(
        config,
        rng=_Rng({32: [v["server_random"]]}),
        ephemeral=lambda g: x25519.X25519PrivateKey.from_private_bytes(v["server_ephemeral_x25519_private"]),
    )
    hs.receive_data(v["client_hello_record"])
    out = hs.data_to_send()
    assert out.startswith(v["server_hello_record"])
    flight = Protection(SUITE, v["server_handshake_traffic_secret"])
    ctype, plain = flight.open(out[len(v["server_hello_record"]) :][:5], out[len(v["server_hello_record"]) + 5 :])
    assert ctype == ContentType.handshake
    # Our EE differs from NSS's; parse our own flight: EE, Certificate, CertificateVerify, Finished.
    msgs = []
    pos = 0
    while pos < len(plain):
        n = int.from_bytes(plain[pos + 1 : pos + 4], "big")
        msgs.append(plain[pos : pos + 4 + n])
        pos += 4 + n
    ee, cert, cv, _fin = msgs
    scheme, signature = m.parse_certificate_verify(cv[4:])
    assert scheme == 0x0804
    digest = transcript_hash("sha256", v["client_hello"] + v["server_hello"] + ee + cert)
    _rsa_key().public_key().verify(
        signature,
        m.certificate_verify_content(digest, server=True),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


def test_resumed_section4_binder_and_handshake_secrets() -> None:
    """§4: the binder verifies and the handshake keys equal the trace's; 0-RTT is skipped, not read."""
    v = section("resumed_0rtt")
    ch = m.parse_client_hello(v["client_hello"])
    ticket = TicketState(psk=v["psk"], suite=SUITE, created_ms=1_000_000, age_add=_AGE_ADD, lifetime=30,
                         alpn=None, sni=ch.server_name, peer_certs=[])
    v3 = section("simple_1rtt")
    hs = _engine(
        v,
        credential=_rsa_credential(v3),
        ee=_ext_body(v["encrypted_extensions"]),
        tickets=_FixedTickets(b"unused", {v["psk_identity"]: ticket}),
        clock=lambda: 1000.006,
    )
    hs.receive_data(v["client_hello_record"])
    out = hs.data_to_send()
    assert out.startswith(v["server_hello_record"])
    assert hs.info.resumed
    # The EncryptedExtensions we replayed contains early_data, so the flight equals the trace's.
    assert out[len(v["server_hello_record"]) :] == v["server_flight_record"]
    # The client's 0-RTT record and EndOfEarlyData fail deprotection under the handshake key: skipped.
    hs.receive_data(v["client_early_data_record"] + v["end_of_early_data_record"])
    assert hs.data_to_send() == b"" and not hs.complete


def test_resumed_section4_bad_binder_is_decrypt_error() -> None:
    v = section("resumed_0rtt")
    ch = m.parse_client_hello(v["client_hello"])
    ticket = TicketState(psk=bytes(32), suite=SUITE, created_ms=1_000_000, age_add=_AGE_ADD, lifetime=30,
                         alpn=None, sni=ch.server_name, peer_certs=[])
    hs = _engine(v, credential=_rsa_credential(section("simple_1rtt")), ee=b"",
                 tickets=_FixedTickets(b"", {v["psk_identity"]: ticket}), clock=lambda: 1000.006)
    with pytest.raises(DecryptError):
        hs.receive_data(v["client_hello_record"])
    assert hs.data_to_send() == bytes.fromhex("15030300020233")


def test_hello_retry_request_section5_byte_exact() -> None:
    v = section("hello_retry_request")
    hrr = v["hello_retry_request"]
    cookie_ext = hrr.index(bytes.fromhex("002c"), 40)
    cookie = hrr[cookie_ext + 6 : cookie_ext + 6 + int.from_bytes(hrr[cookie_ext + 4 : cookie_ext + 6], "big")]
    p256 = ec.derive_private_key(int.from_bytes(v["server_ephemeral_p256_private"], "big"), ec.SECP256R1())
    v3 = section("simple_1rtt")
    hs = _engine(
        v,
        credential=_rsa_credential(v3),
        ee=_ext_body(v["encrypted_extensions"]),
        cookie=cookie,
        ephemeral=lambda g: p256,
        groups=(0x0017,),  # the trace's server insists on P-256, hence the HRR
    )
    hs.receive_data(v["client_hello_1_record"])
    assert hs.data_to_send() == v["hello_retry_request_record"]
    hs.receive_data(v["client_hello_2_record"])
    assert hs.data_to_send() == v["server_hello_record"] + v["server_flight_record"]
    hs.receive_data(v["client_finished_record"])
    assert hs.complete
    state = hs.export()
    assert bytes(state.write_secret) == v["server_application_traffic_secret_0"]
    assert bytes(state.read_secret) == v["client_application_traffic_secret_0"]


class _TrustingVerifier:
    """Stands in for the CA check: RFC 8448's client certificate is self-signed."""

    def verify(self, chain: list[bytes]) -> x509.Certificate:
        return x509.load_der_x509_certificate(chain[0])


def test_client_authentication_section6_byte_exact() -> None:
    v = section("client_authentication")
    chain = _cert_chain(v["certificate"])
    credential = Credential(
        chain=chain, signer=KeySigner(ec.generate_private_key(ec.SECP256R1())), schemes=(0x0403,), names=(),
        fingerprint="rfc8448-s6", leaf_sig_scheme=None,
    )
    hs = _engine(
        v,
        credential=credential,
        ee=_ext_body(v["encrypted_extensions"]),
        cr_ext=_ext_body(v["certificate_request"], skip=1),
        client_auth="required",
        verifier=_TrustingVerifier(),
    )
    hs.receive_data(v["client_hello_record"])
    assert hs.data_to_send() == v["server_hello_record"] + v["server_flight_record"]
    hs.receive_data(v["client_flight_record"])  # Certificate, CertificateVerify (really verified), Finished
    assert hs.complete and hs.info.client_cert
    state = hs.export()
    assert state.peer_certs == _cert_chain(v["client_certificate"])
    assert bytes(state.read_secret) == v["client_application_traffic_secret_0"]


def test_client_authentication_section6_forged_signature() -> None:
    v = section("client_authentication")
    credential = Credential(
        chain=_cert_chain(v["certificate"]), signer=KeySigner(ec.generate_private_key(ec.SECP256R1())),
        schemes=(0x0403,), names=(), fingerprint="rfc8448-s6", leaf_sig_scheme=None,
    )
    hs = _engine(v, credential=credential, ee=_ext_body(v["encrypted_extensions"]),
                 cr_ext=_ext_body(v["certificate_request"], skip=1), client_auth="required",
                 verifier=_TrustingVerifier())
    hs.receive_data(v["client_hello_record"])
    hs.data_to_send()
    # Re-seal the client flight with one bit of the signature flipped.
    prot = Protection(SUITE, _client_hs_secret(v))
    ctype, plain = prot.open(v["client_flight_record"][:5], v["client_flight_record"][5:])
    cert_len = len(v["client_certificate"])
    tampered = bytearray(plain)
    tampered[cert_len + 20] ^= 1
    with pytest.raises(DecryptError):
        hs.receive_data(Protection(SUITE, _client_hs_secret(v)).seal(ctype, bytes(tampered)))
    assert hs.data_to_send()[:3] == b"\x17\x03\x03"  # the alert goes out encrypted


def _client_hs_secret(v: dict[str, bytes]) -> bytes:
    return v["client_handshake_traffic_secret"]


def test_compatibility_mode_section7_byte_exact() -> None:
    v = section("compatibility_mode")
    hs = _engine(v, credential=_rsa_credential(section("simple_1rtt")), ee=_ext_body(v["encrypted_extensions"]))
    hs.receive_data(v["client_hello_record"])
    assert hs.data_to_send() == (
        v["server_hello_record"] + v["server_change_cipher_spec_record"] + v["server_flight_record"]
    )
    hs.receive_data(v["client_change_cipher_spec_record"] + v["client_finished_record"])
    assert hs.complete
    state = hs.export()
    assert bytes(state.write_secret) == v["server_application_traffic_secret_0"]


def test_keyschedule_matches_resumed_trace() -> None:
    v = section("resumed_0rtt")
    sched = KeySchedule("sha256", v["psk"])
    sched.derive_handshake(v["ecdhe_shared_secret"])
    assert sched.handshake_traffic_secrets(v["transcript_hash_server_hello"]) == (
        v["client_handshake_traffic_secret"],
        v["server_handshake_traffic_secret"],
    )


def test_no_secret_in_any_repr_of_the_engine() -> None:
    """Mid-handshake, when it holds the most secrets, nothing the engine holds shows one in repr()."""
    v = section("simple_1rtt")
    hs = _engine(v, credential=_rsa_credential(v), ee=_ext_body(v["encrypted_extensions"]), tickets=None)
    hs.receive_data(v["client_hello_record"])
    secrets = [v[k] for k in ("server_handshake_traffic_secret", "client_handshake_traffic_secret",
                              "client_application_traffic_secret_0", "server_application_traffic_secret_0",
                              "handshake_secret", "master_secret", "server_handshake_key")]
    held = [*vars(hs).values(), hs._rl.read, hs._rl.write, hs._secrets]
    rendered = repr(hs) + "".join(repr(o) for o in held)
    for secret in secrets:
        assert secret.hex() not in rendered and repr(secret)[2:-1] not in rendered
