"""ALPN (RFC 7301): the server's choice, the same in TLS 1.2 and TLS 1.3.

Our preference order decides (§3.2 leaves it to the server); a client offering protocols of which we
serve none gets no_application_protocol, and one offering none, or a server configured with none,
negotiates nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from tls_privsep.shared.errors import NoApplicationProtocol


def select(ours: Sequence[str], offered: Sequence[bytes] | None) -> str | None:
    """Our first protocol the client offers; None when either side has none to offer."""
    if not ours or offered is None:
        return None
    theirs = set(offered)
    for proto in ours:
        if proto.encode() in theirs:
            return proto
    raise NoApplicationProtocol("no application protocol in common")  # RFC 7301 §3.2
