"""Signature schemes (RFC 8446 §4.2.3, and RFC 5246 §7.4.1.4.1's hash/signature pairs they extend): the
registry, and what each scheme we use means.

Both sides of a handshake signature read this: our credentials sign with it (credentials.py) and the
client's CertificateVerify is checked with it (peerauth.py). A scheme fixes everything about the
signature: the hash, for RSA-PSS the padding (MGF1 with the same hash, salt as long as the hash), for
ECDSA the curve too. Keeping that in one table means signing and verifying cannot drift apart.
"""

from __future__ import annotations

import enum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding


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

RSAE: dict[int, hashes.HashAlgorithm] = {
    S.rsa_pss_rsae_sha256: hashes.SHA256(),
    S.rsa_pss_rsae_sha384: hashes.SHA384(),
    S.rsa_pss_rsae_sha512: hashes.SHA512(),
}
"""RSA-PSS with an rsaEncryption key: the hash per scheme."""

PSS_PSS: dict[int, hashes.HashAlgorithm] = {
    S.rsa_pss_pss_sha256: hashes.SHA256(),
    S.rsa_pss_pss_sha384: hashes.SHA384(),
    S.rsa_pss_pss_sha512: hashes.SHA512(),
}
"""RSA-PSS with an RSASSA-PSS key: the hash per scheme. Only used to name a certificate's own
signature (signature_algorithms_cert); we neither sign nor accept these in CertificateVerify."""

ECDSA: dict[int, tuple[str, hashes.HashAlgorithm]] = {
    S.ecdsa_secp256r1_sha256: ("secp256r1", hashes.SHA256()),
    S.ecdsa_secp384r1_sha384: ("secp384r1", hashes.SHA384()),
    S.ecdsa_secp521r1_sha512: ("secp521r1", hashes.SHA512()),
}
"""ECDSA: TLS 1.3 fixes the curve as well as the hash (unlike TLS 1.2)."""

# The parameter objects are immutable, so they are built once rather than per signature.
PSS_PARAMS: dict[int, tuple[padding.PSS, hashes.HashAlgorithm]] = {
    s: (padding.PSS(padding.MGF1(h), h.digest_size), h) for s, h in RSAE.items()
}
"""rsa_pss_rsae_*: the padding (salt length = hash length, §4.2.3) and the hash."""

PKCS1: dict[int, hashes.HashAlgorithm] = {
    S.rsa_pkcs1_sha256: hashes.SHA256(),
    S.rsa_pkcs1_sha384: hashes.SHA384(),
    S.rsa_pkcs1_sha512: hashes.SHA512(),
}
"""RSASSA-PKCS1-v1_5: TLS 1.2 only (a TLS 1.3 handshake signature never uses it, §4.2.3); no SHA-1."""
ECDSA_PARAMS: dict[int, ec.ECDSA] = {s: ec.ECDSA(h) for s, (_, h) in ECDSA.items()}


def scheme_name(scheme: int) -> str:
    """The registry name, or the hex value of a scheme the registry does not know (for messages)."""
    try:
        return SignatureScheme(scheme).name
    except ValueError:
        return f"0x{scheme:04x}"
