"""What :meth:`RecordLayer.next_event` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class HandshakeMessage:
    msg_type: int
    body: bytes

    @property
    def raw(self) -> bytes:
        """The message as it goes into the transcript hash (4-byte header + body)."""
        return self.msg_type.to_bytes(1, "big") + len(self.body).to_bytes(3, "big") + self.body


@dataclass(frozen=True, slots=True)
class ApplicationData:
    """Decrypted application data: one record's, or a run of records' (``next_event(max_data)``)."""

    data: bytes | bytearray
    records: int = field(default=1, compare=False)


@dataclass(frozen=True, slots=True)
class CloseNotify:
    pass


@dataclass(frozen=True, slots=True)
class KeyUpdated:
    """The peer's KeyUpdate was applied (and answered, if it asked: see ``data_to_send``)."""

    update_requested: bool


@dataclass(frozen=True, slots=True)
class ChangeCipherSpec:
    """TLS 1.2: the peer's change_cipher_spec, well formed and at a message boundary. The engine decides
    whether one was due here and then reads under the new protection (``set_read_protection``)."""


@dataclass(frozen=True, slots=True)
class RenegotiationRefused:
    """TLS 1.2: a ClientHello after the handshake was dropped and answered with a warning
    no_renegotiation alert (queued: see ``data_to_send``); a second one is fatal (RFC 5746 §4.4)."""


Event: TypeAlias = (
    HandshakeMessage | ApplicationData | CloseNotify | KeyUpdated | ChangeCipherSpec | RenegotiationRefused
)
