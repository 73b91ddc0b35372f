"""Typed errors. Every TLS alert is an exception class that carries its wire code (RFC 8446 §6).

The split follows h11: a :class:`LocalAlert` is a problem *we* detected in the peer's bytes and will
report with that alert; a :class:`PeerAlert` is an alert the *peer* sent us. Callers can always tell
which side broke the connection. Exception messages name what was wrong, never secret material.
"""

from __future__ import annotations

import enum


class AlertLevel(enum.IntEnum):
    warning = 1
    fatal = 2


class AlertDescription(enum.IntEnum):
    """RFC 8446 §6 (plus the registry entries a server meets, TLS 1.2's no_renegotiation among them)."""

    close_notify = 0
    unexpected_message = 10
    bad_record_mac = 20
    record_overflow = 22
    handshake_failure = 40
    bad_certificate = 42
    unsupported_certificate = 43
    certificate_revoked = 44
    certificate_expired = 45
    certificate_unknown = 46
    illegal_parameter = 47
    unknown_ca = 48
    access_denied = 49
    decode_error = 50
    decrypt_error = 51
    protocol_version = 70
    insufficient_security = 71
    internal_error = 80
    inappropriate_fallback = 86
    user_canceled = 90
    no_renegotiation = 100  # TLS 1.2 (RFC 5246 §7.2.2), sent as a warning: we never renegotiate
    missing_extension = 109
    unsupported_extension = 110
    unrecognized_name = 112
    bad_certificate_status_response = 113
    unknown_psk_identity = 115
    certificate_required = 116
    no_application_protocol = 120


class TLSError(Exception):
    """Base of every error raised by the TLS engine and record layer."""


class Alert(TLSError):
    """An alert, sent or received. ``description`` is the wire code."""

    description: AlertDescription

    @property
    def code(self) -> int:
        return int(self.description)


class LocalAlert(Alert):
    """We detected a protocol violation; the connection is closed with ``description``.

    Subclasses fix the description, so ``raise DecodeError("truncated ClientHello")`` is all a
    parser writes. The message (``reason``) goes to logs only, never on the wire.
    """

    description = AlertDescription.internal_error

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason or self.description.name)
        self.reason = reason or self.description.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r})"


class PeerAlert(Alert):
    """The peer sent a fatal alert (or an alert we must treat as fatal)."""

    def __init__(self, description: int, level: int = AlertLevel.fatal) -> None:
        try:
            self.description = AlertDescription(description)
        except ValueError:
            # Unknown alerts are errors too (RFC 8446 §6); keep the raw code visible.
            self.description = AlertDescription.internal_error
        self.raw_description = description
        self.level = level
        super().__init__(f"peer sent alert {description} ({self.description.name})")


def _alert_class(desc: AlertDescription) -> type[LocalAlert]:
    name = "".join(part.capitalize() for part in desc.name.split("_"))
    cls = type(name, (LocalAlert,), {"description": desc, "__module__": __name__})
    return cls


# One class per alert, named in CamelCase: UnexpectedMessage, DecodeError, IllegalParameter, ...
ALERT_CLASSES: dict[AlertDescription, type[LocalAlert]] = {d: _alert_class(d) for d in AlertDescription}

CloseNotify = ALERT_CLASSES[AlertDescription.close_notify]
UnexpectedMessage = ALERT_CLASSES[AlertDescription.unexpected_message]
BadRecordMac = ALERT_CLASSES[AlertDescription.bad_record_mac]
RecordOverflow = ALERT_CLASSES[AlertDescription.record_overflow]
HandshakeFailure = ALERT_CLASSES[AlertDescription.handshake_failure]
BadCertificate = ALERT_CLASSES[AlertDescription.bad_certificate]
UnsupportedCertificate = ALERT_CLASSES[AlertDescription.unsupported_certificate]
CertificateRevoked = ALERT_CLASSES[AlertDescription.certificate_revoked]
CertificateExpired = ALERT_CLASSES[AlertDescription.certificate_expired]
CertificateUnknown = ALERT_CLASSES[AlertDescription.certificate_unknown]
IllegalParameter = ALERT_CLASSES[AlertDescription.illegal_parameter]
UnknownCa = ALERT_CLASSES[AlertDescription.unknown_ca]
AccessDenied = ALERT_CLASSES[AlertDescription.access_denied]
DecodeError = ALERT_CLASSES[AlertDescription.decode_error]
DecryptError = ALERT_CLASSES[AlertDescription.decrypt_error]
ProtocolVersion = ALERT_CLASSES[AlertDescription.protocol_version]
InsufficientSecurity = ALERT_CLASSES[AlertDescription.insufficient_security]
InternalError = ALERT_CLASSES[AlertDescription.internal_error]
InappropriateFallback = ALERT_CLASSES[AlertDescription.inappropriate_fallback]
UserCanceled = ALERT_CLASSES[AlertDescription.user_canceled]
NoRenegotiation = ALERT_CLASSES[AlertDescription.no_renegotiation]
MissingExtension = ALERT_CLASSES[AlertDescription.missing_extension]
UnsupportedExtension = ALERT_CLASSES[AlertDescription.unsupported_extension]
UnrecognizedName = ALERT_CLASSES[AlertDescription.unrecognized_name]
BadCertificateStatusResponse = ALERT_CLASSES[AlertDescription.bad_certificate_status_response]
UnknownPskIdentity = ALERT_CLASSES[AlertDescription.unknown_psk_identity]
CertificateRequired = ALERT_CLASSES[AlertDescription.certificate_required]
NoApplicationProtocol = ALERT_CLASSES[AlertDescription.no_application_protocol]


class BlobError(Exception):
    """A traffic-state blob was refused; ``reason`` is a stable machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class ChannelError(Exception):
    """The secured<->appd channel broke its protocol; the channel is closed."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class ConfigError(Exception):
    """A configuration problem, reported as one clear line (exit status 78, EX_CONFIG)."""
