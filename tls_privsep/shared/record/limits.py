"""The counts that keep a peer from making us work for nothing, each against its maximum.

Records that carry no application data cost a parse or a decryption each, so their runs are bounded
(docs/configuration.md, *Limits*): empty records (a dropped CCS and skipped early data count as
empty), KeyUpdates and warning alerts, each run ended by application data; handshake records in
total until the application phase; and the size of one handshake message. Every count and every
reset is here, so the general and the bulk receive paths cannot disagree.
"""

from __future__ import annotations

from tls_privsep.shared.errors import IllegalParameter, UnexpectedMessage


class Limits:
    __slots__ = (
        "empty", "handshake_records", "key_updates", "max_empty_records", "max_handshake_message",
        "max_handshake_records", "max_key_updates", "max_warning_alerts", "warnings",
    )

    def __init__(self, *, max_handshake_message: int, max_handshake_records: int, max_empty_records: int,
                 max_key_updates: int, max_warning_alerts: int) -> None:
        self.max_handshake_message = max_handshake_message  # header included
        self.max_handshake_records = max_handshake_records
        self.max_empty_records = max_empty_records
        self.max_key_updates = max_key_updates
        self.max_warning_alerts = max_warning_alerts
        self.empty = self.key_updates = self.warnings = self.handshake_records = 0

    def application_data(self) -> None:
        """Application data ends every run."""
        self.empty = self.key_updates = self.warnings = 0

    def handshake_fragment(self) -> None:
        """A handshake record ends the runs of empty records and warnings (not of KeyUpdates: it may be one)."""
        self.empty = self.warnings = 0

    def empty_record(self) -> None:
        self.empty += 1
        if self.empty > self.max_empty_records:
            raise UnexpectedMessage("too many records without content")

    def key_update(self) -> None:
        self.key_updates += 1
        if self.key_updates > self.max_key_updates:
            raise UnexpectedMessage("too many KeyUpdates without application data")

    def warning_alert(self) -> None:
        self.warnings += 1
        if self.warnings > self.max_warning_alerts:
            raise UnexpectedMessage("too many warning alerts")

    def handshake_record(self) -> None:
        """Every record before the application phase, dropped ones too: a handshake needs only a handful."""
        self.handshake_records += 1
        if self.handshake_records > self.max_handshake_records:
            raise UnexpectedMessage("too many records before the handshake completed")

    def handshake_message(self, length: int) -> None:
        if 4 + length > self.max_handshake_message:
            raise IllegalParameter(f"handshake message of {length} bytes exceeds the limit")
