"""The bench's certificates, from launcher.testing's throwaway CA: one CA, one leaf per kind.

Kinds are ``ecdsa`` (P-256) and ``rsa2048``. Every server is handed the same files, the leaf alone
(as ``openssl s_server`` sends it), and the in-memory engine bench (bench/engine.py) loads the same.
"""

from __future__ import annotations

import functools
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tls_privsep.launcher.testing import KeyType, ThrowawayCA
from tls_privsep.secured.credentials import Credential, CredentialStore
from tls_privsep.secured.handshake import ServerConfig
from tls_privsep.secured.tickets import TicketKeys

KINDS: dict[str, KeyType] = {"ecdsa": "ecdsa", "rsa2048": "rsa"}


def write_certs(directory: Path) -> dict[str, tuple[Path, Path]]:
    """A localhost (cert, key) pair of files per kind in ``directory``, and their CA's ca.pem."""
    ca = ThrowawayCA(directory, "tls-privsep bench CA")
    out = {}
    for kind, key_type in KINDS.items():
        issued = ca.issue("localhost", key_type=key_type)
        leaf = x509.load_pem_x509_certificate(issued.cert_file.read_bytes())
        issued.cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        out[kind] = (issued.cert_file, issued.key_file)
    return out


@dataclass(frozen=True)
class InMemory:
    """What a handshake in memory needs: the credentials by kind and a client that trusts their CA."""

    ca_pem: str
    creds: dict[str, Credential]

    def client_context(self) -> ssl.SSLContext:
        """TLS 1.3, verifying the chain and the name localhost."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(cadata=self.ca_pem)
        return ctx

    def server_config(self, kind: str) -> ServerConfig:
        """The engine with ``kind``'s certificate and the daemons' default tickets: a full handshake as the pair
        serves it (the tickets it sends are part of its cost, as they were in every earlier figure)."""
        return ServerConfig(credentials=CredentialStore([self.creds[kind]]), ticket_keys=TicketKeys())


@functools.cache
def in_memory() -> InMemory:
    directory = Path(tempfile.mkdtemp(prefix="tls-privsep-bench-"))
    try:
        files = write_certs(directory)
        creds = {kind: Credential.from_files(cert, key) for kind, (cert, key) in files.items()}
        ca_pem = (directory / "ca.pem").read_text()
    finally:
        shutil.rmtree(directory)
    return InMemory(ca_pem, creds)
