"""(EC)DHE key exchange for the groups we implement (RFC 8446 §4.2.8.2, §7.4).

A bad share (wrong length, not on the curve, all-zero X25519 output) is ``illegal_parameter``.
"""

from __future__ import annotations

from typing import TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tls_privsep.secured.messages import NamedGroup
from tls_privsep.shared.errors import IllegalParameter

EphemeralKey: TypeAlias = x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey

SUPPORTED_GROUPS = (NamedGroup.x25519, NamedGroup.secp256r1)
SHARE_LENGTH: dict[int, int] = {NamedGroup.x25519: 32, NamedGroup.secp256r1: 65}


def generate(group: int) -> EphemeralKey:
    if group == NamedGroup.x25519:
        return x25519.X25519PrivateKey.generate()
    if group == NamedGroup.secp256r1:
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unsupported group {group:#06x}")


def public_share(key: EphemeralKey) -> bytes:
    if isinstance(key, x25519.X25519PrivateKey):
        return key.public_key().public_bytes_raw()
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def check_share_length(group: int, share: bytes) -> None:
    expected = SHARE_LENGTH.get(group)
    if expected is not None and len(share) != expected:
        raise IllegalParameter(f"key share for group {group:#06x} has length {len(share)}")


def exchange(group: int, key: EphemeralKey, share: bytes) -> bytes:
    """The shared secret with the client's share; every failure is the client's fault."""
    check_share_length(group, share)
    try:
        if group == NamedGroup.x25519 and isinstance(key, x25519.X25519PrivateKey):
            secret = key.exchange(x25519.X25519PublicKey.from_public_bytes(share))
        elif group == NamedGroup.secp256r1 and isinstance(key, ec.EllipticCurvePrivateKey):
            if share[0] != 4:  # TLS 1.3 allows only the uncompressed form
                raise IllegalParameter("P-256 share is not an uncompressed point")
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), share)
            secret = key.exchange(ec.ECDH(), peer)
        else:
            raise IllegalParameter(f"no key exchange for group {group:#06x}")
    except ValueError:
        raise IllegalParameter(f"invalid key share for group {group:#06x}") from None
    if secret == bytes(len(secret)):
        raise IllegalParameter("all-zero shared secret")
    return secret
