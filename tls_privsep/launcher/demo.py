"""A self-signed RSA-2048 and ECDSA P-256 pair for the demo (``make run``). Not for production."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def make_demo_certs(directory: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> list[tuple[Path, Path]]:
    """Write (or keep, when present) demo-rsa.{crt,key} and demo-ecdsa.{crt,key}; keys are mode 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for kind in ("rsa", "ecdsa"):
        cert_path, key_path = directory / f"demo-{kind}.crt", directory / f"demo-{kind}.key"
        if not (cert_path.exists() and key_path.exists()):
            key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
                rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
            )
            now = datetime.datetime.now(datetime.UTC)
            sans: list[x509.GeneralName] = []
            for name in names:
                try:
                    import ipaddress

                    sans.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    sans.append(x509.DNSName(name))
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"tls-privsep demo ({kind})")])
            cert = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=90))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(key, hashes.SHA256())
            )
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out.append((cert_path, key_path))
    return out
