"""Our own credentials: reading certificates and keys, choosing one per connection, signing with it.

This is the only module in the project that reads private keys (DESIGN §1), so it stays small and
keeps key material out of every ``repr``, log line and exception message; tests/unit/test_house_rules.py
checks that no other module loads a key and that neither appd nor the launcher can import this one.
Checking the *client's* certificate and signature is peerauth.py's job, and needs none of this.

Signing goes through one seam, :class:`Signer`: the schemes a key can produce and ``sign(scheme,
data)``. :class:`KeySigner` is a key read from a file into this process; a key that never leaves a
PKCS#11 token will be another Signer, and tests plug in signers that return RFC 8448's fixed
signatures. A :class:`Credential` is a certificate chain with the Signer that speaks for its leaf;
the handshake engine only ever calls :meth:`Credential.sign`.

TLS 1.3 handshakes sign with RSA-PSS (rsaEncryption keys), ECDSA on P-256 or Ed25519 (RFC 8446
§4.2.3): :attr:`Credential.schemes`. TLS 1.2's ServerKeyExchange may also use RSASSA-PKCS1-v1_5
with SHA-256/384/512, which older clients need (:attr:`Credential.schemes12`). Never SHA-1 or MD5.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import PublicKeyAlgorithmOID, SignatureAlgorithmOID

from tls_privsep.secured.sigschemes import ECDSA, ECDSA_PARAMS, PKCS1, PSS_PARAMS, PSS_PSS, RSAE, S, scheme_name
from tls_privsep.shared.errors import ConfigError, HandshakeFailure

# rsaEncryption; cryptography has no constant for it (RSA-PSS SPKIs also load as RSA keys).
_RSA_ENCRYPTION_OID = x509.ObjectIdentifier("1.2.840.113549.1.1.1")
_RSA_PSS_OID = x509.ObjectIdentifier("1.2.840.113549.1.1.10")

RSA_SCHEMES: tuple[int, ...] = (S.rsa_pss_rsae_sha256, S.rsa_pss_rsae_sha384, S.rsa_pss_rsae_sha512)
RSA_PKCS1_SCHEMES: tuple[int, ...] = (S.rsa_pkcs1_sha256, S.rsa_pkcs1_sha384, S.rsa_pkcs1_sha512)  # TLS 1.2 only


# --------------------------------------------------------------------------------------------------
# The signing seam


class Signer(Protocol):
    """Whatever holds the private key behind a certificate and signs CertificateVerify content with it.

    The key itself never has to be reachable: a Signer may be a key in our memory (:class:`KeySigner`)
    or a handle on a token that signs inside itself. The credential built over it checks, once, that
    :meth:`public_key` is the certificate's and that :attr:`schemes` fit the certificate.
    """

    @property
    def schemes(self) -> tuple[int, ...]:
        """The SignatureScheme values this signer produces, best first (PKCS#1 ones are used in TLS 1.2 only)."""
        ...

    def public_key(self) -> PublicKeyTypes:
        """The public half of the signing key (matched against the certificate's)."""
        ...

    def sign(self, scheme: int, data: bytes) -> bytes:
        """``data`` signed under ``scheme`` (one of :attr:`schemes`); ValueError for any other scheme."""
        ...


class KeySigner:
    """A :class:`Signer` over a private key held in this process: what a key file gives us.

    The key's type is resolved once, here: isinstance against cryptography's abstract key classes is an
    ABC check, and signing happens on every full handshake. ``repr`` names the schemes, never the key.
    """

    def __init__(self, key: PrivateKeyTypes) -> None:
        """ConfigError for a key we cannot sign TLS 1.3 handshakes with (the message names no key bytes)."""
        self.schemes, self._sign = _signing_for(key)
        self._key = key

    def __repr__(self) -> str:
        return f"KeySigner({','.join(scheme_name(s) for s in self.schemes)})"

    def public_key(self) -> PublicKeyTypes:
        return self._key.public_key()

    def sign(self, scheme: int, data: bytes) -> bytes:
        if scheme not in self.schemes:
            raise ValueError(f"this key does not sign with scheme {scheme_name(scheme)}")
        return self._sign(scheme, data)


def _signing_for(key: PrivateKeyTypes) -> tuple[tuple[int, ...], Callable[[int, bytes], bytes]]:
    """The schemes ``key`` signs with and a function doing it (each branch rebinds the key so that its
    closure keeps the narrowed type); ConfigError for any other key."""
    if isinstance(key, rsa.RSAPrivateKey):
        rsa_key = key

        def sign_rsa(scheme: int, data: bytes) -> bytes:
            if scheme in PKCS1:
                return rsa_key.sign(data, padding.PKCS1v15(), PKCS1[scheme])
            pss, h = PSS_PARAMS[scheme]  # salt length = hash length (§4.2.3)
            return rsa_key.sign(data, pss, h)

        return RSA_SCHEMES + RSA_PKCS1_SCHEMES, sign_rsa
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError(f"EC curve {key.curve.name} is not supported (use P-256)")
        ec_key = key
        return (S.ecdsa_secp256r1_sha256,), lambda scheme, data: ec_key.sign(data, ECDSA_PARAMS[scheme])
    if isinstance(key, ed25519.Ed25519PrivateKey):
        ed_key = key
        return (S.ed25519,), lambda scheme, data: ed_key.sign(data)
    raise ConfigError(f"unsupported private key type {type(key).__name__} (use RSA, EC P-256 or Ed25519)")


# --------------------------------------------------------------------------------------------------
# Certificates and keys


def _check_leaf_fits(leaf: x509.Certificate, signer: Signer) -> None:
    """ConfigError unless every scheme of ``signer`` is one TLS 1.3 allows for its key and ``leaf``.

    A KeySigner always passes (it derives its schemes from its key); another Signer is held to the same
    rule here, once, rather than failing handshakes later. An RSA key signs rsa_pss_rsae_*, which needs
    an rsaEncryption certificate; an RSASSA-PSS one would need rsa_pss_pss_*: rare, and not offered.
    """
    key = signer.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if leaf.public_key_algorithm_oid == _RSA_PSS_OID:
            raise ConfigError("RSA key with a RSASSA-PSS certificate is not supported (use rsaEncryption)")
        if leaf.public_key_algorithm_oid != _RSA_ENCRYPTION_OID:
            raise ConfigError("private key does not match the certificate (an RSA key, a non-RSA certificate)")
        fitting: tuple[int, ...] = RSA_SCHEMES + RSA_PKCS1_SCHEMES
    elif isinstance(key, ec.EllipticCurvePublicKey):
        fitting = tuple(s for s, (curve, _) in ECDSA.items() if curve == key.curve.name)
    elif isinstance(key, ed25519.Ed25519PublicKey):
        fitting = (S.ed25519,)
    else:
        fitting = ()
    if not signer.schemes or not set(signer.schemes) <= set(fitting):
        names = ",".join(scheme_name(s) for s in signer.schemes) or "none"
        raise ConfigError(f"signer's schemes ({names}) do not fit its {type(key).__name__}")


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _dns_names(leaf: x509.Certificate) -> tuple[str, ...]:
    """DNS SANs, lowercase, without a trailing dot; the CN only when there is no SAN extension."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        raw = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        raw = [str(a.value) for a in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    names: list[str] = []
    for n in raw:
        n = n.lower().rstrip(".")
        if n and n not in names:
            names.append(n)
    return tuple(names)


def _ecdsa_scheme(curve: str | None, hash_name: str) -> int | None:
    for scheme, (c, h) in ECDSA.items():
        if h.name == hash_name and (curve is None or curve == c):
            return scheme
    return None


def _cert_sig_scheme(cert: x509.Certificate, issuer: x509.Certificate | None) -> int | None:
    """Name ``cert``'s own signature as a TLS scheme (for signature_algorithms_cert); None if none fits.

    ECDSA and PSS schemes depend on the issuer's key; without the issuer we take the common reading
    (curve from the hash, rsaEncryption issuer).
    """
    oid = cert.signature_algorithm_oid
    if oid == SignatureAlgorithmOID.ED25519:
        return S.ed25519
    if oid == SignatureAlgorithmOID.ED448:
        return S.ed448
    pkcs1 = {
        SignatureAlgorithmOID.RSA_WITH_SHA1: S.rsa_pkcs1_sha1,
        SignatureAlgorithmOID.RSA_WITH_SHA256: S.rsa_pkcs1_sha256,
        SignatureAlgorithmOID.RSA_WITH_SHA384: S.rsa_pkcs1_sha384,
        SignatureAlgorithmOID.RSA_WITH_SHA512: S.rsa_pkcs1_sha512,
    }
    if oid in pkcs1:
        return pkcs1[oid]
    if oid == SignatureAlgorithmOID.ECDSA_WITH_SHA1:
        return S.ecdsa_sha1
    ecdsa = {
        SignatureAlgorithmOID.ECDSA_WITH_SHA256: "sha256",
        SignatureAlgorithmOID.ECDSA_WITH_SHA384: "sha384",
        SignatureAlgorithmOID.ECDSA_WITH_SHA512: "sha512",
    }
    if oid in ecdsa:
        curve: str | None = None
        if issuer is not None:
            ikey = issuer.public_key()
            if not isinstance(ikey, ec.EllipticCurvePublicKey):
                return None
            curve = ikey.curve.name
        return _ecdsa_scheme(curve, ecdsa[oid])
    if oid == SignatureAlgorithmOID.RSASSA_PSS:
        h = cert.signature_hash_algorithm
        if h is None:
            return None
        pss_issuer = (
            issuer is not None and issuer.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS
        )
        table = PSS_PSS if pss_issuer else RSAE
        return next((s for s, alg in table.items() if alg.name == h.name), None)
    return None


@dataclass(eq=False)
class Credential:
    """A certificate chain and the Signer that speaks for its leaf. ``repr`` names it, never the key."""

    chain: list[bytes]
    signer: Signer = field(repr=False)
    schemes: tuple[int, ...]  # for TLS 1.3 CertificateVerify, best first
    names: tuple[str, ...]
    fingerprint: str
    leaf_sig_scheme: int | None

    def __repr__(self) -> str:
        schemes = ",".join(scheme_name(s) for s in self.schemes)
        return f"Credential(names={self.names!r}, fingerprint={self.fingerprint[:16]}, schemes={schemes})"

    @property
    def schemes12(self) -> tuple[int, ...]:
        """For a TLS 1.2 ServerKeyExchange, best first: the signer's schemes, PKCS#1 v1.5 included."""
        return tuple(self.signer.schemes)

    @functools.cached_property
    def curve(self) -> int | None:
        """The TLS group of an ECDSA key (secp256r1: the only curve we load), else None."""
        return 0x0017 if isinstance(self.signer.public_key(), ec.EllipticCurvePublicKey) else None

    @functools.cached_property
    def kind(self) -> str:
        """Which TLS 1.2 suites this credential serves: "RSA", or "ECDSA" (P-256 and Ed25519, RFC 8422)."""
        return "RSA" if isinstance(self.signer.public_key(), rsa.RSAPublicKey) else "ECDSA"

    def sign(self, scheme: int, data: bytes) -> bytes:
        """Sign with a scheme from :attr:`schemes12` (PSS salt = hash length)."""
        if scheme not in self.signer.schemes:
            raise ValueError(f"scheme 0x{scheme:04x} is not usable with credential {self.fingerprint[:16]}")
        return self.signer.sign(scheme, data)

    def matches_name(self, sni: str) -> bool:
        """RFC 6125 matching: exact, or ``*.`` standing for exactly one leftmost label."""
        return _name_match(self.names, _normalize(sni)) is not None

    @classmethod
    def from_objects(cls, chain: Sequence[x509.Certificate] | Sequence[bytes], key: PrivateKeyTypes) -> Credential:
        """Build from parsed objects, signing with ``key`` in memory; ConfigError if the key is
        unsupported or not the leaf's."""
        return cls._build(chain, lambda: KeySigner(key), where="credential")

    @classmethod
    def from_signer(cls, chain: Sequence[x509.Certificate] | Sequence[bytes], signer: Signer) -> Credential:
        """Build over any Signer (a token, fixed test vectors); ConfigError if it is not the leaf's key."""
        return cls._build(chain, lambda: signer, where="credential")

    @classmethod
    def from_files(
        cls, cert_path: str | Path, key_path: str | Path, password: bytes | None = None
    ) -> Credential:
        """Load a PEM chain (leaf first) or one DER certificate, and a PEM or DER key.

        Every failure is a one-line ConfigError naming the file; key parsing errors are reworded
        rather than passed through, so no library message can echo key bytes.
        """
        cert_path, key_path = Path(cert_path), Path(key_path)
        cert_data = _read(cert_path)
        try:
            if b"-----BEGIN" in cert_data:
                certs = x509.load_pem_x509_certificates(cert_data)
            else:
                certs = [x509.load_der_x509_certificate(cert_data)]
        except ValueError:
            raise ConfigError(f"{cert_path}: not a PEM or DER X.509 certificate") from None
        key_data = _read(key_path)
        try:
            if b"-----BEGIN" in key_data:
                key = serialization.load_pem_private_key(key_data, password)
            else:
                key = serialization.load_der_private_key(key_data, password)
        except TypeError:
            need = "is encrypted and needs a password" if password is None else "is not encrypted"
            raise ConfigError(f"{key_path}: private key {need}") from None
        except (ValueError, UnicodeError, NotImplementedError, UnsupportedAlgorithm):
            raise ConfigError(
                f"{key_path}: cannot load private key (not PEM/DER, unsupported, or wrong password)"
            ) from None
        return cls._build(certs, lambda: KeySigner(key), where=f"{key_path} (with {cert_path})")

    @classmethod
    def _build(
        cls,
        chain: Sequence[x509.Certificate] | Sequence[bytes],
        signer_for: Callable[[], Signer],
        *,
        where: str,
    ) -> Credential:
        """The checks every credential passes, in this order: the chain, the key (made by ``signer_for``,
        whose ConfigError is prefixed like ours), the key against the leaf, the leaf's names."""
        if not chain:
            raise ConfigError(f"{where}: no certificate")
        try:
            certs = [
                c if isinstance(c, x509.Certificate) else x509.load_der_x509_certificate(c) for c in chain
            ]
        except ValueError:
            raise ConfigError(f"{where}: a certificate is not valid DER") from None
        leaf = certs[0]
        for i in range(1, len(certs)):
            if certs[i - 1].issuer != certs[i].subject:
                raise ConfigError(
                    f"{where}: chain out of order: certificate {i} did not issue certificate {i - 1}"
                )
        try:
            signer = signer_for()
            _check_leaf_fits(leaf, signer)
            leaf_spki = _spki(leaf.public_key())
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        except (ValueError, x509.UnsupportedGeneralNameType, UnsupportedAlgorithm):
            raise ConfigError(f"{where}: cannot read the certificate's public key") from None
        if _spki(signer.public_key()) != leaf_spki:
            raise ConfigError(f"{where}: private key does not match the certificate")
        try:
            names = _dns_names(leaf)
        except (ValueError, x509.UnsupportedGeneralNameType):
            raise ConfigError(f"{where}: cannot read the certificate's names") from None
        ders = [c.public_bytes(serialization.Encoding.DER) for c in certs]
        return cls(
            chain=ders,
            signer=signer,
            schemes=tuple(s for s in signer.schemes if s not in PKCS1),
            names=names,
            fingerprint=hashlib.sha256(ders[0]).hexdigest(),
            leaf_sig_scheme=_cert_sig_scheme(leaf, certs[1] if len(certs) > 1 else None),
        )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or type(e).__name__}") from None


def _normalize(sni: str) -> str:
    return sni.lower().rstrip(".")


def _name_match(names: Sequence[str], host: str) -> str | None:
    """'exact', 'wildcard' or None."""
    if host in names:
        return "exact"
    label, dot, parent = host.partition(".")
    if label and dot and parent and f"*.{parent}" in names:
        return "wildcard"
    return None


class CredentialStore:
    """The server's credentials in load order, and the RFC 8446 §4.4.2.2 choice between them."""

    def __init__(self, creds: Sequence[Credential]) -> None:
        if not creds:
            raise ConfigError("no certificate configured: at least one cert/key pair is needed")
        self.credentials: tuple[Credential, ...] = tuple(creds)

    def __len__(self) -> int:
        return len(self.credentials)

    def candidates(self, sni: str | None) -> list[Credential]:
        """Credentials for ``sni``: exact matches, then wildcard matches, else all (the default)."""
        if sni:
            host = _normalize(sni)
            kinds = [(c, _name_match(c.names, host)) for c in self.credentials]
            exact = [c for c, k in kinds if k == "exact"]
            wild = [c for c, k in kinds if k == "wildcard"]
            if exact or wild:
                return exact + wild
        return list(self.credentials)

    def select(
        self, sni: str | None, sig_algs: Sequence[int], sig_algs_cert: Sequence[int] | None
    ) -> tuple[Credential, int]:
        """Pick a credential and its CertificateVerify scheme.

        The scheme must be one the client offered in ``signature_algorithms``. A credential whose leaf
        signature the client also accepts (``signature_algorithms_cert``, else ``signature_algorithms``)
        wins; otherwise the first usable one is sent anyway, as §4.4.2.2 allows.
        """
        offered = set(sig_algs)
        cert_ok = set(sig_algs if sig_algs_cert is None else sig_algs_cert)
        fallback: tuple[Credential, int] | None = None
        for cred in self.candidates(sni):
            scheme = next((s for s in cred.schemes if s in offered), None)
            if scheme is None:
                continue
            if cred.leaf_sig_scheme is not None and cred.leaf_sig_scheme in cert_ok:
                return cred, scheme
            if fallback is None:
                fallback = (cred, scheme)
        if fallback is None:
            raise HandshakeFailure("no certificate matches the client's signature algorithms")
        return fallback

    def select12(self, sni: str | None, kind: str, sig_algs: Sequence[int],
                 curves: Sequence[int] | None) -> tuple[Credential, int] | None:
        """A credential of ``kind`` ("RSA" or "ECDSA", what a TLS 1.2 suite is signed with) for ``sni``, and
        its ServerKeyExchange scheme: ours, best first, among the client's ``signature_algorithms``.
        None when none fits (the caller tries its next suite).

        RFC 8422 §5.1.1: in TLS 1.2 the client's supported_groups (``curves``, None if it sent none) also
        names the curves it can verify ECDSA signatures on, so a P-256 key needs secp256r1 there.
        """
        offered = set(sig_algs)
        for cred in self.candidates(sni):
            if cred.kind != kind:
                continue
            if curves is not None and cred.curve is not None and cred.curve not in curves:
                continue
            scheme = next((s for s in cred.schemes12 if s in offered), None)
            if scheme is not None:
                return cred, scheme
        return None
