"""TrafficState: what the record layer needs to carry on a connection after the handshake.

This is the unit that crosses from secured to appd (sealed by :mod:`shared.blob`). Least privilege:
only the current application traffic secrets and sequence numbers, never the resumption or exporter
master secrets. Secrets live in ``bytearray`` so the exporter can overwrite its copy (:meth:`wipe`);
``repr`` never shows them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

TLS13 = 0x0304
TLS12 = 0x0303


def wipe_bytes(buf: bytearray | memoryview) -> None:
    """Overwrite a mutable buffer with zeros in place (same length, so no reallocation)."""
    buf[:] = bytes(len(buf))


def fingerprint(secret: bytes | bytearray) -> str:
    """A short, one-way name for a secret, safe to log (first 8 bytes of SHA-256, hex)."""
    return hashlib.sha256(bytes(secret)).hexdigest()[:16]


@dataclass(eq=False)
class TrafficState:
    """One connection's record-layer state, for either version.

    TLS 1.3 (``version`` 0x0304): ``read_secret``/``write_secret`` are the client's and the server's
    application traffic secrets; keys and IVs are derived from them (RFC 8446 §7.3).
    TLS 1.2 (``version`` 0x0303): they are the client's and the server's write key followed by its
    implicit IV, straight from the key block (RFC 5246 §6.3; sizes in :mod:`shared.tls12`).
    """

    suite: int
    read_secret: bytearray = field(repr=False)
    write_secret: bytearray = field(repr=False)
    read_seq: int = 0
    write_seq: int = 0
    # Records the write key has protected, wherever: the importer's AEAD usage count goes on from here
    # (RFC 8446 §5.5 limits a key, not a process). Equal to write_seq for a key numbered from 0.
    records_protected: int = 0
    alpn: str | None = None
    sni: str | None = None
    peer_certs: list[bytes] = field(default_factory=list, repr=False)
    psk_resumed: bool = False
    created: int = 0
    version: int = TLS13

    def wipe(self) -> None:
        """Overwrite the secrets in place (best effort: see docs/DESIGN.md on CPython)."""
        wipe_bytes(self.read_secret)
        wipe_bytes(self.write_secret)

    def fingerprints(self) -> dict[str, str]:
        return {"read": fingerprint(self.read_secret), "write": fingerprint(self.write_secret)}
