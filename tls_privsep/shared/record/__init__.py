"""The sans-IO record layer, TLS 1.3 (RFC 8446 §5) and TLS 1.2 (RFC 5246 §6, AEAD only), one job per module.

- ``framing``: content types, size limits, the one header reader and writer, the receive buffer
- ``protection``: the protection scheme seam (``RecordProtection``), TLS 1.3's AEAD (``Protection``) and
  TLS 1.2's (``Tls12Protection``)
- ``messages``: handshake message reassembly
- ``events``: what ``next_event`` returns
- ``phase``: the receiving phase and its transition table
- ``limits``: every count that bounds a peer's records without application data
- ``bulk``: the steady-state path that decrypts a run of application data into one buffer
- ``layer``: ``RecordLayer``, which ties them together and makes the protocol decisions

Callers import from here.
"""

from tls_privsep.shared.record.events import (
    ApplicationData,
    ChangeCipherSpec,
    CloseNotify,
    Event,
    HandshakeMessage,
    KeyUpdated,
    RenegotiationRefused,
)
from tls_privsep.shared.record.framing import (
    MAX_CIPHERTEXT,
    MAX_CIPHERTEXT12,
    MAX_PLAINTEXT,
    BytesLike,
    ContentType,
    whole_records,
)
from tls_privsep.shared.record.layer import AEAD_RECORD_LIMIT, RecordLayer
from tls_privsep.shared.record.messages import MAX_CLIENT_HELLO, HandshakeType
from tls_privsep.shared.record.phase import Phase
from tls_privsep.shared.record.protection import Protection, RecordProtection, Tls12Protection

__all__ = [
    "AEAD_RECORD_LIMIT",
    "MAX_CIPHERTEXT",
    "MAX_CIPHERTEXT12",
    "MAX_CLIENT_HELLO",
    "MAX_PLAINTEXT",
    "ApplicationData",
    "BytesLike",
    "ChangeCipherSpec",
    "CloseNotify",
    "ContentType",
    "Event",
    "HandshakeMessage",
    "HandshakeType",
    "KeyUpdated",
    "Phase",
    "Protection",
    "RecordLayer",
    "RecordProtection",
    "RenegotiationRefused",
    "Tls12Protection",
    "whole_records",
]
