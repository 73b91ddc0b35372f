"""Throwaway CAs and certificates for tests.

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
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Kind = Literal["rsa2048", "ecdsa", "ed25519", "rsa1024"]
PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_KEYS: dict[str, PrivateKey] = {}
_SERIAL_FILES = itertools.count(1)


def leaf_key(kind: Kind) -> PrivateKey:
    """The cached private key used for every leaf of ``kind``."""
    if kind not in _KEYS:
        if kind == "rsa2048":
            _KEYS[kind] = rsa.generate_private_key(65537, 2048)
        elif kind == "rsa1024":
            _KEYS[kind] = rsa.generate_private_key(65537, 1024)
        elif kind == "ecdsa":
            _KEYS[kind] = ec.generate_private_key(ec.SECP256R1())
        elif kind == "ed25519":
            _KEYS[kind] = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(f"unknown key kind {kind!r}")
    return _KEYS[kind]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def make_ca(
    name: str = "Test CA", issuer: tuple[x509.Certificate, PrivateKey] | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A P-256 CA with the extensions a WebPKI-style verifier insists on.

    Self-signed (a root) by default; pass ``issuer=(ca_cert, ca_key)`` for an intermediate.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    signing_key: PrivateKey = key
    if issuer is None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        issuer_name = subject
    else:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[0].public_key())  # type: ignore[arg-type]
        issuer_name, signing_key = issuer[0].subject, issuer[1]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
        .sign(signing_key, _hash_for(signing_key))
    )
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
    """An end-entity certificate for ``names`` (DNS SANs; CN = first name), server or client EKU."""
    key = leaf_key(kind)
    now = _now()
    cn = names[0] if names else "no-names"
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(hours=1))
        .not_valid_after(not_after or now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    return builder.sign(ca_key, _hash_for(ca_key)), key


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
