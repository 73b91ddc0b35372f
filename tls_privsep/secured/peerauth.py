"""Authenticating the client (mutual TLS): its certificate chain, and its CertificateVerify signature.

Nothing here touches our own keys: verifying needs only the client's public key and our CA list, so
this module never loads credentials.py, the code that reads key files (tests/unit/test_house_rules.py
holds it to that).

The schemes we accept: one list, offered and enforced
-----------------------------------------------------
``CLIENT_SIG_SCHEMES`` is both what the engine puts in CertificateRequest's ``signature_algorithms``
(§4.3.2 requires the extension) and what :func:`verify_signature` accepts, so the two cannot disagree:

- §4.4.3: a client's CertificateVerify "MUST" use a scheme from the CertificateRequest's list. A scheme
  we did not offer is refused with ``illegal_parameter`` (a field inconsistent with the handshake, §6.2;
  OpenSSL and BoringSSL send the same, docs/alerts.md), even when the signature itself is good.
- §4.2.3, §4.4.3: RSASSA-PKCS1-v1_5 and SHA-1 schemes are never valid in a TLS 1.3 CertificateVerify.
- The list is everything our verification does *safely*: ECDSA on P-256, P-384 and P-521 (each with the
  curve the scheme names), Ed25519, Ed448, and RSA-PSS with an rsaEncryption key (rsa_pss_rsae_*).
- rsa_pss_pss_* is left out. Those schemes are for an RSASSA-PSS key (§4.2.3), whose certificate may
  restrict the hash and salt the key may be used with (RFC 4055 §3.1), and cryptography loads such a
  key as a plain RSA key without its restrictions: a key restricted to SHA-384 would verify under
  rsa_pss_pss_sha256. Honouring them would mean parsing the SPKI ourselves in the privileged daemon,
  for rare keys (WebPKI certificates must carry RSA keys as rsaEncryption) that BoringSSL and Go do
  not accept either. A client holding one gets ``illegal_parameter`` for its CertificateVerify.

We send no ``signature_algorithms_cert``, so by §4.2.3 this list also speaks for the signatures inside
the client's chain; what decides those, though, is the chain validation below (cryptography's WebPKI
rules; §4.4.2.4 leaves certificate validation to RFC 5280), not this list.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import PublicKeyAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from tls_privsep.secured.sigschemes import ECDSA, ECDSA_PARAMS, PKCS1, PSS_PARAMS, S, scheme_name
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

CLIENT_SIG_SCHEMES: tuple[int, ...] = (
    S.ecdsa_secp256r1_sha256,
    S.ecdsa_secp384r1_sha384,
    S.ecdsa_secp521r1_sha512,
    S.rsa_pss_rsae_sha256,
    S.rsa_pss_rsae_sha384,
    S.rsa_pss_rsae_sha512,
    S.ed25519,
    S.ed448,
)
"""The client CertificateVerify schemes we offer (CertificateRequest, in this preference order) and
accept; see the module docstring for why exactly these."""

CLIENT_SIG_SCHEMES12: tuple[int, ...] = (
    *CLIENT_SIG_SCHEMES, S.rsa_pkcs1_sha256, S.rsa_pkcs1_sha384, S.rsa_pkcs1_sha512,
)
"""The same in TLS 1.2, where a client's RSA key may also sign with PKCS#1 v1.5 (RFC 5246 §7.4.8);
still no SHA-1. ECDSA keeps TLS 1.3's pairing of curve and hash, which is all real clients send."""

# A longer client chain is refused before any path building, with the alert OpenSSL and BoringSSL send
# for a chain past their verify depth: unknown_ca (docs/alerts.md).
MAX_CLIENT_CHAIN = 10


def verify_signature(
    public_key: PublicKeyTypes | x509.Certificate, scheme: int, data: bytes, signature: bytes,
    *, tls12: bool = False,
) -> None:
    """Check a client's CertificateVerify signature under a scheme of :data:`CLIENT_SIG_SCHEMES`.

    Pass the client's leaf *certificate* when you have it: RSASSA-PSS SPKIs load as plain RSA keys, so
    only the certificate tells that rsa_pss_rsae_* (which needs rsaEncryption) does not fit. A bare RSA
    key is taken to be rsaEncryption. A certificate whose key cannot be loaded → UnsupportedCertificate;
    a scheme we do not accept, or one not fitting the key → IllegalParameter; a signature that does not
    verify → DecryptError. The key is loaded first, so a certificate of a type we cannot use is named as
    such whatever scheme came with it.
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
    if scheme not in (CLIENT_SIG_SCHEMES12 if tls12 else CLIENT_SIG_SCHEMES):
        raise IllegalParameter(f"client signed with scheme {scheme_name(scheme)}, which we did not offer")

    def bad_scheme() -> Exception:
        name, version = scheme_name(scheme), "TLS 1.2" if tls12 else "TLS 1.3"
        return IllegalParameter(f"signature scheme {name} does not fit a {type(key).__name__} in {version}")

    try:
        if isinstance(key, rsa.RSAPublicKey):
            if scheme in PKCS1:  # only offered in TLS 1.2 (checked above)
                if pss_spki:
                    raise bad_scheme()
                key.verify(signature, data, padding.PKCS1v15(), PKCS1[scheme])
                return
            if pss_spki or scheme not in PSS_PARAMS:  # an RSASSA-PSS key would need rsa_pss_pss_*
                raise bad_scheme()
            pss, h = PSS_PARAMS[scheme]
            key.verify(signature, data, pss, h)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            # TLS 1.3 binds each ECDSA scheme to a curve; TLS 1.2's pairs name only the hash (RFC 5246 §7.4.1.4.1).
            if scheme not in ECDSA or (not tls12 and ECDSA[scheme][0] != key.curve.name):
                raise bad_scheme()
            key.verify(signature, data, ECDSA_PARAMS[scheme])
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
            try:
                data = path.read_bytes()
            except OSError as e:
                raise ConfigError(f"{path}: cannot read: {e.strerror or type(e).__name__}") from None
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
