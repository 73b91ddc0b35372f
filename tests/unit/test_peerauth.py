"""secured.peerauth: the client's CertificateVerify (one list of schemes, offered and enforced) and
its certificate chain."""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.certs import leaf_key, make_ca, make_leaf
from tests.inmemory import Pair, client_context, client_verifier, pki, server_config
from tls_privsep.secured import messages as m
from tls_privsep.secured.credentials import Credential
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.secured.peerauth import CLIENT_SIG_SCHEMES, ClientCertVerifier, verify_signature
from tls_privsep.secured.sigschemes import SignatureScheme, scheme_name
from tls_privsep.shared.errors import (
    BadCertificate,
    CertificateExpired,
    CertificateRequired,
    ConfigError,
    DecryptError,
    IllegalParameter,
    UnknownCa,
    UnsupportedCertificate,
)

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


# ---- signatures -----------------------------------------------------------------------------------


def test_verify_signature_errors(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> None:
    rsa_c, ec_c, ed_c = (cred(ca, k, ("localhost",)) for k in ("rsa2048", "ecdsa", "ed25519"))
    rsa_leaf, ec_leaf, ed_leaf = (x509.load_der_x509_certificate(c.chain[0]) for c in (rsa_c, ec_c, ed_c))
    rsa_sig = rsa_c.sign(S.rsa_pss_rsae_sha256, DATA)
    ec_sig = ec_c.sign(S.ecdsa_secp256r1_sha256, DATA)
    for leaf, scheme in [
        (ec_leaf, S.rsa_pss_rsae_sha256),
        (ec_leaf, S.ecdsa_secp384r1_sha384),  # curve must match the scheme
        (ec_leaf, S.ecdsa_sha1),
        (rsa_leaf, S.rsa_pkcs1_sha256),
        (rsa_leaf, S.rsa_pkcs1_sha1),
        (rsa_leaf, S.rsa_pss_pss_sha256),  # rsaEncryption key
        (ed_leaf, S.ed448),
        (ed_leaf, 0x1234),
    ]:
        with pytest.raises(IllegalParameter):
            verify_signature(leaf, scheme, DATA, rsa_sig)
    with pytest.raises(DecryptError):
        verify_signature(rsa_leaf, S.rsa_pss_rsae_sha256, DATA + b"x", rsa_sig)
    with pytest.raises(DecryptError):
        verify_signature(rsa_leaf, S.rsa_pss_rsae_sha384, DATA, rsa_sig)  # right key, other hash
    with pytest.raises(DecryptError):
        verify_signature(ec_leaf, S.ecdsa_secp256r1_sha256, DATA + b"x", ec_sig)
    with pytest.raises(DecryptError):
        verify_signature(ec_leaf, S.ecdsa_secp256r1_sha256, DATA, b"\x30\x00garbage")
    with pytest.raises(DecryptError):
        verify_signature(ed_leaf, S.ed25519, DATA, bytes(64))


ClientKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey | rsa.RSAPrivateKey


def client_key(scheme: int) -> ClientKey:
    """A key of the kind ``scheme`` signs with (RSA: the cached test key, generating one is slow)."""
    curves: dict[int, ec.EllipticCurve] = {
        S.ecdsa_secp256r1_sha256: ec.SECP256R1(), S.ecdsa_secp384r1_sha384: ec.SECP384R1(),
        S.ecdsa_secp521r1_sha512: ec.SECP521R1(), S.ecdsa_sha1: ec.SECP256R1(),
    }
    if scheme in curves:
        return ec.generate_private_key(curves[scheme])
    if scheme == S.ed25519:
        return ed25519.Ed25519PrivateKey.generate()
    if scheme == S.ed448:
        return ed448.Ed448PrivateKey.generate()
    key = leaf_key("rsa2048")
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def raw_sign(key: ClientKey, scheme: int, data: bytes) -> bytes:
    """``data`` signed under ``scheme`` with cryptography directly, as a client would (no code of ours)."""
    name = S(scheme).name
    h = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
    digest = h.get(name.rsplit("_", 1)[-1], hashes.SHA256())
    if isinstance(key, rsa.RSAPrivateKey):
        pad = padding.PKCS1v15() if "pkcs1" in name else padding.PSS(padding.MGF1(digest), digest.digest_size)
        return key.sign(data, pad, digest)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(digest))
    return key.sign(data)


def client_leaf(key: ClientKey, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
                ) -> x509.Certificate:
    """A client certificate for ``key``: self-signed, or issued by ``issuer`` (the extensions cryptography's
    WebPKI client verifier insists on)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if issuer is None:
        signing: ClientKey = key
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False
        )
        signing = issuer[1]
    edwards = isinstance(signing, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
    return builder.sign(signing, None if edwards else hashes.SHA256())


@pytest.mark.parametrize("scheme", CLIENT_SIG_SCHEMES, ids=scheme_name)
def test_every_scheme_we_offer_verifies(scheme: int) -> None:
    """The list we offer in CertificateRequest is the list verify_signature handles: no scheme in it
    fails for want of code, and each checks the signature."""
    key = client_key(scheme)
    cert = client_leaf(key)
    sig = raw_sign(key, scheme, DATA)
    verify_signature(cert, scheme, DATA, sig)
    verify_signature(cert.public_key(), scheme, DATA, sig)
    with pytest.raises(DecryptError):
        verify_signature(cert, scheme, DATA + b"x", sig)


@pytest.mark.parametrize("scheme", [S.rsa_pkcs1_sha256, S.rsa_pkcs1_sha1, S.ecdsa_sha1], ids=scheme_name)
def test_a_good_signature_under_a_scheme_we_do_not_offer_is_refused(scheme: int) -> None:
    """§4.4.3: the client must use a scheme from our CertificateRequest, whatever its key can do."""
    assert scheme not in CLIENT_SIG_SCHEMES
    key = client_key(scheme)
    sig = raw_sign(key, scheme, DATA)
    with pytest.raises(IllegalParameter, match="did not offer"):
        verify_signature(client_leaf(key), scheme, DATA, sig)


def test_the_offer_is_the_list() -> None:
    """CLIENT_SIG_SCHEMES: TLS 1.3 schemes only (§4.2.3), no repeats, and no rsa_pss_pss_* (the docstring)."""
    assert len(set(CLIENT_SIG_SCHEMES)) == len(CLIENT_SIG_SCHEMES)
    for scheme in CLIENT_SIG_SCHEMES:
        name = S(scheme).name
        assert "pkcs1" not in name and "sha1" not in name and "pss_pss" not in name
    engine = ServerHandshake(server_config(client_auth="required", client_verifier=client_verifier()))
    assert engine._certificate_request_extensions() == m.signature_algorithms_ext(list(CLIENT_SIG_SCHEMES))


@pytest.mark.parametrize("scheme", [S.ecdsa_secp384r1_sha384, S.ecdsa_secp521r1_sha512, S.ed448], ids=scheme_name)
def test_openssl_client_signs_with_a_scheme_we_offer(scheme: int, tmp_path: Path) -> None:
    """End to end: an OpenSSL client with a P-384, P-521 or Ed448 key finds its scheme in our
    CertificateRequest and is accepted."""
    p = pki()
    key = client_key(scheme)
    leaf = client_leaf(key, (p.client_ca, p.client_ca_key))  # type: ignore[arg-type]
    (tmp_path / "c.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ctx = client_context()
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    config = server_config(client_auth="required", client_verifier=client_verifier())
    pair = Pair(ServerHandshake(config), ctx)
    pair.handshake()
    assert pair.server.info.client_cert


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
def test_rsassa_pss_certificate(tmp_path: Path) -> None:
    """RSASSA-PSS SPKIs load as plain RSA keys; only the certificate says rsa_pss_rsae_* does not fit."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    (tmp_path / "msg").write_bytes(DATA)
    openssl("genpkey", "-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "k.pem")
    openssl("req", "-new", "-x509", "-key", "k.pem", "-out", "c.pem", "-subj", "/CN=pss", "-days", "2")
    openssl(
        "pkeyutl", "-sign", "-inkey", "k.pem", "-rawin", "-in", "msg", "-digest", "sha256",
        "-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:digest", "-out", "sig",
    )  # fmt: skip
    cert = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    sig = (tmp_path / "sig").read_bytes()
    pub = cert.public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    pub.verify(sig, DATA, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())  # a good signature
    # ...under a scheme we do not offer: cryptography drops the key's PSS restrictions (peerauth's docstring).
    with pytest.raises(IllegalParameter, match="did not offer"):
        verify_signature(cert, S.rsa_pss_pss_sha256, DATA, sig)
    with pytest.raises(IllegalParameter):
        verify_signature(cert, S.rsa_pss_rsae_sha256, DATA, sig)
    with pytest.raises(ConfigError, match="RSASSA-PSS"):
        Credential.from_files(tmp_path / "c.pem", tmp_path / "k.pem")


# ---- client certificate chains -------------------------------------------------------------------


@pytest.fixture(scope="module")
def client_pki() -> dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]]:
    root = make_ca("Client Root")
    inter = make_ca("Client Issuing CA", issuer=root)
    return {"root": root, "inter": inter, "other": make_ca("Other Root")}


def der(*certs: x509.Certificate) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in certs]


def test_client_verifier_happy_path(
    tmp_path: Path, client_pki: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]]
) -> None:
    root, inter = client_pki["root"], client_pki["inter"]
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(root[0].public_bytes(serialization.Encoding.PEM))
    v = ClientCertVerifier(bundle)
    direct, _ = make_leaf(*root, "ecdsa", names=("alice",), client=True)
    assert v.verify(der(direct)) == direct
    via, _ = make_leaf(*inter, "ed25519", names=("bob",), client=True)
    assert v.verify(der(via, inter[0])) == via
    cn_only, _ = make_leaf(*root, "rsa2048", names=(), client=True)  # no SAN: accepted
    assert ClientCertVerifier(ca_certs=[root[0]]).verify(der(cn_only)) == cn_only


def test_client_verifier_unknown_ca(
    client_pki: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]],
) -> None:
    v = ClientCertVerifier(ca_certs=[client_pki["root"][0]])
    stranger, _ = make_leaf(*client_pki["other"], "ecdsa", client=True)
    with pytest.raises(UnknownCa):
        v.verify(der(stranger))
    # Intermediate missing from the chain: no path to the root.
    via, _ = make_leaf(*client_pki["inter"], "ecdsa", client=True)
    with pytest.raises(UnknownCa):
        v.verify(der(via))
    # An impostor CA with the trusted CA's name but another key.
    impostor = make_ca("Client Root")
    forged, _ = make_leaf(*impostor, "ecdsa", client=True)
    with pytest.raises(UnknownCa):
        v.verify(der(forged))


def test_client_verifier_validity(
    client_pki: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]],
) -> None:
    root = client_pki["root"]
    v = ClientCertVerifier(ca_certs=[root[0]])
    expired, _ = make_leaf(
        *root,
        "ecdsa",
        client=True,
        not_before=NOW - datetime.timedelta(days=30),
        not_after=NOW - datetime.timedelta(days=1),
    )
    with pytest.raises(CertificateExpired):
        v.verify(der(expired))
    future, _ = make_leaf(*root, "ecdsa", client=True, not_before=NOW + datetime.timedelta(days=1))
    with pytest.raises(CertificateExpired):
        v.verify(der(future))
    good, _ = make_leaf(*root, "ecdsa", client=True)
    later = ClientCertVerifier(
        ca_certs=[root[0]], clock=lambda: (NOW + datetime.timedelta(days=400)).timestamp()
    )
    with pytest.raises(CertificateExpired):
        later.verify(der(good))
    # The leaf is fine but the CA has expired by then.
    long_leaf, _ = make_leaf(*root, "ecdsa", client=True, not_after=NOW + datetime.timedelta(days=20000))
    much_later = ClientCertVerifier(
        ca_certs=[root[0]], clock=lambda: (NOW + datetime.timedelta(days=5000)).timestamp()
    )
    with pytest.raises(CertificateExpired):
        much_later.verify(der(long_leaf))


def test_client_verifier_bad_input(
    client_pki: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]],
) -> None:
    root = client_pki["root"]
    v = ClientCertVerifier(ca_certs=[root[0]])
    with pytest.raises(BadCertificate, match="DER"):
        v.verify([b"\x30\x03\x02\x01\x00"])
    with pytest.raises(BadCertificate):
        v.verify([b"garbage"])
    with pytest.raises(CertificateRequired):
        v.verify([])
    server_only, _ = make_leaf(*root, "ecdsa", client=False)  # EKU serverAuth only
    # Not for client authentication: unsupported_certificate, as OpenSSL and BoringSSL (docs/alerts.md).
    with pytest.raises(UnsupportedCertificate, match="EKU") as e:
        v.verify(der(server_only))
    assert "Certificate(subject" not in str(e.value)
    leaf, _ = make_leaf(*root, "ecdsa", client=True)
    # Past the chain-length cap: unknown_ca, their alert for a chain past the verify depth.
    with pytest.raises(UnknownCa, match="too long"):
        v.verify(der(leaf) * 11)
    v.verify(der(leaf))  # the same leaf alone is fine


def test_client_verifier_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one CA"):
        ClientCertVerifier()
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    with pytest.raises(ConfigError, match=re.escape(str(empty))):
        ClientCertVerifier(empty)
    with pytest.raises(ConfigError, match="cannot read"):
        ClientCertVerifier(tmp_path / "absent.pem")
