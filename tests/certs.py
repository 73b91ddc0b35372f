"""Certificates as objects, for the unit tests: a thin layer over :func:`launcher.testing.make_certificate`.

Everything else (the integration fixtures, the plugin, the benches) takes its certificates from
``launcher.testing.ThrowawayCA``, which writes files and issues only what a server should be given.
The unit tests need more, and in memory: certificates and keys as ``cryptography`` objects to build
credentials from, and certificates no server should be given (a 1024-bit RSA key, an Ed25519 CA, no
subjectAltName, expired or not yet valid, the wrong key usage, intermediates). Both kinds are built by
the same function; this module only adds the unit tests' defaults and a key cache.

Key generation dominates test time (RSA especially), so each leaf key *kind* is generated once per
process and reused: two leaves of the same kind share a key. CA keys are always fresh (P-256, cheap)
so two CAs never accidentally vouch for each other.
"""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tls_privsep.launcher.testing import make_certificate, new_key

Kind = Literal["rsa2048", "ecdsa", "ed25519", "rsa1024"]
PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_KEYS: dict[str, PrivateKey] = {}
_SERIAL_FILES = itertools.count(1)


def leaf_key(kind: Kind) -> PrivateKey:
    """The cached private key used for every leaf of ``kind``."""
    if kind not in _KEYS:
        if kind == "rsa2048":
            _KEYS[kind] = new_key("rsa")
        elif kind == "rsa1024":
            _KEYS[kind] = rsa.generate_private_key(65537, 1024)  # too weak for a server: never issued elsewhere
        elif kind == "ecdsa":
            _KEYS[kind] = new_key("ecdsa")
        elif kind == "ed25519":
            _KEYS[kind] = new_key("ed25519")
        else:
            raise ValueError(f"unknown key kind {kind!r}")
    return _KEYS[kind]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def make_ca(
    name: str = "Test CA", issuer: tuple[x509.Certificate, PrivateKey] | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A P-256 CA with the extensions a WebPKI-style verifier insists on, valid for ten years.

    Self-signed (a root) by default; pass ``issuer=(ca_cert, ca_key)`` for an intermediate.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_certificate(key, issuer=issuer, common_name=name, ca=True,
                            not_after=_now() + datetime.timedelta(days=3650))
    return cert, key


def make_leaf(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    kind: Kind,
    names: Sequence[str] = ("localhost",),
    client: bool = False,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """An end-entity certificate for ``names`` (subjectAltName; CN = first name), server or client EKU,
    valid from an hour ago for a year unless told otherwise."""
    key = leaf_key(kind)
    now = _now()
    cert = make_certificate(
        key, names, issuer=(ca_cert, ca_key), common_name=names[0] if names else "no-names", client=client,
        not_before=not_before or now - datetime.timedelta(hours=1),
        not_after=not_after or now + datetime.timedelta(days=365),
    )
    return cert, key


def write_pair(
    directory: str | Path,
    cert_chain: x509.Certificate | Sequence[x509.Certificate],
    key: PrivateKey,
    password: bytes | None = None,
) -> tuple[Path, Path]:
    """Write the chain (leaf first) and key as PEM files in ``directory``; returns their paths."""
    chain = [cert_chain] if isinstance(cert_chain, x509.Certificate) else list(cert_chain)
    n = next(_SERIAL_FILES)
    cert_path = Path(directory) / f"cert{n}.pem"
    key_path = Path(directory) / f"key{n}.pem"
    cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    )
    return cert_path, key_path
