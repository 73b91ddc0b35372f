"""``export_with_fallback``: the engine seals appd's fallback alert itself, under the exported write key.

The record must be byte for byte what a fresh protection built from the exported state seals at the
exported sequence number (what secured did before), and sealing it must not move that state on.
"""

from __future__ import annotations

import ssl

import pytest

from tests.inmemory import completed_engine, server_config
from tls_privsep.secured.handshake import ServerHandshake
from tls_privsep.shared.errors import InternalError
from tls_privsep.shared.record import ContentType, Protection


@pytest.mark.parametrize("suite", [0x1301, 0x1302, 0x1303])
@pytest.mark.parametrize("tickets", [0, 2])
def test_fallback_is_the_alert_a_fresh_protection_seals(suite: int, tickets: int) -> None:
    engine, client, incoming, _ = completed_engine(suite, tickets)
    state, fallback = engine.export_with_fallback()
    assert state.write_seq == (1 if tickets else 0)  # not advanced by the fallback
    assert fallback == Protection(state.suite, state.write_secret, state.write_seq).seal(ContentType.alert, b"\x02\x50")
    state.wipe()
    with pytest.raises(InternalError):  # once only, like export()
        engine.export_with_fallback()
    # The real client reads it, after the tickets, as the fatal internal_error alert.
    incoming.write(fallback)
    with pytest.raises(ssl.SSLError, match="INTERNAL_ERROR"):
        client.read(1)


def test_fallback_needs_a_completed_handshake() -> None:
    engine = ServerHandshake(server_config())
    with pytest.raises(InternalError):
        engine.export_with_fallback()
