"""The record layer's phase on the receiving side, and the one table of moves between phases.

The phase decides what a record may carry: handshake messages or application data, whether the
middlebox-compatibility change_cipher_spec is dropped, whether anything is read at all.
"""

from __future__ import annotations

import enum

from tls_privsep.shared.errors import InternalError


class Phase(enum.Enum):
    HANDSHAKE = "handshake"  # handshake messages; a change_cipher_spec record is refused
    # TLS 1.3 only: the same, and a well-formed change_cipher_spec is dropped (§5, §D.4). TLS 1.2's
    # change_cipher_spec is an event in HANDSHAKE, so a TLS 1.2 layer never enters this phase.
    HANDSHAKE_CCS = "handshake_ccs"
    # Application data; and KeyUpdate (TLS 1.3) or a refused renegotiation (TLS 1.2); other handshake
    # messages are refused
    APPLICATION = "application"
    CLOSED = "closed"  # the peer's close_notify came: nothing more is read (§6.1)


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    # The ClientHello opens the window for the compatibility CCS; an appd import starts in the application phase.
    Phase.HANDSHAKE: frozenset({Phase.HANDSHAKE_CCS, Phase.APPLICATION, Phase.CLOSED}),
    # A second ClientHello (after a HelloRetryRequest) opens it again; the client Finished closes it.
    Phase.HANDSHAKE_CCS: frozenset({Phase.HANDSHAKE_CCS, Phase.HANDSHAKE, Phase.CLOSED}),
    Phase.APPLICATION: frozenset({Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
}


def check_transition(old: Phase, new: Phase) -> None:
    """Refuse a move the table does not list: a bug in the caller, so internal_error."""
    if new not in TRANSITIONS[old]:
        raise InternalError(f"record layer cannot go from {old.value} to {new.value}")
