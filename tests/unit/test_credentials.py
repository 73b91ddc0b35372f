"""secured.credentials: loading, selection (RFC 8446 §4.4.2.2), signing through the Signer seam."""

from __future__ import annotations

import datetime
import hashlib
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID

from tests.certs import leaf_key, make_ca, make_leaf, write_pair
from tls_privsep.secured.credentials import Credential, CredentialStore, KeySigner
from tls_privsep.secured.peerauth import CLIENT_SIG_SCHEMES, verify_signature
from tls_privsep.secured.sigschemes import SignatureScheme
from tls_privsep.secured.tickets import TicketState
from tls_privsep.shared.errors import ConfigError, HandshakeFailure

S = SignatureScheme
DATA = b" " * 64 + b"TLS 1.3, server CertificateVerify\x00" + bytes(32)
NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    return make_ca()


def cred(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], kind: str, names: tuple[str, ...]
) -> Credential:
    cert, key = make_leaf(ca[0], ca[1], kind, names=names)  # type: ignore[arg-type]
    return Credential.from_objects([cert, ca[0]], key)


def self_signed(key: ec.EllipticCurvePrivateKey | ed448.Ed448PrivateKey, cn: str = "odd") -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .sign(key, None if isinstance(key, ed448.Ed448PrivateKey) else hashes.SHA256())
    )


# ---- loading --------------------------------------------------------------------------------------


def test_load_pem_chain(tmp_path: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> None:
    leaf, key = make_leaf(*ca, "ecdsa", names=("WWW.Example.com.", "example.com"))
    cert_path, key_path = write_pair(tmp_path, [leaf, ca[0]], key)
    c = Credential.from_files(cert_path, key_path)
    leaf_der = leaf.public_bytes(serialization.Encoding.DER)
    assert c.chain == [leaf_der, ca[0].public_bytes(serialization.Encoding.DER)]
    assert c.names == ("www.example.com", "example.com")
    assert c.fingerprint == hashlib.sha256(leaf_der).hexdigest()
    assert c.schemes == (S.ecdsa_secp256r1_sha256,)
    assert c.leaf_sig_scheme == S.ecdsa_secp256r1_sha256


def test_load_der_and_combined_pem(
    tmp_path: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    leaf, key = make_leaf(*ca, "rsa2048")
    (tmp_path / "c.der").write_bytes(leaf.public_bytes(serialization.Encoding.DER))
    (tmp_path / "k.der").write_bytes(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    c = Credential.from_files(tmp_path / "c.der", tmp_path / "k.der")
    assert c.schemes == (S.rsa_pss_rsae_sha256, S.rsa_pss_rsae_sha384, S.rsa_pss_rsae_sha512)
    assert len(c.chain) == 1
    # One PEM file holding both the certificate and the key.
    cert_path, key_path = write_pair(tmp_path, leaf, key)
    both = tmp_path / "both.pem"
    both.write_bytes(cert_path.read_bytes() + key_path.read_bytes())
    assert Credential.from_files(both, both).fingerprint == c.fingerprint


def test_encrypted_key(tmp_path: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> None:
    leaf, key = make_leaf(*ca, "ed25519")
    cert_path, key_path = write_pair(tmp_path, leaf, key, password=b"hunter2")
    assert Credential.from_files(cert_path, key_path, password=b"hunter2").schemes == (S.ed25519,)
    with pytest.raises(ConfigError, match="needs a password") as e:
        Credential.from_files(cert_path, key_path)
    assert str(key_path) in str(e.value)
    with pytest.raises(ConfigError, match="wrong password"):
        Credential.from_files(cert_path, key_path, password=b"nope")


def test_mismatched_key_names_the_file(
    tmp_path: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    leaf, _ = make_leaf(*ca, "ecdsa")
    other = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = write_pair(tmp_path, leaf, other)
    with pytest.raises(ConfigError) as e:
        Credential.from_files(cert_path, key_path)
    msg = str(e.value)
    assert str(key_path) in msg and "does not match" in msg
    assert "\n" not in msg
    pem_body = key_path.read_text().splitlines()[1]
    assert pem_body not in msg and str(other.private_numbers().private_value) not in msg


@pytest.mark.parametrize(
    "make_key",
    [lambda: ec.generate_private_key(ec.SECP384R1()), lambda: ed448.Ed448PrivateKey.generate()],
    ids=["p384", "ed448"],
)
def test_unsupported_key_types(tmp_path: Path, make_key: object) -> None:
    key = make_key()  # type: ignore[operator]
    cert_path, key_path = write_pair(tmp_path, self_signed(key), key)
    with pytest.raises(ConfigError, match=r"not supported|unsupported") as e:
        Credential.from_files(cert_path, key_path)
    assert str(key_path) in str(e.value)


def test_unreadable_and_garbage_files(
    tmp_path: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    leaf, key = make_leaf(*ca, "ecdsa")
    cert_path, key_path = write_pair(tmp_path, leaf, key)
    with pytest.raises(ConfigError, match="cannot read"):
        Credential.from_files(tmp_path / "missing.pem", key_path)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00not a certificate")
    with pytest.raises(ConfigError, match=re.escape(f"{junk}: not a PEM or DER")):
        Credential.from_files(junk, key_path)
    with pytest.raises(ConfigError, match=re.escape(f"{junk}: cannot load private key")):
        Credential.from_files(cert_path, junk)


def test_chain_order_and_empty(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> None:
    leaf, key = make_leaf(*ca, "ecdsa")
    with pytest.raises(ConfigError, match="out of order"):
        Credential.from_objects([ca[0], leaf], key)
    with pytest.raises(ConfigError, match="no certificate"):
        Credential.from_objects([], key)
    with pytest.raises(ConfigError, match="at least one"):
        CredentialStore([])


def test_from_objects_accepts_der_and_names_fallback_to_cn(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> None:
    key = leaf_key("ecdsa")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Legacy.Example")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .sign(ca[1], hashes.SHA384())
    )
    c = Credential.from_objects([cert.public_bytes(serialization.Encoding.DER)], key)
    assert c.names == ("legacy.example",)
    # ecdsa-with-SHA384 under a P-256 issuer: no TLS scheme fits when we know the issuer...
    assert Credential.from_objects([cert, ca[0]], key).leaf_sig_scheme is None
    # ...and the hash decides when we do not.
    assert c.leaf_sig_scheme == S.ecdsa_secp384r1_sha384


# ---- selection ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_ec(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> CredentialStore:
    return CredentialStore(
        [
            cred(ca, "rsa2048", ("example.com", "*.example.com")),
            cred(ca, "ecdsa", ("example.com", "*.example.com")),
        ]
    )


def test_select_by_sni(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> None:
    default = cred(ca, "ecdsa", ("default.test",))
    wild = cred(ca, "ecdsa", ("*.example.com",))
    exact = cred(ca, "ecdsa", ("www.example.com",))
    store = CredentialStore([default, wild, exact])
    algs = [S.ecdsa_secp256r1_sha256]
    assert store.select("www.example.com", algs, None) == (
        exact,
        S.ecdsa_secp256r1_sha256,
    )  # exact beats wildcard
    assert store.select("WWW.Example.COM.", algs, None)[0] is exact
    assert store.select("api.example.com", algs, None)[0] is wild
    assert store.select("a.b.example.com", algs, None)[0] is default  # one label only
    assert store.select("example.com", algs, None)[0] is default
    assert store.select("unknown.test", algs, None)[0] is default
    assert store.select(None, algs, None)[0] is default
    assert wild.matches_name("x.example.com") and not wild.matches_name("example.com")


def test_select_by_signature_algorithms(rsa_ec: CredentialStore) -> None:
    rsa_cred, ec_cred = rsa_ec.credentials
    assert rsa_ec.select("example.com", [S.ecdsa_secp256r1_sha256], None) == (
        ec_cred,
        S.ecdsa_secp256r1_sha256,
    )
    assert rsa_ec.select("example.com", [S.rsa_pss_rsae_sha384], None) == (rsa_cred, S.rsa_pss_rsae_sha384)
    # Our preference order within a credential, load order between credentials.
    offered = [S.ed25519, S.rsa_pss_rsae_sha512, S.ecdsa_secp256r1_sha256, S.rsa_pss_rsae_sha256]
    assert rsa_ec.select("x.example.com", offered, None) == (rsa_cred, S.rsa_pss_rsae_sha256)
    with pytest.raises(HandshakeFailure, match="signature algorithms"):
        rsa_ec.select("example.com", [S.rsa_pkcs1_sha256, S.rsa_pkcs1_sha384, S.rsa_pkcs1_sha1], None)
    with pytest.raises(HandshakeFailure):
        rsa_ec.select("example.com", [S.rsa_pss_pss_sha256, S.rsa_pss_pss_sha384, S.rsa_pss_pss_sha512], None)
    with pytest.raises(HandshakeFailure):
        rsa_ec.select(None, [S.ecdsa_secp384r1_sha384, S.ed448], None)


def test_select_prefers_acceptable_leaf_signature(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> None:
    ed_issuer = self_signed_ed25519_issuer()
    leaf_by_ed, key = make_leaf(ed_issuer[0], ed_issuer[1], "ecdsa")
    by_ed = Credential.from_objects([leaf_by_ed], key)
    by_ec = cred(ca, "ecdsa", ("localhost",))
    assert by_ed.leaf_sig_scheme == S.ed25519
    store = CredentialStore([by_ed, by_ec])
    algs = [S.ecdsa_secp256r1_sha256]
    assert store.select("localhost", algs, [S.ecdsa_secp256r1_sha256])[0] is by_ec
    assert store.select("localhost", algs, [S.ed25519])[0] is by_ed
    assert store.select("localhost", algs, None)[0] is by_ec  # signature_algorithms stands in for _cert
    assert store.select("localhost", algs, [S.rsa_pkcs1_sha256])[0] is by_ed  # nothing fits: first usable


def self_signed_ed25519_issuer() -> tuple[x509.Certificate, ed25519.Ed25519PrivateKey]:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ed CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .sign(key, None)
    )
    return cert, key


# ---- signing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa2048", "ecdsa", "ed25519"])
def test_sign_then_verify(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], kind: str) -> None:
    c = cred(ca, kind, ("localhost",))
    leaf = x509.load_der_x509_certificate(c.chain[0])
    for scheme in c.schemes:
        sig = c.sign(scheme, DATA)
        verify_signature(leaf, scheme, DATA, sig)
        verify_signature(leaf.public_key(), scheme, DATA, sig)
        assert scheme in CLIENT_SIG_SCHEMES  # what we sign, we would also accept


@pytest.mark.parametrize(
    "scheme", [S.rsa_pss_rsae_sha256, S.rsa_pss_rsae_sha384, S.rsa_pss_rsae_sha512], ids=lambda s: S(s).name
)
def test_rsa_pss_salt_is_hash_length(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], scheme: SignatureScheme
) -> None:
    c = cred(ca, "rsa2048", ("localhost",))
    pub = leaf_key("rsa2048").public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    h = {S.rsa_pss_rsae_sha256: hashes.SHA256(), S.rsa_pss_rsae_sha384: hashes.SHA384()}.get(
        scheme, hashes.SHA512()
    )
    sig = c.sign(scheme, DATA)
    pub.verify(
        sig, DATA, padding.PSS(padding.MGF1(h), h.digest_size), h
    )  # OpenSSL checks the exact salt length
    with pytest.raises(InvalidSignature):
        pub.verify(sig, DATA, padding.PSS(padding.MGF1(h), h.digest_size - 1), h)


def test_sign_refuses_foreign_scheme_and_uses_injected_signer(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> None:
    c = cred(ca, "ecdsa", ("localhost",))
    with pytest.raises(ValueError):
        c.sign(S.rsa_pss_rsae_sha256, DATA)
    leaf, key = make_leaf(*ca, "ecdsa")
    calls: list[tuple[int, bytes]] = []

    class Vector:  # the Signer seam: what a PKCS#11 token or a test vector plugs into
        schemes = (S.ecdsa_secp256r1_sha256,)

        def public_key(self) -> PublicKeyTypes:
            return key.public_key()

        def sign(self, scheme: int, data: bytes) -> bytes:
            calls.append((scheme, data))
            return b"vector"

    fixed = Credential.from_signer([leaf], Vector())
    assert fixed.sign(S.ecdsa_secp256r1_sha256, DATA) == b"vector"
    assert calls == [(S.ecdsa_secp256r1_sha256, DATA)]
    with pytest.raises(ValueError):
        fixed.sign(S.ed25519, DATA)
    assert calls == [(S.ecdsa_secp256r1_sha256, DATA)]  # refused before the signer is asked


def test_a_signer_is_checked_against_its_certificate(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> None:
    """Another Signer passes the checks a key file does, once, when the credential is built."""
    leaf, key = make_leaf(*ca, "ecdsa")
    other = ec.generate_private_key(ec.SECP256R1())

    class Claims:
        def __init__(self, public: PublicKeyTypes, schemes: tuple[int, ...]) -> None:
            self.schemes, self._public = schemes, public

        def public_key(self) -> PublicKeyTypes:
            return self._public

        def sign(self, scheme: int, data: bytes) -> bytes:
            raise AssertionError("never asked to sign")

    with pytest.raises(ConfigError, match="credential: private key does not match the certificate"):
        Credential.from_signer([leaf], Claims(other.public_key(), (S.ecdsa_secp256r1_sha256,)))
    for schemes in [(S.rsa_pss_rsae_sha256,), (S.ecdsa_secp384r1_sha384,), ()]:
        with pytest.raises(ConfigError, match="do not fit its"):
            Credential.from_signer([leaf], Claims(key.public_key(), schemes))
    assert Credential.from_signer([leaf], Claims(key.public_key(), (S.ecdsa_secp256r1_sha256,))).schemes == (
        S.ecdsa_secp256r1_sha256,
    )


@pytest.mark.parametrize("kind", ["rsa2048", "ecdsa", "ed25519"])
def test_key_signer(kind: str) -> None:
    key = leaf_key(kind)  # type: ignore[arg-type]
    signer = KeySigner(key)
    other = next(s for s in (S.ed25519, S.ecdsa_secp256r1_sha256) if s not in signer.schemes)
    with pytest.raises(ValueError, match="does not sign with"):
        signer.sign(other, DATA)
    assert signer.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
        == key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    verify_signature(key.public_key(), signer.schemes[0], DATA, signer.sign(signer.schemes[0], DATA))


def test_repr_hides_keys(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> None:
    for kind in ("rsa2048", "ecdsa", "ed25519"):
        c = cred(ca, kind, ("localhost",))
        key = leaf_key(kind)  # type: ignore[arg-type]  # the key behind c: leaves of a kind share it
        text = repr(c) + str(c) + repr(c.signer) + str(c.signer)
        raw = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        assert raw.hex() not in text and raw[-32:].hex() not in text
        assert "Private" not in text and "key=" not in text
        if isinstance(key, rsa.RSAPrivateKey):
            assert str(key.private_numbers().d) not in text
        assert c.fingerprint[:16] in text
    t = TicketState(psk=b"\xab" * 32, suite=0x1301, created_ms=1, age_add=2, lifetime=3)
    assert "ab" * 8 not in repr(t) and "psk=" in repr(t)


@pytest.mark.parametrize(("cert_kind", "key_kind"), [("ecdsa", "rsa2048"), ("rsa2048", "ecdsa"),
                                                     ("ed25519", "rsa2048"), ("rsa2048", "ed25519")])
def test_key_of_another_type_does_not_match(
    tmp_path: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], cert_kind: str, key_kind: str
) -> None:
    """A key of another algorithm than its certificate is the same operator mistake as a wrong key of the same
    kind, and gets the same message (not a complaint about RSA-PSS)."""
    leaf, _ = make_leaf(*ca, cert_kind)  # type: ignore[arg-type]
    cert_path, key_path = write_pair(tmp_path, leaf, leaf_key(key_kind))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="does not match the certificate") as e:
        Credential.from_files(cert_path, key_path)
    assert "PSS" not in str(e.value)


def test_key_of_an_algorithm_cryptography_cannot_load_is_a_config_error(
    tmp_path: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    """An SM2 key raises UnsupportedAlgorithm inside cryptography: one line, never a traceback (a reload with
    such a key once took secured down)."""
    import shutil
    import subprocess

    openssl = shutil.which("openssl")
    if openssl is None or subprocess.run([openssl, "genpkey", "-algorithm", "SM2", "-out", str(tmp_path / "sm2.key")],
                                         capture_output=True, check=False).returncode != 0:
        pytest.skip("this openssl cannot make an SM2 key")
    leaf, _ = make_leaf(*ca, "ecdsa")
    cert_path, _ = write_pair(tmp_path, leaf, leaf_key("ecdsa"))
    with pytest.raises(ConfigError, match="cannot load private key") as e:
        Credential.from_files(cert_path, tmp_path / "sm2.key")
    assert "\n" not in str(e.value)
