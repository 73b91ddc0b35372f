"""Key exchange for the groups we implement: (EC)DHE (RFC 8446 §4.2.8.2, §7.4) and the ECDHE + ML-KEM hybrids.

The server's part of every group is one call, :func:`respond`: the client's share in, our share and the
shared secret out. For x25519 and secp256r1 that is an ephemeral key and an exchange; for the hybrids of
draft-ietf-tls-ecdhe-mlkem (X25519MLKEM768, SecP256r1MLKEM768; TLS 1.3 only) it is that exchange beside an
ML-KEM-768 encapsulation (FIPS 203) to the client's encapsulation key. "The draft" below is
draft-ietf-tls-ecdhe-mlkem-01, the revision read for this module, and its section numbers are that
revision's (§3.1.1 client share, §3.1.2 server share, §3.1.3 shared secret, §4 security considerations);
later revisions may number them otherwise.

Every way a share can be bad is ``illegal_parameter``, as both documents name it: a share of the wrong
length (RFC 8446 §4.2.8; the draft's sizes), an encapsulation key that fails FIPS 203 §7.2's modulus check
(draft §3.1.2: the server MUST check it), a P-256 point that is compressed or not on the curve (RFC 8446
§4.2.8.2, which the draft's §3.1.2 applies to the ECDH part of a hybrid), an all-zero X25519 result (RFC
8446 §7.4.2, draft §3.1.3). Nothing else about a share is the client's fault, so nothing else escapes as
its alert: a failure of our own is a bug, and the engine answers that with internal_error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tls_privsep.secured.messages import NamedGroup
from tls_privsep.shared.errors import IllegalParameter, InternalError

EphemeralKey: TypeAlias = x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey
# Where the engine gets an ephemeral ECDH key for a classical group (injected, so RFC 8448's traces and the
# fuzz harnesses replay byte for byte; ML-KEM's encapsulation randomness cannot be injected, see respond()).
EphemeralFactory: TypeAlias = Callable[[int], EphemeralKey]

# FIPS 203 §8, ML-KEM-768: the encapsulation key and the ciphertext, in bytes.
MLKEM768_EK = 1184
MLKEM768_CT = 1088
X25519_SHARE = 32
P256_SHARE = 65  # the uncompressed point, the only form TLS 1.3 allows (RFC 8446 §4.2.8.2)


@dataclass(frozen=True, slots=True)
class Hybrid:
    """How one hybrid group lays out its shares and its secret (draft §3.1.1-§3.1.3).

    ``kem_first``: X25519MLKEM768 puts the ML-KEM part first in the client share, the server share and the
    shared secret alike; SecP256r1MLKEM768 puts the ECDH part first in all three (draft §3: the secret
    computed by a FIPS-approved scheme goes first, and the X25519 order is historical).
    """

    ecdh_group: int  # the classical group of the ECDH part
    ecdh_share: int  # its share's length, the same for client and server

    @property
    def kem_first(self) -> bool:
        return self.ecdh_group == NamedGroup.x25519

    @property
    def client_share(self) -> int:
        return MLKEM768_EK + self.ecdh_share

    def split_client_share(self, share: bytes) -> tuple[bytes, bytes]:
        """(encapsulation key, ECDH share) of a client share already of the right length."""
        if self.kem_first:
            return share[:MLKEM768_EK], share[MLKEM768_EK:]
        return share[self.ecdh_share :], share[: self.ecdh_share]

    def join(self, kem: bytes, ecdh: bytes) -> bytes:
        """The server share (ciphertext and our ECDH share) or the shared secret, in the group's order."""
        return kem + ecdh if self.kem_first else ecdh + kem


HYBRIDS: dict[int, Hybrid] = {
    NamedGroup.x25519mlkem768: Hybrid(NamedGroup.x25519, X25519_SHARE),
    NamedGroup.secp256r1mlkem768: Hybrid(NamedGroup.secp256r1, P256_SHARE),
}
CLASSICAL_GROUPS = (NamedGroup.x25519, NamedGroup.secp256r1)
HYBRID_GROUPS = (NamedGroup.x25519mlkem768, NamedGroup.secp256r1mlkem768)
SUPPORTED_GROUPS = (*HYBRID_GROUPS, *CLASSICAL_GROUPS)  # the default preference: see groupchoice.py
SHARE_LENGTH: dict[int, int] = {
    NamedGroup.x25519: X25519_SHARE,
    NamedGroup.secp256r1: P256_SHARE,
    **{group: hybrid.client_share for group, hybrid in HYBRIDS.items()},
}


def is_hybrid(group: int) -> bool:
    return group in HYBRIDS


@functools.cache
def hybrids_available() -> bool:
    """Whether this ``cryptography`` can run ML-KEM: its wheels can (OpenSSL, from 48.0.0), a build against a
    system OpenSSL older than 3.5 cannot. Asked once, before the privilege drop (setup.py)."""
    try:
        mlkem.MLKEM768PrivateKey.generate()
    except UnsupportedAlgorithm:
        return False
    return True


def available_groups() -> tuple[int, ...]:
    """SUPPORTED_GROUPS less the hybrids when there is no ML-KEM: the groups a ServerConfig may list."""
    return SUPPORTED_GROUPS if hybrids_available() else CLASSICAL_GROUPS


def generate(group: int) -> EphemeralKey:
    """A fresh ephemeral key for a classical group (RFC 8446 §4.2.8; the draft's §4: never reused)."""
    if group == NamedGroup.x25519:
        return x25519.X25519PrivateKey.generate()
    if group == NamedGroup.secp256r1:
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"no ephemeral key for group {group:#06x}")


def public_share(key: EphemeralKey) -> bytes:
    if isinstance(key, x25519.X25519PrivateKey):
        return key.public_key().public_bytes_raw()
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def check_share_length(group: int, share: bytes) -> None:
    """RFC 8446 §4.2.8, and the draft's §3.1.1 sizes for a hybrid; a group we do not implement is not judged."""
    expected = SHARE_LENGTH.get(group)
    if expected is not None and len(share) != expected:
        raise IllegalParameter(f"key share for group {group:#06x} has length {len(share)}, not {expected}")


def respond(group: int, share: bytes, ephemeral: EphemeralFactory = generate) -> tuple[bytes, bytes]:
    """(our share, the shared secret) for the client's ``share`` of ``group``.

    For a hybrid the ML-KEM encapsulation key is checked before any work is done with it (draft §3.1.2),
    and the ECDH part is validated exactly as the classical group's own share would be (draft §3.1.2,
    §3.1.3). The encapsulation draws its randomness inside the library, so a hybrid handshake is never
    reproducible byte for byte; the ECDH part still takes its key from ``ephemeral``.
    """
    check_share_length(group, share)
    hybrid = HYBRIDS.get(group)
    if hybrid is None:
        key = ephemeral(group)
        return public_share(key), _ecdh(group, key, share)
    ek_bytes, ecdh_share = hybrid.split_client_share(share)
    try:
        # FIPS 203 §7.2's input check: the length (already known right) and the modulus check, every
        # coefficient of the decoded key below q. cryptography refuses such a key with ValueError.
        ek = mlkem.MLKEM768PublicKey.from_public_bytes(ek_bytes)
    except ValueError:
        raise IllegalParameter(f"ML-KEM-768 encapsulation key of group {group:#06x} fails FIPS 203 §7.2") from None
    key = ephemeral(hybrid.ecdh_group)
    ecdh_secret = _ecdh(hybrid.ecdh_group, key, ecdh_share, named=group)
    kem_secret, ciphertext = ek.encapsulate()
    return hybrid.join(ciphertext, public_share(key)), hybrid.join(kem_secret, ecdh_secret)


def exchange(group: int, key: EphemeralKey, share: bytes) -> bytes:
    """TLS 1.2's ECDHE (RFC 8422 §5.10): our key went out first (ServerKeyExchange), the client's share
    comes back in its ClientKeyExchange; checked exactly as a TLS 1.3 share of the group."""
    check_share_length(group, share)
    return _ecdh(group, key, share)


def _ecdh(group: int, key: EphemeralKey, share: bytes, named: int | None = None) -> bytes:
    """RFC 8446 §4.2.8.2 and §7.4: the share checked, the secret computed, the all-zero X25519 result refused.

    ``group`` is the classical group of the exchange; ``named`` the one the client chose, which the messages
    name (the hybrid, when this is its ECDH part: the client never sent a share of the classical group).
    """
    shown = f"{group if named is None else named:#06x}"
    if not ((group == NamedGroup.x25519 and isinstance(key, x25519.X25519PrivateKey))
            or (group == NamedGroup.secp256r1 and isinstance(key, ec.EllipticCurvePrivateKey))):
        # The ephemeral factory gave a key of the wrong kind (or none for this group): our bug, not the client's.
        raise InternalError(f"no {type(key).__name__} key exchange for group {shown}")
    try:
        if isinstance(key, x25519.X25519PrivateKey):
            secret = key.exchange(x25519.X25519PublicKey.from_public_bytes(share))
        else:
            if share[:1] != b"\x04":  # TLS 1.3 allows only the uncompressed form
                raise IllegalParameter(f"P-256 share of group {shown} is not an uncompressed point")
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), share)
            secret = key.exchange(ec.ECDH(), peer)
    except ValueError:
        # OpenSSL refuses a point off the curve, and an X25519 point of small order (an all-zero result).
        raise IllegalParameter(f"invalid key share for group {shown}") from None
    # Defence in depth: OpenSSL's X25519 exchange already raises ValueError (above) for every point whose
    # result is all zeros, so this is not reached with the OpenSSL we run on. RFC 8446 §7.4.2 and the draft's
    # §3.1.3 make the check ours, so it stays, should a backend ever return the zeros instead of raising.
    if secret == bytes(len(secret)):
        raise IllegalParameter(f"all-zero shared secret for group {shown}")
    return secret
