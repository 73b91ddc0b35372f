"""Server credentials, certificate selection, and checking the client's certificate and signature.

This is the only module in the project that reads private keys (DESIGN §1), so it stays small and
keeps key material out of every ``repr``, log line and exception message. Only TLS 1.3 signature
schemes are ever produced or accepted (RFC 8446 §4.2.3): no PKCS#1 v1.5 and no SHA-1 in handshake
signatures.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import PublicKeyAlgorithmOID, SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from tls_privsep.shared.errors import (
    BadCertificate,
    CertificateExpired,
    CertificateRequired,
    ConfigError,
    DecryptError,
    HandshakeFailure,
    IllegalParameter,
    UnknownCa,
    UnsupportedCertificate,
)


class SignatureScheme(enum.IntEnum):
    """RFC 8446 §4.2.3: every registry value a client may send (including ones we refuse)."""

    rsa_pkcs1_sha256 = 0x0401
    rsa_pkcs1_sha384 = 0x0501
    rsa_pkcs1_sha512 = 0x0601
    ecdsa_secp256r1_sha256 = 0x0403
    ecdsa_secp384r1_sha384 = 0x0503
    ecdsa_secp521r1_sha512 = 0x0603
    rsa_pss_rsae_sha256 = 0x0804
    rsa_pss_rsae_sha384 = 0x0805
    rsa_pss_rsae_sha512 = 0x0806
    ed25519 = 0x0807
    ed448 = 0x0808
    rsa_pss_pss_sha256 = 0x0809
    rsa_pss_pss_sha384 = 0x080A
    rsa_pss_pss_sha512 = 0x080B
    rsa_pkcs1_sha1 = 0x0201
    ecdsa_sha1 = 0x0203


S = SignatureScheme
Signer = Callable[[int, bytes], bytes]
"""``(scheme, data) -> signature``; replaces the key (test vectors, later a PKCS#11 token)."""

ServerKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

# rsaEncryption; cryptography has no constant for it (RSA-PSS SPKIs also load as RSA keys).
_RSA_ENCRYPTION_OID = x509.ObjectIdentifier("1.2.840.113549.1.1.1")
_RSA_PSS_OID = x509.ObjectIdentifier("1.2.840.113549.1.1.10")

_RSAE: dict[int, hashes.HashAlgorithm] = {
    S.rsa_pss_rsae_sha256: hashes.SHA256(),
    S.rsa_pss_rsae_sha384: hashes.SHA384(),
    S.rsa_pss_rsae_sha512: hashes.SHA512(),
}
_PSS_PSS: dict[int, hashes.HashAlgorithm] = {
    S.rsa_pss_pss_sha256: hashes.SHA256(),
    S.rsa_pss_pss_sha384: hashes.SHA384(),
    S.rsa_pss_pss_sha512: hashes.SHA512(),
}
# ECDSA schemes in TLS 1.3 fix the curve as well as the hash.
_ECDSA: dict[int, tuple[str, hashes.HashAlgorithm]] = {
    S.ecdsa_secp256r1_sha256: ("secp256r1", hashes.SHA256()),
    S.ecdsa_secp384r1_sha384: ("secp384r1", hashes.SHA384()),
    S.ecdsa_secp521r1_sha512: ("secp521r1", hashes.SHA512()),
}

# Our CertificateVerify parameters per scheme. They are immutable, so they are built once rather than
# per handshake.
_PSS_SIGN: dict[int, tuple[padding.PSS, hashes.HashAlgorithm]] = {
    s: (padding.PSS(padding.MGF1(h), h.digest_size), h) for s, h in _RSAE.items()
}
_ECDSA_SIGN: dict[int, ec.ECDSA] = {s: ec.ECDSA(h) for s, (_, h) in _ECDSA.items()}

RSA_SCHEMES: tuple[int, ...] = (S.rsa_pss_rsae_sha256, S.rsa_pss_rsae_sha384, S.rsa_pss_rsae_sha512)

CLIENT_VERIFY_SCHEMES: tuple[int, ...] = (
    S.ecdsa_secp256r1_sha256,
    S.ecdsa_secp384r1_sha384,
    S.ecdsa_secp521r1_sha512,
    S.ed25519,
    S.ed448,
    S.rsa_pss_rsae_sha256,
    S.rsa_pss_rsae_sha384,
    S.rsa_pss_rsae_sha512,
    S.rsa_pss_pss_sha256,
    S.rsa_pss_pss_sha384,
    S.rsa_pss_pss_sha512,
)
"""What :func:`verify_signature` accepts: the ``signature_algorithms`` to put in CertificateRequest."""

# Certificates; a longer client chain is refused before any path building, with the alert OpenSSL and
# BoringSSL send for a chain past their verify depth: unknown_ca (docs/alerts.md).
MAX_CLIENT_CHAIN = 10


# --------------------------------------------------------------------------------------------------
# Our own credentials


def _schemes_for(leaf: x509.Certificate, key: PrivateKeyTypes) -> tuple[int, ...]:
    """The CertificateVerify schemes this key may use, best first; ConfigError for anything else."""
    if isinstance(key, rsa.RSAPrivateKey):
        # An RSASSA-PSS SPKI would need rsa_pss_pss_*; those keys are rare and we do not offer them.
        if leaf.public_key_algorithm_oid == _RSA_PSS_OID:
            raise ConfigError("RSA key with a RSASSA-PSS certificate is not supported (use rsaEncryption)")
        if leaf.public_key_algorithm_oid != _RSA_ENCRYPTION_OID:
            raise ConfigError("private key does not match the certificate (an RSA key, a non-RSA certificate)")
        return RSA_SCHEMES
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError(f"EC curve {key.curve.name} is not supported (use P-256)")
        return (S.ecdsa_secp256r1_sha256,)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return (S.ed25519,)
    raise ConfigError(f"unsupported private key type {type(key).__name__} (use RSA, EC P-256 or Ed25519)")


def _key_signer(key: ServerKey) -> Signer:
    """``(scheme, data) -> signature`` for ``key``, its type resolved once: isinstance against
    cryptography's abstract key classes costs an ABC check on every call. (Each branch rebinds the key
    so that its closure keeps the narrowed type.)"""
    if isinstance(key, rsa.RSAPrivateKey):
        rsa_key = key

        def sign_pss(scheme: int, data: bytes) -> bytes:
            pss, h = _PSS_SIGN[scheme]
            return rsa_key.sign(data, pss, h)

        return sign_pss
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ec_key = key
        return lambda scheme, data: ec_key.sign(data, _ECDSA_SIGN[scheme])
    ed_key = key
    return lambda scheme, data: ed_key.sign(data)


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
    for scheme, (c, h) in _ECDSA.items():
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
        table = _PSS_PSS if pss_issuer else _RSAE
        return next((s for s, alg in table.items() if alg.name == h.name), None)
    return None


@dataclass(eq=False)
class Credential:
    """A certificate chain and the key that signs for it. ``repr`` names it, never shows the key."""

    chain: list[bytes]
    key: ServerKey = field(repr=False)
    schemes: tuple[int, ...]
    names: tuple[str, ...]
    fingerprint: str
    leaf_sig_scheme: int | None
    signer: Signer | None = field(default=None, repr=False)
    _sign_with_key: Signer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._sign_with_key = _key_signer(self.key)

    def __repr__(self) -> str:
        schemes = ",".join(S(s).name for s in self.schemes)
        return f"Credential(names={self.names!r}, fingerprint={self.fingerprint[:16]}, schemes={schemes})"

    def sign(self, scheme: int, data: bytes) -> bytes:
        """Sign CertificateVerify content with a scheme from :attr:`schemes` (PSS salt = hash length)."""
        if scheme not in self.schemes:
            raise ValueError(f"scheme 0x{scheme:04x} is not usable with credential {self.fingerprint[:16]}")
        if self.signer is not None:
            return self.signer(scheme, data)
        return self._sign_with_key(scheme, data)

    def matches_name(self, sni: str) -> bool:
        """RFC 6125 matching: exact, or ``*.`` standing for exactly one leftmost label."""
        return _name_match(self.names, _normalize(sni)) is not None

    @classmethod
    def from_objects(
        cls,
        chain: Sequence[x509.Certificate] | Sequence[bytes],
        key: PrivateKeyTypes,
        *,
        signer: Signer | None = None,
    ) -> Credential:
        """Build from parsed objects; ConfigError if the key is unsupported or not the leaf's."""
        return cls._build(chain, key, signer=signer, where="credential")

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
        return cls._build(certs, key, signer=None, where=f"{key_path} (with {cert_path})")

    @classmethod
    def _build(
        cls,
        chain: Sequence[x509.Certificate] | Sequence[bytes],
        key: PrivateKeyTypes,
        *,
        signer: Signer | None,
        where: str,
    ) -> Credential:
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
            schemes = _schemes_for(leaf, key)
            leaf_spki = _spki(leaf.public_key())
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        except (ValueError, x509.UnsupportedGeneralNameType, UnsupportedAlgorithm):
            raise ConfigError(f"{where}: cannot read the certificate's public key") from None
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
            raise ConfigError(f"{where}: unsupported private key type")  # _schemes_for already refused it
        if _spki(key.public_key()) != leaf_spki:
            raise ConfigError(f"{where}: private key does not match the certificate")
        try:
            names = _dns_names(leaf)
        except (ValueError, x509.UnsupportedGeneralNameType):
            raise ConfigError(f"{where}: cannot read the certificate's names") from None
        ders = [c.public_bytes(serialization.Encoding.DER) for c in certs]
        return cls(
            chain=ders,
            key=key,
            schemes=schemes,
            names=names,
            fingerprint=hashlib.sha256(ders[0]).hexdigest(),
            leaf_sig_scheme=_cert_sig_scheme(leaf, certs[1] if len(certs) > 1 else None),
            signer=signer,
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


# --------------------------------------------------------------------------------------------------
# The client's side (mutual TLS)


def verify_signature(
    public_key: PublicKeyTypes | x509.Certificate, scheme: int, data: bytes, signature: bytes
) -> None:
    """Check a client's CertificateVerify signature under a TLS 1.3 scheme.

    Pass the client's leaf *certificate* when you have it: RSA-PSS SPKIs load as plain RSA keys, so
    only the certificate tells rsa_pss_rsae_* (rsaEncryption) from rsa_pss_pss_* (RSASSA-PSS) apart.
    A bare RSA key is taken to be rsaEncryption. Scheme not fitting the key, or not a TLS 1.3
    scheme → IllegalParameter; a certificate whose key cannot be loaded → UnsupportedCertificate; a
    signature that does not verify → DecryptError.
    """
    pss_spki = False
    if isinstance(public_key, x509.Certificate):
        pss_spki = public_key.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS
        try:
            key: PublicKeyTypes = public_key.public_key()
        except (ValueError, UnsupportedAlgorithm):
            # A certificate of a type we cannot use: unsupported_certificate (§6.2's definition, and
            # BoringSSL's alert when it cannot get a certificate's key; docs/alerts.md).
            raise UnsupportedCertificate("client certificate has an unsupported public key") from None
    else:
        key = public_key

    def bad_scheme() -> Exception:
        try:
            name = S(scheme).name
        except ValueError:
            name = f"0x{scheme:04x}"
        return IllegalParameter(f"signature scheme {name} does not fit a {type(key).__name__} in TLS 1.3")

    try:
        if isinstance(key, rsa.RSAPublicKey):
            table = _PSS_PSS if pss_spki else _RSAE
            if scheme not in table:
                raise bad_scheme()
            h = table[scheme]
            key.verify(signature, data, padding.PSS(padding.MGF1(h), h.digest_size), h)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if scheme not in _ECDSA or _ECDSA[scheme][0] != key.curve.name:
                raise bad_scheme()
            key.verify(signature, data, ec.ECDSA(_ECDSA[scheme][1]))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            if scheme != S.ed25519:
                raise bad_scheme()
            key.verify(signature, data)
        elif isinstance(key, ed448.Ed448PublicKey):
            if scheme != S.ed448:
                raise bad_scheme()
            key.verify(signature, data)
        else:
            raise bad_scheme()
    except (InvalidSignature, ValueError):
        raise DecryptError("CertificateVerify signature does not verify") from None


class ClientCertVerifier:
    """Path validation of client certificates against configured CAs (cryptography's verifier).

    WebPKI rules as cryptography applies them to clients: the leaf's EKU, if present, must contain
    clientAuth; CA certificates need basicConstraints and keyUsage keyCertSign. We relax one rule: a
    client leaf may lack subjectAltName (CN-only client certificates are common).
    """

    def __init__(
        self,
        ca_bundle_path: str | Path | None = None,
        *,
        ca_certs: Sequence[x509.Certificate] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        cas = list(ca_certs)
        if ca_bundle_path is not None:
            path = Path(ca_bundle_path)
            data = _read(path)
            try:
                cas += x509.load_pem_x509_certificates(data)
            except ValueError:
                raise ConfigError(f"{path}: no PEM certificates in CA bundle") from None
        if not cas:
            raise ConfigError("client certificate verification needs at least one CA certificate")
        self._store = Store(cas)
        self._ca_subjects = {c.subject for c in cas}
        self._clock = clock
        self._ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
            x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
        )

    def verify(self, chain: Sequence[bytes]) -> x509.Certificate:
        """Validate a client chain (DER, leaf first) and return the leaf; raise the alert to send."""
        if not chain:
            raise CertificateRequired("client sent no certificate")
        if len(chain) > MAX_CLIENT_CHAIN:
            raise UnknownCa(f"client chain too long ({len(chain)} certificates)")
        try:
            certs = [x509.load_der_x509_certificate(bytes(d)) for d in chain]
        except ValueError:
            raise BadCertificate("client certificate is not valid DER") from None
        leaf, intermediates = certs[0], certs[1:]
        now = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
        if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
            raise CertificateExpired("client certificate expired or not yet valid")
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(now)
            .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=self._ee_policy)
            .build_client_verifier()
        )
        try:
            verifier.verify(leaf, intermediates)
        except VerificationError as e:
            raise self._classify(str(e), certs) from None
        except (ValueError, x509.UnsupportedGeneralNameType):
            raise BadCertificate("client certificate could not be processed") from None
        return leaf

    def _classify(self, message: str, certs: list[x509.Certificate]) -> Exception:
        """Map cryptography's (unstructured) failure text to the RFC 8446 §6.2 alert."""
        if "not valid at validation time" in message:
            return CertificateExpired("a certificate in the client chain is expired or not yet valid")
        if "candidates exhausted" in message or not self._reaches_store(certs):
            return UnknownCa("client certificate is not issued by a trusted CA")
        if "EKU not found" in message:
            # The leaf is not for client authentication: OpenSSL and BoringSSL map this (an X.509
            # "invalid purpose") to unsupported_certificate (docs/alerts.md).
            return UnsupportedCertificate("client certificate is not for client authentication (EKU)")
        # Drop the library's "(encountered processing <Certificate(subject=...)>)" tail: the subject
        # is the client's text, and the reason alone is what an operator needs.
        reason = message.removeprefix("validation failed: ").split(" (encountered processing", 1)[0]
        return BadCertificate(f"client certificate rejected: {reason[:200]}")

    def _reaches_store(self, certs: list[x509.Certificate]) -> bool:
        """Whether the issuer names lead from the leaf to a trusted CA at all (ignoring signatures)."""
        by_subject = {c.subject: c for c in certs[1:]}
        cert = certs[0]
        for _ in range(len(certs) + 1):
            if cert.issuer in self._ca_subjects:
                return True
            nxt = by_subject.pop(cert.issuer, None)
            if nxt is None:
                return False
            cert = nxt
        return False
